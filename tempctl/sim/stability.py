"""How stable a chip is at a core voltage: V_min(f), errors below it, and ``errorPercentage``.

Issue 21.1. Every constant is cited; "(estimate)" marks a modelling choice the data cannot pin.

* ``V_MIN_KNOTS`` (BM1370, the nominal chip): piecewise linear in f through
  - 400 MHz / 975 mV and 520 MHz / 1015 mV: the mtab3000 Gammas ran 400-470 MHz at about 1.0 V
    for 24 h and swept 460-530 MHz at 1020-1056 mV with hashrate at ~1.0 of expected
    (shared/data/bitaxe-steady-state.csv, mtab3000 rows; data/README §1), so the nominal chip's
    floor lies below those;
  - 650 / 1095, 700 / 1115, 750 / 1135: the ThePeacemaker82 Gamma (same csv, its
    ``tuning_step_unstable`` rows) is stable at 1100 mV up to 650 MHz, unstable at 1100 and
    stable at 1125 at 675-700 MHz, unstable at 1125 and stable at 1150 at 750 MHz. Beyond
    the knots the end slopes continue.
* Each device's chip is offset from the nominal one by ``N(0, OFFSET_SD_MV)`` drawn from the
  seed, clipped to ±3 sd: chips differ by 50 mV or more (ESP-Miner #369, #376: on BM1370 at
  525 MHz one maintainer needs 1150 mV while others run 1100 mV at 575 MHz).
* Other families have no stability data here (estimate): the BM1370 curve scaled by the ratio
  of the family's default voltage to the Gamma's 1150 mV (axeos-api §10 defaults), on the
  assumption that vendors leave each chip a similar relative margin at its defaults.
* Below V_min by d mV the chip's error share is ``BASE_ERROR·exp(d / ERROR_SCALE_MV)`` (at and
  above V_min it decays to ``BASE_ERROR``). Fitted by eye to the same ThePeacemaker82 rows:
  hashrate / expected is 0.978 at d ≈ 5 (675 MHz / 1100 mV), 0.913 at d ≈ 25 (725 / 1100) and
  0.733 at d ≈ 35 (750 / 1100); the model gives 0.996, 0.935, 0.74. ``BASE_ERROR`` 0.2 % is the
  low end of what tuners call stable (0.2-2 %, PR #1810) and near the 0.31 % of the v2.15.0
  Gamma example body (tempctl/data/bodies). ``STOP_MV``: further below, the chip stops hashing
  (estimate: about twice the deficit of the worst measured row, 750 MHz at 1100 mV).
* ``errorPercentage`` (v2.11+) is error hashrate / hashrate × 100 (hashrate_monitor_task.c).
  The error hashrate comes from counted error events, each worth ``ERROR_QUANTUM_GHS`` over a
  reading window (estimate): one error at 200-350 MHz on a Gamma (hashrate 400-700 GH/s) then
  reads 10-18 %, the spikes PR #1810's comments report from the small denominator; the count
  is Poisson, so the mean is the true share and the median of a few readings is 0 when stable.
"""

from __future__ import annotations

import math
import random

__all__ = [
    "BASE_ERROR",
    "OFFSET_SD_MV",
    "Stability",
    "error_share",
    "nominal_v_min",
]

V_MIN_KNOTS = ((400.0, 975.0), (520.0, 1015.0), (650.0, 1095.0), (700.0, 1115.0), (750.0, 1135.0))
OFFSET_SD_MV = 25.0
# Default core voltage (mV) per family (axeos-api §10); the BM1370 (Gamma) is calibrated
DEFAULT_MV = {"BM1370": 1150.0, "BM1366": 1200.0, "BM1368": 1166.0, "BM1397": 1400.0}
BASE_ERROR = 0.002
ERROR_SCALE_MV = 7.2
STOP_MV = 70.0
ERROR_QUANTUM_GHS = 72.0


def _bm1370(freq_mhz: float) -> float:
    k = V_MIN_KNOTS
    if freq_mhz <= k[0][0]:
        (f0, v0), (f1, v1) = k[0], k[1]
    elif freq_mhz >= k[-1][0]:
        (f0, v0), (f1, v1) = k[-2], k[-1]
    else:
        i = next(i for i in range(1, len(k)) if freq_mhz <= k[i][0])
        (f0, v0), (f1, v1) = k[i - 1], k[i]
    return v0 + (v1 - v0) * (freq_mhz - f0) / (f1 - f0)


def nominal_v_min(asic: str, freq_mhz: float) -> float:
    """V_min (mV) of the family's nominal chip at this frequency."""
    # BM1372/73 and unknown chips: the BM1370 they are modelled on (sim/params.py)
    scale = DEFAULT_MV.get(asic.upper(), DEFAULT_MV["BM1370"]) / DEFAULT_MV["BM1370"]
    return _bm1370(freq_mhz) * scale


def error_share(deficit_mv: float) -> float:
    """The chip's true error share (0..1) at ``deficit_mv`` below its V_min (negative: above)."""
    if deficit_mv <= 0:
        return BASE_ERROR
    return min(1.0, BASE_ERROR * math.exp(deficit_mv / ERROR_SCALE_MV))


class Stability:
    """One device's chip: its V_min offset and its error readings (deterministic per seed)."""

    def __init__(self, asic: str, seed: int | None, chips: int = 1):
        self.asic = asic
        self.chips = chips
        rng = random.Random(None if seed is None else f"{seed}:vmin")
        sd = OFFSET_SD_MV
        self.offset_mv = max(-3 * sd, min(3 * sd, rng.gauss(0.0, sd)))
        self._errors = random.Random(None if seed is None else f"{seed}:errors")

    def v_min(self, freq_mhz: float) -> float:
        return nominal_v_min(self.asic, freq_mhz) + self.offset_mv

    def deficit(self, freq_mhz: float, core_mv: float) -> float:
        return self.v_min(freq_mhz) - core_mv

    def share(self, freq_mhz: float, core_mv: float) -> float:
        """True error share at this operating point; 1.0 once the chip stops hashing."""
        d = self.deficit(freq_mhz, core_mv)
        return 1.0 if d >= STOP_MV else error_share(d)

    def hash_factor(self, freq_mhz: float, core_mv: float) -> float:
        """Good hashes / expected: what errors leave of the hashrate (0 when stopped)."""
        if core_mv <= 0:
            return 0.0
        return 1.0 - self.share(freq_mhz, core_mv)

    def error_percentage(self, freq_mhz: float, core_mv: float, hashrate_ghs: float) -> float:
        """The firmware's ``errorPercentage`` reading: counted error events over the window,
        as error hashrate / hashrate × 100 (0 with no hashrate, as the firmware guards)."""
        if hashrate_ghs <= 0:
            return 0.0
        good_share = max(1e-9, 1.0 - self.share(freq_mhz, core_mv))
        error_ghs = hashrate_ghs / good_share * self.share(freq_mhz, core_mv)
        n = _poisson(self._errors, error_ghs / ERROR_QUANTUM_GHS)
        return round(100.0 * n * ERROR_QUANTUM_GHS / hashrate_ghs, 2)


def _poisson(rng: random.Random, mean: float) -> int:
    if mean > 50:  # the normal approximation: a stopped chip is no place for a long loop
        return max(0, round(rng.gauss(mean, math.sqrt(mean))))
    limit, k, p = math.exp(-mean), 0, rng.random()
    while p > limit:
        k += 1
        p *= rng.random()
    return k
