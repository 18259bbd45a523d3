"""cJSON number and layout emulation (axeos-api.md §2 "JSON formatting", "Numbers")."""

from __future__ import annotations

import functools
import json
import math
import struct

__all__ = ["dumps", "f32", "f32_many", "round7", "round7_many"]

_F32 = struct.Struct("f")


def f32(x: float, _pack=_F32.pack, _unpack=_F32.unpack) -> float:
    """The double a C ``float`` becomes when cJSON prints it (the binary tail)."""
    try:
        return _unpack(_pack(x))[0]
    except OverflowError:
        return x


def round7(x: float, _pack=_F32.pack, _unpack=_F32.unpack) -> float:
    """v2.12+: cjson_utils.c rounds float telemetry to 7 decimal places."""
    try:
        return round(_unpack(_pack(x))[0], 7)
    except OverflowError:
        return round(x, 7)


@functools.lru_cache(maxsize=64)
def _floats(n: int) -> struct.Struct:
    return struct.Struct(f"{n}f")


def f32_many(xs: tuple[float, ...]) -> tuple[float, ...]:
    """``f32`` of each value, in one pack (the info body has a dozen)."""
    packer = _floats(len(xs))
    try:
        return packer.unpack(packer.pack(*xs))
    except OverflowError:
        return tuple(f32(x) for x in xs)


def round7_many(xs: tuple[float, ...]) -> list[float]:
    """``round7`` of each value."""
    return [round(x, 7) for x in f32_many(xs)]


def _number(x: float) -> str:
    # cJSON print_number: integral values that fit an int print as %d; otherwise %1.15g, or
    # %1.17g when 15 digits do not round-trip. NaN/inf print as null.
    if isinstance(x, float) and not math.isfinite(x):
        return "null"
    if float(x).is_integer() and -(2**31) <= x < 2**31:
        return str(int(x))
    text = format(x, ".15g")  # C's %1.15g
    if float(text) != float(x):
        text = format(x, ".17g")
    return text


def dumps(obj: object, *, pretty: bool) -> str:
    """Serialise like cJSON: TAB pretty-print (<= v2.13) or compact (v2.14+)."""
    parts: list[str] = []
    _emit(obj, parts, 0, pretty)
    return "".join(parts)


def _emit(obj: object, out: list[str], depth: int, pretty: bool) -> None:
    if obj is None:
        out.append("null")
    elif obj is True:
        out.append("true")
    elif obj is False:
        out.append("false")
    elif isinstance(obj, (int, float)):
        out.append(_number(obj))
    elif isinstance(obj, str):
        out.append(json.dumps(obj, ensure_ascii=False))
    elif isinstance(obj, dict):
        depth += 1
        out.append("{\n" if pretty else "{")
        items = list(obj.items())
        for i, (key, value) in enumerate(items):
            if pretty:
                out.append("\t" * depth)
            out.append(json.dumps(key, ensure_ascii=False))
            out.append(":\t" if pretty else ":")
            _emit(value, out, depth, pretty)
            if i < len(items) - 1:
                out.append(",")
            if pretty:
                out.append("\n")
        if pretty:
            out.append("\t" * (depth - 1))
        out.append("}")
    elif isinstance(obj, (list, tuple)):
        depth += 1  # cJSON's print_array also bumps the depth
        out.append("[")
        for i, value in enumerate(obj):
            if i:
                out.append(", " if pretty else ",")
            _emit(value, out, depth, pretty)
        out.append("]")
    else:
        raise TypeError(f"cannot serialise {type(obj).__name__}")
