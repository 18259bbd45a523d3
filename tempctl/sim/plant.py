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
import random
from dataclasses import dataclass, field, fields, replace


@dataclass(frozen=True)
class FanEffect:
    """How fan duty changes cooling and what rpm it gives.

    The whole die rise above ambient scales as ``((ref + still) / (duty + still))**exponent``
    (forced convection over a heatsink, h ∝ airflow^n). ``exponent`` 0.55 is our fit on the
    mtab3000 autofan traces (ASIC held at 60 °C while the fan follows power): per device
    log(duty) against log(rise) gave n = 0.44–0.74 on the two long traces; it reproduces
    their +150–300 rpm per W (data/README §3). ``still_air_pct`` stands for natural
    convection at 0 % duty (a modelling choice: a stopped fan multiplies the rise by 3.7, so
    a Gamma trips quickly). rpm is taken as linear in duty; ``rpm_full`` 5700 assumes the
    nearly constant 5300–5900 rpm of the jojo4751 Gammas is full duty (not logged).
    """

    exponent: float = 0.55
    still_air_pct: float = 10.0
    rpm_full: float = 5700.0

    def scale(self, fan_pct: float, ref_pct: float) -> float:
        duty = min(max(fan_pct, 0.0), 100.0)
        return ((ref_pct + self.still_air_pct) / (duty + self.still_air_pct)) ** self.exponent

    def rpm(self, fan_pct: float) -> int:
        return round(self.rpm_full * min(max(fan_pct, 0.0), 100.0) / 100.0)


@dataclass(frozen=True)
class PlantParams:
    """Constants of one board. The defaults are the Bitaxe Gamma (BM1370) calibration."""

    asic: str = "BM1370"
    # Power: own OLS on the 45 single-BM1370 steady-state rows whose temperature was free
    # (jojo4751 segments, ThePeacemaker82 steps; 1100-1200 mV, the regime a guard works in),
    # alternated with the leak fit below to convergence. Over all 422 single-BM1370 rows with a
    # set voltage the MAE is 0.68 W; the mtab3000 rows (autofan, 1.0-1.05 V) read 0.6-0.8 W
    # above the model. (A source-balanced fit over all 422 rows, p0 6.4 / k 0.0157, has MAE
    # 0.55 W but gives +25 MHz => +0.60 W at 1150 mV, where both free-temperature sources show
    # +0.73-0.74 W, data/README §4; this fit gives +0.66 W and +0.72 °C.)
    p0_w: float = 5.14
    k_w: float = 0.0170
    # Leakage: median of dP/dT / (k·f·V²) over the five jojo4751 Gammas at constant settings
    # (0.13-0.20 W/°C, r >= 0.99) and the ThePeacemaker82 750 MHz log (0.24 W/°C); data/README §3.
    leak_per_c: float = 0.0093
    t_ref_c: float = 60.0  # the autofan set-point most of the data sit at
    # °C/W at fixed fan: data/README §4 gives 1.14 (ThePeacemaker82) and 1.05 (jojo4751); our
    # 2-node fit of the pmcochrane 1 Hz trace on measured power gives 1.04–1.08.
    r_c_per_w_fixed: float = 1.10
    fan_ref_pct: float = 100.0  # those fans ran near full speed (see FanEffect.rpm_full)
    fan_effect: FanEffect = field(default_factory=FanEffect)
    # Ambient is never logged, so this is a modelling choice, not a measurement: with the
    # heatwave scenario (575 MHz / 1150 mV, fan 100 %) the die sits at 60.0 °C at 28 °C
    # ambient, crosses 63 °C at 30.6 °C and reaches 71.5 °C at 38 °C. Fitting one ambient per
    # jojo4751 unit / ThePeacemaker82 run with it gives 26-30 °C rooms (tests/test_plant.py).
    case_offset_c: float = 17.6
    # Dynamics: a 2-node fit of the pmcochrane 1 Hz trace on its measured power is flat for
    # τ_slow 30-48 s (RMSE 0.256-0.264 °C) with fast share 0.55, τ_fast <= 1 s (unresolved:
    # readings refresh every few s); data/README §4 reports 0.51 / < 1 s / 48 s, and 36-48 s
    # for the 30 s jojo4751 up-steps, which favour the longer τ. Replaying that trace's
    # commanded frequency through this plant: RMSE 0.39 °C at 48 s, best 36 s at 0.38 °C.
    fast_share: float = 0.50
    tau_fast_s: float = 1.0
    tau_slow_s: float = 48.0
    # VR: about +1.8-2.0 °C/W (mtab3000 traces, data/README §3). On the pmcochrane trace a single
    # lag on measured power fits best at τ 5-6 s (RMSE 0.67 °C on whole-degree readings, slope
    # 1.78 °C/W). Offset: VR − die ≈ +11 °C at 34 W there, given this die model at 100 % fan.
    # The VR is not fan-scaled: the slope was measured under autofan and the fan effect on it
    # is not identifiable from these data.
    vr_c_per_w: float = 1.9
    vr_offset_c: float = 6.0
    tau_vr_s: float = 5.0
    # Reading noise: steady 830 MHz stretch of the pmcochrane trace, sd of successive
    # differences / √2 = 0.058 °C (quantisation included); EMC2101 external diode gives
    # 0.125 °C steps (axeos-api §10).
    noise_c: float = 0.06
    # hashRate / (f·2040/1000): median 1.006 over all single-BM1370 rows; axeos-api §10 says
    # 90–100 % typical. Relative noise: sd 2.3 % on the pmcochrane trace (v2.11+: ±1–3 %).
    hash_efficiency: float = 1.0
    small_cores: int = 2040  # Gamma: 1 × BM1370, 2040 small cores (axeos-api §10)
    chips: int = 1
    # Added to the brief's list:
    power_offset_w: float = 5.0  # TPS546 boards report Vout·Iout + 5 W (axeos-api §10)
    temp_step_c: float = 0.125  # sensor resolution: EMC2101 external 0.125, internal 1 °C
    hash_noise: float = 0.02

    def __hash__(self) -> int:
        # The plant's caches key on these params at every step: hash the ~25 fields once.
        cached = self.__dict__.get("_hash")
        if cached is None:
            cached = hash(tuple(getattr(self, f.name) for f in fields(self)))
            object.__setattr__(self, "_hash", cached)
        return cached

    def fan_scale(self, fan_pct: float) -> float:
        return self.fan_effect.scale(fan_pct, self.fan_ref_pct)

    def r_c_per_w(self, fan_pct: float) -> float:
        """°C/W at this fan duty (what an autofan PID works against)."""
        return self.r_c_per_w_fixed * self.fan_scale(fan_pct)

    def fan_rpm(self, fan_pct: float) -> int:
        return self.fan_effect.rpm(fan_pct)

    def expected_hashrate(self, freq_mhz: float) -> float:
        """The firmware's expectedHashrate: f × small cores × chips / 1000 (axeos-api §10)."""
        return freq_mhz * self.small_cores * self.chips / 1000.0


_GAMMA = PlantParams()

# No temperature-free data for the other chips here, so these are derived, not calibrated.
# BM1368: adammwest Supra fit P ≈ 0.6 + 0.0180·f·V², T = 24.2 + 1.84·P (data/README §4). Its
# 0.6 W intercept means input power from an INA260 (Supra 400/401: no offset, temp from the
# EMC2101 internal sensor in whole °C). case_offset 0 puts that fit at ≈25 °C ambient.
# BM1366 (Ultra) and BM1397 (Max): k scaled from BM1368 by small-core count; they land below
# the self-test's 12 W bound at their defaults (axeos-api §10), a rough estimate.
_SUPRA = replace(
    _GAMMA,
    asic="BM1368",
    p0_w=0.6,
    k_w=0.0180,
    r_c_per_w_fixed=1.84,
    case_offset_c=0.0,
    small_cores=1276,
    power_offset_w=0.0,
    temp_step_c=1.0,
)
_PARAMS = {
    "BM1370": _GAMMA,
    "BM1368": _SUPRA,
    "BM1366": replace(_SUPRA, asic="BM1366", k_w=0.0180 * 894 / 1276, small_cores=894),
    "BM1397": replace(_SUPRA, asic="BM1397", k_w=0.0180 * 672 / 1276, small_cores=672),
    # BM1372/BM1373 (ESP-Miner master only, axeos-api §7): no data at all, so (estimate) the
    # Gamma's calibration with the chip name changed: the same 2040 small cores and TPS546 board
    # as the BM1370 whose option lists it shares (§7); its 327 MHz / 1000 mV default then draws
    # ~10.7 W. Derived, not measured: do not fit anything to it.
    "BM1372": replace(_GAMMA, asic="BM1372"),
    "BM1373": replace(_GAMMA, asic="BM1373"),
}


def params_for(asic: str) -> PlantParams:
    """Plant constants for a single-chip board with this ASIC (BM1370 is the calibrated one)."""
    try:
        return _PARAMS[asic.upper()]
    except KeyError:
        raise ValueError(
            f"no plant parameters for ASIC {asic!r}; known: {sorted(_PARAMS)}"
        ) from None


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
        self.params = params
        # A scheduled failure (a failing fan or heatsink): multiplies the thermal resistance;
        # the fan duty the firmware reports is unchanged.
        self.cooling_scale = 1.0
        # Per-plant memo of pure functions of (params, inputs): the firmware model steps the
        # same few operating points and step lengths over and over, and a module-level
        # cache would hash the params (a Python __hash__) at every call.
        self._memo: dict[tuple, object] = {}
        # Separate streams so how often one reading is taken does not shift the others.
        self._rng_die = random.Random(None if seed is None else f"{seed}:die")
        self._rng_vr = random.Random(None if seed is None else f"{seed}:vr")
        self._rng_hash = random.Random(None if seed is None else f"{seed}:hash")
        self.settle(
            freq_mhz=freq_mhz or 0.0,
            core_mv=core_mv,
            fan_pct=params.fan_ref_pct if fan_pct is None else fan_pct,
            ambient_c=ambient_c,
            running=freq_mhz is not None,
        )

    @property
    def die_c(self) -> float:
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
        if self.cooling_scale != 1.0:
            a, g, s = _inputs(self.params, freq_mhz, core_mv, True, fan_pct)
            s *= self.cooling_scale
            gain = s * self.params.r_c_per_w_fixed * g
            terms = (s * (self.params.case_offset_c + self.params.r_c_per_w_fixed * a), 1.0 - gain)
            terms = terms if gain < 1.0 else None
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
        s *= self.cooling_scale
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
        """Noisy die reading quantized to the sensor step (deterministic given the seed)."""
        p = self.params
        raw = self.die_c + (self._rng_die.gauss(0.0, p.noise_c) if p.noise_c else 0.0)
        return round(raw / p.temp_step_c) * p.temp_step_c

    def read_vr(self) -> float:
        """VR temperature in whole °C, as the TPS546 reports it."""
        noise = self._rng_vr.gauss(0.0, self.params.noise_c) if self.params.noise_c else 0.0
        return float(round(self._vr + noise))

    def hashrate(self, freq_mhz: float, running: bool = True) -> float:
        """GH/s: expected × efficiency with small relative noise; 0 when not hashing."""
        if not running:
            return 0.0
        p = self.params
        noise = self._rng_hash.gauss(0.0, p.hash_noise) if p.hash_noise else 0.0
        return max(0.0, p.expected_hashrate(freq_mhz) * p.hash_efficiency * (1.0 + noise))
