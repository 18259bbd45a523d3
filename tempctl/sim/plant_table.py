"""A scenario's ``[plant]`` table: the board's physics and sensors, overriding the calibration.

    [plant]
    c_per_w_scale = 1.6        # a poor heatsink: 1.6 x the calibrated °C/W
    tau_slow_s = 250           # a slow one
    noise_c = 0.45             # a noisy sensor
    sensors = 2                # a second die sensor ...
    temp2_offset_c = 1.5       # ... that reads 1.5 °C hotter than temp

    [plant.cooling_loss]       # a failure: a third of the cooling lost at hour 3
    at_h = 3
    fraction = 0.3333

Every key is a ``PlantParams`` field (tempctl/sim/params.py says where each default comes
from) or one of the few named here; the chip itself is ``[device] asic``. A lost fraction f
of the cooling multiplies the thermal resistance by 1 / (1 − f) (``Plant.cooling_scale``);
the fan duty the firmware reports is unchanged.
"""

from __future__ import annotations

import math
from dataclasses import replace
from typing import Any

from tempctl.sim.params import PlantParams

__all__ = ["PLANT_KEYS", "apply_plant", "parse_plant"]

# key -> (PlantParams field or a pseudo-field, lowest, highest)
PLANT_KEYS: dict[str, tuple[str, float, float]] = {
    "c_per_w": ("r_c_per_w_fixed", 0.05, 10.0),
    "c_per_w_scale": ("*r_c_per_w_fixed", 0.1, 10.0),
    "case_offset_c": ("case_offset_c", -20.0, 60.0),
    "fast_share": ("fast_share", 0.0, 1.0),
    "tau_fast_s": ("tau_fast_s", 0.1, 600.0),
    "tau_slow_s": ("tau_slow_s", 1.0, 3600.0),
    "tau_vr_s": ("tau_vr_s", 0.1, 600.0),
    "vr_c_per_w": ("vr_c_per_w", 0.0, 10.0),
    "vr_offset_c": ("vr_offset_c", -20.0, 60.0),
    "p0_w": ("p0_w", 0.0, 100.0),
    "k_w": ("k_w", 0.0, 1.0),
    "leak_per_c": ("leak_per_c", 0.0, 0.1),
    "power_offset_w": ("power_offset_w", 0.0, 50.0),
    "fan_exponent": ("fan_effect.exponent", 0.0, 3.0),
    "fan_still_air_pct": ("fan_effect.still_air_pct", 0.1, 100.0),
    "fan_rpm_full": ("fan_effect.rpm_full", 0.0, 20000.0),
    "fan_ref_pct": ("fan_ref_pct", 1.0, 100.0),
    "noise_c": ("noise_c", 0.0, 5.0),
    "spike_rate": ("spike_rate", 0.0, 1.0),
    "spike_min_c": ("spike_min_c", 0.0, 50.0),
    "spike_max_c": ("spike_max_c", 0.0, 50.0),
    "temp_step_c": ("temp_step_c", 0.001, 5.0),
    "temp_refresh_s": ("temp_refresh_s", 0.0, 60.0),
    "sensors": ("sensors", 1, 2),
    "temp2_offset_c": ("temp2_offset_c", -20.0, 20.0),
    "hash_efficiency": ("hash_efficiency", 0.1, 1.5),
    "hash_noise": ("hash_noise", 0.0, 1.0),
    "hash_noise_old": ("hash_noise_old", 0.0, 1.0),
}
_LOSS_KEYS = {"at_h", "fraction"}


def parse_plant(
    raw: Any, duration_h: float, fail, check_keys
) -> tuple[tuple[tuple[str, float], ...], tuple[tuple[float, float], ...]]:
    """The optional [plant] table -> (overrides as (key, value) pairs, cooling losses as
    (seconds, fraction)), checked; ``fail(key, msg)`` makes the error naming the key."""
    if raw is None:
        return (), ()
    if not isinstance(raw, dict):
        raise fail("plant", "must be a table")
    check_keys(raw, set(PLANT_KEYS) | {"cooling_loss"}, "plant.")
    pairs = []
    for key, value in raw.items():
        if key == "cooling_loss":
            continue
        _, lo, hi = PLANT_KEYS[key]
        label = f"plant.{key}"
        if not _number(value):
            raise fail(label, f"must be a number, got {value!r}")
        if not lo <= value <= hi:
            raise fail(label, f"{value} is outside {lo:g}..{hi:g}")
        if key == "sensors" and value not in (1, 2):
            raise fail(label, f"must be 1 or 2, got {value!r}")
        pairs.append((key, int(value) if key == "sensors" else float(value)))
    values = dict(pairs)
    if values.get("spike_min_c", 0.0) > values.get("spike_max_c", PlantParams.spike_max_c):
        raise fail("plant.spike_min_c", "must not exceed plant.spike_max_c")
    losses = _cooling_loss(raw.get("cooling_loss"), duration_h, fail, check_keys)
    # apply it once here, so a combination the plant cannot take fails at load time
    apply_plant(PlantParams(), tuple(pairs))
    return tuple(pairs), losses


def _number(v: Any) -> bool:
    return not isinstance(v, bool) and isinstance(v, int | float) and math.isfinite(v)


def _cooling_loss(raw: Any, duration_h: float, fail, check_keys) -> tuple:
    if raw is None:
        return ()
    tables = raw if isinstance(raw, list) else [raw]
    out = []
    for i, t in enumerate(tables):
        label = "plant.cooling_loss" + (f"[{i}]" if isinstance(raw, list) else "")
        if not isinstance(t, dict):
            raise fail(label, "must be a table with at_h and fraction")
        check_keys(t, _LOSS_KEYS, label + ".")
        for key in sorted(_LOSS_KEYS):
            if key not in t:
                raise fail(f"{label}.{key}", "missing")
        at_h, frac = t["at_h"], t["fraction"]
        if (
            isinstance(at_h, bool)
            or not isinstance(at_h, int | float)
            or not 0 <= at_h <= duration_h
        ):
            raise fail(f"{label}.at_h", f"must be an hour within 0..{duration_h:g}")
        if isinstance(frac, bool) or not isinstance(frac, int | float) or not 0 < frac < 1:
            raise fail(
                f"{label}.fraction", f"must be a share of the cooling in (0, 1), got {frac!r}"
            )
        out.append((float(at_h) * 3600.0, float(frac)))
    return tuple(sorted(out))


def apply_plant(base: PlantParams, overrides: tuple[tuple[str, float], ...]) -> PlantParams:
    """``base`` with the [plant] overrides; a scale applies after an absolute value."""
    if not overrides:
        return base
    plain: dict[str, float] = {}
    fan: dict[str, float] = {}
    scales: dict[str, float] = {}
    for key, value in overrides:
        target = PLANT_KEYS[key][0]
        if target.startswith("*"):
            scales[target[1:]] = value
        elif target.startswith("fan_effect."):
            fan[target.split(".", 1)[1]] = value
        else:
            plain[target] = value
    params = replace(base, **plain)
    if fan:
        params = replace(params, fan_effect=replace(params.fan_effect, **fan))
    if scales:
        params = replace(params, **{k: getattr(params, k) * v for k, v in scales.items()})
    return params
