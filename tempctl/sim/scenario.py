"""Scenarios: what the room does to a simulated Bitaxe, read from TOML.

A scenario fixes the ambient temperature over time (piecewise linear, hours in the
file), the board, its firmware, its starting frequency/voltage and the fan setup.
The files live in ``replay/scenarios/`` (``resources.scenarios_dir()``); their format
is described in ``replay/scenarios/README.md``. Every problem is a ``ScenarioError``
naming the file and the key.
"""

from __future__ import annotations

import bisect
import difflib
import functools
import math
import random
import re
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tempctl.resources import scenarios_dir
from tempctl.sim.params import PlantParams, params_for
from tempctl.sim.plant_table import apply_plant, parse_plant

FAN_MODES = ("fixed", "auto")
# The API accepts temptarget 35-66 °C from v2.11 (axeos-api §9.4).
TEMPTARGET_RANGE = (35.0, 66.0)
# Ambient noise: random knots this far apart, linearly joined (drafts, doors, sun).
NOISE_KNOT_S = 120.0

_TOP_KEYS = {
    "description",
    "duration_h",
    "ambient",
    "repeat",
    "ambient_noise_c",
    "device",
    "fan",
    "faults",
    "plant",
}
_DEVICE_KEYS = {"asic", "firmware", "frequency_mhz", "core_voltage_mv"}
_FAN_KEYS = {"mode", "pct", "temptarget_c"}
_FAULT_KEYS = {"requests", "reboot_h"}
# The emulator's faults (emulator.FAULT_NAMES) that `tempctl simulate` reproduces without HTTP
# (tempctl.sim.faults); the others need a real socket or a JSON body to mangle.
SIMULATED_FAULTS = (
    "timeout",
    "5xx",
    "reboot",
    "overheat",
    "sensor_m1",
    "sensor_0",
    "sensor_127",
    "truncated",
    "malformed",
    "patch_400",
    "restart_fail",
)


class ScenarioError(Exception):
    """A scenario file is missing, unreadable or invalid. ``str()`` names file and key."""


@dataclass(frozen=True)
class Faults:
    """What goes wrong besides the weather: per-request faults and spontaneous reboots.

    ``requests`` uses the emulator's fault syntax (``"timeout=0.01,5xx=0.02"``,
    ``emulator.parse_faults``): each name is a probability per request.
    """

    requests: str = ""
    reboot_s: tuple[float, ...] = ()  # the firmware crash-reboots at these times

    def __bool__(self) -> bool:
        return bool(self.requests or self.reboot_s)


@dataclass(frozen=True)
class Scenario:
    name: str
    description: str
    duration_s: float
    ambient_points: tuple[tuple[float, float], ...]  # (seconds, °C), times increasing from 0
    fan_mode: str  # 'fixed' | 'auto'
    fan_pct: float  # fixed duty, or the autofan minimum
    temptarget_c: float  # autofan set-point (firmware default 60)
    asic: str
    firmware: str
    frequency_mhz: float
    core_voltage_mv: int
    ambient_noise_c: float = 0.0
    repeat: bool = False  # repeat the points with period = last point's time
    faults: Faults = Faults()
    plant: tuple[tuple[str, float], ...] = ()  # the [plant] overrides, (key, value)
    cooling_loss: tuple[tuple[float, float], ...] = ()  # (seconds, fraction of cooling lost)

    def plant_params(self, base: PlantParams) -> PlantParams:
        """The board's calibration ``base`` with this scenario's [plant] overrides."""
        return apply_plant(base, self.plant)

    def ambient(self, t_s: float) -> float:
        """Ambient °C at t_s seconds: the points joined linearly, plus noise if set.

        Before the first / after the last point the end value holds, unless ``repeat``.
        Noise is a pure function of time (seeded by the name), so replays repeat exactly.
        """
        pts = self.ambient_points
        t = t_s
        if self.repeat and len(pts) > 1:
            t = t_s % pts[-1][0]
        i = bisect.bisect_right(self._times, t)
        if i == 0:
            value = pts[0][1]
        elif i == len(pts):
            value = pts[-1][1]
        else:
            (t0, v0), (t1, v1) = pts[i - 1], pts[i]
            value = v0 + (v1 - v0) * (t - t0) / (t1 - t0)
        return value + self._noise(t_s) if self.ambient_noise_c else value

    @functools.cached_property
    def _times(self) -> tuple[float, ...]:
        # the points' times, for bisect; cached_property works on a frozen dataclass
        return tuple(p[0] for p in self.ambient_points)

    def _noise(self, t_s: float) -> float:
        k = math.floor(t_s / NOISE_KNOT_S)
        frac = t_s / NOISE_KNOT_S - k
        n0, n1 = self._knot(k), self._knot(k + 1)
        return n0 + (n1 - n0) * frac

    def _knot(self, k: int) -> float:
        # Seeding a Random from a string is slow and every sub-step asks: remember the knots.
        knots = self._knots
        value = knots.get(k)
        if value is None:
            if len(knots) >= 100_000:
                knots.clear()
            value = knots[k] = random.Random(f"{self.name}:{k}").gauss(0.0, self.ambient_noise_c)
        return value

    @functools.cached_property
    def _knots(self) -> dict[int, float]:
        return {}


def scenario_names() -> list[str]:
    """Names of the shipped scenarios (file stems in scenarios_dir())."""
    return sorted(p.stem for p in scenarios_dir().glob("*.toml"))


def load_scenario(name_or_path: str) -> Scenario:
    """A scenario by name (``heatwave``) or by path to a .toml file."""
    path = Path(name_or_path)
    if path.suffix != ".toml" and "/" not in name_or_path and "\\" not in name_or_path:
        path = scenarios_dir() / f"{name_or_path}.toml"
        if not path.exists():
            raise ScenarioError(
                f"no scenario named {name_or_path!r} in {scenarios_dir()}; "
                f"known: {', '.join(scenario_names()) or 'none'}"
            )
    try:
        with path.open("rb") as f:
            data = tomllib.load(f)
    except FileNotFoundError:
        raise ScenarioError(f"{path}: no such file") from None
    except tomllib.TOMLDecodeError as exc:
        raise ScenarioError(f"{path}: not valid TOML: {exc}") from None
    return parse_scenario(data, name=path.stem, source=str(path))


def parse_scenario(data: dict[str, Any], *, name: str, source: str = "<scenario>") -> Scenario:
    """Validate the table read from a scenario file and build the Scenario."""

    def fail(key: str, msg: str) -> ScenarioError:
        return ScenarioError(f"{source}: {key}: {msg}")

    def check_keys(table: dict, allowed: set[str], prefix: str = "") -> None:
        for key in table:
            if key not in allowed:
                close = difflib.get_close_matches(key, sorted(allowed), n=1)
                hint = f" (did you mean {prefix}{close[0]}?)" if close else ""
                raise fail(prefix + key, f"unknown key{hint}")

    def table(key: str) -> dict:
        value = data.get(key)
        if not isinstance(value, dict):
            raise fail(key, "missing table" if value is None else "must be a table")
        return value

    def number(
        tbl: dict,
        key: str,
        label: str,
        *,
        default: float | None = None,
        lo: float | None = None,
        hi: float | None = None,
    ) -> float:
        value = tbl.get(key, default)
        if value is None:
            raise fail(label, "missing")
        if (
            isinstance(value, bool)
            or not isinstance(value, int | float)
            or not math.isfinite(value)
        ):
            raise fail(label, f"must be a number, got {value!r}")
        if (lo is not None and value < lo) or (hi is not None and value > hi):
            raise fail(label, f"{value} is outside {lo}..{hi}")
        return float(value)

    check_keys(data, _TOP_KEYS)
    device, fan = table("device"), table("fan")
    check_keys(device, _DEVICE_KEYS, "device.")
    check_keys(fan, _FAN_KEYS, "fan.")

    description = data.get("description", "")
    if not isinstance(description, str):
        raise fail("description", "must be a string")
    duration_h = number(data, "duration_h", "duration_h", lo=1e-6)
    repeat = data.get("repeat", False)
    if not isinstance(repeat, bool):
        raise fail("repeat", f"must be true or false, got {repeat!r}")
    noise = number(data, "ambient_noise_c", "ambient_noise_c", default=0.0, lo=0.0, hi=10.0)
    points = _ambient_points(data.get("ambient"), repeat, fail)

    asic = device.get("asic")
    if not isinstance(asic, str):
        raise fail("device.asic", "missing" if asic is None else "must be a string")
    try:
        params_for(asic)
    except ValueError as exc:
        raise fail("device.asic", str(exc)) from None
    firmware = device.get("firmware")
    if not isinstance(firmware, str) or not re.fullmatch(r"v\d+\.\d+\.\d+", firmware):
        raise fail("device.firmware", f"must look like 'v2.15.0', got {firmware!r}")
    freq = number(device, "frequency_mhz", "device.frequency_mhz", lo=1.0, hi=65535.0)
    mv = number(device, "core_voltage_mv", "device.core_voltage_mv", lo=1.0, hi=5000.0)
    if mv != int(mv):
        raise fail("device.core_voltage_mv", f"must be whole millivolts, got {mv}")

    mode = fan.get("mode")
    if mode not in FAN_MODES:
        raise fail("fan.mode", f"must be one of {', '.join(FAN_MODES)}, got {mode!r}")
    fan_pct = number(fan, "pct", "fan.pct", lo=0.0, hi=100.0)
    target = number(
        fan,
        "temptarget_c",
        "fan.temptarget_c",
        default=60.0,
        lo=TEMPTARGET_RANGE[0],
        hi=TEMPTARGET_RANGE[1],
    )

    faults = _faults(data.get("faults"), duration_h, fail, check_keys)
    plant, cooling_loss = parse_plant(data.get("plant"), duration_h, fail, check_keys)

    return Scenario(
        name=name,
        description=description.strip(),
        duration_s=duration_h * 3600.0,
        ambient_points=points,
        fan_mode=mode,
        fan_pct=fan_pct,
        temptarget_c=target,
        asic=asic.upper(),
        firmware=firmware,
        frequency_mhz=freq,
        core_voltage_mv=int(mv),
        ambient_noise_c=noise,
        repeat=repeat,
        faults=faults,
        plant=plant,
        cooling_loss=cooling_loss,
    )


def _faults(raw: Any, duration_h: float, fail, check_keys) -> Faults:
    """The optional [faults] table -> Faults, checked."""
    if raw is None:
        return Faults()
    if not isinstance(raw, dict):
        raise fail("faults", "must be a table")
    check_keys(raw, _FAULT_KEYS, "faults.")
    requests = raw.get("requests", "")
    if not isinstance(requests, str):
        raise fail("faults.requests", f"must be a string like 'timeout=0.01', got {requests!r}")
    from tempctl.sim.emulator import parse_faults  # the emulator imports this module

    try:
        spec = parse_faults(requests)
    except ValueError as exc:
        raise fail("faults.requests", str(exc)) from None
    for name, _ in spec.probabilities:
        if name not in SIMULATED_FAULTS:
            raise fail(
                "faults.requests",
                f"{name!r} is not simulated; use {', '.join(SIMULATED_FAULTS)}",
            )
    reboots = raw.get("reboot_h", [])
    if not isinstance(reboots, list):
        raise fail("faults.reboot_h", f"must be a list of hours, got {reboots!r}")
    times = []
    for i, h in enumerate(reboots):
        if isinstance(h, bool) or not isinstance(h, int | float) or not 0 <= h <= duration_h:
            raise fail(f"faults.reboot_h[{i}]", f"must be an hour within 0..{duration_h:g}")
        times.append(float(h) * 3600.0)
    return Faults(str(spec), tuple(sorted(times)))


def _ambient_points(raw: Any, repeat: bool, fail) -> tuple[tuple[float, float], ...]:
    """[[hours, °C], ...] -> ((seconds, °C), ...), checked."""
    if not isinstance(raw, list) or not raw:
        raise fail("ambient", "missing" if raw is None else "must be a list of [hours, °C] pairs")
    points = []
    for i, pair in enumerate(raw):
        ok = (
            isinstance(pair, list)
            and len(pair) == 2
            and all(isinstance(v, int | float) and not isinstance(v, bool) for v in pair)
            and all(math.isfinite(v) for v in pair)
        )
        if not ok:
            raise fail(f"ambient[{i}]", f"must be a [hours, °C] pair of numbers, got {pair!r}")
        hours, temp = pair
        if not -40.0 <= temp <= 60.0:
            raise fail(f"ambient[{i}]", f"{temp} °C is outside -40..60")
        if points and hours * 3600.0 <= points[-1][0]:
            raise fail(f"ambient[{i}]", "times must increase")
        points.append((float(hours) * 3600.0, float(temp)))
    if points[0][0] != 0.0:
        raise fail("ambient[0]", "the first point must be at hour 0")
    if repeat and len(points) < 2:
        raise fail("repeat", "needs at least two ambient points (the period is the last time)")
    return tuple(points)


__all__ = [
    "FAN_MODES",
    "Faults",
    "SIMULATED_FAULTS",
    "Scenario",
    "ScenarioError",
    "load_scenario",
    "parse_scenario",
    "scenario_names",
]
