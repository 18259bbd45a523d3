"""The readings a restart rebuilds the die estimator from (``core/estimator.py``).

Read by ``eventlog.restore``, so the daemon and ``replay`` start from the same estimate.
"""

from __future__ import annotations

import sqlite3

from tempctl.core.window import suspect

__all__ = ["RECENT_READINGS", "power_ceiling", "recent_readings"]

RECENT_READINGS = 40  # what the die estimator is rebuilt from: ~20 min at 30 s polls


def recent_readings(conn: sqlite3.Connection, device: str, where: str, args: tuple) -> tuple:
    """The last representative readings written (``where``: restore's choice of runs), oldest
    first (``Snapshot.recent``): valid, live (not backfilled), not tripped or stopped, and
    evidence (``window.suspect``)."""
    rows = conn.execute(
        "SELECT ts_ms, temp, frequency, uptime_s, hashrate, actual_frequency FROM readings "
        f"WHERE device = ? AND {where} AND valid = 1 AND overheat = 0 AND backfilled = 0 "
        "AND frequency IS NOT NULL AND fault IS NULL ORDER BY id DESC LIMIT ?",
        (device, *args, RECENT_READINGS),
    ).fetchall()
    return tuple(
        (ts, temp, freq)
        for ts, temp, freq, up, hashrate, live in reversed(rows)
        if not suspect(up, hashrate, freq, live)
    )


def power_ceiling(conn: sqlite3.Connection, device: str, where: str, args: tuple) -> float | None:
    """The power ceiling in force (MHz, the last ``power_cap`` event; NULL: lifted), so a
    restart does not climb over the cap for the readings the ceiling is re-derived from."""
    row = conn.execute(
        f"SELECT frequency_to FROM events WHERE device = ? AND kind = 'power_cap' AND {where} "
        "ORDER BY id DESC LIMIT 1",
        (device, *args),
    ).fetchone()
    return row[0] if row else None
