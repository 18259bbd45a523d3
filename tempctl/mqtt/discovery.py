"""Home Assistant MQTT discovery: topics and payloads, built without any I/O.

One HA device per miner and one for the daemon. Every entity of a miner reads one JSON
state topic (a template picks its key), so a poll is one publish. Availability needs
both the daemon's topic (its MQTT last will says "offline" when it dies) and the
miner's own (offline while it does not answer): ``availability_mode: all``.

Unique ids come from the miner's MAC (from its first answer), else from its name, so
they survive restarts and a change of the miner's address. Device texts (hostname,
firmware, model) are hostile bytes: they only ever go through ``json.dumps``, and only
the MAC's hex digits reach a topic or an id.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Protocol

from tempctl import __version__
from tempctl.core.decision import State
from tempctl.fields import BY_ATTR

STATES = [s.value for s in State]


class Scorecard(Protocol):
    """The live control-quality scorecard, per device (issue 22 item 2).

    ``values(device)`` returns ``SCORE_KEYS`` (None where not known yet). The bridge calls
    it on the daemon's loop thread, at most every SCORECARD_PERIOD_S per device."""

    def values(self, device: str) -> dict[str, float | None]: ...


# (key, name, unit, device_class): one sensor per window (24 h, since start)
_SCORE = (
    ("above_min", "Minutes above threshold", "min", "duration"),
    ("above_degmin", "Degree-minutes above threshold", "°C·min", None),
    ("max_excess_c", "Largest excess over threshold", "°C", None),  # a difference: no °F
    ("changes", "Frequency changes", None, None),
    ("trips", "Firmware overheat trips", None, None),
    ("hash_ratio_est", "Hash vs model best (estimate)", "%", None),
    ("j_per_th", "Efficiency", "J/TH", None),
)
WINDOWS = (("24h", "24 h"), ("start", "since start"))
SCORE_KEYS = tuple(f"{k}_{w}" for k, *_ in _SCORE for w, _ in WINDOWS)


def _measure(unit: str, device_class: str | None = None, icon: str | None = None) -> dict:
    out = {"state_class": "measurement", "unit_of_measurement": unit}
    if device_class:
        out["device_class"] = device_class
    if icon:
        out["icon"] = icon
    return out


# Per-miner entities: (component, key, name, extra config). Keys are the state JSON's keys.
MINER_ENTITIES: tuple[tuple[str, str, str, dict], ...] = (
    ("sensor", "state", "State", {"device_class": "enum", "options": STATES}),
    ("sensor", "temp", "ASIC temperature", _measure("°C", "temperature")),
    ("sensor", "vr_temp", "VR temperature", _measure("°C", "temperature")),
    ("sensor", "frequency", "Frequency", _measure("MHz", "frequency")),
    ("sensor", "target", "tempctl target frequency", _measure("MHz", "frequency")),
    ("sensor", "hashrate", "Hashrate", _measure("GH/s", icon="mdi:pickaxe")),
    ("sensor", "power", "Power", _measure("W", "power")),
    ("sensor", "fan", "Fan", _measure("%", icon="mdi:fan")),
    ("sensor", "law", "Control law", {"icon": "mdi:thermostat-auto"}),
    ("binary_sensor", "throttled", "Throttled", {"icon": "mdi:speedometer-slow"}),
    ("binary_sensor", "overheat", "Firmware overheat", {"device_class": "heat"}),
    ("binary_sensor", "alarm", "Alarm", {"device_class": "problem"}),
)
# With a power cap (TEMPCTL_POWER_LIMIT, a share of TEMPCTL_POWER_BUDGET; core/powercap.py):
# only then announced, removed again when no cap applies.
POWER_ENTITIES: tuple[tuple[str, str, str, dict], ...] = (
    ("sensor", "power_limit", "Power cap", _measure("W", "power", "mdi:flash-alert")),
    ("sensor", "power_ceiling", "Power ceiling", _measure("MHz", "frequency")),
)
_THRESHOLD = BY_ATTR["temp_threshold"].validator  # the configuration's own range


def slug(text: str) -> str:
    """A topic- and id-safe form of a device name: [a-z0-9_] only."""
    return re.sub(r"[^a-z0-9]+", "_", text.lower()).strip("_") or "device"


def mac_id(mac: str | None) -> str | None:
    """The MAC's 12 hex digits, or None when the device sent no usable MAC."""
    digits = re.sub(r"[^0-9a-f]", "", (mac or "").lower())
    return digits if len(digits) == 12 else None


@dataclass(frozen=True)
class Miner:
    """What discovery says about a miner; a change republishes its configs."""

    name: str
    url: str
    mac: str | None = None
    model: str | None = None
    firmware: str | None = None
    hostname: str | None = None
    power_cap: bool = False  # a power cap applies: its sensors are announced

    @property
    def node(self) -> str:
        m = mac_id(self.mac)
        return f"tempctl_{m}" if m else f"tempctl_{slug(self.name)}"


@dataclass(frozen=True)
class Topics:
    prefix: str = "tempctl"
    discovery: str = "homeassistant"

    @property
    def status(self) -> str:  # the daemon's availability (and last will)
        return f"{self.prefix}/status"

    @property
    def daemon_state(self) -> str:
        return f"{self.prefix}/daemon/state"

    @property
    def dry_run_set(self) -> str:
        return f"{self.prefix}/dry_run/set"

    def state(self, name: str) -> str:
        return f"{self.prefix}/{slug(name)}/state"

    def available(self, name: str) -> str:
        return f"{self.prefix}/{slug(name)}/availability"

    def scorecard(self, name: str) -> str:
        return f"{self.prefix}/{slug(name)}/scorecard"

    def threshold_set(self, name: str) -> str:
        return f"{self.prefix}/{slug(name)}/temp_threshold/set"

    def config(self, component: str, node: str, key: str) -> str:
        return f"{self.discovery}/{component}/{node}/{key}/config"

    @property
    def daemon_node(self) -> str:
        return f"tempctl_daemon_{slug(self.prefix)}"


_ORIGIN = {"name": "tempctl", "sw_version": __version__}


def daemon_device(t: Topics) -> dict:
    return {
        "identifiers": [t.daemon_node],
        "name": "tempctl",
        "manufacturer": "tempctl",
        "model": "thermal guard for Bitaxe miners",
        "sw_version": __version__,
    }


def miner_device(t: Topics, m: Miner) -> dict:
    dev = {
        "identifiers": [m.node],
        "name": m.hostname or m.name,
        "manufacturer": "Bitaxe (AxeOS)",
        "model": m.model or "Bitaxe",
        "configuration_url": m.url,
        "via_device": t.daemon_node,
    }
    if m.firmware:
        dev["sw_version"] = m.firmware
    if mac_id(m.mac):
        dev["connections"] = [["mac", m.mac]]
    return dev


def _entity(t: Topics, node: str, key: str, name: str, extra: dict) -> dict:
    return {
        "name": name,
        "unique_id": f"{node}_{key}",
        "origin": _ORIGIN,
        **extra,
    }


def miner_configs(t: Topics, m: Miner, *, control: bool, scorecard: bool) -> dict[str, dict]:
    """config topic -> payload, for every entity of one miner (an empty payload removes)."""
    node, dev = m.node, miner_device(t, m)
    avail = {
        "availability": [{"topic": t.status}, {"topic": t.available(m.name)}],
        "availability_mode": "all",
        "device": dev,
    }
    out: dict[str, dict] = {}
    for component, key, name, extra in MINER_ENTITIES:
        cfg = _entity(t, node, key, name, extra)
        cfg.update(avail, state_topic=t.state(m.name), value_template=f"{{{{ value_json.{key} }}}}")
        out[t.config(component, node, key)] = cfg
    for component, key, name, extra in POWER_ENTITIES:
        cfg = {}
        if m.power_cap:
            cfg = _entity(t, node, key, name, extra)
            cfg.update(
                avail, state_topic=t.state(m.name), value_template=f"{{{{ value_json.{key} }}}}"
            )
        out[t.config(component, node, key)] = cfg
    threshold = _entity(t, node, "temp_threshold", "TEMP_THRESHOLD", {"unit_of_measurement": "°C"})
    threshold.update(
        avail, state_topic=t.state(m.name), value_template="{{ value_json.threshold }}"
    )
    if control:
        low, high = _THRESHOLD.low, _THRESHOLD.high
        threshold.update(
            command_topic=t.threshold_set(m.name), min=low, max=high, step=0.5, mode="box"
        )
    else:
        threshold["device_class"] = "temperature"
    on, off = ("number", "sensor") if control else ("sensor", "number")
    out[t.config(on, node, "temp_threshold")] = threshold
    out[t.config(off, node, "temp_threshold")] = {}
    for key, name, unit, device_class in _SCORE:
        for window, label in WINDOWS:
            k = f"{key}_{window}"
            cfg = {}
            if scorecard:
                extra = {"state_class": "measurement", "entity_category": "diagnostic"}
                if unit:
                    extra["unit_of_measurement"] = unit
                if device_class:
                    extra["device_class"] = device_class
                cfg = _entity(t, node, k, f"{name} ({label})", extra)
                cfg.update(
                    avail,
                    state_topic=t.scorecard(m.name),
                    value_template=f"{{{{ value_json.{k} }}}}",
                )
            out[t.config("sensor", node, k)] = cfg
    return out


def daemon_configs(t: Topics, *, control: bool) -> dict[str, dict]:
    node = t.daemon_node
    base = {
        "availability_topic": t.status,
        "device": daemon_device(t),
        "state_topic": t.daemon_state,
    }
    devices = _entity(t, node, "devices", "Miners", {"icon": "mdi:server", **base})
    devices["value_template"] = "{{ value_json.devices }}"
    dry = _entity(t, node, "dry_run", "Dry run", {"icon": "mdi:test-tube", **base})
    dry["value_template"] = "{{ value_json.dry_run }}"
    if control:
        dry.update(command_topic=t.dry_run_set, payload_on="ON", payload_off="OFF")
    on, off = ("switch", "binary_sensor") if control else ("binary_sensor", "switch")
    return {
        t.config("sensor", node, "devices"): devices,
        t.config(on, node, "dry_run"): dry,
        t.config(off, node, "dry_run"): {},
    }


def onoff(flag: bool) -> str:
    return "ON" if flag else "OFF"


def miner_state(
    reading,
    state: str,
    target: float,
    law: str,
    threshold: float,
    alarm: bool,
    power: dict | None = None,
):
    """The state JSON of one poll: None where the reading has no valid value. ``power``:
    the power cap as ``powercap.shown`` gives it (its W and MHz), None without one."""
    valid = reading.valid
    return {
        **(
            {"power_limit": power["watts"], "power_ceiling": power["mhz"]}
            if power is not None
            else {}
        ),
        "state": state,
        "temp": reading.temp,
        "vr_temp": reading.vr_temp if valid else None,
        "frequency": reading.actual_frequency or reading.frequency,
        "target": target,
        "hashrate": reading.hashrate,
        "power": reading.power,
        "fan": reading.fan_pct,
        "law": law[:255],  # HA refuses a state longer than 255 characters
        "threshold": threshold,
        "throttled": onoff(state != State.NORMAL.value),
        "overheat": onoff(bool(reading.overheat)),
        "alarm": onoff(alarm),
    }


def scorecard_state(values: dict) -> dict:
    """The scorecard JSON: SCORE_KEYS only, the hash ratio as a percentage."""
    out = {}
    for k in SCORE_KEYS:
        v = values.get(k)
        if isinstance(v, (int, float)) and not isinstance(v, bool):
            out[k] = round(v * 100, 2) if k.startswith("hash_ratio") else v
        else:
            out[k] = None
    return out


def answered(reading) -> bool:
    """Did the miner answer this poll (even with an implausible temperature)?"""
    return bool(
        reading.valid
        or reading.overheat
        or reading.frequency is not None
        or reading.version is not None
    )
