"""Numerical parts of the thermal fit (``fit.py``): the low-pass and the baseline basis.

Both run in time linear in the rows: the low-pass is solved in closed form over blocks,
and least squares on the hat-function baseline needs only bincounts and a tridiagonal
solve, so the grid search of ``fit.fit_thermal`` can project the baseline out once per τ.
"""

from __future__ import annotations

import math

import numpy as np

LP_BLOCK = 60.0  # low-pass blocks span at most this many time constants (e^60 is safe)
LP_CHUNK = 65_536  # rows per pass of the low-pass (bounds its temporaries)


def lowpass(ts: np.ndarray, u: np.ndarray, seg: np.ndarray, tau_s: float) -> np.ndarray:
    """First-order low-pass of ``u`` (linear between samples), restarted at each segment.

    The recurrence ``y[i] = e[i]·y[i-1] + g[i]`` is solved in closed form over blocks
    of at most ``LP_BLOCK`` time constants (so the scale factors stay far from
    overflow): one numpy pass per block instead of a Python step per row, and the
    temporaries are only ``LP_CHUNK`` rows long.
    """
    n = len(u)
    y = np.empty(n)
    tau = float(tau_s)
    c_end = 0.0  # elapsed time constants at the end of the previous chunk
    for lo in range(0, n, LP_CHUNK):
        hi = min(n, lo + LP_CHUNK)
        p = max(lo - 1, 0)
        dt = np.diff(ts[p:hi]) / 1000.0
        start = seg[p + 1 : hi] != seg[p : hi - 1]
        prev = u[p : hi - 1]
        if lo == 0:
            dt, start = np.concatenate([[0.0], dt]), np.concatenate([[True], start])
            prev = np.concatenate([u[:1], prev])
        e = np.exp(-dt / tau)
        with np.errstate(invalid="ignore", divide="ignore"):
            frac = np.where(dt > 0, 1.0 - tau * (1.0 - e) / dt, 0.0)
        g = np.where(start, u[lo:hi], (1.0 - e) * prev + (u[lo:hi] - prev) * frac)
        c = c_end + np.cumsum(np.where(start, 0.0, dt / tau))
        cut = start.copy()
        cut[0] = True
        cut[1:] |= np.diff(np.floor(c / LP_BLOCK)) != 0
        edges = np.concatenate([np.flatnonzero(cut), [hi - lo]])
        for a, b in zip(edges[:-1], edges[1:]):
            if start[a]:
                ref, carry = c[a], 0.0
            else:
                ref, carry = (c[a - 1] if a else c_end), y[lo + a - 1]
            w = np.exp(c[a:b] - ref)
            y[lo + a : lo + b] = (carry + np.cumsum(g[a:b] * w)) / w
        c_end = float(c[-1])
    return y


class Baseline:
    """The slow baseline: hat functions with a knot every ``knot_s`` within each stretch
    of the log between long gaps (restarts do not split it: the room does not change
    when the miner reboots). Each row touches two adjacent knots, so least squares on
    the basis needs only bincounts and a k×k solve (k = hours + stretches).
    """

    def __init__(self, ts: np.ndarray, gaps: np.ndarray, knot_s: float):
        stretch = np.concatenate([[0], np.cumsum(gaps)])
        edges = np.concatenate([[0], np.flatnonzero(np.diff(stretch)) + 1, [len(ts)]])
        left = np.empty(len(ts), dtype=np.int64)
        wr = np.zeros(len(ts))
        knots: list[float] = []
        for a, b in zip(edges[:-1], edges[1:]):
            t0, t1 = float(ts[a]), float(ts[b - 1])
            m = max(1, math.ceil((t1 - t0) / (knot_s * 1000)))
            if t1 <= t0:
                left[a:b] = len(knots)
                knots.append(t0)
                continue
            width = (t1 - t0) / m
            pos = np.minimum((ts[a:b] - t0) / width, m - 1e-9)
            left[a:b] = len(knots) + np.floor(pos).astype(np.int64)
            wr[a:b] = pos - np.floor(pos)
            knots.extend(t0 + width * j for j in range(m + 1))
        self.knots = np.array(knots)
        self.left = left
        self.right = np.minimum(left + 1, len(knots) - 1)
        self.wl = 1.0 - wr
        self.wr = wr

    def solver(self, rows: np.ndarray) -> _Projector:
        return _Projector(self, rows)

    def at(self, coef: np.ndarray, rows: np.ndarray) -> np.ndarray:
        """The baseline with these coefficients, on ``rows`` (a boolean mask)."""
        return coef[self.left[rows]] * self.wl[rows] + coef[self.right[rows]] * self.wr[rows]


class _Projector:
    """Least squares on the baseline basis restricted to ``rows`` (a boolean mask).

    Vectors are over all rows of the basis; rows outside the mask carry zero weight
    (no copies per row set), and residuals there are zero.
    """

    def __init__(self, base: Baseline, rows: np.ndarray):
        self.rows = rows
        self.l, self.r = base.left, base.right
        self.wl, self.wr = base.wl * rows, base.wr * rows
        k = len(base.knots)
        self.k = k
        diag = np.bincount(self.l, self.wl**2, k) + np.bincount(self.r, self.wr**2, k)
        off = np.bincount(self.l, self.wl * self.wr, k)[:-1]  # (j, j+1): rows between them
        self.supported = diag > 0
        diag = np.where(self.supported, diag, 1.0)  # a knot without rows: coefficient 0
        # the Gram matrix is tridiagonal and positive definite: factor it once (LDLᵀ)
        d, m = diag.tolist(), off.tolist()
        for j in range(1, k):
            m[j - 1] /= d[j - 1]
            d[j] -= m[j - 1] * m[j - 1] * d[j - 1]
        self.d, self.m = d, m

    def coef(self, v: np.ndarray) -> np.ndarray:
        """Basis coefficients of the least-squares fit of ``v`` (values on the rows)."""
        b = (
            np.bincount(self.l, self.wl * v, self.k) + np.bincount(self.r, self.wr * v, self.k)
        ).tolist()
        d, m, k = self.d, self.m, self.k
        for j in range(1, k):
            b[j] -= m[j - 1] * b[j - 1]
        b[k - 1] /= d[k - 1]
        for j in range(k - 2, -1, -1):
            b[j] = b[j] / d[j] - m[j] * b[j + 1]
        return np.array(b)

    def resid(self, v: np.ndarray) -> np.ndarray:
        c = self.coef(v)
        out = v - c[self.l] * self.wl
        out -= c[self.r] * self.wr
        out *= self.rows
        return out


def best_share(yy, a, b, ff, fs, ss, grid) -> tuple[float, float]:
    """(sse, φ) at the best fast share of ``grid`` for one τ, from the projected inner
    products: y·y, fast·y, slow·y, fast·fast, fast·slow, slow·slow."""
    best = None
    for phi in grid:
        xy = phi * a + (1 - phi) * b
        xx = phi * phi * ff + 2 * phi * (1 - phi) * fs + (1 - phi) ** 2 * ss
        sse = yy - (xy * xy / xx if xx > 0 else 0.0)
        if best is None or sse < best[0]:
            best = (sse, phi)
    return best


__all__ = ["Baseline", "best_share", "lowpass"]
