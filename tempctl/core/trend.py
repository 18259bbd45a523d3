"""The room's trend, as the thermal model sees it: the slope of the effective ambient.

A least-squares slope of Ta = t_ss − R·s(duty)·P over the last ``TREND_S``, with one
intercept per stretch at unchanged settings, from settled readings only (``model.py``
feeds it). A step's prediction error is a level shift of Ta, not a trend: fitted as one
line, a climb's five under-predicted steps read as +10 °C/h and the law throttled on a room
that was not warming (issue 20, the panel's cooling loss).

Ta is kept as its two parts, t_ss and s·P, so the slope for any R comes from the same sums:
a relearned R re-reads the whole window with the new value (one learned step moves Ta by
ΔR·s·P, several °C, which read as a trend of up to the clamp: the poor heatsink's day
cycle). Pure: no I/O, no clock.
"""

from __future__ import annotations

__all__ = ["TREND_MAX_C_PER_S", "TREND_S", "AmbientTrend"]

TREND_S = 1800.0  # the ambient trend is a least-squares slope over this long
TREND_MAX_C_PER_S = 10.0 / 3600  # clamp: no room warms faster than 10 °C/h
TREND_MIN_S = 600.0  # no trend until the stretches in the window span this long


class AmbientTrend:
    """``time_scale``: TEMPCTL_SETTLE / 180 s (the model's), scales the windows."""

    def __init__(self, time_scale: float = 1.0):
        self.ts = time_scale
        self.reset()

    def reset(self) -> None:
        self._points: list[tuple[float, float, float, int]] = []  # (t, t_ss, s·P, stretch)
        self._head = 0
        self._t0: float | None = None
        self._seg = 0  # the current stretch
        # per stretch: an origin, then n, Σt, Σt_ss, ΣsP, Σt², Σt·t_ss, Σt·sP (t from the
        # origin), and t of its last and of its first point still in the window
        self._segs: dict[int, list[float]] = {}
        self.version = 0  # bumped by every change of the sums (the model's slope cache)

    def new_stretch(self) -> None:
        """The settings changed: the points from now on get an intercept of their own."""
        self._seg += 1

    def add(self, t: float, t_ss: float, sp: float) -> None:
        """A settled reading at ``t`` seconds: the steady die and s(duty)·P."""
        if self._t0 is None:
            self._t0 = t
        x = t - self._t0
        self.version += 1
        pts, segs = self._points, self._segs
        pts.append((x, t_ss, sp, self._seg))
        g = segs.get(self._seg)
        if g is None:
            g = segs[self._seg] = [x, 0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, x, x]
        _sum(g, x, t_ss, sp, 1)
        g[8] = x
        while pts[-1][0] - pts[self._head][0] > TREND_S * self.ts:
            ox, ot, op, oseg = pts[self._head]
            self._head += 1
            g = segs[oseg]
            _sum(g, ox, ot, op, -1)
            if g[1] <= 0:
                del segs[oseg]
            else:  # stretches follow each other in time: the next point is its first now
                g[9] = pts[self._head][0]
        if self._head > 512:
            del pts[: self._head]
            self._head = 0

    def slope(self, r: float) -> float:
        """°C per second of Ta with °C/W ``r`` (0 until TREND_MIN_S of evidence)."""
        num = den = span = 0.0
        n = 0
        for g in self._segs.values():
            k = g[1]
            if k < 2:
                continue
            st, sx, sp, stt, stx, stp = g[2:8]
            num += (stx - st * sx / k) - r * (stp - st * sp / k)
            den += stt - st * st / k
            span += g[8] - g[9]
            n += k
        if n < 3 or span < TREND_MIN_S * self.ts or den <= 0:
            return 0.0
        cap = TREND_MAX_C_PER_S / self.ts
        return max(-cap, min(cap, num / den))


def _sum(g: list[float], x: float, t_ss: float, sp: float, sign: int) -> None:
    d = x - g[0]
    g[1] += sign
    for i, v in enumerate((d, t_ss, sp, d * d, d * t_ss, d * sp)):
        g[2 + i] += sign * v
