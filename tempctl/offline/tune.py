"""`tempctl tune`: search settings, keep the Pareto frontier, recommend one.

Each candidate (a point of the ``--grid`` product, or ``--random N`` of them) is
judged either by simulating a scenario with the tempctl policy, or by a
counterfactual replay of a log (the plant fitted once, up front). Candidates run
in a process pool (both cores by default).

Three objectives: hash kept (GH·h, more is better), °C·min above the baseline's
threshold (less; every candidate is judged against the same temperature, also for its
oracle ratio), frequency changes per day (fewer). A candidate is on the
frontier when no other is at least as good on all three and better on one. The
recommendation is the frontier point with the most hash among those no hotter
than the baseline (current settings); if none is, the coolest one.
"""

from __future__ import annotations

import math
import random
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass, replace
from itertools import product

from tempctl.config import BY_ATTR, ConfigError, Settings, parse_assignment, validate

MAX_CANDIDATES = 10_000


@dataclass(frozen=True)
class Axis:
    attr: str
    env: str
    values: tuple


def parse_grid(text: str) -> Axis:
    """'TEMP_THRESHOLD=62:64:0.5' (start:stop:step, inclusive) or 'STABLE_TIMEFRAME=0.25,0.5,1'."""
    name, sep, spec = text.partition("=")
    if not sep or not spec.strip():
        raise ConfigError(f"{text} (--grid): expected NAME=START:STOP:STEP or NAME=A,B,C")
    spec = spec.strip()
    if ":" in spec:
        parts = spec.split(":")
        try:
            start, stop, step = (float(p) for p in parts)
        except ValueError:
            raise ConfigError(f"{text} (--grid): START:STOP:STEP must be three numbers") from None
        if len(parts) != 3 or step <= 0 or stop < start:
            raise ConfigError(f"{text} (--grid): needs START <= STOP and STEP > 0")
        n = math.floor((stop - start) / step + 1e-9)
        raw = [_num(start + i * step) for i in range(n + 1)]
    else:
        raw = [v.strip() for v in spec.split(",") if v.strip()]
    values, attr = [], None
    for v in raw:
        attr, value = parse_assignment(f"{name.strip()}={v}")
        values.append(value)
    field = BY_ATTR[attr]
    if field.type == "devices" or attr in (
        "db",
        "log_level",
        "metrics_port",
        "metrics_host",
        "alert_url",
        "retention_days",
        "check_interval",
        "dry_run",
    ):
        raise ConfigError(f"{text} (--grid): {field.env} is not a control setting")
    return Axis(attr, field.env, tuple(dict.fromkeys(values)))


def _num(x: float) -> str:
    return f"{round(x, 9):g}"


def candidates(axes: list[Axis], random_n: int | None = None, seed: int = 0) -> list[dict]:
    total = math.prod(len(a.values) for a in axes)
    if random_n is None and total > MAX_CANDIDATES:
        raise ConfigError(
            f"--grid gives {total} candidates; use --random N (at most {MAX_CANDIDATES} are run)"
        )
    if random_n is not None and random_n < total:
        rng = random.Random(seed)
        picks = set()
        while len(picks) < random_n:
            picks.add(tuple(rng.randrange(len(a.values)) for a in axes))
        combos = [tuple(a.values[i] for a, i in zip(axes, p)) for p in sorted(picks)]
    else:
        combos = list(product(*(a.values for a in axes)))
    return [{a.attr: v for a, v in zip(axes, combo)} for combo in combos]


# --- evaluation (runs in worker processes: module-level functions only) --------------------------


def _evaluate(task: tuple) -> dict:
    kind = task[0]
    if kind == "scenario":
        _, scenario, settings, days, poll_s, seed, threshold = task
        from tempctl.sim.simulate import simulate

        report = simulate(
            scenario,
            ["tempctl"],
            settings,
            days=days,
            poll_s=poll_s,
            seed=seed,
            threshold=threshold,
        )
        return report["policies"]["tempctl"]
    _, db, device, overrides, response = task
    import sqlite3

    from tempctl.offline.counterfactual import counterfactual

    conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    try:
        out = counterfactual(conn, overrides, device=device, response=response, recorded=False)
    finally:
        conn.close()
    return out["devices"][device]["counterfactual"]


@dataclass
class Source:
    """What candidates are judged on: a scenario (simulation) or a log (counterfactual)."""

    settings: Settings  # the baseline (defaults + --set, or the log's run config + --set)
    scenario: object | None = None
    days: float | None = None
    poll_s: float = 5.0
    seed: int = 0
    db: str | None = None
    device: str | None = None
    response: object | None = None
    base_overrides: dict | None = None

    def task(self, candidate: dict) -> tuple:
        if self.scenario is not None:
            settings = validate(replace(self.settings, **candidate))
            return (
                "scenario",
                self.scenario,
                settings,
                self.days,
                self.poll_s,
                self.seed,
                self.settings.temp_threshold,
            )
        overrides = dict(self.base_overrides or {}, **candidate)
        validate(replace(self.settings, devices=(), **overrides))
        return ("db", self.db, self.device, overrides, self.response)


def tune(
    source: Source,
    cands: list[dict],
    *,
    jobs: int = 2,
    progress: Callable[[int], None] | None = None,
) -> dict:
    """Evaluate the baseline and every candidate; frontier and recommendation (JSON-ready)."""
    tasks, rows, skipped = [], [], []
    for cand in [{}] + cands:
        try:
            tasks.append((cand, source.task(cand)))
        except ConfigError as e:
            skipped.append({"settings": _env(cand), "error": str(e)})
    results: dict[int, dict] = {}
    if jobs <= 1:
        for i, (_, task) in enumerate(tasks):
            results[i] = _evaluate(task)
            if progress:
                progress(1)
    else:
        with ProcessPoolExecutor(max_workers=jobs) as pool:
            futures = {pool.submit(_evaluate, task): i for i, (_, task) in enumerate(tasks)}
            for fut in as_completed(futures):
                results[futures[fut]] = fut.result()
                if progress:
                    progress(1)
    for i, (cand, _) in enumerate(tasks):
        m = results[i]
        rows.append(
            {
                "settings": _env(cand),
                "baseline": i == 0 and not cand,
                "gh_hours": m["gh_hours"],
                "hash_ratio": m.get("hash_ratio"),
                "degree_minutes_above": m["degree_minutes_above"],
                "changes_per_day": m["changes_per_day"] or 0.0,
                "restarts": m["restarts"],
                "max_temp": m["max_temp"],
            }
        )
    base = rows[0]
    front = pareto(rows[1:]) if len(rows) > 1 else []
    best = recommend(front, base)
    return {
        "candidates": len(rows) - 1,
        "baseline": base,
        "frontier": front,
        "recommended": best,
        "env": _env_lines(source, best) if best else [],
        "skipped": skipped,
        "results": rows,
    }


def pareto(rows: list[dict]) -> list[dict]:
    """Rows no other row dominates (more hash, fewer °C·min, fewer changes per day)."""

    def key(r):
        return (-r["gh_hours"], r["degree_minutes_above"], r["changes_per_day"])

    front = []
    for r in rows:
        kr = key(r)
        dominated = any(all(a <= b for a, b in zip(key(o), kr)) and key(o) != kr for o in rows)
        if not dominated and all(key(f) != kr for f in front):
            front.append(r)
    return sorted(front, key=key)


def recommend(front: list[dict], base: dict) -> dict | None:
    if not front:
        return None
    cool = [r for r in front if r["degree_minutes_above"] <= base["degree_minutes_above"] + 1e-9]
    if cool:
        return max(cool, key=lambda r: (r["gh_hours"], -r["changes_per_day"]))
    return min(front, key=lambda r: (r["degree_minutes_above"], -r["gh_hours"]))


def _env(cand: dict) -> dict:
    return {BY_ATTR[a].env: Settings(**{a: v}).as_env()[BY_ATTR[a].env] for a, v in cand.items()}


def _env_lines(source: Source, best: dict) -> list[str]:
    """The recommended settings as ENV=value lines (Settings.as_env()): --set ones included."""
    values = dict(source.base_overrides or {})
    for env, text in best["settings"].items():
        attr, value = parse_assignment(f"{env}={text}")
        values[attr] = value
    env = replace(source.settings, devices=(), **values).as_env()
    wanted = {BY_ATTR[a].env for a in values}
    return [f"{k}={env[k]}" for k in env if k in wanted]


def format_tune(report: dict) -> str:
    from tabulate import tabulate

    def row(r):
        name = " ".join(f"{k}={v}" for k, v in r["settings"].items()) or "(baseline)"
        return [
            name,
            f"{r['gh_hours']:,.1f}",
            "-" if r.get("hash_ratio") is None else f"{r['hash_ratio']:.3f}",
            f"{r['degree_minutes_above']:,.1f}",
            f"{r['changes_per_day']:.1f}",
            r["restarts"],
            r["max_temp"],
        ]

    head = ["settings", "GH·h", "hash/oracle", "°C·min above", "changes/day", "restarts", "max °C"]
    out = [
        (
            f"{report['candidates']} candidate(s); Pareto frontier "
            f"({len(report['frontier'])}), baseline first:"
        ),
        tabulate(
            [row(report["baseline"])] + [row(r) for r in report["frontier"]],
            headers=head,
            disable_numparse=True,
        ),
    ]
    if report["recommended"]:
        out.append("\nrecommended (most hash, no hotter than the baseline when possible):")
        out.extend(report["env"])
    for s in report["skipped"]:
        out.append(f"skipped {s['settings']}: {s['error']}")
    return "\n".join(out)


__all__ = [
    "MAX_CANDIDATES",
    "Axis",
    "Source",
    "candidates",
    "format_tune",
    "pareto",
    "parse_grid",
    "recommend",
    "tune",
]
