"""Constants of a board's plant (``PlantParams``), per ASIC: the calibration the simulator uses.

Cited sources: shared/data (data/README §n) and shared/reference/axeos-api.md (axeos-api §n).
A scenario's ``[plant]`` table overrides any of them (tempctl/sim/scenario.py).
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields, replace

__all__ = ["FanEffect", "PARAMS", "PlantParams", "params_for"]


@dataclass(frozen=True)
class FanEffect:
    """How fan duty changes cooling and what rpm it gives.

    The whole die rise above ambient scales as ``((ref + still) / (duty + still))**exponent``
    (forced convection over a heatsink, h ∝ airflow^n). ``exponent`` 0.55 is our fit on the
    mtab3000 autofan traces (ASIC held at 60 °C while the fan follows power): per device
    log(duty) against log(rise) gave n = 0.44–0.74 on the two long traces; it reproduces
    their +150–300 rpm per W (data/README §3). ``still_air_pct`` stands for natural
    convection at 0 % duty (a modelling choice: a stopped fan multiplies the rise by 3.7, so
    a Gamma trips quickly). rpm is taken as linear in duty; ``rpm_full`` 5700 assumes the
    nearly constant 5300–5900 rpm of the jojo4751 Gammas is full duty (not logged).
    """

    exponent: float = 0.55
    still_air_pct: float = 10.0
    rpm_full: float = 5700.0

    def scale(self, fan_pct: float, ref_pct: float) -> float:
        duty = min(max(fan_pct, 0.0), 100.0)
        return ((ref_pct + self.still_air_pct) / (duty + self.still_air_pct)) ** self.exponent

    def rpm(self, fan_pct: float) -> int:
        return round(self.rpm_full * min(max(fan_pct, 0.0), 100.0) / 100.0)


@dataclass(frozen=True)
class PlantParams:
    """Constants of one board. The defaults are the Bitaxe Gamma (BM1370) calibration."""

    asic: str = "BM1370"
    # Power: own OLS on the 45 single-BM1370 steady-state rows whose temperature was free
    # (jojo4751 segments, ThePeacemaker82 steps; 1100-1200 mV, the regime a guard works in),
    # alternated with the leak fit below to convergence. Over all 422 single-BM1370 rows with a
    # set voltage the MAE is 0.68 W; the mtab3000 rows (autofan, 1.0-1.05 V) read 0.6-0.8 W
    # above the model. (A source-balanced fit over all 422 rows, p0 6.4 / k 0.0157, has MAE
    # 0.55 W but gives +25 MHz => +0.60 W at 1150 mV, where both free-temperature sources show
    # +0.73-0.74 W, data/README §4; this fit gives +0.66 W and +0.72 °C.)
    p0_w: float = 5.14
    k_w: float = 0.0170
    # Leakage: median of dP/dT / (k·f·V²) over the five jojo4751 Gammas at constant settings
    # (0.13-0.20 W/°C, r >= 0.99) and the ThePeacemaker82 750 MHz log (0.24 W/°C); data/README §3.
    leak_per_c: float = 0.0093
    t_ref_c: float = 60.0  # the autofan set-point most of the data sit at
    # °C/W at fixed fan: data/README §4 gives 1.14 (ThePeacemaker82) and 1.05 (jojo4751); our
    # 2-node fit of the pmcochrane 1 Hz trace on measured power gives 1.04–1.08.
    r_c_per_w_fixed: float = 1.10
    fan_ref_pct: float = 100.0  # those fans ran near full speed (see FanEffect.rpm_full)
    fan_effect: FanEffect = field(default_factory=FanEffect)
    # Ambient is never logged, so this is a modelling choice, not a measurement: with the
    # heatwave scenario (575 MHz / 1150 mV, fan 100 %) the die sits at 60.0 °C at 28 °C
    # ambient, crosses 63 °C at 30.6 °C and reaches 71.5 °C at 38 °C. Fitting one ambient per
    # jojo4751 unit / ThePeacemaker82 run with it gives 26-30 °C rooms (tests/test_plant.py).
    case_offset_c: float = 17.6
    # Dynamics: a 2-node fit of the pmcochrane 1 Hz trace on its measured power is flat for
    # τ_slow 30-48 s (RMSE 0.256-0.264 °C) with fast share 0.55, τ_fast <= 1 s (unresolved:
    # readings refresh every few s); data/README §4 reports 0.51 / < 1 s / 48 s, and 36-48 s
    # for the 30 s jojo4751 up-steps, which favour the longer τ. Replaying that trace's
    # commanded frequency through this plant: RMSE 0.39 °C at 48 s, best 36 s at 0.38 °C.
    fast_share: float = 0.50
    tau_fast_s: float = 1.0
    tau_slow_s: float = 48.0
    # VR: about +1.8-2.0 °C/W (mtab3000 traces, data/README §3). On the pmcochrane trace a single
    # lag on measured power fits best at τ 5-6 s (RMSE 0.67 °C on whole-degree readings, slope
    # 1.78 °C/W). Offset: VR − die ≈ +11 °C at 34 W there, given this die model at 100 % fan.
    # The VR is not fan-scaled: the slope was measured under autofan and the fan effect on it
    # is not identifiable from these data.
    vr_c_per_w: float = 1.9
    vr_offset_c: float = 6.0
    tau_vr_s: float = 5.0
    # Reading noise (docs/sensor.md, benchmarks/sensor_calibration.py): sd of successive
    # differences / √2 at unchanged settings on the 30-60 s traces is 0.13-0.61 °C per device,
    # median 0.27 over 18 devices; the median real sensor, not the best case (the 1 Hz
    # pmcochrane trace, whose repeated values hide the noise, gave 0.06).
    noise_c: float = 0.27
    # Rare spikes: jumps over 2 °C at unchanged settings, once the 300 s after a boot are
    # left out, are about 1 in 1000 readings on those traces (13 in 5741 pairs, half a spike
    # each); the largest are 5-6 °C (jojo4751 Worker4 5.2, pmcochrane 5.1).
    spike_rate: float = 0.001
    spike_min_c: float = 2.0
    spike_max_c: float = 6.0
    # A new conversion every few seconds; between them the firmware shows the held value
    # (pmcochrane 1 Hz trace: 71 % of successive readings repeat; estimate 3 s).
    temp_refresh_s: float = 3.0
    # Die sensors: 1, or 2 (temp2 a real second sensor; None: as the board has). temp2 reads
    # the die plus ``temp2_offset_c`` (its own noise): the v2.13.2 Hex example's second
    # sensor sits ~2.7 °C cooler (estimate); on a real board either may be the hotter.
    sensors: int | None = None
    temp2_offset_c: float = -2.7
    # hashRate / (f·2040/1000): median 1.006 over all single-BM1370 rows; axeos-api §10 says
    # 90–100 % typical. Relative noise: sd 2.3 % on the pmcochrane trace (v2.11+: ±1–3 %).
    hash_efficiency: float = 1.0
    small_cores: int = 2040  # Gamma: 1 × BM1370, 2040 small cores (axeos-api §10)
    chips: int = 1
    # Added to the brief's list:
    power_offset_w: float = 5.0  # TPS546 boards report Vout·Iout + 5 W (axeos-api §10)
    temp_step_c: float = 0.125  # sensor resolution: EMC2101 external 0.125, internal 1 °C
    hash_noise: float = 0.02
    # <= v2.10 (nonce counting): sd of successive differences of ln(hashRate) / √2 at
    # unchanged settings, median 0.0585 over the 18 devices of the 30-60 s traces (v2.6-v2.8,
    # 0.019-0.093; data/README: ±5-10 %).
    hash_noise_old: float = 0.0585

    def __hash__(self) -> int:
        # The plant's caches key on these params at every step: hash the ~25 fields once.
        cached = self.__dict__.get("_hash")
        if cached is None:
            cached = hash(tuple(getattr(self, f.name) for f in fields(self)))
            object.__setattr__(self, "_hash", cached)
        return cached

    def fan_scale(self, fan_pct: float) -> float:
        return self.fan_effect.scale(fan_pct, self.fan_ref_pct)

    def r_c_per_w(self, fan_pct: float) -> float:
        """°C/W at this fan duty (what an autofan PID works against)."""
        return self.r_c_per_w_fixed * self.fan_scale(fan_pct)

    def fan_rpm(self, fan_pct: float) -> int:
        return self.fan_effect.rpm(fan_pct)

    def expected_hashrate(self, freq_mhz: float) -> float:
        """The firmware's expectedHashrate: f × small cores × chips / 1000 (axeos-api §10)."""
        return freq_mhz * self.small_cores * self.chips / 1000.0


_GAMMA = PlantParams()

# No temperature-free data for the other chips here, so these are derived, not calibrated.
# BM1368: adammwest Supra fit P ≈ 0.6 + 0.0180·f·V², T = 24.2 + 1.84·P (data/README §4). Its
# 0.6 W intercept means input power from an INA260 (Supra 400/401: no offset, temp from the
# EMC2101 internal sensor in whole °C). case_offset 0 puts that fit at ≈25 °C ambient.
# BM1366 (Ultra) and BM1397 (Max): k scaled from BM1368 by small-core count; they land below
# the self-test's 12 W bound at their defaults (axeos-api §10), a rough estimate.
_SUPRA = replace(
    _GAMMA,
    asic="BM1368",
    p0_w=0.6,
    k_w=0.0180,
    r_c_per_w_fixed=1.84,
    case_offset_c=0.0,
    small_cores=1276,
    power_offset_w=0.0,
    temp_step_c=1.0,
)
PARAMS = {
    "BM1370": _GAMMA,
    "BM1368": _SUPRA,
    "BM1366": replace(_SUPRA, asic="BM1366", k_w=0.0180 * 894 / 1276, small_cores=894),
    "BM1397": replace(_SUPRA, asic="BM1397", k_w=0.0180 * 672 / 1276, small_cores=672),
    # BM1372/BM1373 (ESP-Miner master only, axeos-api §7): no data at all, so (estimate) the
    # Gamma's calibration with the chip name changed: the same 2040 small cores and TPS546 board
    # as the BM1370 whose option lists it shares (§7); its 327 MHz / 1000 mV default then draws
    # ~10.7 W. Derived, not measured: do not fit anything to it.
    "BM1372": replace(_GAMMA, asic="BM1372"),
    "BM1373": replace(_GAMMA, asic="BM1373"),
}


def params_for(asic: str) -> PlantParams:
    """Plant constants for a single-chip board with this ASIC (BM1370 is the calibrated one)."""
    try:
        return PARAMS[asic.upper()]
    except KeyError:
        raise ValueError(
            f"no plant parameters for ASIC {asic!r}; known: {sorted(PARAMS)}"
        ) from None
