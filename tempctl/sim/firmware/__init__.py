"""A Bitaxe's firmware (AxeOS / ESP-Miner) as a pure, time-driven model.

The pieces: ``versions`` (generations, key tables), ``boards`` (§10 boards, plant
constants), ``bodies`` (info templates), ``cjson`` (the firmware's JSON printing),
``patch`` (PATCH validation), ``fan`` (the fan PID), ``ramp`` (frequency ramps),
``trip`` (overheat protection), ``stops`` (no pool, power and
hardware faults), ``stats`` (the statistics ring), ``telemetry`` (samples
and the info body) and ``device`` (``Firmware``, composing them).
"""

from tempctl.sim.firmware.boards import ASIC_OPTIONS, BOARDS, Board, plant_params
from tempctl.sim.firmware.bodies import BODIES_DIR, load_template
from tempctl.sim.firmware.cjson import dumps, f32, round7
from tempctl.sim.firmware.device import Firmware
from tempctl.sim.firmware.states import (
    RESET_PANIC,
    RESET_POWER_ON,
    RESET_SOFTWARE,
    RESTART_TEXT,
)
from tempctl.sim.firmware.versions import TEMPLATES, Version, version_of

__all__ = [
    "ASIC_OPTIONS",
    "BOARDS",
    "BODIES_DIR",
    "Board",
    "Firmware",
    "RESET_PANIC",
    "RESET_POWER_ON",
    "RESET_SOFTWARE",
    "RESTART_TEXT",
    "TEMPLATES",
    "Version",
    "dumps",
    "f32",
    "load_template",
    "plant_params",
    "round7",
    "version_of",
]
