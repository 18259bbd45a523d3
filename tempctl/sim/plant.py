"""The thermal plant of a Bitaxe: power, die and VR temperature, hashrate.

Pure physics, no firmware and no HTTP: the firmware model (``tempctl/sim/firmware``)
puts AxeOS behaviour on top. Calibrated on the measured Gamma (BM1370) data in
``shared/data`` (cited below as data/README §n); ``tests/test_plant.py`` checks
the fits against copies of those CSVs.

Model (all temperatures °C, powers W):

* Reported power ``P = p0 + k·f[MHz]·V[V]²·(1 + leak·(T_die − t_ref))``. On TPS546
  boards AxeOS reports core-rail power plus a fixed offset (5 W on a Gamma,
  axeos-api §10), so the heat the ASIC makes is ``P − power_offset_w``; with the
  ASIC stopped (Vcore off) the board reports just the offset.
* Steady die rise above ambient ``fan_scale(duty)·(case_offset + R·heat)``. The
  rise depends on die temperature through leakage, so the fixed point is solved
  in closed form.
* Dynamics: a fast node (die/package, share ``fast_share``) and a slow node
  (heatsink, board, enclosure; it also carries ``case_offset`` and ambient), plus
  a first-order VR node. The system is linear in its state, so ``step`` uses the
  exact solution for inputs held over the step: any ``dt`` is stable and
  N steps of dt equal one step of N·dt.
"""

from __future__ import annotations

import functools
import math
from dataclasses import replace

from tempctl.sim.params import PARAMS, FanEffect, PlantParams, params_for
from tempctl.sim.sensor import Sensor

__all__ = [
    "PARAMS",
    "FanEffect",
    "Plant",
    "PlantParams",
    "oracle_frequency",
    "params_for",
    "power",
    "steady_die",
]


@functools.lru_cache(maxsize=4096)
def _heat_terms(p: PlantParams, freq_mhz: float, core_mv: float, running: bool):
    """Heat = a + g·T_die, the ASIC's share of the reported power (cached: a few operating
    points recur at every step)."""
    if not running:
        return 0.0, 0.0
    kx = p.k_w * freq_mhz * (core_mv / 1000.0) ** 2
    return p.p0_w - p.power_offset_w + kx * (1.0 - p.leak_per_c * p.t_ref_c), kx * p.leak_per_c


def power(p: PlantParams, freq_mhz: float, core_mv: float, die_c: float, running: bool = True):
    """Reported board power (W) at this die temperature."""
    a, g = _heat_terms(p, freq_mhz, core_mv, running)
    return p.power_offset_w + a + g * die_c


def steady_die(
    p: PlantParams,
    freq_mhz: float,
    core_mv: float,
    ambient_c: float,
    fan_pct: float,
    running: bool = True,
) -> float:
    """Steady die temperature: the leakage fixed point, solved in closed form.

    T = amb + s·(c0 + R·(a + g·T))  ⇒  T = (amb + s·(c0 + R·a)) / (1 − s·R·g).
    Returns inf when the loop gain s·R·g reaches 1 (thermal runaway, no fixed point).
    """
    terms = _steady_terms(p, freq_mhz, core_mv, fan_pct, running)
    if terms is None:
        return math.inf
    rise, denominator = terms
    return (ambient_c + rise) / denominator


_MISSING = object()
MEMO_MAX = 4096  # entries of a plant's memo before it starts over


@functools.lru_cache(maxsize=4096)
def _inputs(p: PlantParams, freq_mhz: float, core_mv: float, running: bool, fan_pct: float):
    """``_heat_terms`` and ``fan_scale`` of an operating point: the firmware model asks for
    the same few at every step, and the power and the fan law are not free."""
    a, g = _heat_terms(p, freq_mhz, core_mv, running)
    return a, g, p.fan_scale(fan_pct)


@functools.lru_cache(maxsize=4096)
def _steady_terms(p: PlantParams, freq_mhz: float, core_mv: float, fan_pct: float, running: bool):
    """The parts of ``steady_die`` that do not depend on ambient, or None at runaway."""
    a, g, s = _inputs(p, freq_mhz, core_mv, running, fan_pct)
    gain = s * p.r_c_per_w_fixed * g
    if gain >= 1.0:
        return None
    return s * (p.case_offset_c + p.r_c_per_w_fixed * a), 1.0 - gain


def oracle_frequency(
    params: PlantParams,
    ambient_c: float,
    threshold_c: float,
    fan_pct: float,
    core_mv: float,
    max_mhz: float,
    min_mhz: float = 50.0,
) -> float:
    """Highest frequency in [min_mhz, max_mhz] whose steady die stays <= threshold_c.

    Bisection to 0.01 MHz (steady_die rises with frequency). Returns min_mhz when even
    that is too hot: the caller cannot go lower.
    """

    def ok(f: float) -> bool:
        return steady_die(params, f, core_mv, ambient_c, fan_pct) <= threshold_c

    if ok(max_mhz):
        return float(max_mhz)
    lo, hi = float(min_mhz), float(max_mhz)
    if not ok(lo):
        return lo
    while hi - lo > 0.01:
        mid = (lo + hi) / 2.0
        lo, hi = (mid, hi) if ok(mid) else (lo, mid)
    return lo


def _matmul(x, y):
    return [
        [sum(x[i][k] * y[k][j] for k in range(len(y))) for j in range(len(y[0]))]
        for i in range(len(x))
    ]


def _expm(m):
    """exp(m) for a small dense matrix: scaling and squaring with a Taylor series.

    Only the fallback for coinciding modes uses it (a 5×5 augmented system), which does
    not justify a SciPy dependency.
    """
    n = len(m)
    norm = max(sum(abs(v) for v in row) for row in m)
    squarings = max(0, math.ceil(math.log2(norm / 0.25))) if norm > 0.25 else 0
    scaled = [[v / 2.0**squarings for v in row] for row in m]
    result = [[float(i == j) for j in range(n)] for i in range(n)]
    term = [row[:] for row in result]
    for order in range(1, 16):  # ‖scaled‖ ≤ 0.25: the tail is below 1e-20
        term = [[v / order for v in row] for row in _matmul(term, scaled)]
        result = [[r + t for r, t in zip(rr, tr)] for rr, tr in zip(result, term)]
    for _ in range(squarings):
        result = _matmul(result, result)
    return result


def _system(p: PlantParams, a: float, g: float, s: float):
    """State x = [fast, slow, vr]; dx/dt = A·x + b + ambient·e, die = fast + slow."""
    r, phi = p.r_c_per_w_fixed, p.fast_share
    cf, cs = phi * s * r * g, (1.0 - phi) * s * r * g
    tf, ts, tv = p.tau_fast_s, p.tau_slow_s, p.tau_vr_s
    A = [
        [(cf - 1.0) / tf, cf / tf, 0.0],
        [cs / ts, (cs - 1.0) / ts, 0.0],
        [p.vr_c_per_w * g / tv, p.vr_c_per_w * g / tv, -1.0 / tv],
    ]
    b = [
        phi * s * r * a / tf,
        s * (p.case_offset_c + (1.0 - phi) * r * a) / ts,
        (p.vr_offset_c + p.vr_c_per_w * a) / tv,
    ]
    e = [0.0, 1.0 / ts, 1.0 / tv]
    return A, b, e


def _inverse3(m):
    (a, b, c), (d, e, f), (g, h, i) = m
    cof = [
        [e * i - f * h, c * h - b * i, b * f - c * e],
        [f * g - d * i, a * i - c * g, c * d - a * f],
        [d * h - e * g, b * g - a * h, a * e - b * d],
    ]
    det = a * cof[0][0] + b * cof[1][0] + c * cof[2][0]
    return [[v / det for v in row] for row in cof]


@functools.lru_cache(maxsize=256)
def _modes(p: PlantParams, a: float, g: float, s: float):
    """Eigenvalues and eigenvectors of A, or None when two modes (nearly) coincide.

    A is block lower-triangular: the die block [[m11, m12], [m21, m22]] (real eigenvalues,
    its off-diagonal terms are >= 0) drives the VR node, whose own eigenvalue is -1/τ_vr.
    Cached per operating point, so a step costs a few exponentials for any dt.
    """
    A, b, e = _system(p, a, g, s)
    (m11, m12, _), (m21, m22, _), (c, _, lam3) = A
    half_tr, det = (m11 + m22) / 2.0, m11 * m22 - m12 * m21
    root = math.sqrt(max(half_tr * half_tr - det, 0.0))
    lams = (half_tr + root, half_tr - root)
    scale = max(abs(lam3), abs(m11), abs(m22))
    if min(abs(lams[0] - lams[1]), abs(lams[0] - lam3), abs(lams[1] - lam3)) < 1e-6 * scale:
        return None
    cols = []
    for lam in lams:
        if m12 != 0.0:
            u = (m12, lam - m11)
        elif m21 != 0.0:
            u = (lam - m22, m21)
        else:  # uncoupled (ASIC off): the eigenvectors are the axes
            u = (1.0, 0.0) if abs(lam - m11) <= abs(lam - m22) else (0.0, 1.0)
        cols.append((u[0], u[1], c * (u[0] + u[1]) / (lam - lam3)))
    cols.append((0.0, 0.0, 1.0))
    V = [[cols[j][i] for j in range(3)] for i in range(3)]
    return (*lams, lam3), V, _inverse3(V), b, e


@functools.lru_cache(maxsize=256)
def _transition(p: PlantParams, a: float, g: float, s: float, dt_s: float):
    """The same update by matrix exponential, for the (rare) coinciding modes.

    The system is augmented with its two constant inputs (heat terms, unit ambient), so
    one exponential gives Φ and both input columns.
    """
    A, b, e = _system(p, a, g, s)
    aug = [[v * dt_s for v in row + [bi, ei]] for row, bi, ei in zip(A, b, e)]
    m = _expm(aug + [[0.0] * 5, [0.0] * 5])
    return [row[:3] for row in m[:3]], [row[3] for row in m[:3]], [row[4] for row in m[:3]]


@functools.lru_cache(maxsize=1024)
def _affine(p: PlantParams, a: float, g: float, s: float, dt_s: float):
    """The step as an affine map x' = Φ·x + c_b + ambient·c_e (cached per operating point
    and step length: the firmware model repeats both), or None for coinciding modes."""
    modes = _modes(p, a, g, s)
    if modes is None:
        return None
    lams, V, Vi, b, e = modes
    grow = [math.exp(lam * dt_s) for lam in lams]
    # ∫0^dt e^{λτ} dτ, with the λ → 0 limit (exactly at the runaway boundary)
    integ = [math.expm1(lam * dt_s) / lam if lam != 0.0 else dt_s for lam in lams]
    phi = tuple(
        tuple(sum(V[i][k] * grow[k] * Vi[k][j] for k in range(3)) for j in range(3))
        for i in range(3)
    )
    gam = [
        [sum(V[i][k] * integ[k] * Vi[k][j] for k in range(3)) for j in range(3)] for i in range(3)
    ]
    cb = tuple(sum(gam[i][j] * b[j] for j in range(3)) for i in range(3))
    ce = tuple(sum(gam[i][j] * e[j] for j in range(3)) for i in range(3))
    return phi, cb, ce


def _advance(p: PlantParams, a: float, g: float, s: float, x, ambient_c: float, dt_s: float):
    """Exact solution of dx/dt = A·x + b + ambient·e over dt with the inputs held."""
    step = _affine(p, a, g, s, dt_s)
    if step is not None:
        (p0, p1, p2), cb, ce = step
        x0, x1, x2 = x
        return [
            p0[0] * x0 + p0[1] * x1 + p0[2] * x2 + cb[0] + ambient_c * ce[0],
            p1[0] * x0 + p1[1] * x1 + p1[2] * x2 + cb[1] + ambient_c * ce[1],
            p2[0] * x0 + p2[1] * x1 + p2[2] * x2 + cb[2] + ambient_c * ce[2],
        ]
    modes = _modes(p, a, g, s)
    if modes is None:
        phi, b_col, e_col = _transition(p, a, g, s, dt_s)
        return [
            sum(phi[i][j] * x[j] for j in range(3)) + b_col[i] + ambient_c * e_col[i]
            for i in range(3)
        ]
    lams, V, Vi, b, e = modes
    u = [bi + ambient_c * ei for bi, ei in zip(b, e)]
    z = []
    for i, lam in enumerate(lams):
        z0 = sum(Vi[i][j] * x[j] for j in range(3))
        q = sum(Vi[i][j] * u[j] for j in range(3))
        # ∫0^dt e^{λτ} dτ, with the λ → 0 limit (exactly at the runaway boundary)
        integral = math.expm1(lam * dt_s) / lam if lam != 0.0 else dt_s
        z.append(math.exp(lam * dt_s) * z0 + integral * q)
    return [sum(V[i][j] * z[j] for j in range(3)) for i in range(3)]


class Plant:
    """One board's true thermal state, stepped by the emulator or a simulation.

    Starts at the steady state of the given operating point, or of an idle board
    (ASIC off, fan at the reference duty) when ``freq_mhz`` is None.
    """

    def __init__(
        self,
        params: PlantParams,
        ambient_c: float,
        *,
        seed: int | None = None,
        freq_mhz: float | None = None,
        core_mv: float = 1150.0,
        fan_pct: float | None = None,
    ):
        self.params = self.nominal = params
        self._cooling_scale = 1.0
        # Per-plant memo of pure functions of (params, inputs): the firmware model steps the
        # same few operating points and step lengths over and over, and a module-level
        # cache would hash the params (a Python __hash__) at every call.
        self._memo: dict[tuple, object] = {}
        self.sensor = Sensor(params, seed)
        self.settle(
            freq_mhz=freq_mhz or 0.0,
            core_mv=core_mv,
            fan_pct=params.fan_ref_pct if fan_pct is None else fan_pct,
            ambient_c=ambient_c,
            running=freq_mhz is not None,
        )

    @property
    def cooling_scale(self) -> float:
        """Multiplies the thermal resistance (°C/W): 1.5 when a third of the cooling is lost.

        A failing fan or a clogged heatsink: the fan duty the firmware reports is unchanged.
        The state stays where it is; the die moves toward the new steady state from there.
        """
        return self._cooling_scale

    @cooling_scale.setter
    def cooling_scale(self, scale: float) -> None:
        if not scale > 0:
            raise ValueError(f"cooling_scale must be > 0, got {scale}")
        p = self.nominal
        self.params = replace(p, r_c_per_w_fixed=p.r_c_per_w_fixed * scale) if scale != 1 else p
        self._cooling_scale = float(scale)
        self._memo.clear()  # keyed on the operating point, not the params

    @property
    def die_c(self) -> float:
        return self._fast + self._slow

    @property
    def hot_c(self) -> float:
        """The true temperature of the hottest die sensor: the die, or the die plus the
        second sensor's offset on a two-sensor board whose temp2 runs hotter."""
        p = self.params
        if p.sensors == 2 and p.temp2_offset_c > 0:
            return self._fast + self._slow + p.temp2_offset_c
        return self._fast + self._slow

    @property
    def vr_c(self) -> float:
        return self._vr

    @property
    def power_w(self) -> float:
        (freq_mhz, core_mv), running = self._op, self._running
        key = ("heat", freq_mhz, core_mv, running)
        a, g = self._memo.get(key) or self._remember(
            key, _heat_terms(self.params, freq_mhz, core_mv, running)
        )
        return self.params.power_offset_w + a + g * (self._fast + self._slow)  # as power()

    def power(self, freq_mhz: float, core_mv: float, die_c: float, running: bool = True) -> float:
        return power(self.params, freq_mhz, core_mv, die_c, running)

    def steady_die(
        self, freq_mhz: float, core_mv: float, ambient_c: float, fan_pct: float
    ) -> float:
        key = ("steady", freq_mhz, core_mv, fan_pct)
        terms = self._memo.get(key, _MISSING)
        if terms is _MISSING:
            terms = self._remember(
                key, _steady_terms(self.params, freq_mhz, core_mv, fan_pct, True)
            )
        if terms is None:
            return math.inf
        rise, denominator = terms  # as module-level steady_die computes it
        return (ambient_c + rise) / denominator

    def _remember(self, key: tuple, value):
        if len(self._memo) >= MEMO_MAX:
            self._memo.clear()
        self._memo[key] = value
        return value

    def settle(
        self,
        *,
        freq_mhz: float,
        core_mv: float,
        fan_pct: float,
        ambient_c: float,
        running: bool = True,
    ) -> None:
        """Jump to the steady state of this operating point."""
        p = self.params
        die = steady_die(p, freq_mhz, core_mv, ambient_c, fan_pct, running)
        if math.isinf(die):
            raise ValueError("no steady state: thermal runaway at this operating point")
        a, g = _heat_terms(p, freq_mhz, core_mv, running)
        heat = a + g * die
        s = p.fan_scale(fan_pct)
        self._fast = p.fast_share * s * p.r_c_per_w_fixed * heat
        self._slow = die - self._fast
        self._vr = ambient_c + p.vr_offset_c + p.vr_c_per_w * heat
        self._op, self._running = (freq_mhz, core_mv), running

    def step(
        self,
        dt_s: float,
        *,
        freq_mhz: float,
        core_mv: float,
        fan_pct: float,
        ambient_c: float,
        running: bool = True,
    ) -> None:
        """Advance dt_s seconds with these inputs held constant (exact, any dt)."""
        if dt_s < 0:
            raise ValueError(f"dt_s must be >= 0, got {dt_s}")
        p, memo = self.params, self._memo
        key = ("inputs", freq_mhz, core_mv, running, fan_pct)
        inputs = memo.get(key) or self._remember(
            key, _inputs(p, freq_mhz, core_mv, running, fan_pct)
        )
        a, g, s = inputs
        x = (self._fast, self._slow, self._vr)
        dt_s = float(dt_s)
        key = ("affine", a, g, s, dt_s)
        step = memo.get(key, _MISSING)
        if step is _MISSING:
            step = self._remember(key, _affine(p, a, g, s, dt_s))
        if step is not None:
            (p0, p1, p2), cb, ce = step  # as _advance does it
            x0, x1, x2 = x
            self._fast, self._slow, self._vr = (
                p0[0] * x0 + p0[1] * x1 + p0[2] * x2 + cb[0] + ambient_c * ce[0],
                p1[0] * x0 + p1[1] * x1 + p1[2] * x2 + cb[1] + ambient_c * ce[1],
                p2[0] * x0 + p2[1] * x1 + p2[2] * x2 + cb[2] + ambient_c * ce[2],
            )
        else:
            self._fast, self._slow, self._vr = _advance(p, a, g, s, x, ambient_c, dt_s)
        self._op, self._running = (freq_mhz, core_mv), running

    def read_die(self) -> float:
        """Noisy die reading quantised to the sensor step (deterministic given the seed)."""
        return self.sensor.die(self._fast + self._slow)

    def read_temp2(self) -> float:
        """The second die sensor's reading (two-sensor boards)."""
        return self.sensor.temp2(self._fast + self._slow)

    def read_vr(self) -> float:
        """VR temperature in whole °C, as the TPS546 reports it."""
        return self.sensor.vr(self._vr)

    def hashrate(self, freq_mhz: float, running: bool = True) -> float:
        """GH/s: expected × efficiency with small relative noise; 0 when not hashing."""
        if not running:
            return 0.0
        return self.sensor.hashrate(self.params.expected_hashrate(freq_mhz))
