"""Checked access to the values of a device's JSON: every number is type- and range-checked.

A device's answer is untrusted input (issue 13 item 2). JSON numbers arrive as Python
``int`` of any size, ``float`` (``1e999`` parses as ``inf``), or a ``bool``; anything else
is "not a number". No helper here raises on a hostile value: a 400-digit integer makes
``float()`` and ``math.isfinite`` raise ``OverflowError``, and ``repr`` of an integer over
4,300 digits raises ``ValueError``, so both are handled in ``finite`` and ``show``.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from math import isfinite
from typing import Any

__all__ = [
    "ABSURD_TEMP",
    "DIODE_FAULT_BAND",
    "EMC2103_FAULT_BAND",
    "finite",
    "flag",
    "hottest",
    "is_number",
    "number",
    "plausible_temp",
    "show",
    "text",
]

# §10 "Temperature sensor behaviour". The firmware trips at 75 °C ASIC / 105 °C VR (§9.1),
# so a live reading above 150 °C is a broken sensor or a broken body, not a hot chip.
ABSURD_TEMP = 150.0
# EMC2101 diode open circuit reads ≈127.0 °C, short ≈127.9 °C (0.125 °C steps).
DIODE_FAULT_BAND = (126.5, 128.5)
# EMC2103 (GammaTurbo) diode fault reads about −128 °C.
EMC2103_FAULT_BAND = (-129.0, -127.0)
_ASIC_FIELDS = frozenset({"temp", "temp2", "asicTemp", "asicTemp2"})
_SHOW_MAX = 40  # characters of a bad value quoted in an error text
# Ints up to this size convert to float exactly and never overflow: number()'s fast path.
_EXACT_INT = 2**53


def is_number(value: Any) -> bool:
    """A JSON number: int or float, never a bool."""
    kind = type(value)
    if kind is float or kind is int:  # the usual case, before the general test
        return True
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def finite(value: Any) -> float | None:
    """The value as a finite float, or None (not a number, NaN, ±inf, or too big)."""
    if type(value) is float:  # the usual case (a subclass takes the general path)
        return value if isfinite(value) else None
    if not is_number(value):
        return None
    try:
        number = float(value)
    except OverflowError:  # an int too large for a double
        return None
    return number if math.isfinite(number) else None


def show(value: Any) -> str:
    """A short, safe rendering of a value for an error text."""
    if isinstance(value, float) and math.isfinite(value):
        return f"{value:g}"
    if isinstance(value, int) and not isinstance(value, bool):
        if finite(value) is None:
            return "<an integer too large for a double>"
    elif isinstance(value, (list, dict)):
        return f"<a JSON {'array' if isinstance(value, list) else 'object'}>"
    try:
        text = repr(value)
    except (ValueError, RecursionError):
        return f"<{type(value).__name__}>"
    return text if len(text) <= _SHOW_MAX else text[: _SHOW_MAX - 1] + "…"


def plausible_temp(value: Any, *, field: str = "temp") -> tuple[float | None, str | None]:
    """Return ``(°C, None)`` for a believable temperature, else ``(None, reason)``.

    ``reason`` reads like ``"temp=-1: sensor not ready"``. Rules from §10: −1 means no
    reading; any value ≤ 0 is "no reading", never "cold" (old firmware reported an I2C
    error as 0); ≈127 °C is an EMC2101 diode fault; ≈−128 °C an EMC2103 diode fault.
    For ``vrTemp`` a 0 means the board has no TPS546: ``(None, None)``, not an error.
    """
    if value is None:
        return None, f"{field} missing"
    temp = finite(value)
    if temp is None:
        why = "not a number" if not is_number(value) else "not a finite number"
        return None, _why(field, value, why)
    # The rules in order; the error text (and show(), which is not free) only on a failure.
    if field == "vrTemp" and temp == 0:
        return None, None  # §10: vrTemp is 0 on boards without a TPS546
    if temp == -1:
        return None, _why(
            field, value, "sensor not ready (ASIC not initialised, paused or I2C error)"
        )
    if EMC2103_FAULT_BAND[0] <= temp <= EMC2103_FAULT_BAND[1]:
        return None, _why(field, value, "EMC2103 diode fault")
    if temp == 0:
        return None, _why(field, value, "no reading (I2C read error on firmware before v2.11)")
    if temp < 0:
        return None, _why(field, value, "below zero, treated as no reading")
    if field in _ASIC_FIELDS and DIODE_FAULT_BAND[0] <= temp <= DIODE_FAULT_BAND[1]:
        return None, _why(field, value, "EMC2101 diode open/short fault (reads ~127 °C)")
    if temp > ABSURD_TEMP:
        return None, _why(field, value, f"above {ABSURD_TEMP:g} °C, not a real reading")
    return temp, None


def _why(field: str, value: Any, reason: str) -> str:
    return f"{field}={show(value)}: {reason}"


def number(
    body: Mapping[str, Any],
    key: str,
    notes: list[str],
    *,
    low: float,
    high: float,
    integer: bool = False,
) -> float | int | None:
    """A JSON number within [low, high], else None plus a note. Absent keys are no error:
    older firmware simply lacks them (§4.2)."""
    if key not in body:
        return None
    value = body[key]
    kind = type(value)
    # Fast paths for a plain float or a modest int; the rest (bool, subclasses, huge ints,
    # strings ...) takes the general checks. Same result either way.
    if kind is float:
        checked = value if isfinite(value) else None
    elif kind is int and -_EXACT_INT <= value <= _EXACT_INT:
        checked = float(value)
    elif not is_number(value):
        notes.append(f"{key}={show(value)}: not a number")
        return None
    else:
        checked = finite(value)
    if checked is None or not low <= checked <= high:
        notes.append(f"{key}={show(value)}: outside {low:g}..{high:g}")
        return None
    return round(checked) if integer else checked


def flag(body: Mapping[str, Any], key: str, notes: list[str]) -> bool | None:
    """AxeOS flags are 0/1 numbers, or JSON booleans on newer firmware."""
    if key not in body:
        return None
    value = body[key]
    kind = type(value)
    if kind is bool:
        return value
    if (kind is int or kind is float) and (value == 0 or value == 1):
        return value == 1  # the usual 0/1 (NaN, ±inf and other numbers are not 0/1)
    if is_number(value) and finite(value) in (0.0, 1.0):
        return value == 1
    notes.append(f"{key}={show(value)}: not 0/1")
    return None


def text(body: Mapping[str, Any], key: str, *, limit: int = 200) -> str | None:
    """A non-empty string value, cut to ``limit`` characters (a hostile body may send MBs)."""
    value = body.get(key)
    if not isinstance(value, str) or not value:
        return None
    return value if len(value) <= limit else value[: limit - 1] + "…"


def hottest(
    temp: Any, temp2: Any, notes: list[str], *, names: tuple[str, str] = ("temp", "temp2")
) -> float | None:
    """The ASIC temperature to control on: ``temp``, or the hotter of ``temp``/``temp2``.

    The firmware trips when either sensor passes 75 °C (§9.1), so the hotter one counts.
    ``temp2`` ≤ 0 just means "no second sensor" (−1 on v2.11+, 0 on v2.10, §10). A
    failed primary sensor makes the reading invalid even when ``temp2`` looks fine.
    """
    value, reason = plausible_temp(temp, field=names[0])
    if reason:
        notes.append(reason)
    if finite(temp2) in (0.0, -1.0):
        return value
    second, reason2 = plausible_temp(temp2, field=names[1])
    if reason2 and temp2 is not None:
        notes.append(reason2)
    if value is None or second is None:
        return value
    return max(value, second)
