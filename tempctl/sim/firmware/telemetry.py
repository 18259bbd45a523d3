"""What the firmware measures and shows: samples, GET /api/system/info, /asic, /statistics.

A mixin of ``Firmware`` (axeos-api.md §4, §7, §8, §10; main/http_server/system_api_json.c).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING

from tempctl.sim.firmware.boards import ASIC_OPTIONS
from tempctl.sim.firmware.cjson import dumps, f32, f32_many, round7, round7_many
from tempctl.sim.firmware.noise import (
    key_hash,
    quantize,
    smooth_noise,
    step_noise,
    step_noise_hashed,
)
from tempctl.sim.firmware.states import BOOTING, COOLDOWN, DOWN, MINING, PAUSED, STOPPED
from tempctl.sim.firmware.stats import StatsRing
from tempctl.sim.firmware.trip import COOLDOWN_CHECK_S

__all__ = ["AVERAGES", "Sample", "TelemetryMixin"]

if TYPE_CHECKING:
    from tempctl.sim.firmware.device import Firmware

    _Base = Firmware
else:
    _Base = object

AVERAGES = ((60.0, "hashRate_1m"), (600.0, "hashRate_10m"), (3600.0, "hashRate_1h"))


@dataclass
class Sample:
    """What the power-management loop last measured (§4.3: telemetry is sample-and-hold)."""

    temp: float = -1.0
    temp2: float = -1.0
    vr: float = 0.0
    power: float = 0.0
    voltage_mv: float = 0.0
    current_ma: float = 0.0
    core_mv: float = 0.0


class TelemetryMixin(_Base):
    stats: StatsRing
    # False: info() leaves hashrateMonitor and the hashRate_1m/10m/1h averages at their
    # template values. For in-process users that read neither (``simulate``: parse_info
    # does not), it saves a third of the cost of a body.
    full_body = True
    _absent_info_keys: frozenset[str] | None = None  # set by the first info()
    _held_temps: tuple[float, float, float] | None = None  # (until, temp, temp2)

    # -- sampling (the power-management loop, §4.3) -----------------------------------------

    def _no_temp2(self) -> float:
        return -1.0 if self.v >= (2, 11, 0) else 0.0  # §10: -1 (v2.11+), 0 in v2.10

    def _read_temps(self) -> tuple[float, float]:
        # A conversion every temp_refresh_s; between them the firmware shows the held values.
        held = self._held_temps
        if held is not None and self.t < held[0]:
            return held[1], held[2]
        temp = self.plant.read_die()  # noisy and quantised to the sensor step by the plant
        # temp2: the plant's second sensor, hotter or cooler than temp (PlantParams)
        temp2 = self.plant.read_temp2() if self.board.two_sensors else self._no_temp2()
        self._held_temps = (self.t + self.params.temp_refresh_s - 1e-9, temp, temp2)
        return temp, temp2

    def _take_sample(self) -> None:
        self._next_sample_at = self._next_loop_tick()
        if self._ramp is not None and self.phase == MINING:
            return  # §4.3: the loop is blocked during a ramp; values freeze
        if self.phase == COOLDOWN:
            # §9.3: temp frozen (internal-sensor boards: -1 on v2.14+, board temp before);
            # vrTemp refreshed every 5 s.
            if self.board.internal_sensor:
                self.sample.temp = -1.0 if self.v >= (2, 14, 0) else self._read_temps()[0]
            if self.board.tps546 and self.t - self._last_vr_refresh >= COOLDOWN_CHECK_S - 1e-9:
                self.sample.vr = float(round(self.plant.read_vr()))
                self._last_vr_refresh = self.t
            self.sample.power, self.sample.current_ma, self.sample.core_mv = 0.0, 0.0, 0.0
            return
        s = self.sample
        hashing = self._hashing()
        valid = hashing and (self.phase == MINING or (self.phase == PAUSED and self._ramp))
        if valid:
            s.temp, s.temp2 = self._read_temps()
        elif (
            self.phase in (BOOTING, PAUSED, STOPPED)
            and self.board.internal_sensor
            and self.v < (2, 6, 0)
        ):
            s.temp, s.temp2 = self._read_temps()  # §10: v2.2-v2.5 internal sensors always read
        else:
            # §10: -1 whenever the ASIC is not initialised (boot, paused, stopped, init failure)
            s.temp, s.temp2 = -1.0, self._no_temp2()
            self._held_temps = None
        s.vr = float(round(self.plant.read_vr())) if self.board.tps546 else 0.0
        self._last_vr_refresh = self.t
        s.power = self.plant.power_w  # what AxeOS reports, incl. the TPS546 offset (§4.1)
        heat = max(0.0, s.power - self.params.power_offset_w)
        s.core_mv = self._core_actual(heat) if hashing else 0.0
        # (estimate) input droop; quantised to the sensors' LSBs as seen in the examples
        if self.board.tps546:
            # `current` is the core-regulator output current (§4.1); Hex stacks 3 chips in series
            stack = 3 if self.board.chips >= 3 else 1
            s.voltage_mv = quantize(self.board.nominal_v * 1000 + 90 - 0.6 * s.power, 3.125)
            s.current_ma = (
                quantize(heat / max(stack * s.core_mv / 1000.0, 0.1) * 1000.0, 62.5)
                if s.core_mv > 0
                else 0.0
            )
        else:
            vin = self.board.nominal_v * 1000 + 70 - 2.0 * s.power  # INA260: input side
            s.voltage_mv = quantize(vin, 1.25)
            s.current_ma = quantize(s.power / (vin / 1000.0) * 1000.0, 1.25)
        self._check_trip()

    def _core_actual(self, heat_w: float) -> float:
        # §10: coreVoltageActual sags 10-40 mV below the setting under load (estimate ~1 mV/W/chip)
        sag = 0.9 * heat_w / self.board.chips + 2.0 * step_noise(self.seed, "vsag", self.t, 5.0)
        return float(round(self.applied_mv - sag))

    # -- GET /api/system/info (§4) ------------------------------------------------------------

    def _hashrate_value(self) -> float:
        if self.phase == COOLDOWN and self._frozen_hashrate is not None:
            return self._frozen_hashrate  # §9.3: may stay frozen on v2.11-v2.13
        if not self._hashing():
            return 0.0
        if self.v >= (2, 11, 0):
            # §4.1: ASIC hash counters polled at 1 Hz: smooth, +-1-3 %
            base = self.plant.hashrate(self.actual_mhz, True) * self._hash_factor()
            return base * (1.0 + 0.01 * step_noise(self.seed, "hr", self.t, 1.0))
        # <= v2.10: nonce-count estimate, slow and noisy (+-5-10 %): knots every 30 s, uniform
        # in +-sqrt(3)·hash_noise_old so that their sd is the traces' (docs/sensor.md)
        amp = 1.7320508 * self.params.hash_noise_old
        return self._hr_slow * (1.0 + amp * smooth_noise(self.seed, "hr", self.t, 30.0))

    def _hash_factor(self) -> float:
        """What errors below V_min leave of the hashrate (sim/stability.py, issue 21.1)."""
        return self.stability.hash_factor(self.actual_mhz, self.applied_mv)

    def _error_percentage(self, hashrate: float) -> float:
        """v2.11+ ``errorPercentage``: error hashrate / hashrate × 100, with its noise."""
        if not self._hashing():
            return 0.0
        return self.stability.error_percentage(self.actual_mhz, self.applied_mv, hashrate)

    def _expected_hashrate(self) -> float:
        if self.phase != MINING:
            return 0.0  # §4.1: 0 while stopped (a stalled device still counts: it is MINING)
        f = self.target_mhz if self.v >= (2, 11, 0) else self.nvs_mhz  # §4.1 expectedHashrate
        return f * self.board.small_cores * self.board.chips / 1000.0

    def _float(self, x: float) -> float:
        return round7(x) if self.v >= (2, 12, 0) else f32(x)

    @property
    def _fl(self):
        """``_float`` without the version test per call."""
        return round7 if self.v >= (2, 12, 0) else f32

    @property
    def _fl_many(self):
        """``_float`` of several values at once (one struct pack for the lot)."""
        return round7_many if self.v >= (2, 12, 0) else f32_many

    def _fan_reported(self) -> float:
        if self.v < (2, 13, 0):
            return float(round(self.fan_pct))  # whole numbers before v2.13 (§4.1 fanspeed)
        if self.v >= (2, 14, 0):
            return f32(self.fan_pct)  # unrounded again in v2.14+ (§2)
        return round7(self.fan_pct)

    def info(self) -> dict:
        """The GET /api/system/info body for this generation (python dict).

        A fresh top-level dict; nested values that do not change (pools, partitions ...)
        are shared with the device's template, so treat them as read-only.
        """
        body = self.template.copy()
        s = self.sample
        hashing = self._hashing()
        hashrate = self._hashrate_value()
        power, voltage, current, temp, temp2, actual, expected, hashrate_fl = self._fl_many(
            (
                s.power,
                s.voltage_mv,
                s.current_ma,
                s.temp,
                s.temp2,
                self.actual_mhz,
                self._expected_hashrate(),
                hashrate,
            )
        )
        # §9.3: v2.14+ reads a RAM copy that a poller practically never sees at 1
        overheat_visible = self.overheat_mode if self.v < (2, 14, 0) else 0
        fan_rpm = self.params.fan_rpm(self.fan_pct)
        values: dict[str, object] = {
            "power": power,
            "voltage": voltage,
            "current": current,
            "temp": temp,
            "temp2": temp2,
            "vrTemp": s.vr,
            "coreVoltage": self.nvs_mv,
            "coreVoltageActual": s.core_mv,
            "frequency": self.nvs_mhz if self.v >= (2, 10, 0) else int(self.nvs_mhz),
            "actualFrequency": actual,
            "expectedHashrate": expected,
            "hashRate": hashrate_fl if self.v >= (2, 12, 0) else hashrate,
            "fanspeed": self._fan_reported(),
            "fanrpm": fan_rpm,
            "fan2rpm": max(0, fan_rpm - 30) if self.board.fans > 1 else 0,
            "autofanspeed": int(self.autofan),
            "manualFanSpeed": int(self.manual_fan),
            "minFanSpeed": int(self.min_fan),
            "temptarget": int(self.temptarget),
            "overheat_mode": overheat_visible,
            "overheat": overheat_visible,
            "uptimeSeconds": int(self.t - self.boot_t),
            "sharesAccepted": int(self.shares),
            "sharesRejected": int(self.shares / 1000),
            "statsFrequency": self.stats_frequency,
            "hostname": self.hostname,
            "miningPaused": self.phase == PAUSED,
            "resetReason": self.reset_reason,
            "errorPercentage": self._error_percentage(hashrate),
            "fullHostname": f"{self.hostname}.local",
            "mdnsHostname": self.hostname,
        }
        if self.pool_down and "poolConnectionInfo" in body:
            values["poolConnectionInfo"] = "Not Connected"  # §4.1 poolConnectionInfo
        if self.v < (2, 1, 9):
            values["fanspeed"] = int(self.manual_fan)  # §4.2: the manual setting back then
            values["fanSpeed"] = values["fanSpeedRpm"] = values["fanrpm"]
        # Only keys the template has are shown; the template's keys never change (settings
        # only overwrite existing keys), so the ones to drop are found once.
        absent = self._absent_info_keys
        if absent is None:
            absent = self._absent_info_keys = frozenset(k for k in values if k not in body)
        if absent:
            for key in absent & values.keys():
                del values[key]
        body.update(values)  # existing keys keep their place in the body
        if "hashRate_1m" in body and self.full_body:
            body.update(self._hashrate_averages())
        # §4.1 / §14: only present while the fault lasts (system_api_json.c ~l.111-116)
        if self.power_fault is not None and self.v >= (2, 6, 0):
            body["power_fault"] = self.power_fault
        if self.hardware_fault is not None and self.v >= (2, 14, 0):
            body["hardware_fault"] = self.hardware_fault
        if "hashrateMonitor" in body and self.full_body:
            if hashing or (self.v < (2, 14, 0) and self.phase != DOWN):
                body["hashrateMonitor"] = self._hashrate_monitor(hashrate)
            else:
                del body["hashrateMonitor"]  # §4.1: omitted before ASIC init (v2.14+)
        return body

    def _hashrate_averages(self) -> dict[str, float]:
        out: dict[str, float] = {}
        age, fl = self._hr_avg_age, self._fl
        for tau, key in AVERAGES:
            # a rolling mean over whatever history exists since boot (0 before the first sample)
            warm = 1.0 - math.exp(-age / tau) if age > 0 else 0.0
            out[key] = fl(self._hr_avg[tau] / warm) if warm > 1e-6 else 0
        return out

    def _monitor_keys(self) -> list[tuple[int, tuple[int, ...]]]:
        keys = getattr(self, "_monitor_key_cache", None)
        if keys is None:
            seed = self.seed
            keys = [
                (key_hash(seed, f"chip{i}"), tuple(key_hash(seed, f"dom{i}.{d}") for d in range(4)))
                for i in range(self.board.chips)
            ]
            self._monitor_key_cache = keys
        return keys

    def _hashrate_monitor(self, hashrate: float) -> dict:
        asics = []
        chips = self.board.chips
        fl, t = self._fl_many, self.t
        for i, (chip_key, dom_keys) in enumerate(self._monitor_keys()):
            total = hashrate / chips * (1.0 + 0.01 * step_noise_hashed(chip_key, t, 1.0))
            total_fl, *domains = fl(
                (
                    total,
                    *(total / 4 * (1.0 + 0.01 * step_noise_hashed(k, t, 1.0)) for k in dom_keys),
                )
            )
            errors = int(self.shares * (0.05 + 0.01 * i))
            asics.append({"total": total_fl, "errorCount": errors, "domains": domains})
        return {"asics": asics}

    def info_bytes(self, body: dict | None = None) -> bytes:
        return dumps(self.info() if body is None else body, pretty=self.pretty).encode()

    # -- GET /api/system/asic (§7) ------------------------------------------------------------

    def asic(self) -> dict | None:
        if self.v < (2, 7, 0):
            return None
        b = self.board
        freqs, volts = ASIC_OPTIONS[b.asic]
        body: dict[str, object] = {"ASICModel": b.asic}
        if self.v >= (2, 9, 0):
            body.update(deviceModel=b.device_model, swarmColor=b.swarm_color, asicCount=b.chips)
        if self.v >= (2, 11, 0):
            body["hashDomains"] = 1 if b.asic == "BM1397" else 4
        if self.v >= (2, 8, 0):
            body["defaultFrequency"] = b.default_mhz
        body["frequencyOptions"] = freqs
        if self.v >= (2, 8, 0):
            body["defaultVoltage"] = b.default_mv
        body["voltageOptions"] = volts
        return body

    # -- GET /api/system/statistics (§8) ------------------------------------------------------

    def _record_stats(self) -> None:
        if self.stats_frequency <= 0 or self.v < (2, 8, 0) or self.phase == DOWN:
            return
        if not self.stats.due(self.t, self.stats_frequency):
            return
        s, fl = self.sample, self._float
        avg = self._hashrate_averages()
        row = {
            "hashrate": fl(self._hashrate_value()),
            "hashrate_1m": avg["hashRate_1m"],
            "hashrate_10m": avg["hashRate_10m"],
            "hashrate_1h": avg["hashRate_1h"],
            "errorPercentage": self._error_percentage(self._hashrate_value()),
            "asicTemp": fl(s.temp),
            "asicTemp2": fl(s.temp2),
            "vrTemp": s.vr,
            "asicVoltage": s.core_mv,
            "voltage": fl(s.voltage_mv),
            "power": fl(s.power),
            "current": fl(s.current_ma),
            "fanSpeed": self._fan_reported(),
            "fanRpm": self.params.fan_rpm(self.fan_pct),
            "fan2Rpm": 0,
            "wifiRssi": self.template.get("wifiRSSI", -90),
            "freeHeap": self.template.get("freeHeap", 0),
            "responseTime": self.template.get("responseTime", 0),
        }
        self.stats.record(self.t, self.stats_frequency, row)

    def statistics(self, columns: str | None = None) -> dict | None:
        """§8 body, or None when the firmware has no statistics endpoint (< v2.8)."""
        if self.v < (2, 8, 0):
            return None
        return self.stats.body(self.v, self.t, self.boot_t, columns)
