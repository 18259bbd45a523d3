"""Soak: a simulated week (or more) in compressed time, with faults on. Prints JSON.

    python benchmarks/soak.py                    # 7 days at scale 2400: about 4.5 minutes
    python benchmarks/soak.py --days 1 --scale 4800

The real `tempctl run` process guards an emulated Gamma in the repeating "daynight"
scenario (hot afternoons at 34 °C, nights at 24 °C) while the emulator injects transport
errors, sensor glitches, hangs, spontaneous reboots and ignored PATCHes. The daemon's own
timing is scaled like the plant's (settle 180 s, stable window 1 h and polls of about 8
plant-minutes), so the whole control story repeats every simulated day.

Reported: RSS of the daemon process (sampled from /proc, growth after a warm-up day and
its slope per simulated day), database bytes per reading (after a checkpoint), and "no
stuck state": every simulated day must throttle and come back to NORMAL.
"""

from __future__ import annotations

import argparse
import json
import sqlite3
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

from procs import LogView, assert_clean_exit, start_daemon, wait_for

from tempctl.sim.emulator import Emulator

FAULTS = (
    "timeout=0.002,5xx=0.01,truncated=0.005,malformed=0.002,missing=0.002,"
    "sensor_m1=0.005,sensor_0=0.002,reboot=0.0005,patch_ignored=0.02"
)
DAY_S = 86_400.0


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise RuntimeError("no VmRSS")


def slope(points: list[tuple[float, float]]) -> float:
    """Least-squares slope of y over x."""
    n = len(points)
    if n < 2:
        return 0.0
    mx = sum(x for x, _ in points) / n
    my = sum(y for _, y in points) / n
    sxx = sum((x - mx) ** 2 for x, _ in points)
    return sum((x - mx) * (y - my) for x, y in points) / sxx if sxx else 0.0


def per_day(db: Path, t0_ms: int, day_real_ms: float, days: int) -> list[dict]:
    """Per simulated day: polls, throttles, returns to NORMAL, longest non-NORMAL stretch."""
    v = LogView(db)
    trans = v.transitions()
    out = []
    for k in range(days):
        lo, hi = t0_ms + k * day_real_ms, t0_ms + (k + 1) * day_real_ms
        ts = [t for t in trans if lo <= t["ts_ms"] < hi]
        out.append(
            {
                "day": k + 1,
                "polls": v.count("readings", "ts_ms >= ? AND ts_ms < ?", int(lo), int(hi)),
                "throttles": sum(
                    t["to_state"].startswith("THROTTLED")
                    and not t["from_state"].startswith("THROTTLED")
                    for t in ts
                ),
                "back_to_normal": sum(
                    t["to_state"] == "NORMAL" and t["from_state"] != "NORMAL" for t in ts
                ),
            }
        )
    return out


def longest_away_from_normal(db: Path, end_ms: int) -> float:
    """Longest stretch (ms of real time) spent outside NORMAL."""
    trans = LogView(db).transitions()
    longest, since = 0, None
    for t in trans:
        if t["to_state"] != "NORMAL" and since is None:
            since = t["ts_ms"]
        elif t["to_state"] == "NORMAL" and since is not None:
            longest, since = max(longest, t["ts_ms"] - since), None
    if since is not None:
        longest = max(longest, end_ms - since)
    return longest


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--days", type=float, default=7.0, help="simulated days")
    p.add_argument("--scale", type=float, default=2400.0, help="plant seconds per real second")
    p.add_argument("--faults", default=FAULTS)
    p.add_argument("--seed", type=int, default=7)
    p.add_argument("--workdir", type=Path, default=None, help="keep the log here")
    args = p.parse_args(argv)

    work = args.workdir or Path(__import__("tempfile").mkdtemp(prefix="tempctl-soak-"))
    work.mkdir(parents=True, exist_ok=True)
    db = work / "tempctl.db"
    k = args.scale
    # 30 s polls would be 12 ms here; the floor is 0.2 s (8 plant-minutes at 2400x).
    timing = {
        "check_interval": max(0.2, 30 / k),
        "settle": 180 / k,
        "stable_timeframe": 1.0 / k,
    }  # hours: one plant hour
    real_s = args.days * DAY_S / k
    emu = Emulator(
        "daynight",
        host="127.0.0.1",
        port=0,
        scale=k,
        faults=args.faults,
        seed=args.seed,
        start_hours=0.0,
        hang_s=2.0,
    )
    emu.start()
    address = emu.urls[0].split("://", 1)[1]
    d = start_daemon(address, db, work, **timing)
    samples: list[tuple[float, int]] = []
    try:
        v = LogView(db)
        wait_for(lambda: v.count("readings") >= 1, 30, "the first poll", d)
        t0 = time.monotonic()
        t0_ms = v.value("SELECT min(ts_ms) FROM readings")
        while (elapsed := time.monotonic() - t0) < real_s:
            if d.poll() is not None:
                raise SystemExit(f"the daemon died:\n{d.output()[-3000:]}")
            samples.append((elapsed * k / DAY_S, rss_kib(d.pid)))
            time.sleep(min(2.0, real_s / 200))
        stop_s = assert_clean_exit(d, timeout=15)
        end_ms = v.value("SELECT max(ts_ms) FROM readings")
    finally:
        d.stop()
        emu.stop()

    conn = sqlite3.connect(db)
    conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    counts = {
        t: conn.execute(f"SELECT count(*) FROM {t}").fetchone()[0]
        for t in ("readings", "transitions", "commands", "events")
    }
    invalid = conn.execute("SELECT count(*) FROM readings WHERE valid = 0").fetchone()[0]
    alarms = conn.execute("SELECT count(*) FROM events WHERE level = 'alarm'").fetchone()[0]
    conn.close()
    size = db.stat().st_size
    days = per_day(db, t0_ms, DAY_S / k * 1000, int(args.days))
    warm = [(x, y) for x, y in samples if x >= 1.0] or samples  # after the first day
    growth = warm[-1][1] - warm[0][1]
    out = {
        "simulated_days": args.days,
        "scale": k,
        "real_seconds": round(real_s, 1),
        "timing": {k_: round(v_, 6) for k_, v_ in timing.items()},
        "faults": args.faults,
        "polls": counts["readings"],
        "invalid_polls_pct": round(100 * invalid / max(1, counts["readings"]), 2),
        "rss_kib": {
            "first_sample": samples[0][1],
            "after_day_1": warm[0][1],
            "end": samples[-1][1],
            "max": max(y for _, y in samples),
            "growth_after_day_1": growth,
            "growth_after_day_1_pct": round(100 * growth / warm[0][1], 2),
            "slope_per_simulated_day": round(slope(warm), 1),
        },
        "db": {
            "bytes": size,
            "bytes_per_reading": round(size / max(1, counts["readings"]), 1),
            "rows": counts,
        },
        "alarms": alarms,
        "per_day": days,
        "stuck": any(day["throttles"] == 0 or day["back_to_normal"] == 0 for day in days),
        "longest_outside_normal_simulated_h": round(
            longest_away_from_normal(db, end_ms) / 1000 * k / 3600, 2
        ),
        "sigterm_exit_s": round(stop_s, 2),
        "log": str(db),
    }
    print(json.dumps(out, indent=2))
    return 1 if out["stuck"] else 0


if __name__ == "__main__":
    sys.exit(main())
