"""The voltage governor (issue 21.2): a lower core voltage where the chip is stable.

Power is about p0 + k·f·V² (sim/plant.py), so at the same die temperature a lower voltage
lets the thermal law run a higher frequency. The law keeps choosing the frequency; this
module chooses the voltage for it: the device's own learned V_min(f) plus a margin.

How it learns (per 25 MHz frequency bin, from the device's own error signal):

* after each change it waits one poll, then judges ``SAMPLES`` readings of
  ``errorPercentage`` (v2.11+: error hashrate / hashrate × 100, noisy, 10-18 % spikes at low
  frequency from the small denominator, PR #1810's comments). Stable: median <= STABLE_PCT
  (tuners judge stable at 0.2-2 %). Before v2.11 the signal is hashrate / expectedHashrate
  (unstable below ``MIN_HASH_SHARE``; ±5-10 % noise on those firmwares, data/README §1);
* stable: one ``STEP_MV`` lower (rate-limited: at most one step per judged window), never
  below the highest voltage that showed errors at this frequency plus ``STEP_MV`` + margin;
* errors: **at once** back to the last stable voltage; that voltage minus the margin is
  this frequency's learned V_min.

Order of moves (axeos-api §5.3, and the fork with live targets): a frequency raise is
preceded in the same PATCH sequence by the voltage it needs; a frequency fall is followed
by lower voltage only on later polls. The law chooses a raise for the pair (f, V): it
predicts f with the voltage ``planned`` brings (model.py), so a raise into a bin with a
higher learned floor is judged with the power it will draw; a revert on errors is told to
the model at once and the law judges the new pair in the same poll (driver.py). Bounds:
never outside [TEMPCTL_MIN_VOLTAGE, TEMPCTL_MAX_VOLTAGE] nor the regulator window (TPS546
boards refuse < 1000 mV and leave the core unpowered, axeos-api §10 and §14). Unknown chips
or firmware before v2.2 (voltage not applied live, §5.3) keep the governor off, with one
note.

Everything it knows is in ``table()`` (JSON-able), logged as a ``voltage`` event whenever
it changes; replay feeds the same readings through the same code and gets the same moves.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field

from tempctl.core.decision import Command, Decision, Event
from tempctl.core.limits import FREQ_EPS
from tempctl.core.reading import Reading

__all__ = ["BIN_MHZ", "GOVERNED_ASICS", "Governor", "WINDOW_MV", "supported"]

WINDOW_MV = (1000, 1500)  # TPS546 floor (vcore.c) to the top voltageOptions entry (§7)
# Chips whose boards we know (axeos-api §10). BM1397 (Max) is absent: no live voltage path
# is documented for it before v2.12 and we have no stability data at all.
GOVERNED_ASICS = frozenset({"BM1366", "BM1368", "BM1370"})
BIN_MHZ = 25.0
STEP_MV = 10  # issue 21: 5-10 mV steps (PR #1810 trimmed by 25 mV)
SAMPLES = 10  # readings judged per step (several, as tuners do)
STABLE_PCT = 1.5
MIN_HASH_SHARE = 0.92
# V_min's slope, the steep end of the calibration data: 0.33 mV/MHz (mtab3000, 400-520 MHz),
# 0.62 (to the ThePeacemaker82 Gamma's 650 MHz / 1100 mV), 0.4 (its 650-750 MHz)
SLOPE_MV_PER_MHZ = 0.6
MARGINS_MV = {"hashrate": 20, "efficiency": 10}


def _version(text: str | None) -> tuple[int, ...] | None:
    if not text:
        return None
    parts = []
    for piece in text.lstrip("vV").split(".")[:3]:
        digits = "".join(ch for ch in piece if ch.isdigit())
        if not digits or not piece.startswith(digits):
            break
        parts.append(int(digits))
    return tuple(parts) if parts else None


def supported(reading: Reading) -> str | None:
    """Why the governor stays off on this device, or None when it may run."""
    asic = (reading.asic_model or "").upper()
    if asic not in GOVERNED_ASICS:
        return f"unknown ASIC {reading.asic_model or '(none)'}: its regulator window is unknown"
    v = _version(reading.version)
    if v is None:
        return f"firmware {reading.version or '(none)'}: cannot tell whether voltage is live"
    if v < (2, 2):
        return f"firmware {reading.version}: voltage changes need a restart before v2.2 (§5.3)"
    if reading.core_voltage is None:
        return "the device does not report coreVoltage"
    return None


def _bin(freq: float) -> float:
    return round(freq / BIN_MHZ) * BIN_MHZ


@dataclass
class Governor:
    min_mv: int = WINDOW_MV[0]
    max_mv: int = WINDOW_MV[1]
    goal: str = "hashrate"
    stable: dict[float, int] = field(default_factory=dict)  # bin -> lowest V judged stable
    failed: dict[float, int] = field(default_factory=dict)  # bin -> highest V that erred
    target: int | None = None  # the voltage last commanded (or found)
    samples: list[float] = field(default_factory=list)
    skip: int = 1  # polls to ignore after a change (the die and counters settle)
    off_reason: str | None = None
    live: bool = False  # this poll's reading lets it run (``supported``; the driver sets it)
    reverted: int | None = None  # mV this poll's revert on errors raised the voltage to

    def __post_init__(self) -> None:
        self.min_mv = max(int(self.min_mv or WINDOW_MV[0]), WINDOW_MV[0])
        self.max_mv = min(int(self.max_mv or WINDOW_MV[1]), WINDOW_MV[1])
        self.margin = MARGINS_MV.get(self.goal, MARGINS_MV["hashrate"])
        self.limit = STABLE_PCT

    # -- what it knows -----------------------------------------------------------------

    def table(self) -> dict:
        return {
            "stable": {f"{k:g}": v for k, v in sorted(self.stable.items())},
            "failed": {f"{k:g}": v for k, v in sorted(self.failed.items())},
        }

    def restore(self, text: str) -> None:
        """The table a ``voltage`` event logged; an unreadable one starts afresh (safe: the
        governor then steps down from the device's voltage and learns again)."""
        try:
            data = json.loads(text)
            stable = {float(k): int(v) for k, v in data.get("stable", {}).items()}
            failed = {float(k): int(v) for k, v in data.get("failed", {}).items()}
        except (ValueError, TypeError, AttributeError):
            return
        self.stable, self.failed = stable, failed

    def clamp(self, mv: float) -> int:
        return int(min(self.max_mv, max(self.min_mv, round(mv))))

    def floor_for(self, freq: float) -> int:
        """The lowest voltage this device may try at ``freq``: one step above where it erred
        (at this frequency, or at a lower one plus the slope), plus the margin; the window's
        bottom where it never erred."""
        b = _bin(freq)
        worst = None
        for k, v in self.failed.items():
            if k <= b:  # a higher frequency needs at least what a lower one needed
                bound = v + SLOPE_MV_PER_MHZ * (b - k)
                worst = bound if worst is None or bound > worst else worst
        return self.clamp(self.min_mv if worst is None else worst + STEP_MV + self.margin)

    def need(self, freq: float, current: int, before: float) -> int:
        """The voltage ``freq`` needs before it is set (``current`` runs ``before``): what its
        errors taught, and where this or a higher frequency was never seen stable at
        ``current`` or below, the slope's worth more. A voltage seen stable is an upper bound
        of V_min, an error a lower bound: only the lower bounds and the slope raise it, so
        the law's ups and downs never ratchet the voltage up."""
        b = _bin(freq)
        proven = any(v <= current for k, v in self.stable.items() if k >= b)
        guess = current if proven else current + SLOPE_MV_PER_MHZ * max(0.0, freq - before)
        return self.clamp(max(current, guess, self.floor_for(freq)))

    def planned(self, freq: float, current: int, before: float) -> int:
        """What the law must predict a raise to ``freq`` with (driver.py: the controller's
        ``voltage_for``): ``need`` while the governor runs on this device, else ``current``."""
        return self.need(freq, current, before) if self.live else current

    # -- one poll ------------------------------------------------------------------------

    def step(self, reading: Reading, decision: Decision, before: float, frequency: float) -> None:
        """Add this poll's voltage moves to the controller's decision (``before``/``frequency``:
        what the controller believed the device ran before and after its own decision)."""
        self.reverted = None
        why = supported(reading)
        if why is not None:
            if why != self.off_reason:
                self.off_reason = why
                decision.events.append(
                    Event("voltage", f"voltage control off: {why}", origin="tempctl")
                )
            return
        self.off_reason = None
        current = int(reading.core_voltage)
        if self.target is None or (abs(current - self.target) > 2 and not self.skip):
            # first sight, or someone else moved it (the user, the firmware's trip step-down):
            # theirs stands, never undone from here (aftermath.py owns trip restores)
            self.target = current
            self._reset()
        raise_to = next(
            (
                c.frequency
                for c in decision.commands
                if c.kind == "set_frequency" and c.frequency > before + FREQ_EPS
            ),
            None,
        )
        if raise_to is not None:
            self._before_raise(raise_to, before, decision)
            return
        if any(c.kind in ("restart", "set_fields") for c in decision.commands):
            self._reset()  # a restart or a trip restore: judge afresh next poll
            return
        if decision.commands:
            # A frequency fall: no voltage move in the same poll (the firmware ramps the
            # frequency down over ~2 s, axeos-api §5.3). It keeps the window: what was stable
            # at the higher frequency is stable at the lower one, and errors seen there only
            # make this bin's floor safer.
            return
        if not reading.valid or reading.overheat or reading.fault or not reading.hashrate:
            return
        self._judge(reading, frequency, decision)

    def _judge(self, reading: Reading, frequency: float, decision: Decision) -> None:
        if self.skip > 0:
            self.skip -= 1
            return
        sample = self._sample(reading)
        if sample is None:
            return
        self.samples.append(sample)
        b, v = _bin(frequency), self.target
        if self._errors_rose():
            # errors rose: back at once to the last voltage proven stable here (or a step up)
            self.failed[b] = max(self.failed.get(b, 0), v)
            if self.stable.get(b, 10**6) <= v:
                del self.stable[b]  # what looked stable was not
            back = self.clamp(max(v + STEP_MV, self.floor_for(frequency)))
            self._move(back, f"errors at {v} mV, {frequency:g} MHz: back to {back} mV", decision)
            self.reverted = back if back > v else None
            return
        if len(self.samples) < SAMPLES:
            return
        if not self._errors_rose():
            self.stable[b] = min(self.stable.get(b, 10**6), v)
            lower = v - STEP_MV
            if lower >= self.floor_for(frequency) and lower >= self.min_mv:
                self._move(lower, f"stable at {v} mV, {frequency:g} MHz: trying {lower}", decision)
                return
        self.samples.clear()

    def _sample(self, reading: Reading) -> float | None:
        """An error percentage: the firmware's (v2.11+), else the hashrate's shortfall."""
        if reading.error_pct is not None:
            self.limit = STABLE_PCT
            return reading.error_pct
        if reading.expected_hashrate:
            self.limit = (1.0 - MIN_HASH_SHARE) * 100.0
            return max(0.0, 100.0 * (1.0 - reading.hashrate / reading.expected_hashrate))
        return None

    def _errors_rose(self) -> bool:
        """The window's errors already exceed what a whole stable window may hold.

        Summed, not a median: errorPercentage is counted error events over a small window, so
        at a full-speed hashrate one event reads several % and the median of a few readings
        is 0 even at 2-3 % true errors. Three readings at least, and for the firmware's own
        signal three with errors, so one 10-18 % spike from the small denominator never
        decides alone; an excess that is already conclusive decides at once.
        """
        s = self.samples
        if len(s) < 3 or sum(s) <= self.limit * SAMPLES:
            return False
        return self.limit != STABLE_PCT or sum(1 for x in s if x > 0) >= 3

    def _before_raise(self, freq: float, before: float, decision: Decision) -> None:
        want = self.need(freq, self.target, before)
        if want > self.target:
            i = next(i for i, c in enumerate(decision.commands) if c.kind == "set_frequency")
            decision.commands.insert(i, self._command(want, f"voltage for {freq:g} MHz"))
            self._log(want, f"{want} mV before raising to {freq:g} MHz", decision)
        self._reset()

    def _move(self, mv: int, why: str, decision: Decision) -> None:
        decision.commands.append(self._command(mv, why))
        self._log(mv, why, decision)
        self._reset()

    def _command(self, mv: int, why: str) -> Command:
        mv = self.clamp(mv)
        self.target = mv
        return Command("set_fields", why, fields=(("coreVoltage", mv),))

    def _log(self, mv: int, why: str, decision: Decision) -> None:
        table = json.dumps(self.table(), sort_keys=True)
        decision.events.append(Event("voltage", f"{why}; table {table}", origin="tempctl"))

    def _reset(self) -> None:
        self.samples.clear()
        self.skip = 1
