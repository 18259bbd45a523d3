"""A Kalman filter over the thermal model's steady die, with the sensor noise it learns.

The state is one number: the die temperature the device settles at with its present
settings (``model.py``'s ``t_ss``), with its variance. Each reading, corrected for the
part of the last step's lag still to come, is a measurement of it with the sensor's noise.
Between readings the room may drift (the model's trend predicts that part; the rest is
process noise), and a frequency change moves it by the model's prediction, which is only
as good as the learned °C/W.

Readings far from the prediction (``GATE_SD`` standard deviations of the innovation) are
held, not used: a second one on the same side confirms that the die really moved, a
reading back near the prediction discards the held one (a spike, a plausible-looking
2 °C from a confused sensor). The sensor noise is learned per device from successive
readings at unchanged settings that the gate let through; real 30-60 s traces show sd
0.15-0.47 °C (issue 20, shared/data/traces), so a new device starts at the median.
Pure: no I/O, no clock.
"""

from __future__ import annotations

import math

__all__ = ["ACCEPTED", "CONFIRMED", "HELD", "NOISE_PRIOR_C", "DieFilter"]

ACCEPTED, HELD, CONFIRMED = "accepted", "held", "confirmed"

NOISE_PRIOR_C = 0.30  # median sd of successive differences / √2 on the 30-60 s traces (issue 20)
NOISE_MIN_C = 0.04  # floor: the EMC2101's 0.125 °C step alone is 0.036 °C sd (step / √12)
NOISE_GAIN = 1.0 / 64  # weight of one squared difference in the learned noise variance
GATE_SD = 4.0  # a reading this many innovation sds from the prediction waits for a second one
GATE_AFTER = 3  # readings an estimate needs before it may hold one back (one says little)
BIAS_GAIN = 0.2  # weight of one normalised innovation in the running bias
BIAS_LIMIT = 1.0  # a running bias beyond this (in sds) means the plant moved: follow faster
WANDER_GAIN = 1.0 / 64  # weight of one product of successive innovations in the wander


class DieFilter:
    """Mean ``x`` and variance ``var`` (°C²) of the steady die; ``noise_var`` of a reading."""

    __slots__ = ("x", "var", "noise_var", "held", "last", "bias", "n", "wander_var", "nu", "floor")

    def __init__(self, noise_c: float = NOISE_PRIOR_C):
        self.noise_var = max(noise_c, NOISE_MIN_C) ** 2
        # the least a reading's error can be: a whole-degree sensor (BM1368 boards, issue 20)
        # rounds by up to 0.5 °C, sd 1/√12, however quiet it looks between flips
        self.floor = NOISE_MIN_C**2
        self.x: float | None = None
        self.var = self.noise_var
        self.held: float | None = None  # a far reading waiting for a second one
        self.last: float | None = None  # the last reading used, for the noise pairs
        self.bias = 0.0
        self.n = 0  # readings used since the last reset
        # How far the die wanders around the estimate faster than the filter follows (a
        # draft, a room's wobble): the covariance of successive innovations, which the
        # sensor's white noise leaves at zero. The margin covers it (``model.sd``).
        self.wander_var = 0.0
        self.nu: float | None = None  # the last innovation, for the pairs

    @property
    def noise_c(self) -> float:
        return math.sqrt(self.noise_var)

    @property
    def sd(self) -> float:
        return math.sqrt(self.var)

    def reset(self) -> None:
        """What was being estimated no longer holds (a reboot, an unmodelled change)."""
        self.x = self.held = self.last = None
        self.var = self.noise_var
        self.bias = 0.0
        self.n = 0
        self.nu = None

    def quantised(self, step_c: float) -> None:
        """The readings come in steps of ``step_c`` (0 when they do not)."""
        self.floor = max(NOISE_MIN_C**2, step_c * step_c / 12.0)
        self.noise_var = max(self.noise_var, self.floor)

    def predict(self, drift_c: float, process_var: float) -> None:
        """Time passed: the room moved by ``drift_c`` (the trend), give or take."""
        if self.x is not None:
            self.x += drift_c
            self.var += process_var

    def shift(self, delta_c: float, rel_err: float) -> None:
        """A frequency change predicted to move the steady die by ``delta_c``."""
        if self.x is not None:
            self.x += delta_c
            self.var += (rel_err * delta_c) ** 2
        self.last = self.nu = None  # a pair across a change is not noise

    def update(self, z: float, learn_noise: bool = True) -> str:
        """One reading ``z`` (lag-corrected to the steady die). Returns ACCEPTED, HELD or
        CONFIRMED (a held reading and this one agree: the die moved; the state jumps)."""
        if self.x is None:
            self.x, self.var, self.held, self.last, self.n = z, self.noise_var, None, z, 1
            return ACCEPTED
        s = self.var + self.noise_var
        nu = z - self.x
        if nu * nu > GATE_SD * GATE_SD * s and self.n >= GATE_AFTER:
            h = self.held
            if (
                h is not None
                and (h - self.x) * nu > 0
                and (z - h) ** 2 <= GATE_SD * GATE_SD * 2 * self.noise_var
            ):
                self.x, self.var = (h + z) / 2, self.noise_var / 2
                self.held, self.last, self.bias, self.n, self.nu = None, z, 0.0, 2, None
                return CONFIRMED
            self.held = z
            return HELD
        self.held = None
        self.n += 1
        if learn_noise and self.last is not None:
            d = z - self.last
            self.noise_var += NOISE_GAIN * (d * d / 2 - self.noise_var)
            self.noise_var = max(self.noise_var, self.floor)
        if learn_noise and self.nu is not None:
            self.wander_var += WANDER_GAIN * (nu * self.nu - self.wander_var)
        self.last = z
        self.nu = nu if learn_noise else None
        self.bias += BIAS_GAIN * (nu / math.sqrt(s) - self.bias)
        if abs(self.bias) > BIAS_LIMIT:
            # a sustained one-sided innovation: the plant changed; let the readings lead
            self.var = max(self.var, self.noise_var)
            self.bias = 0.0
        gain = self.var / (self.var + self.noise_var)
        self.x += gain * nu
        self.var *= 1.0 - gain
        return ACCEPTED
