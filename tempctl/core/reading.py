"""The typed reading every part of tempctl passes around.

The AxeOS client builds one from ``GET /api/system/info``; the SQLite log stores
and reloads it; the controller, replay and simulator consume it. A reading with
``temp is None`` is *invalid*: the device gave no plausible ASIC temperature
(see ``axeos.plausible_temp``), and it must never count as cool.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Reading:
    device: str
    ts_ms: int  # wall clock, UTC epoch milliseconds (stamp only; never used to schedule)
    temp: float | None = None  # °C, None = no valid ASIC temperature
    vr_temp: float | None = None  # °C, None when the board has no TPS546 or it is implausible
    frequency: float | None = None  # MHz, the stored setting (NVS)
    actual_frequency: float | None = None  # MHz, live PLL value (v2.14+ only)
    core_voltage: int | None = None  # mV setting
    core_voltage_actual: int | None = None  # mV measured
    hashrate: float | None = None  # GH/s
    power: float | None = None  # W
    fan_pct: float | None = None  # % duty applied
    fan_rpm: int | None = None
    autofan: bool | None = None
    uptime_s: int | None = None
    version: str | None = None  # firmware, e.g. "v2.15.0"
    asic_model: str | None = None  # e.g. "BM1370"
    hostname: str | None = None
    mac: str | None = None
    overheat: bool = False  # the firmware's own overheat trip is showing (axeos-api.md §9.3)
    raw_temp: float | None = None  # what the device said, even when implausible
    error: str | None = None  # why the reading (or its temperature) is not valid
    backfilled: bool = False  # taken from /api/system/statistics after downtime
    # A stop of mining that is not an overheat: "power_fault", "hardware_fault" (the
    # firmware's own keys, system_api_json.c) or "pool_down" (v2.14+ stops without a pool).
    fault: str | None = None
    # The newest release whose info keys the device shows (e.g. "v2.14.0"): evidence for
    # capabilities when the version string is no release number. Not logged.
    firmware_floor: str | None = None
    # Issue 21: the stability signal. errorPercentage (v2.11+), and expectedHashrate (the
    # only signal before v2.11: hashRate against it).
    error_pct: float | None = None
    expected_hashrate: float | None = None

    @property
    def valid(self) -> bool:
        return self.temp is not None
