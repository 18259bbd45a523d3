"""A fake Bitaxe on loopback: AxeOS HTTP around one or many ``Firmware`` objects.

Each device gets its own port and ``ThreadingHTTPServer``; one lock per device
serialises requests, as the real single-task server does (axeos-api.md §2).
While a device reboots its listening socket is closed, so clients see a real
"connection refused", but the port stays reserved: a bound socket that does not
listen holds it (SO_REUSEPORT, which only our own sockets set) until the device
listens again, so no other program can take the port during the reboot. A failed
rebind is logged and counted in ``Emulator.errors``, and retried every tick.
Plant time runs ``scale`` times faster than ``clock``.

Fault injection (``parse_faults``) is reproducible with the seed: each request
draws one number per fault that applies to its route, in a fixed order, from a
per-device RNG. The conditions ``pool_down``, ``power_fault`` and ``hardware_fault``
(axeos-api.md §14) last: named bare (p = 1) they hold for as long as the spec names
them; with p < 1 each info request may start one, which then lasts CONDITION_HOLD_S
plant seconds. They draw only when the spec names them, so older specs keep their
sequences. A control API under ``/_emulator/`` (never faulted, never access-checked)
lets tests read the true state and steer the device.

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
