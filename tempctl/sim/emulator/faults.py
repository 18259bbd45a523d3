"""Fault injection for the emulator: names, the spec parser, the lasting conditions.

Each request draws one number per fault that applies to its route, in a fixed order,
from the device's seeded RNG, so a run reproduces with the seed. The conditions
``pool_down``, ``power_fault`` and ``hardware_fault`` (axeos-api.md §14) last: named bare
(p = 1) they hold for as long as the spec names them; with p < 1 each info request may
start one, which then lasts CONDITION_HOLD_S plant seconds. They draw only when the spec
names them, so older specs keep their sequences.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from tempctl.sim.emulator.server import Device

__all__ = [
    "CONDITION_FAULTS",
    "CONDITION_HOLD_S",
    "FAULT_NAMES",
    "FIELD_FAULTS",
    "FaultSpec",
    "GET_FAULTS",
    "INFO_FAULTS",
    "PATCH_FAULTS",
    "RESTART_FAULTS",
    "SPIKE_W",
    "apply_conditions",
    "parse_faults",
    "spec_from_body",
]

# Fault names, in the order their numbers are drawn.
FAULT_NAMES = (
    "timeout",
    "5xx",
    "reboot",
    "overheat",
    "sensor_m1",
    "sensor_0",
    "sensor_127",
    "wrong_types",
    "missing",
    "mac_change",
    "huge",
    "truncated",
    "malformed",
    "patch_ignored",
    "patch_400",
    "restart_fail",
    "pool_down",
    "power_fault",
    "hardware_fault",
    "no_power",
    "power_spike",
)
# Power and voltage faults on the info route (issue 20.4): ``no_power`` drops only ``power``
# and ``coreVoltage`` (``missing`` drops ``temp`` too), ``power_spike`` reports 900 W. Like the
# conditions they draw only when the spec names them, so older specs keep their sequences.
FIELD_FAULTS = ("no_power", "power_spike")
SPIKE_W = 900.0
# Conditions that last (see the module docstring); the firmware stops mining while one holds.
CONDITION_FAULTS = ("pool_down", "power_fault", "hardware_fault")
CONDITION_HOLD_S = 60.0
# Which faults each kind of request can suffer.
INFO_FAULTS = (
    "timeout",
    "5xx",
    "reboot",
    "overheat",
    "sensor_m1",
    "sensor_0",
    "sensor_127",
    "wrong_types",
    "missing",
    "mac_change",
    "huge",
    "truncated",
    "malformed",
)
GET_FAULTS = ("timeout", "5xx", "huge", "truncated", "malformed")
PATCH_FAULTS = ("timeout", "5xx", "reboot", "overheat", "patch_ignored", "patch_400")
RESTART_FAULTS = ("timeout", "5xx", "restart_fail")


@dataclass(frozen=True)
class FaultSpec:
    """Fault name -> probability per request (1.0 = always)."""

    probabilities: tuple[tuple[str, float], ...] = ()

    def p(self, name: str) -> float:
        return dict(self.probabilities).get(name, 0.0)

    def __str__(self) -> str:
        return ",".join(name if p == 1.0 else f"{name}={p:g}" for name, p in self.probabilities)

    def __bool__(self) -> bool:
        return bool(self.probabilities)


def parse_faults(spec: str | None) -> FaultSpec:
    """``"timeout=0.1,5xx,malformed=0.5"`` -> FaultSpec; ValueError naming the bad item."""
    items: dict[str, float] = {}
    for raw in (spec or "").split(","):
        item = raw.strip()
        if not item:
            continue
        name, sep, value = item.partition("=")
        name = name.strip()
        if name not in FAULT_NAMES:
            raise ValueError(f"unknown fault {name!r} in {item!r}; known: {', '.join(FAULT_NAMES)}")
        if sep:
            try:
                p = float(value)
            except ValueError:
                raise ValueError(f"bad probability in fault {item!r}: not a number") from None
            if not 0.0 <= p <= 1.0:
                raise ValueError(f"bad probability in fault {item!r}: must be within 0..1")
        else:
            p = 1.0
        items[name] = p
    return FaultSpec(tuple(items.items()))


def apply_conditions(d: Device, *, draw: bool) -> None:
    """Set the firmware's lasting conditions from the fault spec (``draw``: an info request)."""
    fw = d.firmware
    held: dict[str, bool] = {}
    for name in CONDITION_FAULTS:
        p = d.faults.p(name)
        if p >= 1.0:
            held[name] = True
            continue
        if draw and p > 0.0 and d.rng.random() < p:
            d.until[name] = fw.t + CONDITION_HOLD_S
        held[name] = d.until.get(name, -1.0) > fw.t
    fw.set_conditions(
        pool_down=held["pool_down"],
        power_fault=held["power_fault"],
        hardware_fault=held["hardware_fault"],
    )


def spec_from_body(body: bytes) -> str:
    """Accept ``{"faults": "..."}`` or the bare spec text."""
    text = body.decode("utf-8", "replace").strip()
    if text.startswith("{"):
        obj = json.loads(text)
        spec = obj.get("faults", obj.get("spec")) if isinstance(obj, dict) else None
        if not isinstance(spec, str):
            raise ValueError('expected {"faults": "name=p,..."}')
        return spec
    return text
