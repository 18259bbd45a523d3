"""The metrics `tempctl simulate`, `replay` and `tune` report, computed one way for all three.

A ``Tally`` is fed samples in time order (temperature, hashrate, state, frequency)
plus counted events (frequency changes, restarts). Each sample's values stand for
the interval since the previous sample (capped at ``max_gap_s``, so a hole in a log
is not counted as time at the last temperature). Simulation may instead add the
exact hash work the emulated firmware integrated (``add_work``).

With ``settle_s`` set (simulation), the tally also measures what happens after the
*first settle*: it ends ``settle_s`` seconds after the first of two events, the policy's
first frequency cut (``start_settle``) or the first sample above the threshold; with
neither, ``settle_s`` after the first sample. Before it, a law has not yet had the chance
to act (the run may start hot); after it, every excursion counts.

Every report is a flat dict with the keys in ``METRIC_KEYS`` (JSON-ready); the
``oracle`` bound and ``hash_ratio`` are added when an oracle is known. A tally given
``also`` (other thresholds, e.g. a counterfactual's own TEMP_THRESHOLD) adds
``above``: minutes and °C·min above each of them, keyed by the threshold.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

METRIC_KEYS = (
    "hours",
    "gh_hours",
    "hash_ratio",
    "mean_frequency",
    "frequency_changes",
    "changes_per_day",
    "restarts",
    "minutes_above",
    "degree_minutes_above",
    "degree_seconds_above",
    "max_temp",
    "pct_time_above",
    "settled_at_hours",
    "minutes_above_after_settle",
    "degree_minutes_above_after_settle",
    "max_temp_after_settle",
    "state_minutes",
)
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


@dataclass
class Tally:
    threshold: float
    max_gap_s: float = math.inf
    seconds: float = 0.0
    gh_seconds: float = 0.0
    mhz_seconds: float = 0.0
    freq_seconds: float = 0.0  # seconds with a known frequency
    seconds_above: float = 0.0
    degree_seconds: float = 0.0
    max_temp: float | None = None
    frequency_changes: int = 0
    restarts: int = 0
    state_seconds: dict[str, float] = field(default_factory=dict)
    also: tuple[float, ...] = ()  # more thresholds to count time above
    _above: dict[float, list[float]] = field(default_factory=dict)  # t: [s, °C·s]
    settle_s: float | None = None  # measure after the first settle (see the module doc)
    settled_ms: int | None = None  # when the first settle ends
    settled_seconds_above: float = 0.0
    settled_degree_seconds: float = 0.0
    settled_max_temp: float | None = None
    _quiet_max_temp: float | None = None
    _first_ms: int | None = None
    _last_ms: int | None = None
    _exact_work: bool = False

    def add(
        self,
        ts_ms: int,
        temp: float | None = None,
        hashrate: float | None = None,
        state: str | None = None,
        frequency: float | None = None,
    ) -> None:
        """One sample; its values stand for the time since the previous sample."""
        last = self._last_ms
        self._last_ms = ts_ms
        if self._first_ms is None:
            self._first_ms = ts_ms
        if temp is not None and (self.max_temp is None or temp > self.max_temp):
            self.max_temp = temp
        if self.settle_s is not None:
            if temp is not None and temp > self.threshold:
                self.start_settle(ts_ms)
            if temp is not None and self.settled_ms is not None and ts_ms >= self.settled_ms:
                if self.settled_max_temp is None or temp > self.settled_max_temp:
                    self.settled_max_temp = temp
            # in case no event ever comes: the first settle is then settle_s after the start
            quiet = self._first_ms + round(self.settle_s * 1000)
            if temp is not None and ts_ms >= quiet:
                if self._quiet_max_temp is None or temp > self._quiet_max_temp:
                    self._quiet_max_temp = temp
        if last is None:
            return
        dt = min((ts_ms - last) / 1000.0, self.max_gap_s)
        if dt <= 0:
            return
        self.seconds += dt
        if temp is not None and temp > self.threshold:
            self.seconds_above += dt
            self.degree_seconds += (temp - self.threshold) * dt
            if self.settled_ms is not None and ts_ms > self.settled_ms:
                # the part of this sample's interval that lies after the settle
                after = min(dt, (ts_ms - self.settled_ms) / 1000.0)
                self.settled_seconds_above += after
                self.settled_degree_seconds += (temp - self.threshold) * after
        if self.also and temp is not None:
            for t in self.also:
                if temp > t:
                    acc = self._above.setdefault(t, [0.0, 0.0])
                    acc[0] += dt
                    acc[1] += (temp - t) * dt
        if hashrate is not None and not self._exact_work:
            self.gh_seconds += hashrate * dt
        if frequency is not None:
            self.mhz_seconds += frequency * dt
            self.freq_seconds += dt
        if state is not None:
            self.state_seconds[state] = self.state_seconds.get(state, 0.0) + dt

    def start_settle(self, ts_ms: int) -> None:
        """The law has reason to act from ``ts_ms`` (a cut, a hot sample); the first counts."""
        if self.settle_s is not None and self.settled_ms is None:
            self.settled_ms = ts_ms + round(self.settle_s * 1000)

    def _settle_result(self) -> dict:
        if self.settle_s is None or self._first_ms is None:
            return dict.fromkeys(
                (
                    "settled_at_hours",
                    "minutes_above_after_settle",
                    "degree_minutes_above_after_settle",
                    "max_temp_after_settle",
                )
            )
        settled_ms, peak = self.settled_ms, self.settled_max_temp
        if settled_ms is None:  # never cut, never hot
            settled_ms = self._first_ms + round(self.settle_s * 1000)
            peak = self._quiet_max_temp
        return {
            "settled_at_hours": round((settled_ms - self._first_ms) / 3_600_000, 4),
            "minutes_above_after_settle": round(self.settled_seconds_above / 60.0, 3),
            "degree_minutes_above_after_settle": round(self.settled_degree_seconds / 60.0, 3),
            "max_temp_after_settle": None if peak is None else round(peak, 3),
        }

    def add_work(self, gh_seconds: float) -> None:
        """Exact hash work (GH) from a simulation; sample hashrates are then ignored."""
        self._exact_work = True
        self.gh_seconds += gh_seconds

    def result(self, oracle_gh_hours: float | None = None) -> dict:
        days = self.seconds / 86400.0
        gh_hours = self.gh_seconds / 3600.0
        out = {
            "hours": round(self.seconds / 3600.0, 4),
            "gh_hours": round(gh_hours, 3),
            "hash_ratio": (round(gh_hours / oracle_gh_hours, 4) if oracle_gh_hours else None),
            "mean_frequency": (
                round(self.mhz_seconds / self.freq_seconds, 2) if self.freq_seconds else None
            ),
            "frequency_changes": self.frequency_changes,
            "changes_per_day": round(self.frequency_changes / days, 3) if days else None,
            "restarts": self.restarts,
            "minutes_above": round(self.seconds_above / 60.0, 3),
            "degree_minutes_above": round(self.degree_seconds / 60.0, 3),
            "degree_seconds_above": round(self.degree_seconds, 1),
            "max_temp": None if self.max_temp is None else round(self.max_temp, 3),
            "pct_time_above": (
                round(100.0 * self.seconds_above / self.seconds, 3) if self.seconds else None
            ),
            **self._settle_result(),
            "state_minutes": {s: round(v / 60.0, 2) for s, v in sorted(self.state_seconds.items())},
        }
        if oracle_gh_hours is not None:
            out["oracle_gh_hours"] = round(oracle_gh_hours, 3)
        if self.also:
            out["above"] = {f"{self.threshold:g}": _above(self.seconds_above, self.degree_seconds)}
            for t in self.also:
                out["above"].setdefault(f"{t:g}", _above(*self._above.get(t, (0.0, 0.0))))
        return out


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


def _above(seconds: float, degree_seconds: float) -> dict:
    return {"minutes": round(seconds / 60.0, 3), "degree_minutes": round(degree_seconds / 60.0, 3)}


def _fmt(v: object) -> str:
    if isinstance(v, float):
        return f"{v:,.3f}".rstrip("0").rstrip(".") if abs(v) < 1e6 else f"{v:,.0f}"
    return str(v)


__all__ = ["LABELS", "METRIC_KEYS", "Tally", "table"]
