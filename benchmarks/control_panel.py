"""The panel of issue 20: every weather on every panel plant and sensor noise, over 3 seeds.

Run through ``python benchmarks/control_quality.py --panel [--markdown]``.

Plants: the scenarios in replay/scenarios/panel/ (each a [device], [fan] and [plant] around a
room of its own). Noises: 0.15, 0.3 and 0.45 °C (``plant.noise_c``; the other sensor
constants stay the calibration's, docs/sensor.md). Weathers, relative to the plant's room R
the changing ones shorter than a day so the whole panel runs in minutes on 2 cores:

* ``steady``  - R for 24 h (changes a day are counted over a whole day, as issue 12 did);
* ``heatwave``- R−3 for 1 h, up to R+5 by hour 4, held to hour 6, down to R−1 by hour 9, 10 h;
* ``daycycle``- R−2 → R+2 → R−2 over 8 h, with 0.2 °C drafts;
* ``cooling`` - R for 5 h, a third of the cooling lost at hour 1.5 ([plant.cooling_loss]).

Each run is the daemon's controller (``tempctl`` policy, default settings, 30 s polls) on the
emulated firmware (simulate.run_policy); temperatures are the plant's true die (the hotter
sensor's true value on a two-sensor board whose temp2 runs hotter) every 10 s. The oracle
(simulate.oracle) is on the same plant, its fan rule and, after the loss, the plant left.

Targets (issue 20), per run: hash >= 0.97 of the oracle; <= 24 frequency changes a day in the
steady room; <= 1 % of the time above the threshold and never more than 0.5 °C above it after
the first settle; 0 firmware trips that were not injected. The cooling-loss runs are judged
by the loss targets instead: <= 1 trip, no trip loop (two trips within an hour), and back
within 0.95 of the new oracle within 1 h (mean frequency from an hour after the loss to the
end / the oracle's over the same time), and the law's "cooling got worse" alarm within an
hour of the loss. In every other weather such an alarm is false: at most 0 of them.
"""

from __future__ import annotations

import os
import statistics
import time
import tomllib
from concurrent.futures import ProcessPoolExecutor
from dataclasses import replace

from tabulate import tabulate

from tempctl.config import Settings, validate
from tempctl.resources import scenarios_dir
from tempctl.sim.policies import NullSink, make_policy
from tempctl.sim.scenario import parse_scenario
from tempctl.sim.simulate import SIM_EPOCH_MS, Trace, grid_step, oracle, run_policy

NOISES = (0.15, 0.3, 0.45)
SEEDS = (0, 1, 2)
POLL_S = 30.0
WEATHERS = ("steady", "heatwave", "daycycle", "cooling")  # the longest first
LOSS_AT_H = 1.5
LOSS_FRACTION = 1.0 / 3.0
HASH_MIN = 0.97
CHANGES_MAX = 24.0
PCT_ABOVE_MAX = 1.0
OVER_MAX_C = 0.5
RECOVERY_MIN = 0.95


def panel_dir():
    return scenarios_dir() / "panel"


def plants() -> list[str]:
    return sorted(p.stem for p in panel_dir().glob("*.toml"))


def weather(data: dict, name: str) -> dict:
    """The plant's scenario table with this weather's room, duration and failure."""
    room = float(data["ambient"][0][1])
    out = {k: v for k, v in data.items()}
    out["plant"] = dict(data.get("plant", {}))
    out["ambient_noise_c"] = 0.0
    out["repeat"] = False
    if name == "steady":
        out.update(duration_h=24, ambient=[[0, room]])
    elif name == "heatwave":
        pts = [[0, -3], [1, -3], [4, 5], [6, 5], [9, -1], [10, -1]]
        out.update(duration_h=10, ambient=[[h, room + d] for h, d in pts])
    elif name == "daycycle":
        pts = [[0, -2], [4, 2], [8, -2]]
        out.update(duration_h=8, ambient=[[h, room + d] for h, d in pts], ambient_noise_c=0.2)
    elif name == "cooling":
        out.update(duration_h=5, ambient=[[0, room]])
        out["plant"]["cooling_loss"] = {"at_h": LOSS_AT_H, "fraction": LOSS_FRACTION}
    else:
        raise ValueError(f"unknown weather {name!r}")
    return out


class AlarmSink(NullSink):
    """Keeps the hours of the law's "cooling got worse" alarms (core/cooling.py)."""

    def __init__(self):
        self.cooling_alarms: list[float] = []

    def decision(self, device, ts_ms, d):
        for e in d.events:
            if e.kind == "alarm" and e.message.startswith("cooling got worse"):
                self.cooling_alarms.append(round((ts_ms - SIM_EPOCH_MS) / 3_600_000.0, 3))
        return super().decision(device, ts_ms, d)


def settings() -> Settings:
    return validate(replace(Settings(), law="model", check_interval=POLL_S, devices=()))


def run_one(job: tuple[str, str, float, int]) -> dict:
    """One plant, weather, noise and seed: the law's figures against the oracle's."""
    plant, name, noise, seed = job
    t0 = time.process_time()
    data = tomllib.loads((panel_dir() / f"{plant}.toml").read_text(encoding="utf-8"))
    table = weather(data, name)
    table["plant"]["noise_c"] = noise
    scenario = parse_scenario(table, name=f"{plant}-{name}")
    cfg = settings()
    orc = oracle(scenario, cfg, scenario.duration_s)
    trace = Trace()
    sink = AlarmSink()
    tally, fw, _ = run_policy(
        scenario,
        make_policy("tempctl", cfg, sink),
        threshold=cfg.temp_threshold,
        duration_s=scenario.duration_s,
        seed=seed,
        epoch_ms=SIM_EPOCH_MS,
        grid_s=grid_step(POLL_S),
        trace=trace,
        settle_s=cfg.settle,
    )
    r = tally.result(oracle_gh_hours=orc.gh_hours)
    peak = r["max_temp_after_settle"]
    out = {
        "plant": plant,
        "weather": name,
        "noise_c": noise,
        "seed": seed,
        "oracle_mhz": round(orc.mean_frequency, 1),
        "hash_ratio": r["hash_ratio"],
        "mean_mhz": r["mean_frequency"],
        "changes_per_day": r["changes_per_day"],
        "pct_time_above": r["pct_time_above"],
        "trips": fw.overheat_trips,
        "trip_hours": [round(t / 3600.0, 3) for t in fw.trip_times],
        "cooling_alarm_hours": sink.cooling_alarms,
    }
    # autofan with temptarget at or above the threshold: its PID holds the die there whatever
    # the frequency, so no law can meet the two temperature targets (README); they are excluded
    out["fan_holds_above"] = (
        scenario.fan_mode == "auto" and scenario.temptarget_c >= cfg.temp_threshold
    )
    out["over_after_settle_c"] = (
        None if peak is None else round(max(0.0, peak - cfg.temp_threshold), 3)
    )
    if name == "cooling":
        start = LOSS_AT_H + 1.0
        law = [f for h, f in zip(trace.hours, trace.mhz) if h > start]
        best = [f for h, f in zip(orc.hours, orc.mhz) if h > start]
        out["new_oracle_mhz"] = round(statistics.fmean(best), 1)
        out["recovery"] = round(statistics.fmean(law) / statistics.fmean(best), 4)
        hours = out["trip_hours"]
        out["trip_loop"] = any(b - a <= 1.0 for a, b in zip(hours, hours[1:]))
    out["cpu_s"] = round(time.process_time() - t0, 2)
    return out


def judge(run: dict) -> list[dict]:
    """The issue-20 targets for one run."""

    def check(name, value, limit, ok):
        return {"target": name, "value": value, "limit": limit, "met": bool(ok(value, limit))}

    le, ge = (lambda v, lim: v <= lim), (lambda v, lim: v >= lim)
    if run["weather"] == "cooling":
        return [
            check("cooling: trips", run["trips"], 1, le),
            check("cooling: no trip loop", int(run["trip_loop"]), 0, le),
            check("cooling: back within 1 h (/ new oracle)", run["recovery"], RECOVERY_MIN, ge),
            check("cooling: alarm within 1 h (hours after the loss)", _alarm_after(run), 1.0, le),
        ]
    out = [check("hash / oracle", run["hash_ratio"], HASH_MIN, ge)]
    if not run.get("fan_holds_above"):
        out += [
            check("% time above", run["pct_time_above"], PCT_ABOVE_MAX, le),
            check("°C over after settle", run["over_after_settle_c"] or 0.0, OVER_MAX_C, le),
        ]
    out.append(check("trips (not injected)", run["trips"], 0, le))
    # no cooling was lost in these weathers: a "cooling got worse" alarm would be false
    out.append(check("false cooling alarms", len(run["cooling_alarm_hours"]), 0, le))
    if run["weather"] == "steady":
        out.append(check("changes / day (steady)", run["changes_per_day"], CHANGES_MAX, le))
    return out


def _alarm_after(run: dict) -> float:
    """Hours from the loss to the first "cooling got worse" alarm after it (99: none)."""
    after = [h - LOSS_AT_H for h in run["cooling_alarm_hours"] if h >= LOSS_AT_H]
    return round(min(after), 3) if after else 99.0


def measure(jobs: int, only: list[str] | None = None) -> dict:
    started = time.monotonic()
    names = only or plants()
    work = [(p, w, n, s) for w in WEATHERS for p in names for n in NOISES for s in SEEDS]
    if jobs > 1:
        with ProcessPoolExecutor(max_workers=jobs) as pool:
            runs = list(pool.map(run_one, work, chunksize=1))
    else:
        runs = [run_one(w) for w in work]
    for r in runs:
        r["targets"] = judge(r)
    checks = [c for r in runs for c in r["targets"]]
    worst: dict[str, dict] = {}
    for r in runs:
        for c in r["targets"]:
            w = worst.get(c["target"])
            lower_better = c["target"] != "hash / oracle" and "back within" not in c["target"]
            if w is None or (c["value"] > w["value"] if lower_better else c["value"] < w["value"]):
                worst[c["target"]] = {
                    "value": c["value"],
                    "limit": c["limit"],
                    "met": c["met"],
                    "where": f"{r['plant']} {r['weather']} noise {r['noise_c']} seed {r['seed']}",
                }
    return {
        "plants": names,
        "noises": list(NOISES),
        "seeds": list(SEEDS),
        "weathers": list(WEATHERS),
        "poll_s": POLL_S,
        "runs": runs,
        "worst": worst,
        "targets_met": sum(1 for c in checks if c["met"]),
        "targets_total": len(checks),
        "jobs": jobs,
        "cpu_s": round(sum(r["cpu_s"] for r in runs), 1),
        "elapsed_s": round(time.monotonic() - started, 1),
        "load_average": round(os.getloadavg()[0], 1),  # others on the machine slow the wall
    }


def _worst(runs: list[dict], key: str, high: bool = True):
    vals = [r[key] for r in runs if r.get(key) is not None]
    if not vals:
        return None
    return max(vals) if high else min(vals)


def markdown(doc: dict) -> str:
    """One row per plant and noise (the worst over weathers and seeds), then the worst case
    of each target over the whole panel."""
    rows = []
    for plant in doc["plants"]:
        for noise in doc["noises"]:
            rs = [r for r in doc["runs"] if r["plant"] == plant and r["noise_c"] == noise]
            judged = [r for r in rs if r["weather"] != "cooling"]
            steady = [r for r in rs if r["weather"] == "steady"]
            cool = [r for r in rs if r["weather"] == "cooling"]
            met = sum(c["met"] for r in rs for c in r["targets"])
            total = sum(len(r["targets"]) for r in rs)
            rows.append(
                [
                    f"`{plant}`",
                    f"{noise:g}",
                    f"{_worst(judged, 'hash_ratio', high=False):.3f}",
                    f"{_worst(steady, 'changes_per_day'):.0f}",
                    f"{_worst(judged, 'pct_time_above'):.2f}",
                    f"{_worst(judged, 'over_after_settle_c') or 0.0:.2f}",
                    str(sum(r["trips"] for r in judged)),
                    f"{_worst(cool, 'trips')}",
                    f"{_worst(cool, 'recovery', high=False):.3f}",
                    f"{max(_alarm_after(r) for r in cool):g}" if cool else "-",
                    str(sum(len(r["cooling_alarm_hours"]) for r in judged)),
                    f"{met}/{total}",
                ]
            )
    head = [
        "plant",
        "noise °C",
        "worst hash / oracle",
        "max changes / day (steady)",
        "max % time above",
        "max °C over after settle",
        "trips (all runs)",
        "cooling loss: max trips",
        "cooling loss: min recovery",
        "cooling loss: alarm after (h, worst)",
        "false cooling alarms (all runs)",
        "targets met",
    ]
    out = [tabulate(rows, headers=head, tablefmt="github", disable_numparse=True), ""]
    wrows = [
        [name, f"{w['value']:g}", f"{w['limit']:g}", "pass" if w["met"] else "**FAIL**", w["where"]]
        for name, w in doc["worst"].items()
    ]
    out.append(
        tabulate(
            wrows,
            headers=["target", "worst", "limit", "", "where"],
            tablefmt="github",
            disable_numparse=True,
        )
    )
    out.append("")
    out.append(
        f"{doc['targets_met']} of {doc['targets_total']} targets met over "
        f"{len(doc['runs'])} runs ({len(doc['plants'])} plants × {len(doc['noises'])} noises × "
        f"{len(doc['weathers'])} weathers × {len(doc['seeds'])} seeds), 30 s polls, default "
        f"settings, TEMPCTL_LAW=model. Measured in {doc['elapsed_s']:g} s with {doc['jobs']} "
        f"worker(s), {doc['cpu_s']:g} CPU-s"
        + (f" (load average {doc['load_average']:g})." if "load_average" in doc else ".")
    )
    return "\n".join(out)
