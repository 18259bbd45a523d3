"""Offline tools at scale (issue 14): fit, replay --set, replay --check, tune, simulate.

Every log is built with `tempctl simulate` (5 s polls, two policies: tempctl and the
seed script, so one device is restart-heavy), then each command runs as a user runs it
(a subprocess: wall time, and peak RSS from wait4) next to a raw SQLite scan of the
same rows in the same run. Prints ONE JSON document; progress and the counterfactual
table (markdown, for the README) go to stderr.

    python benchmarks/offline_bench.py [--long-days 15] [--repeat 3] [--workdir DIR]
    python benchmarks/offline_bench.py --quick      # no 30 device-day log, no tune

Targets: fit one device-day <= 1 s (also the restart-heavy one), 7 days <= 8x one day;
replay --set one device-day <= 3 s and linear in days; replay --check >= 300,000
readings/s; tune 50 settings on 7 days, 2 jobs <= 60 s; peak RSS of fit or replay on
30 device-days <= 200 MB; the counterfactual within its ground-truth targets (truth.py).
`tempctl simulate` one policy-day (<= 1 s) is measured, not owned here.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sqlite3
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tempctl.config import Settings  # noqa: E402
from tempctl.offline.counterfactual import counterfactual  # noqa: E402
from tempctl.offline.fit import fit_device  # noqa: E402
from tempctl.offline.replay import check  # noqa: E402
from tempctl.offline.truth import cases, compare, markdown, record  # noqa: E402
from tempctl.sim.scenario import load_scenario  # noqa: E402

DEVICES = ("sim-tempctl", "sim-seed")
TUNE_GRID = ("TEMP_THRESHOLD=60:64.5:0.5", "STABLE_TIMEFRAME=0.25,0.5,0.75,1,1.5")  # 50


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def run(args: list[str]) -> dict:
    """One `tempctl ...` subprocess: wall seconds and peak RSS (MB)."""
    started = time.perf_counter()
    proc = subprocess.Popen(
        [sys.executable, "-m", "tempctl", *args],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - started
    err = proc.stderr.read().decode(errors="replace")
    proc.stderr.close()
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode not in (0, 1):
        raise RuntimeError(f"tempctl {' '.join(args)} exited {proc.returncode}: {err[-500:]}")
    return {"s": round(wall, 3), "rss_mb": round(usage.ru_maxrss / 1024, 1)}


def best(args: list[str], repeat: int) -> dict:
    runs = [run(args) for _ in range(repeat)]
    return {
        "s": min(r["s"] for r in runs),
        "all_s": [r["s"] for r in runs],
        "rss_mb": max(r["rss_mb"] for r in runs),
    }


def scan(db: Path, device: str, repeat: int) -> dict:
    """Every column of the device's rows, fetched in id order: the floor for any reader."""
    conn = sqlite3.connect(db)
    times = []
    for _ in range(repeat):
        started = time.perf_counter()
        n = sum(
            1
            for _ in conn.execute("SELECT * FROM readings WHERE device = ? ORDER BY id", (device,))
        )
        times.append(time.perf_counter() - started)
    conn.close()
    return {"rows": n, "s": round(min(times), 4)}


def build(workdir: Path, name: str, scenario: str, days: float | None) -> dict:
    db = workdir / f"{name}.db"
    db.unlink(missing_ok=True)
    args = ["simulate", "--scenario", scenario, "--policy", "tempctl", "--policy", "seed"]
    args += ["--db", str(db)] + (["--days", f"{days:g}"] if days else [])
    log(f"building {name}: tempctl {' '.join(args)}")
    out = run(args)
    conn = sqlite3.connect(db)
    rows = dict(conn.execute("SELECT device, count(*) FROM readings GROUP BY device"))
    restarts = dict(
        conn.execute("SELECT device, count(*) FROM commands WHERE kind = 'restart' GROUP BY device")
    )
    conn.close()
    return {"db": db, "days": days or 1.0, "build": out, "rows": rows, "restarts": restarts}


def in_process(db: Path, device: str, repeat: int) -> dict:
    """fit and replay --set without the interpreter's start-up (best of ``repeat``)."""
    conn = sqlite3.connect(db)
    fit_s, set_s = [], []
    for _ in range(repeat):
        started = time.perf_counter()
        fit_device(conn, device)
        fit_s.append(time.perf_counter() - started)
        started = time.perf_counter()
        counterfactual(conn, {"temp_threshold": 60.0}, device=device)
        set_s.append(time.perf_counter() - started)
    conn.close()
    return {"fit_s": round(min(fit_s), 3), "replay_set_s": round(min(set_s), 3)}


def check_rate(db: Path, device: str, repeat: int) -> dict:
    conn = sqlite3.connect(db)
    times, result = [], None
    for _ in range(repeat):
        started = time.perf_counter()
        result = check(conn, device=device)
        times.append(time.perf_counter() - started)
    conn.close()
    return {
        "readings": result.readings,
        "identical": result.ok,
        "s": round(min(times), 3),
        "readings_per_s": round(result.readings / min(times)),
    }


def target(value, limit, op: str = "<=") -> dict:
    met = value is not None and (value <= limit if op == "<=" else value >= limit)
    return {"value": value, "target": f"{op} {limit}", "met": bool(met)}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--long-days", type=float, default=15.0, help="days of the RSS log (x2)")
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--workdir", help="keep the logs here (default: a temporary directory)")
    ap.add_argument("--quick", action="store_true", help="skip the long log and tune")
    args = ap.parse_args(argv)
    tmp = None
    if args.workdir:
        workdir = Path(args.workdir)
        workdir.mkdir(parents=True, exist_ok=True)
    else:
        tmp = tempfile.TemporaryDirectory()
        workdir = Path(tmp.name)
    rep = args.repeat
    out: dict = {"logs": {}, "fit": {}, "replay_set": {}, "scan": {}, "in_process": {}}
    out["targets"] = {}
    out["cli_startup_s"] = best(["--version"], rep)["s"]  # part of every CLI figure
    logs = {
        "heatwave_1d": build(workdir, "heatwave_1d", "heatwave", None),
        "daynight_1d": build(workdir, "daynight_1d", "daynight", 1),
        "daynight_7d": build(workdir, "daynight_7d", "daynight", 7),
    }
    if not args.quick:
        logs["daynight_long"] = build(workdir, "daynight_long", "daynight", args.long_days)
    for name, lg in logs.items():
        out["logs"][name] = {k: v for k, v in lg.items() if k != "db"}
    # one policy-day of simulate, no log (another helper's target; measured here)
    log("simulate: one policy-day")
    sim = best(["simulate", "--scenario", "heatwave", "--policy", "tempctl"], rep)
    out["simulate_one_policy_day"] = sim

    for name in ("heatwave_1d", "daynight_1d", "daynight_7d"):
        lg = logs[name]
        for dev in DEVICES:
            key = f"{name}/{dev}"
            log(f"fit and replay --set: {key}")
            out["scan"][key] = scan(lg["db"], dev, rep)
            f = best(["fit", str(lg["db"]), "--device", dev, "--json"], rep)
            f["vs_scan"] = round(f["s"] / max(out["scan"][key]["s"], 1e-6), 1)
            f["per_day_s"] = round(f["s"] / lg["days"], 3)
            out["fit"][key] = f
            r = best(
                ["replay", str(lg["db"]), "--device", dev, "--set", "TEMP_THRESHOLD=60", "--json"],
                rep,
            )
            r["vs_scan"] = round(r["s"] / max(out["scan"][key]["s"], 1e-6), 1)
            r["per_day_s"] = round(r["s"] / lg["days"], 3)
            out["replay_set"][key] = r
            out["in_process"][key] = in_process(lg["db"], dev, rep)
    log("replay --check")
    out["replay_check"] = check_rate(logs["daynight_7d"]["db"], "sim-tempctl", rep)
    out["replay_check"]["scan_s"] = out["scan"]["daynight_7d/sim-tempctl"]["s"]
    out["replay_check_cli"] = best(["replay", str(logs["daynight_7d"]["db"]), "--json"], rep)

    if not args.quick:
        db = str(logs["daynight_long"]["db"])
        log("peak RSS on the long log")
        out["rss_long"] = {
            "device_days": round(2 * args.long_days, 1),
            "fit": run(["fit", db, "--json"]),
            "replay_set": run(["replay", db, "--set", "TEMP_THRESHOLD=60", "--json"]),
            "replay_check": run(["replay", db, "--json"]),
        }
        log("tune: 50 settings on 7 days, 2 jobs")
        grid = [a for g in TUNE_GRID for a in ("--grid", g)]
        out["tune"] = run(
            ["tune", str(logs["daynight_7d"]["db"]), "--device", "sim-tempctl", *grid]
            + ["--jobs", "2", "--json"]
        )

    log("counterfactual against ground truth (heatwave, 5 cases)")
    base = Settings(check_interval=5.0, min_frequency=300.0)
    scn = load_scenario("heatwave")
    rec = record(scn, base, workdir / "truth-recorded.db")
    truth = [compare(scn, base, c, workdir, rec) for c in cases(base)]
    out["counterfactual"] = truth
    out["counterfactual_table"] = markdown(truth, base)
    log(out["counterfactual_table"])
    log("the same, the real run with other noise (seed 1)")
    other = [compare(scn, base, c, workdir, rec, real_seed=1) for c in cases(base)]
    out["counterfactual_other_noise"] = other
    out["counterfactual_other_noise_table"] = markdown(other, base)
    log(out["counterfactual_other_noise_table"])

    t = out["targets"]
    fit1 = [out["fit"][f"{n}/{d}"]["s"] for n in ("heatwave_1d", "daynight_1d") for d in DEVICES]
    t["fit_one_device_day_s"] = target(max(fit1), 1.0)
    t["fit_7d_over_1d"] = target(
        round(
            max(
                out["fit"][f"daynight_7d/{d}"]["s"] / out["fit"][f"daynight_1d/{d}"]["s"]
                for d in DEVICES
            ),
            2,
        ),
        8.0,
    )
    set1 = [
        out["replay_set"][f"{n}/{d}"]["s"] for n in ("heatwave_1d", "daynight_1d") for d in DEVICES
    ]
    t["replay_set_one_device_day_s"] = target(max(set1), 3.0)
    t["replay_set_7d_over_1d"] = target(
        round(
            max(
                out["replay_set"][f"daynight_7d/{d}"]["s"]
                / out["replay_set"][f"daynight_1d/{d}"]["s"]
                for d in DEVICES
            ),
            2,
        ),
        8.0,
    )
    t["replay_check_readings_per_s"] = target(out["replay_check"]["readings_per_s"], 300_000, ">=")
    t["simulate_one_policy_day_s"] = target(sim["s"], 1.0)
    if "tune" in out:
        t["tune_50_on_7d_s"] = target(out["tune"]["s"], 60.0)
        rss = out["rss_long"]
        t["peak_rss_30_device_days_mb"] = target(
            max(rss["fit"]["rss_mb"], rss["replay_set"]["rss_mb"]), 200.0
        )
    t["counterfactual_within_targets"] = target(sum(not r["ok"] for r in truth), 0)
    out["pass"] = all(v["met"] for v in t.values())
    out["env"] = {
        "python": platform.python_version(),
        "sqlite": sqlite3.sqlite_version,
        "cpus": os.cpu_count(),
        "loadavg": [round(x, 2) for x in os.getloadavg()],
    }
    print(json.dumps(out, indent=2, default=str))
    if tmp is not None:
        tmp.cleanup()
    return 0


if __name__ == "__main__":
    sys.exit(main())
