"""The effective ambient's trend: a least-squares slope over a sliding window. Pure.

Moved out of model.py (ThermalModel keeps one): running sums over (t, Ta), t relative to the
first point, so each reading costs O(1) and the slope is only fitted when asked.
"""

from __future__ import annotations

__all__ = ["Trend"]


class Trend:
    def __init__(self, window_s: float, cap_per_s: float, min_span_s: float):
        self.window_s = window_s  # points older than this behind the newest drop out
        self.cap = cap_per_s  # |slope| never above this (no room warms faster)
        self.min_span_s = min_span_s  # 0 until the points span this long
        self._points: list[tuple[float, float]] = []
        self._head = 0
        self._t0: float | None = None
        self._sums = [0.0, 0.0, 0.0, 0.0, 0]  # Σt, ΣTa, Σt², ΣtTa, n
        self._slope: float | None = None  # slope() until the next point

    def slope(self) -> float:
        """°C per second (0 until ``min_span_s`` of evidence)."""
        if self._slope is None:
            self._slope = self._fit()
        return self._slope

    def _fit(self) -> float:
        st, sa, stt, sta, n = self._sums
        tr = self._points
        if n < 3 or tr[-1][0] - tr[self._head][0] < self.min_span_s:
            return 0.0
        den = n * stt - st * st
        if den <= 0:
            return 0.0
        s = (n * sta - st * sa) / den
        return max(-self.cap, min(self.cap, s))

    def add(self, t: float, ta: float) -> None:
        if self._t0 is None:
            self._t0 = t
        x = t - self._t0
        self._slope = None
        tr, s = self._points, self._sums
        tr.append((x, ta))
        s[0] += x
        s[1] += ta
        s[2] += x * x
        s[3] += x * ta
        s[4] += 1
        while tr[-1][0] - tr[self._head][0] > self.window_s:
            ox, oa = tr[self._head]
            self._head += 1
            s[0] -= ox
            s[1] -= oa
            s[2] -= ox * ox
            s[3] -= ox * oa
            s[4] -= 1
        if self._head > 512:
            del tr[: self._head]
            self._head = 0
