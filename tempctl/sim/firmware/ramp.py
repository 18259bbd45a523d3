"""The frequency ramp (axeos-api.md §5.3; components/asic/frequency_transition_bmXX.c)."""

from __future__ import annotations

import math
from dataclasses import dataclass

__all__ = ["RAMP_STEP_MHZ", "RAMP_STEP_S", "Ramp"]

RAMP_STEP_MHZ = 6.25  # §5.3: frequency_transition_bmXX.c steps 6.25 MHz ...
RAMP_STEP_S = 0.1  # ... every 100 ms


@dataclass
class Ramp:
    start: float
    target: float
    t0: float

    @property
    def steps(self) -> int:
        return math.ceil(abs(self.target - self.start) / RAMP_STEP_MHZ - 1e-9)

    @property
    def end(self) -> float:
        return self.t0 + self.steps * RAMP_STEP_S

    def value(self, t: float) -> float:
        k = math.floor((t - self.t0) / RAMP_STEP_S + 1e-9)
        if k >= self.steps:
            return self.target
        if k <= 0:
            return self.start
        delta = min(k * RAMP_STEP_MHZ, abs(self.target - self.start))
        return self.start + math.copysign(delta, self.target - self.start)

    def next_step_time(self, t: float) -> float:
        k = math.floor((t - self.t0) / RAMP_STEP_S + 1e-9) + 1
        return self.t0 + k * RAMP_STEP_S
