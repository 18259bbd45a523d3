"""The stable-window query at 100 k and 10 M readings, side by side; database growth.

Window: ``tempctl.core.window.query_window`` with the default settings (CHECK_INTERVAL
30 s, STABLE_TIMEFRAME 1 h: about 123 rows per query), on logs built with the real
schema (tempctl.store.eventlog.Log) and filled by one INSERT ... SELECT over a recursive CTE
(index dropped during the load and rebuilt by schema.sql, journal off): 10 M rows
take about a minute here. The rows of 10 devices are interleaved in time order as
the daemon writes them. Both logs are open at once and queried in alternating
rounds. "latest" asks what the daemon asks (each device's newest hour); "random"
asks for hours anywhere in the history (pages not in SQLite's cache).

Growth: one device-day of realistic readings (a parsed v2.15 body) appended through
``Log.reading_op`` at 30 s and at 5 s polling; bytes per reading from the pages used,
index included; and the same day after ``tempctl prune`` folded it (readings_1m).
"""

from __future__ import annotations

import dataclasses
import json
import random
import sqlite3
import statistics
import sys
import tempfile
import time
from pathlib import Path

from . import procs

T0 = 1_700_000_000_000
DEVICES = 10
STEP_MS = 30_000


def build(path: Path, rows: int) -> float:
    """A log with ``rows`` readings; returns seconds taken."""
    from tempctl.store.eventlog import Log, ensure_schema

    start = time.monotonic()
    Log(path).close()
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("PRAGMA journal_mode = OFF")
    conn.execute("PRAGMA synchronous = OFF")
    conn.execute("PRAGMA cache_size = -262144")  # 256 MiB while loading
    conn.execute("DROP INDEX readings_device_ts")
    conn.execute("BEGIN")
    conn.execute(f"""
        WITH RECURSIVE i(n) AS (SELECT 0 UNION ALL SELECT n + 1 FROM i WHERE n + 1 < {rows})
        INSERT INTO readings (id, device, ts_ms, valid, temp, vr_temp, frequency, hashrate,
                              power, fan, firmware, asic, overheat, backfilled)
        SELECT n + 1, printf('bitaxe-%02d', n % {DEVICES}),
               {T0} + (n / {DEVICES}) * {STEP_MS} + (n % {DEVICES}) * 37, 1,
               55.0 + ((n * 7919) % 1000) / 100.0, 50.0 + (n % 20), 575.0,
               1100.0 + (n % 50), 18.5, 100.0, 'v2.15.0', 'BM1370', 0, 0
        FROM i""")
    conn.execute("COMMIT")
    ensure_schema(conn)  # rebuilds readings_device_ts exactly as schema.sql has it
    conn.execute("PRAGMA journal_mode = WAL")  # as the daemon runs it
    conn.close()
    return time.monotonic() - start


def last_ts(conn: sqlite3.Connection, device: str) -> int:
    return conn.execute("SELECT max(ts_ms) FROM readings WHERE device = ?", (device,)).fetchone()[0]


def time_queries(conn, limits, asks: list[tuple[str, int]]) -> list[float]:
    from tempctl.core.window import query_window

    out = []
    for device, now in asks:
        t = time.perf_counter()
        query_window(conn, device, now, limits)
        out.append((time.perf_counter() - t) * 1000)
    return out


def window(
    sizes: tuple[int, ...] = (100_000, 10_000_000),
    rounds: int = 20,
    per_round: int = 50,
    workdir: str | None = None,
) -> dict:
    from tempctl.core.controller import Limits
    from tempctl.store.eventlog import Log

    limits = Limits()
    tmp = Path(workdir or tempfile.mkdtemp(prefix="tempctl-window-"))
    tmp.mkdir(parents=True, exist_ok=True)
    result: dict = {
        "check_interval_s": limits.check_interval,
        "stable_timeframe_h": limits.stable_timeframe,
        "devices": DEVICES,
    }
    logs = {}
    try:
        for n in sizes:
            path = tmp / f"window-{n}.db"
            if not path.exists():  # --workdir keeps the logs for the next run
                procs.log(f"window: building a log of {n:,} readings")
                result[f"build_s_{n}"] = round(build(path, n), 1)
            log = Log(path, create=False)
            logs[n] = log
            rows = log.conn.execute(
                "SELECT count(*) FROM readings WHERE device = 'bitaxe-00' AND ts_ms > ? - ?",
                (last_ts(log.conn, "bitaxe-00"), limits.window_ms + limits.gap_ms),
            ).fetchone()[0]
            result[f"rows_per_query_{n}"] = rows
            result[f"file_mb_{n}"] = round(path.stat().st_size / 2**20, 1)
        names = [f"bitaxe-{i:02d}" for i in range(DEVICES)]
        rng = random.Random(8)
        latest: dict[int, list[float]] = {n: [] for n in sizes}
        anywhere: dict[int, list[float]] = {n: [] for n in sizes}
        first: dict[int, float] = {}
        for n, log in logs.items():
            first[n] = time_queries(log.conn, limits, [(names[0], last_ts(log.conn, names[0]))])[0]
        for _ in range(rounds):  # alternate: both sizes see the same machine conditions
            for n, log in logs.items():
                ends = {d: last_ts(log.conn, d) for d in names}
                latest[n] += time_queries(
                    log.conn,
                    limits,
                    [
                        (names[i % DEVICES], ends[names[i % DEVICES]] - (i // DEVICES) * STEP_MS)
                        for i in range(per_round)
                    ],
                )
                span = ends[names[0]] - T0 - limits.window_ms
                asks = [
                    (rng.choice(names), T0 + limits.window_ms + rng.randrange(span))
                    for _ in range(per_round)
                ]
                anywhere[n] += time_queries(log.conn, limits, asks)
        for n in sizes:
            result[f"latest_ms_median_{n}"] = round(statistics.median(latest[n]), 4)
            result[f"latest_ms_p99_{n}"] = round(_p99(latest[n]), 4)
            result[f"random_ms_median_{n}"] = round(statistics.median(anywhere[n]), 4)
            result[f"random_ms_p99_{n}"] = round(_p99(anywhere[n]), 4)
            result[f"first_query_ms_{n}"] = round(first[n], 4)
        lo, hi = min(sizes), max(sizes)
        result["ratio_latest_median"] = round(
            result[f"latest_ms_median_{hi}"] / result[f"latest_ms_median_{lo}"], 3
        )
        result["ratio_random_median"] = round(
            result[f"random_ms_median_{hi}"] / result[f"random_ms_median_{lo}"], 3
        )
        return result
    finally:
        for log in logs.values():
            log.close()
        if workdir is None:
            for f in tmp.iterdir():
                f.unlink()
            tmp.rmdir()


def _p99(values: list[float]) -> float:
    ordered = sorted(values)
    return ordered[int(0.99 * (len(ordered) - 1))]


def _used_bytes(conn: sqlite3.Connection) -> int:
    page = conn.execute("PRAGMA page_size").fetchone()[0]
    pages = conn.execute("PRAGMA page_count").fetchone()[0]
    free = conn.execute("PRAGMA freelist_count").fetchone()[0]
    return (pages - free) * page


def growth() -> dict:
    """Bytes per reading and per device-day, raw and folded."""
    from tempctl.device import parse_info
    from tempctl.sim.firmware import BODIES_DIR
    from tempctl.store.eventlog import Log
    from tempctl.store.retention import DAY_MS, prune

    body = json.loads((BODIES_DIR / "v2.15.0_gamma-602_BM1370.json").read_text())
    out: dict = {}
    with tempfile.TemporaryDirectory(prefix="tempctl-growth-") as tmp:
        for interval in (30, 5):
            log = Log(Path(tmp) / f"growth-{interval}.db")
            log.start_run({}, ts_ms=T0)
            log.conn.execute("VACUUM")
            empty = _used_bytes(log.conn)
            n = DAY_MS // (interval * 1000)
            base = parse_info(body, "bitaxe-gamma", T0)
            rng = random.Random(interval)
            rows = [
                dataclasses.replace(
                    base,
                    ts_ms=T0 + i * interval * 1000,
                    temp=round(58 + rng.random() * 6, 3),
                    vr_temp=float(50 + rng.randrange(10)),
                    hashrate=round(1100 + rng.random() * 80, 2),
                    power=round(18 + rng.random(), 2),
                    uptime_s=i * interval,
                )
                for i in range(n)
            ]
            log.transaction([log.reading_op(r) for r in rows])
            log.conn.execute("VACUUM")
            raw = _used_bytes(log.conn) - empty
            t = time.perf_counter()
            prune(log, 1, T0 + 2 * DAY_MS)
            prune_s = time.perf_counter() - t
            log.conn.execute("VACUUM")
            folded = _used_bytes(log.conn) - empty
            log.close()
            out[f"{interval}s"] = {
                "readings_per_device_day": n,
                "bytes_per_reading": round(raw / n, 1),
                "mb_per_device_day": round(raw / 2**20, 3),
                "mb_per_device_year": round(raw * 365 / 2**20, 1),
                "folded_kb_per_device_day": round(folded / 1024, 1),
                "prune_ms_per_1000_readings": round(prune_s / n * 1000 * 1000, 2),
            }
    return out


if __name__ == "__main__":
    big = int(sys.argv[1]) if len(sys.argv) > 1 else 10_000_000
    print(json.dumps({"window": window((100_000, big)), "growth": growth()}, indent=2))
