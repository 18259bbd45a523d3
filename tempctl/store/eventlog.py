"""The event-sourced SQLite log: the only module that writes tempctl's database.

``save_*`` functions append; ``restore``/``query_window`` read. The schema comes
from schema.sql (the single source), applied idempotently on open; later
changes are numbered ``MIGRATIONS`` tracked by ``PRAGMA user_version``.
Row ids are assigned here (one writer per database), so a write that failed
(disk full, database locked) can be kept and retried later with the same ids
and nothing is lost or duplicated.
"""

from __future__ import annotations

import fcntl
import json
import os
import socket
import sqlite3
import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path

from tempctl import __version__
from tempctl.core.controller import Command, Decision, Limits, Snapshot, State, WindowStats
from tempctl.core.reading import Reading
from tempctl.core.window import query_window
from tempctl.resources import schema_path
from tempctl.store.migrations import MIGRATIONS, SCHEMA_VERSION
from tempctl.store.recent import power_ceiling, recent_readings

APP_ID = "tempctl"

READING_COLUMNS = (
    "id",
    "run_id",
    "device",
    "ts_ms",
    "valid",
    "temp",
    "vr_temp",
    "frequency",
    "actual_frequency",
    "core_voltage",
    "core_voltage_actual",
    "hashrate",
    "power",
    "fan",
    "fan_rpm",
    "uptime_s",
    "raw_temp",
    "firmware",
    "asic",
    "overheat",
    "backfilled",
    "error",
    "autofan",
    "fault",
    "mac",
    "hostname",
    "firmware_floor",
    "error_pct",
    "expected_hashrate",
)
_INSERT_READING = (
    f"INSERT INTO readings ({', '.join(READING_COLUMNS)}) "
    f"VALUES ({', '.join('?' * len(READING_COLUMNS))})"
)


class LogError(Exception):
    """The database cannot be used (missing, corrupt, someone else's)."""


class LogBusy(LogError):
    """Another process holds the log's lock (a second ``tempctl run`` on it)."""


def take_lock(path: str) -> int:
    """Hold ``<db>.lock`` with flock(2) for as long as the returned descriptor is open.

    The kernel drops the lock when the process dies, even by SIGKILL, so a stale file never
    blocks a start. The file says who holds it, for the error the next process shows.
    (A lock file rather than flock on the database: SQLite uses fcntl locks on that file,
    and NFS emulates flock with fcntl locks, which would then collide.)
    """
    lock = f"{path}.lock"
    try:
        fd = os.open(lock, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    except OSError as exc:
        raise LogError(f"{lock}: cannot create the lock file: {exc.strerror}") from None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        holder = ""
        deadline = time.monotonic() + 1.0
        while not holder and time.monotonic() < deadline:  # it may be writing it just now
            holder = os.pread(fd, 4096, 0).decode(errors="replace").strip()
            if not holder:
                time.sleep(0.05)
        os.close(fd)
        raise LogBusy(
            f"{path}: in use by another tempctl run ({holder or 'pid unknown'}); "
            "one daemon per database"
        ) from None
    since = datetime.now(UTC).strftime("%Y-%m-%d %H:%M:%S UTC")
    os.ftruncate(fd, 0)
    os.pwrite(fd, f"pid {os.getpid()} on host {socket.gethostname()} since {since}\n".encode(), 0)
    return fd


def open_read_only(path: str) -> sqlite3.Connection:
    """A connection that cannot write. A WAL log needs its -shm file; when the directory is
    read-only and no -wal exists, nobody can be writing the log, so it is opened immutable."""
    uri = Path(path).resolve().as_uri()
    conn = sqlite3.connect(f"{uri}?mode=ro", uri=True, check_same_thread=False)
    try:
        conn.execute("SELECT count(*) FROM sqlite_master").fetchone()
    except sqlite3.OperationalError:
        conn.close()
        if Path(f"{path}-wal").exists():
            raise
        conn = sqlite3.connect(f"{uri}?immutable=1", uri=True, check_same_thread=False)
    return conn


def _connect_read_only(path: str) -> sqlite3.Connection:
    try:
        conn = open_read_only(path)
        version = conn.execute("PRAGMA user_version").fetchone()[0]
    except sqlite3.DatabaseError as exc:
        raise LogError(f"{path}: cannot open read-only: {exc}") from None
    if version > SCHEMA_VERSION:
        conn.close()
        raise LogError(
            f"database schema v{version} is newer than this tempctl "
            f"(v{SCHEMA_VERSION}); upgrade tempctl"
        )
    if version == 0:
        conn.close()
        raise LogError(f"{path}: an empty database, no tempctl log in it yet")
    return conn


def connect(path: str | os.PathLike, *, busy_timeout_s: float = 10.0) -> sqlite3.Connection:
    conn = sqlite3.connect(
        str(path), timeout=busy_timeout_s, isolation_level=None, check_same_thread=False
    )
    conn.execute("PRAGMA foreign_keys = ON")
    return conn


def check_file(path: str | os.PathLike) -> None:
    """Refuse a file that is not a tempctl log (never overwrite someone else's file)."""
    p = Path(path)
    if not p.exists() or p.stat().st_size == 0:
        return
    with open(p, "rb") as fh:
        if fh.read(16) != b"SQLite format 3\x00":
            raise LogError(f"{p}: not a SQLite database; refusing to touch it")
    try:
        conn = open_read_only(str(p))
        try:
            tables = {
                r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")
            }
            if not tables:
                return
            app = None
            if "meta" in tables:
                row = conn.execute("SELECT value FROM meta WHERE key='app'").fetchone()
                app = row[0] if row else None
        finally:
            conn.close()
    except sqlite3.DatabaseError as exc:
        raise LogError(f"{p}: unreadable SQLite database ({exc}); refusing to touch it") from exc
    if app != APP_ID:
        raise LogError(
            f"{p}: a SQLite database that is not a tempctl log "
            f"(tables: {', '.join(sorted(tables))}); refusing to touch it"
        )


def require_log(path: str | os.PathLike) -> None:
    """Refuse anything but an existing tempctl log, for the commands that only read one: an
    empty file or a SQLite database without tempctl's tables has nothing to read (issue 23.6)."""
    p = Path(path)
    if not p.is_file():
        raise LogError(f"{p}: no such tempctl log")
    check_file(p)  # not SQLite, unreadable, someone else's
    if p.stat().st_size == 0:
        raise LogError(f"{p}: an empty file, not a tempctl log (the daemon writes one)")
    _connect_read_only(str(p)).close()  # no tables yet, or a newer schema


def ensure_schema(conn: sqlite3.Connection) -> None:
    """Apply schema.sql (idempotent) and any pending migrations."""
    version = conn.execute("PRAGMA user_version").fetchone()[0]
    if version > SCHEMA_VERSION:
        raise LogError(
            f"database schema v{version} is newer than this tempctl "
            f"(v{SCHEMA_VERSION}); upgrade tempctl"
        )
    fresh = version == 0
    if not fresh:  # bring an older log up to date before schema.sql (which is the newest)
        for v in range(version + 1, SCHEMA_VERSION + 1):
            step = MIGRATIONS[v]
            step(conn) if callable(step) else conn.executescript(step)
    conn.executescript(schema_path().read_text())
    conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
    conn.execute("INSERT OR IGNORE INTO meta (key, value) VALUES ('app', ?)", (APP_ID,))


class Log:
    """An open tempctl log. Not thread-safe: one writer thread owns it."""

    def __init__(
        self,
        path: str | os.PathLike,
        *,
        create: bool = True,
        lock: bool = False,
        read_only: bool = False,
    ):
        """Open (or create) the log. ``lock``: take the one-daemon lock (``LogBusy`` when
        another process holds it). ``read_only``: never write, not even the schema."""
        self.path = str(path)
        self.read_only = read_only
        self._lock_fd: int | None = None
        self.run_id: int | None = None
        if self.path != ":memory:":
            check_file(self.path)
            if (read_only or not create) and not Path(self.path).exists():
                raise LogError(f"{self.path}: no such tempctl log")
        if read_only:
            self.conn = _connect_read_only(self.path)
            self._next: dict[str, int] = {}
            return
        try:
            self.conn = connect(self.path)
            if self.path != ":memory:":
                self.conn.execute("PRAGMA journal_mode = WAL")
            self.conn.execute("PRAGMA synchronous = NORMAL")
            ensure_schema(self.conn)
        except sqlite3.DatabaseError as exc:
            raise LogError(f"{self.path}: {exc}") from exc
        if lock and self.path != ":memory:":
            try:
                self._lock_fd = take_lock(self.path)
            except LogError:
                self.conn.close()
                raise
        # Ids are read after the lock is held: nobody else appends from here on.
        self._next = {
            t: self._max_id(t) + 1
            for t in ("runs", "readings", "transitions", "commands", "command_results", "events")
        }

    @property
    def db(self):
        """The log as a sqlite_utils Database, made on demand: importing sqlite_utils loads
        numpy when it is installed (matplotlib brings it), +14 MB the daemon never uses."""
        import sqlite_utils

        return sqlite_utils.Database(self.conn)

    def _max_id(self, table: str) -> int:
        return self.conn.execute(f"SELECT coalesce(max(id), 0) FROM {table}").fetchone()[0]

    def _id(self, table: str) -> int:
        i = self._next[table]
        self._next[table] = i + 1
        return i

    def close(self) -> None:
        self.conn.close()
        if self._lock_fd is not None:
            os.close(self._lock_fd)  # releases the lock
            self._lock_fd = None

    # -- writes --------------------------------------------------------------

    @contextmanager
    def batch(self, *, commit: bool = True) -> Iterator[sqlite3.Connection]:
        """One write transaction for work that reads as it writes (retention); the log is
        still the only place that begins and ends one. ``commit=False`` rolls it back."""
        conn = self.conn
        conn.execute("BEGIN IMMEDIATE")
        try:
            yield conn
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        conn.execute("COMMIT" if commit else "ROLLBACK")

    def vacuum(self) -> None:
        """Compact the file (needs free space the size of the log)."""
        self.conn.execute("VACUUM")

    def transaction(self, ops: Iterable[tuple[str, tuple]]) -> None:
        """Run (sql, params) statements atomically; raises sqlite3 errors to the caller."""
        # Plain sqlite3, not sqlite-utils' insert_all: rows carry ids assigned here and
        # go in as prepared statements, and importing sqlite_utils costs the daemon 14 MB.
        conn = self.conn
        conn.execute("BEGIN IMMEDIATE")
        try:
            for sql, params in ops:
                conn.execute(sql, params)
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        conn.execute("COMMIT")

    def start_run(
        self, config: dict, sources: dict | None = None, *, kind: str = "daemon", ts_ms: int
    ) -> int:
        self.transaction([self.run_op(config, sources, kind=kind, ts_ms=ts_ms)])
        return self.run_id

    def run_op(
        self, config: dict, sources: dict | None = None, *, kind: str = "daemon", ts_ms: int
    ) -> tuple[str, tuple]:
        """The row of a new run; later rows carry its id (``run_id``)."""
        self.run_id = self._id("runs")
        return (
            "INSERT INTO runs (id, ts_ms, kind, version, hostname, pid, config, sources) "
            "VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            (
                self.run_id,
                ts_ms,
                kind,
                __version__,
                socket.gethostname(),
                os.getpid(),
                json.dumps(config, default=str, sort_keys=True),
                json.dumps(sources or {}, sort_keys=True),
            ),
        )

    def reading_op(self, r: Reading) -> tuple[str, tuple]:
        return _INSERT_READING, (
            self._id("readings"),
            self.run_id,
            r.device,
            r.ts_ms,
            int(r.valid),
            r.temp,
            r.vr_temp,
            r.frequency,
            r.actual_frequency,
            r.core_voltage,
            r.core_voltage_actual,
            r.hashrate,
            r.power,
            r.fan_pct,
            r.fan_rpm,
            r.uptime_s,
            r.raw_temp,
            r.version,
            r.asic_model,
            int(r.overheat),
            int(r.backfilled),
            r.error,
            None if r.autofan is None else int(r.autofan),
            r.fault,
            r.mac,
            r.hostname,
            r.firmware_floor,
            getattr(r, "error_pct", None),
            getattr(r, "expected_hashrate", None),
        )

    def decision_ops(
        self, device: str, ts_ms: int, decision: Decision
    ) -> tuple[list[tuple[str, tuple]], list[tuple[int, Command]]]:
        """Statements for a decision, and the ids its commands will carry."""
        ops: list[tuple[str, tuple]] = []
        t = decision.transition
        if t is not None:
            ops.append(
                (
                    "INSERT INTO transitions (id, run_id, device, ts_ms, from_state, to_state, "
                    "reason, frequency, temp, ceiling, ceiling_until_ms, backoff_s, last_good) "
                    "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                    (
                        self._id("transitions"),
                        self.run_id,
                        device,
                        ts_ms,
                        t.from_state,
                        t.to_state,
                        t.reason,
                        t.frequency,
                        t.temp,
                        t.ceiling,
                        t.ceiling_until_ms,
                        t.backoff_s,
                        t.last_good,
                    ),
                )
            )
        for e in decision.events:
            ops.append(
                self.event_op(
                    device,
                    ts_ms,
                    e.kind,
                    e.message,
                    level=e.level,
                    origin=e.origin,
                    frequency_from=e.frequency_from,
                    frequency_to=e.frequency_to,
                )
            )
        ids = []
        for c in decision.commands:
            cid = self._id("commands")
            payload = json.dumps(c.payload, sort_keys=True) if c.kind != "restart" else None
            ops.append(
                (
                    "INSERT INTO commands (id, run_id, device, ts_ms, kind, frequency, payload, "
                    "reason, attempt) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                    (
                        cid,
                        self.run_id,
                        device,
                        ts_ms,
                        c.kind,
                        c.frequency,
                        payload,
                        c.reason,
                        c.attempt,
                    ),
                )
            )
            ids.append((cid, c))
        return ops, ids

    def event_op(
        self,
        device: str | None,
        ts_ms: int,
        kind: str,
        message: str,
        *,
        level: str = "info",
        origin: str | None = None,
        frequency_from: float | None = None,
        frequency_to: float | None = None,
    ) -> tuple[str, tuple]:
        return (
            "INSERT INTO events (id, run_id, device, ts_ms, kind, level, origin, "
            "frequency_from, frequency_to, message) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (
                self._id("events"),
                self.run_id,
                device,
                ts_ms,
                kind,
                level,
                origin,
                frequency_from,
                frequency_to,
                message,
            ),
        )

    def result_op(
        self,
        command_id: int,
        ts_ms: int,
        outcome: str,
        *,
        status: int | None = None,
        error: str | None = None,
        latency_ms: float | None = None,
    ) -> tuple[str, tuple]:
        return (
            "INSERT INTO command_results (id, command_id, ts_ms, outcome, status, error, "
            "latency_ms) VALUES (?, ?, ?, ?, ?, ?, ?)",
            (self._id("command_results"), command_id, ts_ms, outcome, status, error, latency_ms),
        )

    def save_reading(self, r: Reading) -> None:
        self.transaction([self.reading_op(r)])

    def save_decision(
        self, device: str, ts_ms: int, decision: Decision
    ) -> list[tuple[int, Command]]:
        ops, ids = self.decision_ops(device, ts_ms, decision)
        if ops:
            self.transaction(ops)
        return ids

    # -- reads ---------------------------------------------------------------

    def window(self, device: str, now_ms: int, limits: Limits) -> WindowStats:
        return query_window(self.conn, device, now_ms, limits)

    def last_ts(self, at_most: int | None = None) -> int | None:
        """The newest stamp in the log (of those not after ``at_most``)."""
        bound = 2**62 if at_most is None else at_most
        row = self.conn.execute(
            "SELECT max(m) FROM (SELECT max(ts_ms) AS m FROM readings WHERE ts_ms <= :b "
            "UNION ALL SELECT max(ts_ms) FROM transitions WHERE ts_ms <= :b "
            "UNION ALL SELECT max(ts_ms) FROM events WHERE ts_ms <= :b "
            "UNION ALL SELECT max(ts_ms) FROM runs WHERE ts_ms <= :b)",
            {"b": bound},
        ).fetchone()
        return row[0]

    def restore(self, device: str, *, before_run: int | None = None) -> Snapshot | None:
        return restore(self.conn, device, before_run=before_run)

    def devices(self) -> list[str]:
        return [
            r["device"]
            for r in self.db.query(
                "SELECT DISTINCT device FROM transitions "
                "UNION SELECT DISTINCT device FROM readings ORDER BY 1"
            )
        ]


def restore(
    conn: sqlite3.Connection, device: str, *, before_run: int | None = None
) -> Snapshot | None:
    """Rebuild a controller's memory from the log: what a daemon starting now restores, or
    (``before_run``, for replay) what the daemon that started that run restored.

    The latest row is the latest *written* (id order), whatever its stamp: a run whose clock
    was days ahead leaves rows stamped after later runs' (issue 23.4). Such future stamps
    are clipped by the controller at its first poll (``Controller._clip_future``)."""
    where, args = ("run_id < ?", (before_run,)) if before_run is not None else ("1", ())
    row = conn.execute(
        "SELECT to_state, frequency, ceiling, ceiling_until_ms, backoff_s, last_good, ts_ms "
        f"FROM transitions WHERE device = ? AND {where} ORDER BY id DESC LIMIT 1",
        (device, *args),
    ).fetchone()
    if row is None:
        return None
    state, freq, ceiling, until, backoff, last_good, ts = row
    last_cmd = conn.execute(
        "SELECT ts_ms FROM commands WHERE device = ? AND kind = 'set_frequency' "
        f"AND {where} ORDER BY id DESC LIMIT 1",
        (device, *args),
    ).fetchone()
    last_cmd = last_cmd[0] if last_cmd else None
    restarts = tuple(
        r[0]
        for r in conn.execute(
            f"SELECT ts_ms FROM commands WHERE device = ? AND kind = 'restart' AND {where} "
            "ORDER BY ts_ms",
            (device, *args),
        )
    )
    changes = [t for t in (ts, last_cmd) if t is not None]
    model = identity = before_trip = cap = cap_ms = None
    for kind, message, cap_mhz, ts_ms in conn.execute(
        "SELECT kind, message, frequency_to, ts_ms FROM events WHERE id IN (SELECT max(id) "
        "FROM events WHERE device = ? AND kind IN ('model', 'device', 'trip', 'user_cap') "
        f"AND {where} GROUP BY kind)",
        (device, *args),
    ):
        if kind == "user_cap":  # NULL: lifted
            cap, cap_ms = cap_mhz, (ts_ms if cap_mhz is not None else None)
        elif kind == "model":
            model = message.partition("model=")[2] or None
        elif kind == "device" and message.startswith("identity "):
            try:
                data = json.loads(message[len("identity ") :])
                identity = (data.get("mac"), data.get("hostname"))
            except (ValueError, AttributeError):
                identity = None
        elif kind == "trip" and message.startswith("before trip "):
            before_trip = message[len("before trip ") :]
    voltage = conn.execute(  # the governor's last learned table (core/voltage.py)
        f"SELECT message FROM events WHERE device = ? AND kind = 'voltage' AND {where} "
        "AND message LIKE '%; table {%' ORDER BY id DESC LIMIT 1",
        (device, *args),
    ).fetchone()
    last_change = max(changes) if changes else None
    return Snapshot(
        State(state),
        freq,
        ceiling,
        until,
        backoff or 0.0,
        last_good,
        last_change,
        restarts,
        model,
        identity,
        before_trip,
        voltage=voltage[0].rpartition("; table ")[2] if voltage else None,
        recent=recent_readings(conn, device, where, args),
        user_cap=cap,
        user_cap_ms=cap_ms,
        power_cap=power_ceiling(conn, device, where, args),
    )
