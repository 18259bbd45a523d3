"""Deterministic noise: functions of (seed, key, time), not of a running RNG.

So a value does not depend on how often anyone asked for it (a poller's rate must not
change what the device shows).
"""

from __future__ import annotations

import functools
import math
import zlib

__all__ = ["key_hash", "quantize", "smooth_noise", "step_noise", "step_noise_hashed", "unit"]

_M64 = (1 << 64) - 1


def _mix(x: int) -> int:
    """splitmix64: a cheap, well-spread integer hash."""
    x = (x + 0x9E3779B97F4A7C15) & _M64
    x = ((x ^ (x >> 30)) * 0xBF58476D1CE4E5B9) & _M64
    x = ((x ^ (x >> 27)) * 0x94D049BB133111EB) & _M64
    return x ^ (x >> 31)


@functools.lru_cache(maxsize=4096)
def key_hash(seed: int, key: str) -> int:
    """The (seed, key) part of ``unit``: the same on every call, so callers may keep it."""
    return _mix(_mix(seed & _M64) ^ zlib.crc32(key.encode()))


def unit(seed: int, key: str, k: int) -> float:
    """Deterministic value in [-1, 1) for (seed, key, k), independent of any call order."""
    return _mix(key_hash(seed, key) ^ (k & _M64)) / 2.0**63 - 1.0


def smooth_noise(seed: int, key: str, t: float, period: float) -> float:
    """Deterministic noise in [-1, 1], linear between knots every ``period`` s."""
    k = math.floor(t / period)
    frac = t / period - k
    a, b = unit(seed, key, k), unit(seed, key, k + 1)
    return a + (b - a) * frac


def step_noise(seed: int, key: str, t: float, period: float) -> float:
    """Deterministic noise in [-1, 1), constant over each ``period`` s."""
    return unit(seed, key, math.floor(t / period))


def step_noise_hashed(hashed: int, t: float, period: float) -> float:
    """``step_noise`` with the key already hashed by ``key_hash`` (same values)."""
    return _mix(hashed ^ (math.floor(t / period) & _M64)) / 2.0**63 - 1.0


def quantize(x: float, step: float) -> float:
    return round(x / step) * step
