"""Issue 21.4: what TEMPCTL_VOLTAGE=auto buys, against two oracles, on the weathers.

    python benchmarks/voltage_quality.py [--seeds 0 1] [--scenario heatwave ...] [--json]
    python benchmarks/voltage_quality.py --panel [--jobs 2] [--json]

Per weather and seed, tempctl runs the simulated Gamma twice (voltage off, voltage auto;
the same chip, whose V_min(f) is sim/stability.py's with the seed's offset). Reported:

* hash (GH·h), over the fixed-voltage oracle (the highest frequency whose true steady die
  holds the threshold at the scenario's voltage, sim/simulate.py) and over the (f, V) oracle:
  the same at the chip's true V_min(f) + the governor's margin (within the window and
  TEMPCTL_MAX_VOLTAGE), its hash less the base error share;
* J/TH (reported power over reported hashrate, all readings), mean errorPercentage, the
  worst hourly mean (clock hours with at least half an hour of readings), voltage changes
  per day, the hottest true die after the first settle, firmware trips, minutes outside
  [TEMPCTL_MIN_VOLTAGE, TEMPCTL_MAX_VOLTAGE];
* ``--goal efficiency`` in a cool room (constant, 28 °C): J/TH against voltage off.

``--panel``: the governor (hashrate goal) against voltage off on each plant of issue 20's
panel (replay/scenarios/panel/, control_panel.py's weathers ``steady`` and ``heatwave``, the
median sensor noise 0.3 °C, seeds 0 and 1, 30 s polls, default settings). A plant whose ASIC
the governor does not know keeps voltage off (reported, not run).

Prints a markdown table (or JSON). No network: simulation only.
"""

from __future__ import annotations

import argparse
import json
import os
import sqlite3
import sys
import tempfile
import time
import tomllib
from concurrent.futures import ProcessPoolExecutor
from functools import lru_cache
from pathlib import Path

from tempctl.config import Settings
from tempctl.core.voltage import GOVERNED_ASICS, MARGINS_MV, WINDOW_MV
from tempctl.sim.firmware import plant_params
from tempctl.sim.plant import steady_die
from tempctl.sim.scenario import load_scenario, parse_scenario
from tempctl.sim.simulate import simulate
from tempctl.sim.stability import BASE_ERROR, Stability

WEATHERS = ("heatwave", "closet", "daynight", "steady_31_5", "constant")
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))  # control_panel, beside this
import control_panel  # noqa: E402

GRID_S = 60.0
POLL_S = 30.0


def fv_oracle(scenario, settings: Settings, seed: int, hours: float) -> float:
    """GH·h of the best (f, V) at every minute: V = true V_min(f) + margin, clamped. The fan
    and the sensor that must hold the threshold as simulate.oracle has them (autofan: 100 %
    when temptarget is at or below the threshold, else the minimum duty; a hotter temp2)."""
    params = scenario.plant_params(plant_params(scenario.asic))
    chip = Stability(params.asic, seed, params.chips)
    margin = MARGINS_MV[settings.goal]
    lo, hi = max(WINDOW_MV[0], settings.min_voltage), min(WINDOW_MV[1], settings.max_voltage)
    if scenario.fan_mode == "fixed":
        fan = scenario.fan_pct
    else:
        fan = 100.0 if scenario.temptarget_c <= settings.temp_threshold else scenario.fan_pct
    hot = max(0.0, params.temp2_offset_c) if params.sensors == 2 else 0.0
    limit = settings.temp_threshold - hot

    def volts(f: float) -> float:
        return min(hi, max(lo, chip.v_min(f) + margin))

    @lru_cache(maxsize=4096)
    def best(ambient: float) -> float:
        def ok(f: float) -> bool:
            v = volts(f)
            return v >= chip.v_min(f) and steady_die(params, f, v, ambient, fan) <= limit

        top = settings.max_frequency
        if ok(top):
            return top
        a, b = 50.0, top
        if not ok(a):
            return a
        while b - a > 0.05:
            m = (a + b) / 2
            a, b = (m, b) if ok(m) else (a, m)
        return a

    per_mhz = params.small_cores * params.chips / 1000.0 * params.hash_efficiency
    total, t, end = 0.0, 0.0, hours * 3600.0
    while t < end - 1e-9:
        dt = min(GRID_S, end - t)
        t += dt
        total += best(round(scenario.ambient(t), 2)) * per_mhz * (1 - BASE_ERROR) * dt
    return total / 3600.0


def from_log(db: Path, settings: Settings, days: float, poll_s: float = POLL_S) -> dict:
    conn = sqlite3.connect(db)
    power, hashrate = conn.execute(
        "SELECT sum(power), sum(hashrate) FROM readings WHERE valid = 1 AND hashrate > 0"
    ).fetchone()
    (mean_err,) = conn.execute("SELECT avg(error_pct) FROM readings").fetchone()
    hourly = conn.execute(  # whole hours: a last hour of one reading is one sample, not an hour
        "SELECT avg(error_pct) FROM readings GROUP BY ts_ms / 3600000 HAVING count(*) >= ?",
        (int(1800 / poll_s),),
    ).fetchall()
    (changes,) = conn.execute("SELECT count(*) FROM commands WHERE kind = 'set_fields'").fetchone()
    (outside,) = conn.execute(
        "SELECT count(*) FROM readings WHERE core_voltage NOT BETWEEN ? AND ?",
        (settings.min_voltage, settings.max_voltage),
    ).fetchone()
    lo_v, hi_v = conn.execute(
        "SELECT min(core_voltage), max(core_voltage) FROM readings"
    ).fetchone()
    conn.close()
    worst = max((h for (h,) in hourly if h is not None), default=None)
    return {
        "j_per_th": round(power / hashrate * 1000.0, 2) if hashrate else None,
        "mean_error_pct": None if mean_err is None else round(mean_err, 3),
        "worst_hour_error_pct": None if worst is None else round(worst, 3),
        "voltage_changes_per_day": round(changes / days, 1),
        "readings_outside_voltage_bounds": outside,
        "voltage_range_mv": [lo_v, hi_v],
    }


def one(
    name: str, seed: int, voltage: str, goal: str, tmp: Path, poll_s: float, max_mhz: float
) -> dict:
    settings = Settings(voltage=voltage, goal=goal, max_frequency=max_mhz)
    return measure(load_scenario(name), name, seed, settings, tmp, poll_s)


def measure(scenario, name: str, seed: int, settings: Settings, tmp: Path, poll_s: float) -> dict:
    voltage, goal = settings.voltage, settings.goal
    db = tmp / f"{name}-{seed}-{voltage}-{goal}.db"
    report = simulate(scenario, ["tempctl"], settings, poll_s=poll_s, seed=seed, db=str(db))
    m = report["policies"]["tempctl"]
    hours = m["hours"]
    fv = fv_oracle(scenario, settings, seed, hours)
    out = {
        "weather": name,
        "seed": seed,
        "voltage": voltage,
        "goal": goal,
        "gh_hours": m["gh_hours"],
        "vs_fixed_oracle": round(m["gh_hours"] / report["oracle"]["gh_hours"], 3),
        "vs_fv_oracle": round(m["gh_hours"] / fv, 3),
        "fv_over_fixed_oracle": round(fv / report["oracle"]["gh_hours"], 3),
        "max_die_after_settle": m["max_temp_after_settle"],
        "firmware_trips": m["firmware_trips"],
        "frequency_changes_per_day": round(m["frequency_changes"] * 24 / hours, 1),
    }
    out.update(from_log(db, settings, hours / 24.0, poll_s))
    return out


COLUMNS = (
    "weather",
    "seed",
    "voltage",
    "goal",
    "gh_hours",
    "vs_fixed_oracle",
    "vs_fv_oracle",
    "fv_over_fixed_oracle",
    "j_per_th",
    "mean_error_pct",
    "worst_hour_error_pct",
    "voltage_changes_per_day",
    "max_die_after_settle",
    "firmware_trips",
    "readings_outside_voltage_bounds",
)


def markdown(rows: list[dict]) -> str:
    lines = ["| " + " | ".join(COLUMNS) + " |", "|" + "---|" * len(COLUMNS)]
    for r in rows:
        lines.append("| " + " | ".join("" if r[c] is None else str(r[c]) for c in COLUMNS) + " |")
    return "\n".join(lines)


# -- the panel of issue 20 -------------------------------------------------------------------

PANEL_WEATHERS = ("steady", "heatwave", "daycycle")
PANEL_NOISE_C = 0.3  # the median real sensor (docs/sensor.md)
PANEL_SEEDS = (0, 1)


def panel_scenario(plant: str, weather: str):
    data = tomllib.loads((control_panel.panel_dir() / f"{plant}.toml").read_text("utf-8"))
    table = control_panel.weather(data, weather)
    table["plant"]["noise_c"] = PANEL_NOISE_C
    return parse_scenario(table, name=f"{plant}-{weather}")


def panel_job(job: tuple[str, str, int, str]) -> dict:
    plant, weather, seed, voltage = job
    scenario = panel_scenario(plant, weather)
    settings = Settings(voltage=voltage, goal="hashrate")
    with tempfile.TemporaryDirectory() as tmp:
        out = measure(scenario, weather, seed, settings, Path(tmp), POLL_S)
    return dict(out, plant=plant, asic=scenario.asic)


def panel(jobs: int, plants: list[str] | None = None) -> dict:
    started = time.monotonic()
    names = plants or control_panel.plants()
    skipped = {}
    work = []
    for plant in names:
        asic = panel_scenario(plant, "steady").asic
        modes = ("off", "auto")
        if asic.upper() not in GOVERNED_ASICS:  # voltage.supported: off, with a note
            skipped[plant] = f"unknown ASIC {asic}: voltage control stays off"
            modes = ("off",)
        work += [(plant, w, s, v) for w in PANEL_WEATHERS for s in PANEL_SEEDS for v in modes]
    if jobs > 1:
        with ProcessPoolExecutor(max_workers=jobs) as pool:
            runs = list(pool.map(panel_job, work, chunksize=1))
    else:
        runs = [panel_job(w) for w in work]
    return {
        "runs": runs,
        "skipped": skipped,
        "elapsed_s": round(time.monotonic() - started, 1),
        "jobs": jobs,
        "load_average": round(os.getloadavg()[0], 1),
    }


PANEL_HEAD = (
    "plant",
    "weather",
    "seed",
    "hash / fixed-V oracle (off → auto)",
    "hash / (f,V) oracle (off → auto)",
    "mean errors % (auto)",
    "V changes/day (auto)",
    "V range mV (auto)",
    "max true die after settle °C (off → auto)",
    "trips (off, auto)",
)


def panel_markdown(doc: dict) -> str:
    by = {(r["plant"], r["weather"], r["seed"], r["voltage"]): r for r in doc["runs"]}
    lines = ["| " + " | ".join(PANEL_HEAD) + " |", "|" + "---|" * len(PANEL_HEAD)]
    for plant, weather, seed, mode in sorted(by):
        if mode != "off":
            continue
        off, auto = by[(plant, weather, seed, "off")], by.get((plant, weather, seed, "auto"))
        if auto is None:
            cells = [doc["skipped"].get(plant, "not run")] * 5
            lines.append(
                f"| `{plant}` | {weather} | {seed} | {off['vs_fixed_oracle']} | "
                f"{off['vs_fv_oracle']} | " + " | ".join(cells[:3]) + " | "
                f"{off['max_die_after_settle']} | {off['firmware_trips']} |"
            )
            continue
        lo, hi = auto["voltage_range_mv"]
        lines.append(
            f"| `{plant}` | {weather} | {seed} | "
            f"{off['vs_fixed_oracle']} → {auto['vs_fixed_oracle']} | "
            f"{off['vs_fv_oracle']} → {auto['vs_fv_oracle']} | {auto['mean_error_pct']} | "
            f"{auto['voltage_changes_per_day']} | {lo}-{hi} | "
            f"{off['max_die_after_settle']} → {auto['max_die_after_settle']} | "
            f"{off['firmware_trips']}, {auto['firmware_trips']} |"
        )
    lines.append("")
    lines.append(
        f"{len(doc['runs'])} runs (noise {PANEL_NOISE_C:g} °C, seeds "
        f"{' '.join(map(str, PANEL_SEEDS))}, {POLL_S:g} s polls), {doc['elapsed_s']:g} s "
        f"with {doc['jobs']} worker(s) (load average {doc['load_average']:g})."
    )
    for plant, why in doc["skipped"].items():
        lines.append(f"`{plant}`: {why}.")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--scenario", action="append", help="weathers (default: all five)")
    ap.add_argument("--seeds", type=int, nargs="+", default=[0])
    ap.add_argument("--poll", type=float, default=POLL_S, help="CHECK_INTERVAL in simulation")
    ap.add_argument("--json", action="store_true")
    ap.add_argument("--panel", action="store_true", help="the panel plants instead")
    ap.add_argument("--plant", action="append", help="with --panel: only these plants")
    ap.add_argument("--jobs", type=int, default=min(2, os.cpu_count() or 1))
    ap.add_argument(
        "--max-frequency",
        type=float,
        default=Settings().max_frequency,
        help="MAX_FREQUENCY on both sides (the weathers; the default caps the cool hours)",
    )
    args = ap.parse_args(argv)
    if args.panel:
        doc = panel(args.jobs, args.plant)
        print(json.dumps(doc, indent=1) if args.json else panel_markdown(doc))
        return 0
    rows, top = [], args.max_frequency
    with tempfile.TemporaryDirectory() as tmp:
        for name in args.scenario or WEATHERS:
            for seed in args.seeds:
                for voltage, goal in (("off", "hashrate"), ("auto", "hashrate")):
                    rows.append(one(name, seed, voltage, goal, Path(tmp), args.poll, top))
                if name == "constant":
                    rows.append(one(name, seed, "auto", "efficiency", Path(tmp), args.poll, top))
    print(json.dumps(rows, indent=1) if args.json else markdown(rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
