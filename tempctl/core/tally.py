"""Control-quality metrics, computed one way for the benchmark, `tempctl simulate`,
`replay`, `tune` and the daemon's live scorecard (``daemon/scorecard.py``).

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

The live scorecard also feeds power, the firmware's trips and the learned model's best
hashrate (``best_frequency``) and reads ``scorecard()``; ``Rolling`` keeps a tally over
the last 24 h in five-minute slots. These extras never change ``result()``.
"""

from __future__ import annotations

import math
from array import array
from dataclasses import dataclass, field

from tempctl.core.model import AUTOFAN_SATURATED, P0_SHARE, fan_scale

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
    trips: int = 0  # the firmware's own overheat trips (the scorecard counts them)
    joules: float = 0.0  # W·s over samples with both power and hashrate
    powered_gh_seconds: float = 0.0  # GH over the same samples (J/TH)
    est_gh_seconds: float = 0.0  # GH over samples with a best-hashrate estimate
    best_gh_seconds: float = 0.0  # GH the model says those samples could have done
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
        power: float | None = None,
        best_hashrate: float | None = None,
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
        if hashrate is not None and power is not None:
            self.joules += power * dt
            self.powered_gh_seconds += hashrate * dt
        if hashrate is not None and best_hashrate is not None:
            self.est_gh_seconds += hashrate * dt
            self.best_gh_seconds += best_hashrate * dt
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

    def scorecard(self) -> dict[str, float | None]:
        """The live scorecard's figures (``SCORECARD_KEYS``), unrounded."""
        return card(
            self.seconds_above,
            self.degree_seconds,
            None if self.max_temp is None else self.max_temp - self.threshold,
            self.frequency_changes,
            self.trips,
            self.est_gh_seconds,
            self.best_gh_seconds,
            self.joules,
            self.powered_gh_seconds,
        )

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


def _above(seconds: float, degree_seconds: float) -> dict:
    return {"minutes": round(seconds / 60.0, 3), "degree_minutes": round(degree_seconds / 60.0, 3)}


# -- the live scorecard ------------------------------------------------------------------

SCORECARD_KEYS = (
    "above_min",  # minutes above the threshold
    "above_degmin",  # °C·min above it
    "max_excess_c",  # the largest excess (0 when never above)
    "changes",  # frequency changes the device showed
    "trips",  # the firmware's overheat trips
    "hash_ratio_est",  # hash / the model's best (an estimate, see best_frequency)
    "j_per_th",  # energy per work
)


def card(
    seconds_above: float,
    degree_seconds: float,
    max_excess: float | None,
    changes: float,
    trips: float,
    est_gh_seconds: float,
    best_gh_seconds: float,
    joules: float,
    powered_gh_seconds: float,
) -> dict[str, float | None]:
    """The scorecard from a tally's sums (``Tally.scorecard``, ``Rolling.scorecard``)."""
    return {
        "above_min": seconds_above / 60.0,
        "above_degmin": degree_seconds / 60.0,
        "max_excess_c": None if max_excess is None else max(0.0, max_excess),
        "changes": float(round(changes)),
        "trips": float(round(trips)),
        "hash_ratio_est": est_gh_seconds / best_gh_seconds if best_gh_seconds > 0 else None,
        # W·s per GH = J/GH; x1000 = J/TH
        "j_per_th": 1000.0 * joules / powered_gh_seconds if powered_gh_seconds > 0 else None,
    }


def best_frequency(
    temp: float,
    power: float,
    frequency: float,
    fan: float | None,
    autofan: bool | None,
    r: float,
    threshold: float,
    max_frequency: float,
) -> float:
    """The highest frequency (<= ``max_frequency``) the learned model says holds ``threshold``.

    An estimate from one reading, as if it were steady: the die moves by
    s(fan)·R·P_dyn/f per MHz (the model's T∞ = Ta + s·R·P with the dynamic share of power
    proportional to frequency, leakage left out). With the firmware's fan PID below
    saturation the die is held where it is, so the headroom is that of the fan at 100 %
    (as ``ThermalModel.predict``). ``daemon/scorecard.py`` and the Datasette query
    ``scorecard`` compute it alike.
    """
    s = fan_scale(fan)
    base = temp
    if autofan and (fan if fan is not None else 100.0) < AUTOFAN_SATURATED:
        base = temp - (s - 1.0) * r * power
        s = 1.0
    per_mhz = s * r * (1.0 - P0_SHARE) * power / frequency
    return max(0.0, min(max_frequency, frequency + (threshold - base) / per_mhz))


class Rolling:
    """A ``Tally`` over the last ``steps`` time slots of ``step_ms`` (UTC) up to its newest
    sample: the newest sample's slot and the ``steps - 1`` before it.

    The tally itself runs on; at the first sample of each slot its sums are noted, so the
    window's figures are the sums now minus those noted at the oldest slot still in it (and
    the largest temperature of the slots in it). 80 bytes a slot: 288 five-minute slots
    (24 h) take 23 KB.
    """

    SUMS = (
        "seconds_above",
        "degree_seconds",
        "frequency_changes",
        "trips",
        "est_gh_seconds",
        "best_gh_seconds",
        "joules",
        "powered_gh_seconds",
    )
    WIDTH = len(SUMS) + 2  # slot, the sums, the slot's max temperature

    def __init__(
        self,
        threshold: float,
        steps: int = 288,
        step_ms: int = 300_000,
        max_gap_s: float = math.inf,
    ):
        self.tally = Tally(threshold=threshold, max_gap_s=max_gap_s)
        self.steps, self.step_ms = steps, step_ms
        self._marks = array("d")  # WIDTH values per slot that has samples
        self._head = 0  # offset of the oldest mark still kept

    def add(self, ts_ms: int, *, changed: bool = False, trips: int = 0, **values) -> None:
        """A sample (``Tally.add``'s values); ``changed``: it shows a frequency change;
        ``trips``: firmware trips seen with it."""
        slot = ts_ms // self.step_ms
        m = self._marks
        if len(m) == self._head or m[-self.WIDTH] != slot:
            t = self.tally
            m.append(slot)
            m.extend(getattr(t, k) for k in self.SUMS)
            m.append(-math.inf)
        self.tally.add(ts_ms, **values)
        if changed:
            self.tally.frequency_changes += 1
        self.tally.trips += trips
        temp = values.get("temp")
        if temp is not None and temp > m[-1]:
            m[-1] = temp
        self._expire(slot)

    def _expire(self, slot: int) -> None:
        m, w = self._marks, self.WIDTH
        while len(m) - self._head > w and m[self._head] <= slot - self.steps:
            self._head += w
        if self._head > 64 * w:
            del m[: self._head]
            self._head = 0

    def scorecard(self) -> dict[str, float | None]:
        m, w, h = self._marks, self.WIDTH, self._head
        if len(m) == h:
            return self.tally.scorecard()
        t = self.tally
        sums = [getattr(t, k) - m[h + 1 + i] for i, k in enumerate(self.SUMS)]
        peak = max(m[i] for i in range(h + w - 1, len(m), w))
        excess = None if peak == -math.inf else peak - t.threshold
        return card(sums[0], sums[1], excess, *sums[2:])


__all__ = ["METRIC_KEYS", "SCORECARD_KEYS", "Rolling", "Tally", "best_frequency", "card"]
