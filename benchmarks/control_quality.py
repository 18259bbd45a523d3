"""Control quality of the law (issue 12): each scenario four ways, targets checked. Prints JSON.

    python benchmarks/control_quality.py               # every scenario, about a minute on 2 cores
    python benchmarks/control_quality.py --markdown    # the README table instead of JSON
    python benchmarks/control_quality.py --only steady_31_5,closet --jobs 1
    python benchmarks/control_quality.py --markdown --from out.json   # table of a saved run
    python benchmarks/control_quality.py --panel [--markdown]  # issue 20: control_panel.py

Every scenario runs through `tempctl simulate` (tempctl.sim.simulate, fake clock, no HTTP)
with 30 s polls, the default settings and seed 0, four ways:

* ``tempctl`` - the daemon's controller with TEMPCTL_LAW=model (the law of issue 12);
* ``levels``  - the same controller with TEMPCTL_LAW=levels (the fixed levels of issue 4);
* ``seed``    - the port of the original script (policies.SeedPolicy);
* ``oracle``  - the steady-state bound: the highest frequency <= MAX_FREQUENCY whose steady
  die holds TEMP_THRESHOLD at each minute's ambient (simulate.oracle). It is a bound, not
  a run, so it has a hashrate and no temperatures.

Temperatures are the plant's true die temperature every 10 s, not the noisy readings.
Per policy: hash vs the oracle (exact hash work / the oracle's), minutes, % of time and
°C·min above the threshold, frequency changes per day (accepted PATCHes that changed the
setting), firmware overheat trips (the emulated firmware's count; ``firmware_trips_injected``
are those a fault caused, e.g. a 127 °C sensor value, and do not count against the law),
and the maximum die temperature after the *first settle*: TEMPCTL_SETTLE seconds (180)
after the first of (a) the policy's first frequency cut and (b) the first 10 s sample above
the threshold; with neither, TEMPCTL_SETTLE after the start (core/tally.Tally).

Targets for ``tempctl`` (issue 12, "How it is measured"), per scenario, in "targets":
hash >= 0.97 of the oracle; <= 1 % of the time above the threshold; never more than 1 °C
above it after the first settle; 0 firmware trips (not counting injected ones); <= 24
frequency changes per day in steady weather (the steady_* rooms); hash >= the seed port's
and °C·min <= the seed port's.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import replace

try:
    from tabulate import tabulate

    from tempctl.config import Settings, validate
    from tempctl.sim.scenario import load_scenario
    from tempctl.sim.simulate import simulate
except ModuleNotFoundError as e:  # a Python without the project's dependencies
    sys.exit(f"{e}: run the benchmarks where tempctl is installed: pip install '.[test]' (README)")

# (scenario, steady weather?) in replay/scenarios; the longest first, for two workers
CASES = (
    ("week", False),
    ("steady_30_8", True),
    ("steady_31_5", True),
    ("steady_33_0", True),
    ("heatwave", False),
    ("closet", False),
    ("heatwave_faults", False),
)
POLICIES = ("tempctl", "levels", "seed")
POLL_S = 30.0  # issue 12's figures use 30 s polls
HASH_MIN = 0.97
PCT_ABOVE_MAX = 1.0
OVER_AFTER_SETTLE_MAX_C = 1.0
CHANGES_PER_DAY_MAX = 24.0
KEPT = (
    "hash_ratio",
    "gh_hours",
    "mean_frequency",
    "minutes_above",
    "pct_time_above",
    "degree_minutes_above",
    "max_temp",
    "settled_at_hours",
    "max_temp_after_settle",
    "minutes_above_after_settle",
    "frequency_changes",
    "changes_per_day",
    "restarts",
    "firmware_trips",
    "firmware_trips_injected",
    "faults_applied",
    "state_minutes",
)


def settings() -> Settings:
    """The defaults, with the model law selected for the ``tempctl`` policy."""
    return validate(replace(Settings(), law="model", check_interval=POLL_S))


def run_one(job: tuple[str, str, float, int]) -> tuple[str, str, dict, float]:
    """One (scenario, policy) through simulate; returns its report and the CPU seconds."""
    name, spec, poll_s, seed = job
    t0 = time.process_time()
    report = simulate(load_scenario(name), [spec], settings(), poll_s=poll_s, seed=seed)
    return name, spec, report, time.process_time() - t0


def check(name: str, value, limit, ok) -> dict:
    return {
        "target": name,
        "value": value,
        "limit": limit,
        "met": None if value is None else bool(ok(value, limit)),
    }


def targets(policies: dict[str, dict], threshold: float, steady: bool) -> list[dict]:
    """The issue-12 targets for ``tempctl`` in one scenario (``policies`` as in the report)."""
    m, seed = policies["tempctl"], policies["seed"]
    le, ge = (lambda v, lim: v <= lim), (lambda v, lim: v >= lim)
    peak = m["max_temp_after_settle"]
    trips = m["firmware_trips"] - (m.get("firmware_trips_injected") or 0)
    out = [
        check("hash vs oracle", m["hash_ratio"], HASH_MIN, ge),
        check("% of time above threshold", m["pct_time_above"], PCT_ABOVE_MAX, le),
        check(
            "°C above threshold after the first settle",
            None if peak is None else round(max(0.0, peak - threshold), 3),
            OVER_AFTER_SETTLE_MAX_C,
            le,
        ),
        check("firmware trips (not injected)", trips, 0, le),
    ]
    if steady:
        out.append(
            check("frequency changes per day", m["changes_per_day"], CHANGES_PER_DAY_MAX, le)
        )
    out.append(check("hash (GH·h) vs seed", m["gh_hours"], seed["gh_hours"], ge))
    out.append(
        check("°C·min above vs seed", m["degree_minutes_above"], seed["degree_minutes_above"], le)
    )
    return out


def same_runs(a: dict, b: dict) -> bool:
    """Two policies' metrics are the same run (the model law not in yet, for one)."""
    return all(a.get(k) == b.get(k) for k in KEPT)


def measure(cases, poll_s: float, seed: int, jobs: int) -> dict:
    started = time.monotonic()
    work = [(name, spec, poll_s, seed) for name, _ in cases for spec in POLICIES]
    reports: dict[str, dict[str, dict]] = {name: {} for name, _ in cases}
    cpu = 0.0
    if jobs > 1:
        with ProcessPoolExecutor(max_workers=jobs) as pool:
            results = list(pool.map(run_one, work))
    else:
        results = [run_one(w) for w in work]
    for name, spec, report, cpu_s in results:
        reports[name][spec] = report
        cpu += cpu_s
    doc: dict = {
        "poll_s": poll_s,
        "seed": seed,
        "settings": None,
        "scenarios": {},
    }
    identical = True
    for name, steady in cases:
        first = reports[name][POLICIES[0]]
        doc["settings"] = doc["settings"] or first["settings"]
        scn = load_scenario(name)
        policies = {
            spec: {k: reports[name][spec]["policies"][spec].get(k) for k in KEPT}
            for spec in POLICIES
        }
        threshold = first["threshold"]
        checks = targets(policies, threshold, steady)
        identical = identical and same_runs(policies["tempctl"], policies["levels"])
        entry = {
            "description": scn.description,
            "hours": first["hours"],
            "steady": steady,
            "threshold": threshold,
            "oracle": first["oracle"],
            "policies": policies,
            "targets": checks,
            "met": all(c["met"] for c in checks),
        }
        if "faults" in first:
            entry["faults"] = first["faults"]
        doc["scenarios"][name] = entry
    judged = [c for s in doc["scenarios"].values() for c in s["targets"]]
    doc["targets_met"] = sum(1 for c in judged if c["met"])
    doc["targets_total"] = len(judged)
    doc["all_met"] = all(c["met"] for c in judged)
    doc["law_note"] = (
        "tempctl (TEMPCTL_LAW=model) ran exactly as levels in every scenario: "
        "the model law is not in the controller yet"
        if identical
        else "tempctl (TEMPCTL_LAW=model) and levels differ"
    )
    doc["jobs"] = jobs
    doc["cpu_s"] = round(cpu, 1)
    doc["elapsed_s"] = round(time.monotonic() - started, 1)
    return doc


def _n(v, digits: int = 1) -> str:
    if v is None:
        return "-"
    if isinstance(v, float):
        return f"{v:,.{digits}f}"
    return str(v)


def markdown(doc: dict) -> str:
    """The README table: every policy per scenario, then the targets of the model law."""
    rows = []
    for name, s in doc["scenarios"].items():
        rows.append(
            [f"`{name}`", "oracle", "1.000", "-", "-", "-", "-", "-"]
            + [f"{s['oracle']['mean_frequency']:.0f}"]
        )
        for spec, m in s["policies"].items():
            trips = _n(m["firmware_trips"])
            if m.get("firmware_trips_injected"):
                trips += f" ({m['firmware_trips_injected']} injected)"
            rows.append(
                [
                    "",
                    spec,
                    _n(m["hash_ratio"], 3),
                    f"{_n(m['minutes_above'])} ({_n(m['pct_time_above'], 2)} %)",
                    _n(m["degree_minutes_above"]),
                    _n(m["max_temp_after_settle"], 2),
                    _n(m["changes_per_day"]),
                    trips,
                    _n(m["mean_frequency"], 0),
                ]
            )
    head = [
        "scenario",
        "policy",
        "hash / oracle",
        "min above (% of time)",
        "°C·min above",
        "max °C after first settle",
        "changes / day",
        "firmware trips",
        "mean MHz",
    ]
    out = [tabulate(rows, headers=head, tablefmt="github", disable_numparse=True), ""]
    # the steady rooms' list is the full one, in the order targets() checks
    longest = max((s["targets"] for s in doc["scenarios"].values()), key=len, default=[])
    columns = [c["target"] for c in longest]
    trows = []
    for name, s in doc["scenarios"].items():
        by = {c["target"]: c for c in s["targets"]}
        cells = []
        for col in columns:
            c = by.get(col)
            if c is None:
                cells.append("n/a")
            else:
                mark = "-" if c["met"] is None else ("pass" if c["met"] else "**FAIL**")
                if "seed" in col:  # the limit differs per scenario
                    cells.append(f"{mark} {_n(c['value'], 0)} vs {_n(c['limit'], 0)}")
                else:
                    cells.append(f"{mark} {_n(c['value'], 3)}")
        trows.append([f"`{name}`"] + cells)
    limits = {c["target"]: c["limit"] for s in doc["scenarios"].values() for c in s["targets"]}
    thead = ["targets for `tempctl`"] + [
        f"{col} ({'seed' if 'seed' in col else _n(limits[col], 2)})" for col in columns
    ]
    out.append(tabulate(trows, headers=thead, tablefmt="github", disable_numparse=True))
    out.append("")
    out.append(
        f"{doc['targets_met']} of {doc['targets_total']} targets met. {doc['law_note']}. "
        f"30 s polls, defaults ({_settings_line(doc['settings'])}), seed {doc['seed']}; "
        "die temperature of the plant every 10 s. First settle: TEMPCTL_SETTLE after the "
        "first frequency cut or the first sample above the threshold, whichever comes first. "
        f"Measured in {doc['elapsed_s']:g} s with {doc['jobs']} worker(s)."
    )
    return "\n".join(out)


def _settings_line(env: dict | None) -> str:
    env = env or {}
    keys = ("TEMP_THRESHOLD", "FIRST_FREQUENCY", "SECOND_FREQUENCY", "MAX_FREQUENCY")
    return ", ".join(f"{k} {env[k]}" for k in keys if k in env)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--markdown", action="store_true", help="print the README table, not JSON")
    p.add_argument(
        "--panel",
        action="store_true",
        help="every weather on every panel plant and noise, 3 seeds (issue 20, control_panel.py)",
    )
    p.add_argument("--only", default=None, help="comma-separated scenarios (default: all of CASES)")
    p.add_argument("--poll", type=float, default=POLL_S, help="seconds between polls")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument(
        "--from", dest="from_json", default=None, help="a saved JSON run: print it, measure nothing"
    )
    p.add_argument(
        "--jobs",
        type=int,
        default=min(2, len(os.sched_getaffinity(0))),
        help="worker processes (default: 2, or 1 on one core)",
    )
    args = p.parse_args(argv)
    if args.panel:
        return panel(args)
    cases = CASES
    if args.only:
        wanted = args.only.split(",")
        known = dict(CASES)
        unknown = [w for w in wanted if w not in known]
        if unknown:
            p.error(f"unknown scenario(s): {', '.join(unknown)}; known: {', '.join(known)}")
        cases = tuple((w, known[w]) for w in wanted)
    if args.from_json:
        with open(args.from_json, encoding="utf-8") as f:
            doc = json.load(f)
    else:
        doc = measure(cases, args.poll, args.seed, max(1, args.jobs))
    if args.markdown:
        print(markdown(doc))
    else:
        json.dump(doc, sys.stdout, indent=2)
        sys.stdout.write("\n")
    return 0


def panel(args) -> int:
    """--panel: the module next to this one measures, this prints (JSON or --markdown)."""
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    import control_panel

    if args.from_json:
        with open(args.from_json, encoding="utf-8") as f:
            doc = json.load(f)
    else:
        only = args.only.split(",") if args.only else None
        unknown = [w for w in only or () if w not in control_panel.plants()]
        if unknown:
            sys.exit(
                f"unknown panel plant(s): {', '.join(unknown)}; known: "
                f"{', '.join(control_panel.plants())}"
            )
        doc = control_panel.measure(max(1, args.jobs), only)
    if args.markdown:
        print(control_panel.markdown(doc))
    else:
        json.dump(doc, sys.stdout, indent=2)
        sys.stdout.write("\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
