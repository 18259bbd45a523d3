"""The human table `tempctl simulate`, `replay` and `tune` print from ``Tally`` reports.

The metrics themselves are computed in ``tempctl.core.tally`` (one tally for the
benchmark, simulation, replay and the daemon's live scorecard).
"""

from __future__ import annotations

from tempctl.core.tally import METRIC_KEYS

# Labels of the human table, in order (state_minutes is expanded per state).
LABELS = {
    "hours": "hours",
    "gh_hours": "hash (GH·h)",
    "hash_ratio": "hash / oracle",
    "mean_frequency": "mean frequency (MHz)",
    "frequency_changes": "frequency changes",
    "changes_per_day": "changes per day",
    "restarts": "restarts",
    "minutes_above": "minutes above threshold",
    "degree_minutes_above": "°C·min above threshold",
    "degree_seconds_above": "°C·s above threshold",
    "max_temp": "max temperature (°C)",
    "pct_time_above": "% of time above threshold",
    "settled_at_hours": "first settle at (h)",
    "minutes_above_after_settle": "minutes above threshold after it",
    "degree_minutes_above_after_settle": "°C·min above threshold after it",
    "max_temp_after_settle": "max temperature after it (°C)",
}


def table(
    columns: dict[str, dict],
    *,
    threshold: float | None = None,
    other: tuple[float, str, str] | None = None,
) -> str:
    """A side-by-side table for people: one column per report (policy, recorded, ...).

    ``other`` = (threshold, its name, the name of ``threshold``): the rows above a
    threshold are given for both, each labelled with its temperature and whose it is,
    from the reports' ``above``.
    """
    from tabulate import tabulate

    names = list(columns)
    rows = []
    for key, label in LABELS.items():
        if threshold is not None and "threshold" in label:
            label = label.replace("threshold", f"{threshold:g} °C")
            if other is not None:
                label += f" ({other[2]})"
        values = [columns[n].get(key) for n in names]
        if all(v is None for v in values):
            continue
        rows.append([label] + ["-" if v is None else _fmt(v) for v in values])
        if other is not None and key in ("minutes_above", "degree_minutes_above"):
            sub = "minutes" if key == "minutes_above" else "degree_minutes"
            head = "minutes" if key == "minutes_above" else "°C·min"
            rows.append(
                [f"{head} above {other[0]:g} °C ({other[1]})"]
                + [
                    _fmt((columns[n].get("above") or {}).get(f"{other[0]:g}", {}).get(sub, "-"))
                    for n in names
                ]
            )
    states = sorted({s for n in names for s in (columns[n].get("state_minutes") or {})})
    for s in states:
        rows.append(
            [f"minutes in {s}"]
            + [
                "-"
                if not columns[n].get("state_minutes")
                else _fmt(columns[n]["state_minutes"].get(s, 0))
                for n in names
            ]
        )
    return tabulate(rows, headers=["metric"] + names, disable_numparse=True)


def _fmt(v: object) -> str:
    if isinstance(v, float):
        return f"{v:,.3f}".rstrip("0").rstrip(".") if abs(v) < 1e6 else f"{v:,.0f}"
    return str(v)


__all__ = ["LABELS", "METRIC_KEYS", "table"]
