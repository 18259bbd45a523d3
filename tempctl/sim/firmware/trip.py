"""The firmware's overheat protection (axeos-api.md §9; main/tasks/power_management_task.c).

A mixin of ``Firmware``: it reads and writes the device's NVS settings and phase.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from tempctl.sim.firmware.states import BOOT_MHZ, COOLDOWN, MINING, RESET_PANIC

__all__ = [
    "COOLDOWN_CHECK_S",
    "COOLDOWN_INTERNAL_TEMP_C",
    "COOLDOWN_MIN_CHECKS",
    "COOLDOWN_VR_C",
    "OverheatMixin",
    "PENALTY_MHZ",
    "PENALTY_MV",
]

COOLDOWN_MIN_CHECKS = 6  # §9.2: at least 6 x 5 s = 30 s
COOLDOWN_CHECK_S = 5.0
COOLDOWN_VR_C = 95.0  # §9.2: longer while vrTemp > 95
COOLDOWN_INTERNAL_TEMP_C = 45.0  # §9.2: v2.11-v2.13 internal-sensor boards also wait for temp <= 45
PENALTY_MHZ = 100.0  # §9.2 step 4
PENALTY_MV = 100

if TYPE_CHECKING:
    from tempctl.sim.firmware.device import Firmware

    _Base = Firmware
else:
    _Base = object


class OverheatMixin(_Base):
    """Trip checks, the latched (<= v2.10) and the recovering (v2.11+) overheat sequences."""

    def _check_trip(self) -> None:
        """§9.1: temp or temp2 > 75 °C (80 in v2.0.0), vrTemp > 105 °C (v2.2.0+)."""
        if self.phase != MINING:
            return
        limit = 80.0 if self.v < (2, 0, 1) else 75.0
        s = self.sample
        hot = s.temp > limit or (self.board.two_sensors and s.temp2 > limit)
        if self.v >= (2, 2, 0) and self.board.tps546 and s.vr > 105.0:
            hot = True
        if hot:
            self._trip()

    def force_overheat(self) -> bool:
        """Fault injection: the firmware trips now (as if the sensor said > 75 °C)."""
        if self.phase != MINING or self._reboot_at is not None:
            return False
        self._trip()
        return True

    def inject_temp(self, value: float) -> None:
        """Fault injection: the sensor reads ``value`` (until the next sample). The firmware
        trusts it, so 127 °C (EMC2101 diode open) trips the overheat protection (§10)."""
        if self.phase == MINING and self._ramp is None:
            self.sample.temp = value
            self._check_trip()

    def _trip(self) -> None:
        self.overheat_trips += 1
        self.trip_times.append(self.t)
        if self.auto_recovery:
            # §9.2 v2.11+: record F/V, manual fan 100 (sticky), overheat_mode 1, stop, cool down
            self._trip_setting = (self.nvs_mhz, self.nvs_mv)
            self.autofan = False
            self.manual_fan = 100.0
            self.overheat_mode = 1
            self.phase = COOLDOWN
            self._apply_at = None
            self._frozen_hashrate = self._hashrate_value() if self.v < (2, 14, 0) else None
            if self.v >= (2, 14, 0):
                self._after_ramp = "off"
                self.target_mhz = BOOT_MHZ
                self._start_ramp(self.actual_mhz, BOOT_MHZ)
            else:
                self._ramp = None  # v2.11-v2.13 cut power at once
                self.applied_mv = 0
            self._cool_checks = 0
            self._cool_check_at = self.t + COOLDOWN_CHECK_S
            self._last_vr_refresh = self.t
        else:
            # §9.2 v2.1.9-v2.10 (and older): latched NVS writes, then exit() -> crash reboot
            self.nvs_mv = 1000 if self.v >= (2, 1, 9) else 990
            self.nvs_mhz = BOOT_MHZ
            self.manual_fan = 100.0
            self.autofan = False
            if self.v >= (2, 1, 9):
                self.overheat_mode = 1
            self.fan_pct = 100.0
            self._go_down(RESET_PANIC)

    def _cooldown_check(self) -> None:
        self._cool_checks += 1
        self._cool_check_at = self.t + COOLDOWN_CHECK_S
        if self._cool_checks < COOLDOWN_MIN_CHECKS:
            return
        if self.board.tps546 and self.plant.read_vr() > COOLDOWN_VR_C:
            return
        if (
            self.board.internal_sensor
            and self.v < (2, 14, 0)
            and self._read_temps()[0] > COOLDOWN_INTERNAL_TEMP_C
        ):
            return
        # step 4: write V-100 / F-100 (with the quirks), re-init live, clear overheat_mode.
        # §14: the voltage step has no floor (power_management_task.c ~l.210-213), so a second
        # trip on a Gamma asks the TPS546 for < 1.0 V, which it refuses: _asic_init stalls.
        f, v = self._trip_setting or (self.nvs_mhz, self.nvs_mv)
        self.nvs_mhz = f - PENALTY_MHZ if f - PENALTY_MHZ > 100 else 400.0
        self.nvs_mv = v - PENALTY_MV if v - PENALTY_MV > 100 else 1000
        self.overheat_mode = 0
        self._trip_setting = None
        self._cool_check_at = None
        self._after_ramp = None
        self._asic_init()
