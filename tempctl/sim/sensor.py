"""What a Bitaxe's sensors read of the plant's true state: noise, steps, spikes, a second sensor.

Calibrated on the 30-60 s traces in shared/data/traces (docs/sensor.md, the figures from
``benchmarks/sensor_calibration.py``); the constants are in ``PlantParams``:

* white noise of sd ``noise_c`` on every conversion, then quantised to ``temp_step_c``
  (0.125 °C EMC2101 external diode, 1 °C internal sensors, axeos-api §10);
* with probability ``spike_rate`` per conversion a spike of ``spike_min_c``..``spike_max_c``
  either way (the rare 2-6 °C jumps of the traces);
* ``temp2`` on two-sensor boards: the die plus ``temp2_offset_c`` with its own noise, so
  either sensor may be the hotter one;
* the hashrate's relative noise ``hash_noise``.

Holding a value between conversions is the firmware's (telemetry ``temp_refresh_s``).
Each reading has its own random stream, so how often one is taken does not shift the others.
"""

from __future__ import annotations

import random

from tempctl.sim.params import PlantParams

__all__ = ["Sensor", "quantise"]


def quantise(x: float, step: float) -> float:
    return round(x / step) * step if step > 0 else x


class Sensor:
    """The readings of one board, deterministic given the seed."""

    def __init__(self, params: PlantParams, seed: int | None):
        self.params = params

        def rng(name: str) -> random.Random:
            return random.Random(None if seed is None else f"{seed}:{name}")

        self._die, self._die2, self._spike = rng("die"), rng("die2"), rng("spike")
        self._vr, self._hash = rng("vr"), rng("hash")

    def _temp(self, true_c: float, rng: random.Random) -> float:
        p = self.params
        raw = true_c + (rng.gauss(0.0, p.noise_c) if p.noise_c else 0.0)
        if p.spike_rate and self._spike.random() < p.spike_rate:
            size = self._spike.uniform(p.spike_min_c, p.spike_max_c)
            raw += size if self._spike.random() < 0.5 else -size
        return quantise(raw, p.temp_step_c)

    def die(self, die_c: float) -> float:
        """The ASIC sensor (AxeOS ``temp``)."""
        return self._temp(die_c, self._die)

    def temp2(self, die_c: float) -> float:
        """The second die sensor (AxeOS ``temp2``) of a two-sensor board."""
        return self._temp(die_c + self.params.temp2_offset_c, self._die2)

    def vr(self, vr_c: float) -> float:
        """VR temperature in whole °C, as the TPS546 reports it."""
        noise = self._vr.gauss(0.0, self.params.noise_c) if self.params.noise_c else 0.0
        return float(round(vr_c + noise))

    def hashrate(self, expected_ghs: float) -> float:
        p = self.params
        noise = self._hash.gauss(0.0, p.hash_noise) if p.hash_noise else 0.0
        return max(0.0, expected_ghs * p.hash_efficiency * (1.0 + noise))
