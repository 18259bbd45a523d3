"""Run every benchmark and print ONE JSON document (progress goes to stderr).

    python -m benchmarks                  # everything, about 6 minutes on 2 cores
    python -m benchmarks --quick          # shorter fleet run, 1 M-row window log
    python -m benchmarks --only window,growth --workdir /tmp/tempctl-bench

Targets (issue 8) are checked in "targets": each has the measured value and "met".
Linux only (CPU and memory come from /proc). Nothing is written into the repository:
logs live in a temporary directory (or --workdir) and are removed afterwards.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sqlite3
import sys
import time

from . import fleet_bench, poll_bench, procs, window_bench

PARTS = ("fleet", "poll", "window", "growth")


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__.split("\n")[0])
    p.add_argument(
        "--only", default=",".join(PARTS), help=f"comma-separated parts to run: {', '.join(PARTS)}"
    )
    p.add_argument(
        "--quick",
        action="store_true",
        help="fleet for 60 s, one-device daemon for 20 s, window at 1 M rows",
    )
    p.add_argument("--fleet-devices", type=int, default=250)
    p.add_argument("--fleet-interval", type=float, default=5.0)
    p.add_argument("--fleet-seconds", type=float, default=None)
    p.add_argument("--rows", type=int, default=None, help="readings in the big window log")
    p.add_argument(
        "--workdir", default=None, help="keep the window logs here and reuse them next time"
    )
    args = p.parse_args(argv)
    unknown = set(args.only.split(",")) - set(PARTS)
    if unknown:
        p.error(f"unknown part(s): {', '.join(sorted(unknown))}")
    return args


def target(name: str, value, limit, ok) -> dict:
    return {
        "target": name,
        "value": value,
        "limit": limit,
        "met": None if value is None else bool(ok(value, limit)),
    }


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    parts = args.only.split(",")
    fleet_s = args.fleet_seconds or (60.0 if args.quick else 150.0)
    rows = args.rows or (1_000_000 if args.quick else 10_000_000)
    started = time.monotonic()
    doc: dict = {
        "machine": {
            "python": platform.python_version(),
            "sqlite": sqlite3.sqlite_version,
            "platform": platform.platform(),
            "cpus": os.cpu_count(),
            "cpus_usable": len(os.sched_getaffinity(0)),
            "memory_gb": round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30, 1),
        }
    }
    if "fleet" in parts:
        doc["fleet"] = fleet_bench.run(args.fleet_devices, args.fleet_interval, fleet_s)
    if "poll" in parts:
        doc["one_device"] = poll_bench.run(seconds=20.0 if args.quick else 40.0)
    if "window" in parts:
        doc["window"] = window_bench.window((100_000, rows), workdir=args.workdir)
    if "growth" in parts:
        procs.log("growth: one device-day at 30 s and at 5 s")
        doc["growth"] = window_bench.growth()
    doc["targets"] = targets(doc, rows)
    doc["elapsed_s"] = round(time.monotonic() - started, 1)
    json.dump(doc, sys.stdout, indent=2)
    sys.stdout.write("\n")


def targets(doc: dict, rows: int) -> list[dict]:
    le, eq = (lambda v, lim: v <= lim), (lambda v, lim: v == lim)
    out = []
    if "fleet" in doc:
        f = doc["fleet"]
        out.append(
            target(
                f"fleet {f['devices']} devices: p99 poll lateness < 1 s",
                f["lateness_p99_s"],
                1.0,
                lambda v, lim: v < lim,
            )
        )
        out.append(target("fleet: missed polls", f["missed_polls"], 0, eq))
    if "one_device" in doc:
        d = doc["one_device"]
        out.append(
            target(
                "CPU per poll, decision + insert (p99 ms)",
                d["decision_and_insert"]["cpu_ms_per_poll_p99"],
                2.0,
                le,
            )
        )
        out.append(
            target("one-device daemon RSS (MB)", d["daemon_process"]["peak_rss_mb"], 45.0, le)
        )
    if "window" in doc:
        w = doc["window"]
        big = max(int(k.rsplit("_", 1)[1]) for k in w if k.startswith("latest_ms_p99_"))
        value = w[f"latest_ms_p99_{big}"] if big >= 10_000_000 else None
        out.append(target("stable-window query at 10 M readings (p99 ms)", value, 2.0, le))
        out.append(
            target(
                f"window time at {big:,} / at 100,000 (median)", w["ratio_latest_median"], 2.0, le
            )
        )
    return out


if __name__ == "__main__":
    main()
