"""A fake Bitaxe on loopback: AxeOS HTTP around one or many ``Firmware`` objects.

``server`` runs the devices (``Emulator``: ports, locking, reboots, plant time);
``handler`` answers their AxeOS routes and a control API under ``/_emulator/`` (never
faulted, never access-checked) that lets tests read the true state and steer a device;
``faults`` parses the fault spec (``parse_faults``) and draws faults reproducibly from
the seed. Each module's docstring has the details.

``password`` turns on HTTP Basic auth as proposed in ESP-Miner PR #1750 (§14): a request
without the password gets 401 ``{"authRequired":1}`` with ``WWW-Authenticate: Basic
realm="Bitaxe"``; writes always need it, reads only with ``auth_read_required``
(the PR's ``authReadRequired``). Any user name is accepted (estimate).
"""

from tempctl.sim.emulator.faults import (
    CONDITION_FAULTS,
    FAULT_NAMES,
    GET_FAULTS,
    INFO_FAULTS,
    PATCH_FAULTS,
    RESTART_FAULTS,
    FaultSpec,
    parse_faults,
)
from tempctl.sim.emulator.server import Emulator

__all__ = [
    "CONDITION_FAULTS",
    "FAULT_NAMES",
    "GET_FAULTS",
    "INFO_FAULTS",
    "PATCH_FAULTS",
    "RESTART_FAULTS",
    "Emulator",
    "FaultSpec",
    "parse_faults",
]
