"""Stops that are not overheats (axeos-api.md §14): no pool, a power fault, a hardware fault.

A mixin of ``Firmware``. The power-management loop stops the ASIC while one lasts
(main/tasks/power_management_task.c ~l.144 no pool, ~l.154 hardware fault); info shows
``power_fault`` / ``hardware_fault`` meanwhile (main/http_server/system_api_json.c
~l.111-116). None of them touches the settings, so they never look like a trip.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from tempctl.sim.firmware.states import BOOT_MHZ, BOOTING, MINING, STOPPED

__all__ = ["HARDWARE_FAULT_TEXT", "POWER_FAULT_TEXT", "RESUME_S", "StopsMixin"]

RESUME_S = 3.0  # §3: resume re-init takes about 3 s
# (estimate) fault texts: the reference names the keys, not their values
POWER_FAULT_TEXT = "TPS546 fault: VOUT under-voltage"
HARDWARE_FAULT_TEXT = "Peripheral fault: fan controller not responding"

if TYPE_CHECKING:
    from tempctl.sim.firmware.device import Firmware

    _Base = Firmware
else:
    _Base = object


class StopsMixin(_Base):
    def _stop_reason(self) -> str | None:
        if self.hardware_fault is not None and self.v >= (2, 14, 0):
            return "hardware_fault"  # power_management_task.c ~l.154
        if self.power_fault is not None and self.v >= (2, 6, 0):
            return "power_fault"
        if self.pool_down and self.v >= (2, 14, 0):
            return "pool_down"  # power_management_task.c ~l.144
        return None

    def _stop_mining(self) -> None:
        self.phase = STOPPED
        self._ramp = None
        self._after_ramp = None
        self._apply_at = None
        self.actual_mhz = self.target_mhz = BOOT_MHZ
        self.applied_mv = 0

    def set_conditions(
        self,
        *,
        pool_down: bool | None = None,
        power_fault: str | None | bool = None,
        hardware_fault: str | None | bool = None,
    ) -> None:
        """Fault knobs: no pool reachable, a TPS546 fault, a peripheral fault (True = the
        default text, False = cleared, None = unchanged). Mining stops while one lasts and
        resumes (about 3 s of re-init, then the ramp) once all have cleared."""
        if pool_down is not None:
            self.pool_down = bool(pool_down)
        if power_fault is not None:
            self.power_fault = POWER_FAULT_TEXT if power_fault is True else (power_fault or None)
        if hardware_fault is not None:
            text = HARDWARE_FAULT_TEXT if hardware_fault is True else (hardware_fault or None)
            self.hardware_fault = text
        reason = self._stop_reason()
        if reason is not None and self.phase == MINING:
            self._stop_mining()
        elif reason is None and self.phase == STOPPED:
            self.phase = BOOTING
            self._asic_at = self.t + RESUME_S
