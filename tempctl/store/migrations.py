"""Schema changes since schema.sql's first release, numbered by PRAGMA user_version.

schema.sql is always the newest schema (a fresh log gets it whole); an older log is taken
step by step through ``MIGRATIONS`` first (store/eventlog.py: ensure_schema).
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable

SCHEMA_VERSION = 4


def _allow_mqtt_origin(conn: sqlite3.Connection) -> None:
    """v3: events.origin may be 'mqtt' (a change made from Home Assistant, issue 22).

    Loosening a CHECK changes no stored row, so SQLite's documented writable_schema edit
    does it in place (sqlite.org/lang_altertable.html#otheralter) instead of a rebuild."""
    old, new = "'device', 'daemon'))", "'device', 'daemon', 'mqtt'))"
    quote = lambda text: "'" + text.replace("'", "''") + "'"  # noqa: E731 - SQL literal
    version = conn.execute("PRAGMA schema_version").fetchone()[0]
    conn.executescript(
        "BEGIN; PRAGMA writable_schema = ON;"
        f"UPDATE sqlite_master SET sql = replace(sql, {quote(old)}, {quote(new)})"
        " WHERE type = 'table' AND name = 'events';"
        f"PRAGMA schema_version = {version + 1}; PRAGMA writable_schema = OFF; COMMIT;"
    )


# version -> SQL (or a function) taking the schema from version-1 to version
MIGRATIONS: dict[int, str | Callable[[sqlite3.Connection], None]] = {
    2: "ALTER TABLE readings ADD COLUMN autofan INTEGER CHECK (autofan IN (0, 1));"
    "ALTER TABLE readings ADD COLUMN fault TEXT;"
    "ALTER TABLE readings ADD COLUMN mac TEXT;"
    "ALTER TABLE readings ADD COLUMN hostname TEXT;"
    "ALTER TABLE readings ADD COLUMN firmware_floor TEXT;",
    3: _allow_mqtt_origin,
    # v4: what the voltage governor judges stability by (issue 21)
    4: "ALTER TABLE readings ADD COLUMN error_pct REAL;"
    "ALTER TABLE readings ADD COLUMN expected_hashrate REAL;",
}
