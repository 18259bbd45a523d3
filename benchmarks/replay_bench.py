"""Replay speed: `tempctl replay --check` over a 1,000,000-reading log vs a raw SQLite scan.

Builds the log (unless --db names one that exists) by driving tempctl's own policy
(policies.TempctlPolicy, the daemon's per-poll sequence) against a cheap synthetic
Gamma whose room swings 24-34 °C every day, so the log has throttling, recovery and
quiet stretches like a real one. Then, side by side in one process, alternately:

* scan   - the replay's own SELECT over the same rows, every row fetched;
* replay - replay.check() over the whole log (which must come out identical).

Prints JSON. Targets (issue 5): >= 150,000 readings/s and replay <= 5x the scan.

    python benchmarks/replay_bench.py [--readings N] [--db FILE] [--repeat 3]
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import random
import sqlite3
import sys
import tempfile
import time
from functools import lru_cache
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tempctl.config import Settings, config_dict
from tempctl.core.reading import Reading
from tempctl.offline.replay import check, reading_sql, select_runs
from tempctl.sim.plant import params_for, steady_die
from tempctl.sim.policies import TempctlPolicy
from tempctl.sim.simulate import SIM_EPOCH_MS, LogSink
from tempctl.store.eventlog import Log

POLL_S = 5.0
GAMMA = params_for("BM1370")


class SynthDevice:
    """A Gamma at 1150 mV, fixed fan: steady die from the plant, one 48 s lag, sensor noise."""

    def __init__(self, name: str, seed: int = 1):
        self.name = name
        self.t = 0.0
        self.freq = 575.0
        self.die = self._steady(self.freq, self.ambient())
        self.rng = random.Random(seed)

    def ambient(self) -> float:
        return 29.0 + 5.0 * math.sin(2 * math.pi * self.t / 86400.0)

    @staticmethod
    @lru_cache(maxsize=1 << 16)
    def _steady(freq: float, amb: float) -> float:
        return steady_die(GAMMA, freq, 1150, amb, 100.0)

    def advance(self, dt: float) -> None:
        self.t += dt
        target = self._steady(self.freq, round(self.ambient(), 2))
        self.die += (target - self.die) * (1 - math.exp(-dt / 48.0))

    def ts_ms(self) -> int:
        return SIM_EPOCH_MS + round(self.t * 1000)

    def read(self) -> Reading:
        temp = round((self.die + self.rng.gauss(0, 0.06)) / 0.125) * 0.125
        return Reading(
            self.name,
            self.ts_ms(),
            temp=temp,
            vr_temp=float(round(self.die - 2)),
            frequency=self.freq,
            core_voltage=1150,
            hashrate=self.freq * 2.04,
            power=5.0 + 0.017 * self.freq * 1.3225,
            uptime_s=int(self.t) + 3600,
            version="v2.15.0",
            asic_model="BM1370",
        )

    def set_frequency(self, mhz: float):
        self.freq = mhz
        return "ok", 200, None

    def restart(self):
        return "ok", 200, None


def build(path: str, readings: int, law: str) -> float:
    started = time.perf_counter()
    log = Log(path)
    settings = Settings(check_interval=POLL_S, law=law)
    log.start_run(config_dict(settings), {}, kind="simulation", ts_ms=SIM_EPOCH_MS)
    sink = LogSink(log)
    dev = SynthDevice("bench")
    policy = TempctlPolicy(settings, dev.name, sink)
    for _ in range(readings):
        policy.poll(dev)
        dev.advance(POLL_S)
    sink.flush()
    log.close()
    return time.perf_counter() - started


def scan(conn: sqlite3.Connection) -> tuple[float, int]:
    started = time.perf_counter()
    n = 0
    run = select_runs(conn)[0]
    for _ in conn.execute(reading_sql(conn) + run.reading_sql + "ORDER BY id", (run.id, "bench")):
        n += 1
    return time.perf_counter() - started, n


def replay(conn: sqlite3.Connection):
    started = time.perf_counter()
    result = check(conn)
    return time.perf_counter() - started, result


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--readings", type=int, default=1_000_000)
    ap.add_argument("--db", help="keep the log here (reused when it exists)")
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument(
        "--law",
        choices=("model", "levels"),
        default="model",
        help="TEMPCTL_LAW of the logged run (levels: the law the issue-5 target was set with)",
    )
    args = ap.parse_args()
    tmp = None
    path = args.db
    if path is None:
        tmp = tempfile.TemporaryDirectory()
        path = os.path.join(tmp.name, "bench.db")
    build_s = None
    if not Path(path).exists():
        build_s = build(path, args.readings, args.law)
    conn = sqlite3.connect(path)
    scans, replays, result = [], [], None
    for _ in range(args.repeat):  # alternate, so both see the same cache and machine load
        s, n = scan(conn)
        scans.append(s)
        r, result = replay(conn)
        replays.append(r)
    conn.close()
    best_scan, best_replay = min(scans), min(replays)
    rate = result.readings / best_replay
    ratio = best_replay / best_scan
    out = {
        "law": args.law,
        "readings": result.readings,
        "scanned_rows": n,
        "replay_identical": result.ok,
        "transitions": result.transitions,
        "commands": result.commands,
        "build_s": None if build_s is None else round(build_s, 2),
        "scan_s": [round(x, 3) for x in scans],
        "replay_s": [round(x, 3) for x in replays],
        "readings_per_s": round(rate),
        "replay_vs_scan": round(ratio, 2),
        "targets": {"readings_per_s": 150_000, "replay_vs_scan_max": 5.0},
        "pass": rate >= 150_000 and ratio <= 5.0 and result.ok,
        "python": platform.python_version(),
        "sqlite": sqlite3.sqlite_version,
        "loadavg": [round(x, 2) for x in os.getloadavg()],
    }
    print(json.dumps(out, indent=2))
    if tmp is not None:
        tmp.cleanup()
    return 0 if result.ok else 1


if __name__ == "__main__":
    sys.exit(main())
