"""The fast paths of device.values / key_floor give exactly what the plain rules give.

The reference functions below are the checks as first written (before the fast paths for
plain floats and ints, the lazy error text and the newest-first key_floor). Hypothesis
feeds both hostile values and bodies; results, notes and Readings must be identical.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tempctl.device import parse as parse_module
from tempctl.device import values
from tempctl.device.capabilities import KEY_SINCE, key_floor
from tempctl.device.parse import parse_info

EXAMPLES = Path(__file__).resolve().parents[1] / "tempctl" / "data" / "bodies"
EXAMPLE_BODIES = [json.loads(p.read_text()) for p in sorted(EXAMPLES.glob("*.json"))]


# -- the reference rules ---------------------------------------------------------------------


def ref_is_number(value):
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def ref_finite(value):
    if not ref_is_number(value):
        return None
    try:
        number = float(value)
    except OverflowError:
        return None
    return number if math.isfinite(number) else None


def ref_plausible_temp(value, *, field="temp"):
    show = values.show
    if value is None:
        return None, f"{field} missing"
    label = f"{field}={show(value)}"
    if not ref_is_number(value):
        return None, f"{label}: not a number"
    temp = ref_finite(value)
    if temp is None:
        return None, f"{label}: not a finite number"
    if field == "vrTemp" and temp == 0:
        return None, None
    if temp == -1:
        return None, f"{label}: sensor not ready (ASIC not initialised, paused or I2C error)"
    if values.EMC2103_FAULT_BAND[0] <= temp <= values.EMC2103_FAULT_BAND[1]:
        return None, f"{label}: EMC2103 diode fault"
    if temp == 0:
        return None, f"{label}: no reading (I2C read error on firmware before v2.11)"
    if temp < 0:
        return None, f"{label}: below zero, treated as no reading"
    asic = {"temp", "temp2", "asicTemp", "asicTemp2"}
    if field in asic and values.DIODE_FAULT_BAND[0] <= temp <= values.DIODE_FAULT_BAND[1]:
        return None, f"{label}: EMC2101 diode open/short fault (reads ~127 °C)"
    if temp > values.ABSURD_TEMP:
        return None, f"{label}: above {values.ABSURD_TEMP:g} °C, not a real reading"
    return temp, None


def ref_number(body, key, notes, *, low, high, integer=False):
    if key not in body:
        return None
    value = body[key]
    if not ref_is_number(value):
        notes.append(f"{key}={values.show(value)}: not a number")
        return None
    checked = ref_finite(value)
    if checked is None or not low <= checked <= high:
        notes.append(f"{key}={values.show(value)}: outside {low:g}..{high:g}")
        return None
    return round(checked) if integer else checked


def ref_flag(body, key, notes):
    if key not in body:
        return None
    value = body[key]
    if isinstance(value, bool):
        return value
    if ref_is_number(value) and ref_finite(value) in (0.0, 1.0):
        return value == 1
    notes.append(f"{key}={values.show(value)}: not 0/1")
    return None


def ref_hottest(temp, temp2, notes, *, names=("temp", "temp2")):
    value, reason = ref_plausible_temp(temp, field=names[0])
    if reason:
        notes.append(reason)
    if ref_finite(temp2) in (0.0, -1.0):
        return value
    second, reason2 = ref_plausible_temp(temp2, field=names[1])
    if reason2 and temp2 is not None:
        notes.append(reason2)
    if value is None or second is None:
        return value
    return max(value, second)


def ref_key_floor(keys):
    found = [KEY_SINCE[k] for k in keys if k in KEY_SINCE]
    return max(found) if found else None


# -- hostile values ----------------------------------------------------------------------------

SPECIAL = [
    math.nan, math.inf, -math.inf, 0.0, -0.0, 1.0, -1.0, 1e308, -1e308, 5e-324, 127.0, -128.0,
    50.0, 30.0, 99.5, 100.0, 150.0, 150.1, 0, 1, -1, 2**32, 2**32 + 1, 2**53, 2**53 + 1,
    10**400, -(10**400), 10**5000, True, False, None, "", "x", "50", [], {}, [1], {"a": 1},
]  # fmt: skip

hostile = st.one_of(
    st.sampled_from(SPECIAL),
    st.floats(allow_nan=True, allow_infinity=True),
    st.floats(min_value=-200, max_value=70000),
    st.integers(),
    st.integers(min_value=-5, max_value=70000),
    st.booleans(),
    st.none(),
    st.text(max_size=50),
    st.lists(st.integers(), max_size=2),
)
BOUNDS = [(0, 65535, False), (1, 65535, True), (0, 1e5, False), (0, 2**32, True), (0, 100, False)]


def _same(a, b):
    """Equal, and of the same type (1 vs 1.0 would print differently in the log)."""
    if isinstance(a, float) and isinstance(b, float) and math.isnan(a):
        return math.isnan(b)
    return type(a) is type(b) and a == b and repr(a) == repr(b)


@settings(max_examples=600, deadline=None)
@given(hostile)
def test_value_helpers_match_the_reference(value):
    assert _same(values.finite(value), ref_finite(value))
    assert values.is_number(value) == ref_is_number(value)
    for field in ("temp", "temp2", "vrTemp"):
        got, want = (
            values.plausible_temp(value, field=field),
            ref_plausible_temp(value, field=field),
        )
        assert _same(got[0], want[0]) and got[1] == want[1]
    body = {"k": value}
    for low, high, integer in BOUNDS:
        notes, ref_notes = [], []
        got = values.number(body, "k", notes, low=low, high=high, integer=integer)
        want = ref_number(body, "k", ref_notes, low=low, high=high, integer=integer)
        assert _same(got, want) and notes == ref_notes
    notes, ref_notes = [], []
    assert _same(values.flag(body, "k", notes), ref_flag(body, "k", ref_notes))
    assert notes == ref_notes


@settings(max_examples=300, deadline=None)
@given(hostile, hostile)
def test_hottest_matches_the_reference(temp, temp2):
    notes, ref_notes = [], []
    assert _same(values.hottest(temp, temp2, notes), ref_hottest(temp, temp2, ref_notes))
    assert notes == ref_notes


@settings(max_examples=200, deadline=None)
@given(st.lists(st.sampled_from(sorted(KEY_SINCE) + ["temp", "pools", "x", ""]), max_size=12))
def test_key_floor_matches_the_reference(keys):
    assert key_floor(keys) == ref_key_floor(keys)
    assert key_floor(dict.fromkeys(keys)) == ref_key_floor(keys)
    assert key_floor(set(keys)) == ref_key_floor(keys)


PARSED_KEYS = [
    "temp", "temp2", "vrTemp", "fanrpm", "fanSpeedRpm", "fanSpeed", "fanspeed", "autofanspeed",
    "actualFrequency", "uptimeSeconds", "expectedHashrate", "miningPaused", "frequency",
    "coreVoltage", "coreVoltageActual", "hashRate", "power", "overheat_mode", "overheat",
    "manualFanSpeed", "hardware_fault", "power_fault", "version", "hostname",
]  # fmt: skip


def _fast_and_reference(body):
    fast = parse_info(body, "d", 1)
    with pytest.MonkeyPatch.context() as mp:
        for name, ref in [
            ("number", ref_number),
            ("flag", ref_flag),
            ("finite", ref_finite),
            ("hottest", ref_hottest),
            ("plausible_temp", ref_plausible_temp),
            ("key_floor", ref_key_floor),
        ]:
            mp.setattr(parse_module, name, ref)
        slow = parse_info(body, "d", 1)
    return repr(fast), repr(slow)


@settings(max_examples=400, deadline=None)
@given(
    st.integers(min_value=0, max_value=4),
    st.dictionaries(st.sampled_from(PARSED_KEYS), hostile, max_size=6),
    st.lists(st.sampled_from(PARSED_KEYS), max_size=4),
)
def test_parse_info_matches_the_reference_rules(example, changes, dropped):
    base = EXAMPLE_BODIES[example]
    body = {k: v for k, v in base.items() if k not in dropped}
    body.update(changes)
    fast, slow = _fast_and_reference(body)
    assert fast == slow


def test_the_examples_parse_as_with_the_reference_rules():
    for body in EXAMPLE_BODIES:
        fast, slow = _fast_and_reference(body)
        assert fast == slow
