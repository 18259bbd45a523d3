"""What the law reads from the settings: plain numbers, defaults said once.

``DEFAULTS`` is the single source of the control settings' default values;
``tempctl.config.FIELDS`` takes its defaults from here, so the law, the CLI,
the README table and the TOML example cannot disagree.
"""

from __future__ import annotations

from dataclasses import dataclass, fields

__all__ = ["DEFAULTS", "FREQ_EPS", "PLL_STEP", "Limits", "WindowStats", "auto_min_frequency"]

FREQ_EPS = 0.5  # MHz: PLL granularity and float formatting differences (axeos-api.md §4.1)
PLL_STEP = 6.25  # MHz: the firmware ramps and rounds in 6.25 MHz steps (axeos-api.md §4.3)
AUTO_MIN_SHARE = 0.4  # TEMPCTL_MIN_FREQUENCY=0: 40 % of MAX_FREQUENCY (README "Choosing a floor")
AUTO_MIN_MHZ = 100.0

DEFAULTS: dict[str, object] = {
    "temp_threshold": 63.0,
    "first_frequency": 490.0,
    "second_frequency": 400.0,
    "max_frequency": 575.0,
    "check_interval": 30.0,
    "stable_timeframe": 1.0,  # hours (the original script's unit)
    "settle": 180.0,
    "hysteresis": 2.0,
    "critical": 70.0,
    "vr_threshold": 85.0,
    "critical_floor": 0.0,  # deprecated alias of min_frequency (levels law only)
    "min_frequency": 0.0,  # 0 = auto
    "law": "model",
    "step": 25.0,
    "apply": "auto",
    "dry_run": False,
    "max_restarts_per_hour": 4,
    "restore_after_trip": True,
    # Issue 21: the voltage governor (core/voltage.py), off until proven on hardware. The
    # bounds sit inside the TPS546 window (1000 mV floor, axeos-api §10, §14); 1200 mV is
    # the top of what users usually run (1150-1200 mV, issue 21).
    "voltage": "off",
    "min_voltage": 1000,
    "max_voltage": 1200,
    "goal": "hashrate",
    "user_cap": "keep",  # a frequency a user lowers in AxeOS is kept as a cap (core/usercap.py)
    "user_cap_hours": 0.0,  # 0 = until the user raises it
    "power_limit": 0.0,  # W per device, 0 = off (core/powercap.py)
    "power_budget": 0.0,  # W for all devices of one daemon, 0 = off (core/powercap.py)
}


def auto_min_frequency(max_frequency: float) -> float:
    """The floor when TEMPCTL_MIN_FREQUENCY is 0: 40 % of MAX, at least 100 MHz, on the PLL grid.

    At 40 % of the frequency a BM1370 draws about 45 % of its full-speed heat (power is
    p0 + k·f·V², plant.py), so the die rise above ambient roughly halves: with the Gamma
    calibration that holds 63 °C up to ~49 °C ambient, beyond any room the data show.
    """
    return max(AUTO_MIN_MHZ, round(AUTO_MIN_SHARE * max_frequency / PLL_STEP) * PLL_STEP)


@dataclass(frozen=True, slots=True)
class Limits:
    """The subset of Settings the law reads (all plain numbers, for speed and clarity)."""

    temp_threshold: float = DEFAULTS["temp_threshold"]
    first_frequency: float = DEFAULTS["first_frequency"]
    second_frequency: float = DEFAULTS["second_frequency"]
    max_frequency: float = DEFAULTS["max_frequency"]
    check_interval: float = DEFAULTS["check_interval"]
    stable_timeframe: float = DEFAULTS["stable_timeframe"]
    settle: float = DEFAULTS["settle"]
    hysteresis: float = DEFAULTS["hysteresis"]
    critical: float = DEFAULTS["critical"]
    vr_threshold: float = DEFAULTS["vr_threshold"]
    critical_floor: float = DEFAULTS["critical_floor"]
    min_frequency: float = DEFAULTS["min_frequency"]
    law: str = DEFAULTS["law"]
    step: float = DEFAULTS["step"]
    apply: str = DEFAULTS["apply"]
    dry_run: bool = DEFAULTS["dry_run"]
    max_restarts_per_hour: int = DEFAULTS["max_restarts_per_hour"]
    restore_after_trip: bool = DEFAULTS["restore_after_trip"]
    voltage: str = DEFAULTS["voltage"]
    min_voltage: int = DEFAULTS["min_voltage"]
    max_voltage: int = DEFAULTS["max_voltage"]
    goal: str = DEFAULTS["goal"]
    user_cap: str = DEFAULTS["user_cap"]
    user_cap_hours: float = DEFAULTS["user_cap_hours"]
    power_limit: float = DEFAULTS["power_limit"]

    @classmethod
    def from_settings(cls, settings) -> Limits:
        """From a config.Settings (or anything with these attributes; missing ones default)."""
        return cls(
            **{f.name: getattr(settings, f.name) for f in fields(cls) if hasattr(settings, f.name)}
        )

    @property
    def window_ms(self) -> int:
        return int(round(self.stable_timeframe * 3_600_000))

    @property
    def gap_ms(self) -> int:
        """Longest hole the stable window tolerates: a few poll intervals."""
        return int(round(max(3 * self.check_interval, 1.0) * 1000))

    @property
    def lowest(self) -> float:
        """The lowest frequency the law may command."""
        if self.law == "levels":
            # issue-4 law: SECOND, or the critical floor when that is set
            floor = self.critical_floor or self.min_frequency
            return floor if floor > 0 else self.second_frequency
        floor = self.min_frequency or self.critical_floor
        return (
            floor
            if floor > 0
            else min(self.second_frequency, auto_min_frequency(self.max_frequency))
        )

    def clamp(self, target: float) -> float:
        """The one frequency clamp: into [lowest, MAX]."""
        return max(min(target, self.max_frequency), self.lowest)

    def allowed(self, freq: float | None) -> bool:
        return freq is not None and self.lowest - FREQ_EPS <= freq <= self.max_frequency + FREQ_EPS


@dataclass(frozen=True, slots=True)
class WindowStats:
    """Summary of the persisted readings behind the stable-timeframe check."""

    stable_ms: int  # how long the trailing streak has held (no gap, none hot)
    count: int  # valid readings in [now - window, now]
    sum_mc: int  # their temperatures summed in milli-°C (exact integer arithmetic)
    held_ms: int = 0  # the same streak with no temperature test (gaps, trips, evidence only):
    # the model law asks its filtered die for the temperature part (law.Facts.stable)

    def ok(self, limits: Limits) -> bool:
        if self.count == 0 or self.stable_ms < limits.window_ms:
            return False
        bound = int(round((limits.temp_threshold - limits.hysteresis) * 1000))
        return self.sum_mc <= bound * self.count
