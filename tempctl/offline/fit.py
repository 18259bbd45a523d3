"""`tempctl fit`: the thermal plant of one device, estimated from its log.

Fitted from the ``readings`` of a device (valid temperature and power), by ordinary
least squares as in shared/data/README.md §4:

* power: ``P = p0 + k·f·V²`` on rows whose frequency and voltage had held for a while,
  plus the leakage variant ``+ c·f·V²·(T − 60)`` (reported as ``leak_per_c = c/k``);
* dynamics: ``T(t) = baseline(t) + R·(φ·LP_fast(P) + (1 − φ)·LP_slow(P))`` where LP is a
  first-order low-pass (exact for a linearly varying input between samples, so any
  sample spacing works) and ``baseline`` is piecewise linear with a knot every hour
  (ambient and cooling drift). R, φ and the time constants come from a grid search on
  the residual; R is what the model calls °C per W;
* steady state, the README's own method: segments at constant settings (split at a
  change, a restart or a gap > 10 min), first 300 s dropped, means of >= 5 samples,
  ``T = a + b·P`` over the segment means;
* VR: ``vrTemp = a + g·P`` (°C per W on the regulator);
* ambient over time: ``baseline − case_offset + R·power_offset`` with the plant's
  constants for the ASIC (plant.PlantParams): an estimate that assumes the plant's
  cooling (fixed fan), since no Bitaxe log has an ambient sensor.

Quality: R², RMSE, and the held-out error: every fourth block of time (10 min or 20
samples, whichever is longer) is left out of the fit and predicted afterwards.
"""

from __future__ import annotations

import csv
import math
import sqlite3
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import numpy as np

GAP_S = 600.0  # a hole longer than this starts a new segment (README §1 uses 10 min too)
STEADY_DROP_S = 300.0  # README §1: first 300 s of a settings segment dropped
STEADY_MIN_SAMPLES = 5
SETTLED_S = 60.0  # a power row counts as steady this long after a frequency/voltage change
KNOT_S = 3600.0  # baseline knots: ambient drifts slower than the die's ~48 s response
TAU_SLOW_GRID = (5, 10, 15, 20, 25, 30, 36, 42, 48, 55, 65, 80, 100, 130, 170, 220, 300, 420, 600)
SHARE_GRID = tuple(i / 20 for i in range(19))  # fast share 0 .. 0.9
TAU_FAST_S = 1.0  # below the refresh period of every log we have (README §4: "< 1 s")
MAX_ROWS = 60_000  # longer logs are thinned evenly before the grid search


class FitError(Exception):
    """Not enough usable data for a fit."""


@dataclass
class Quality:
    n: int
    r2: float | None
    rmse: float
    heldout_n: int = 0
    heldout_rmse: float | None = None
    heldout_mae: float | None = None


@dataclass
class PowerFit:
    p0_w: float
    k_w: float  # W per MHz·V²
    leak_per_c: float | None
    quality: Quality


@dataclass
class ThermalFit:
    r_c_per_w: float
    fast_share: float
    tau_fast_s: float
    tau_slow_s: float
    quality: Quality
    baseline: list[tuple[int, float]]  # (ts_ms, °C) at the knots
    ambient: list[tuple[int, float]]  # (ts_ms, °C) estimated, see module doc


@dataclass
class SteadyFit:
    r_c_per_w: float
    intercept_c: float
    segments: int
    r2: float | None


@dataclass
class PlantFit:
    device: str
    readings: int
    hours: float
    asic: str | None
    core_v: float | None  # median set core voltage (V)
    power: PowerFit | None = None
    thermal: ThermalFit | None = None
    steady: SteadyFit | None = None
    vr_c_per_w: float | None = None
    notes: list[str] = field(default_factory=list)

    def to_dict(self) -> dict:
        return asdict(self)


# --- loading ---------------------------------------------------------------------------


@dataclass
class Series:
    ts: np.ndarray  # ms
    temp: np.ndarray  # °C, nan when invalid
    power: np.ndarray
    freq: np.ndarray
    volt: np.ndarray  # V (set, else measured)
    vr: np.ndarray
    uptime: np.ndarray  # s, nan when unknown
    asic: str | None


def load(
    conn: sqlite3.Connection, device: str, since_ms: int | None = None, until_ms: int | None = None
) -> Series:
    rows = conn.execute(
        "SELECT ts_ms, temp, power, frequency, coalesce(core_voltage, core_voltage_actual), "
        "vr_temp, uptime_s, asic FROM readings WHERE device = ? AND ts_ms >= ? AND ts_ms <= ? "
        "ORDER BY ts_ms, id",
        (
            device,
            since_ms if since_ms is not None else -(2**62),
            until_ms if until_ms is not None else 2**62,
        ),
    ).fetchall()
    asic = next((r[7] for r in reversed(rows) if r[7]), None)

    def col(i: int, scale: float = 1.0) -> np.ndarray:
        return np.array([np.nan if r[i] is None else r[i] * scale for r in rows], dtype=float)

    return Series(col(0), col(1), col(2), col(3), col(4, 1e-3), col(5), col(6), asic)


def _segments(ts: np.ndarray, uptime: np.ndarray, gap_s: float = GAP_S) -> np.ndarray:
    """Segment number per row: a new one after a long gap or an uptime drop (restart)."""
    if len(ts) == 0:
        return np.zeros(0, dtype=int)
    dt = np.diff(ts) / 1000.0
    with np.errstate(invalid="ignore"):
        reboot = np.diff(uptime) < 0
    brk = (dt > gap_s) | reboot
    return np.concatenate([[0], np.cumsum(brk)])


# --- power -----------------------------------------------------------------------------


def _settled(s: Series, seconds: float = SETTLED_S) -> np.ndarray:
    """Rows whose frequency and voltage have held for ``seconds`` (and no restart since)."""
    ok = np.zeros(len(s.ts), dtype=bool)
    seg = _segments(s.ts, s.uptime)
    since = None
    for i in range(len(s.ts)):
        if (
            i == 0
            or seg[i] != seg[i - 1]
            or s.freq[i] != s.freq[i - 1]
            or s.volt[i] != s.volt[i - 1]
        ):
            since = s.ts[i]
        ok[i] = s.ts[i] - since >= seconds * 1000
    return ok


def _heldout_mask(ts: np.ndarray) -> np.ndarray:
    """Every fourth block of time: 10 min (a twelfth of a shorter log), >= 20 samples."""
    if len(ts) < 2:
        return np.zeros(len(ts), dtype=bool)
    span = float(ts[-1] - ts[0])
    block = max(20 * float(np.median(np.diff(ts))), min(600_000.0, span / 12))
    return ((ts - ts[0]) // block).astype(int) % 4 == 3


def _ols(X: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    beta, *_ = np.linalg.lstsq(X, y, rcond=None)
    return beta, y - X @ beta


def _r2(y: np.ndarray, resid: np.ndarray) -> float | None:
    ss = float(np.sum((y - y.mean()) ** 2))
    return None if ss <= 0 else 1.0 - float(np.sum(resid**2)) / ss


def _rmse(resid: np.ndarray) -> float:
    return float(np.sqrt(np.mean(resid**2))) if len(resid) else math.nan


def fit_power(s: Series) -> PowerFit:
    x = s.freq * s.volt**2
    use = _settled(s) & np.isfinite(x) & np.isfinite(s.power) & (s.power > 0)
    if use.sum() < 5 or np.ptp(x[use]) <= 0:
        raise FitError("power: needs settled rows at two or more frequency/voltage settings")
    test = _heldout_mask(s.ts) & use
    train = use & ~test
    if train.sum() < 3 or np.ptp(x[train]) <= 0:
        train, test = use, np.zeros_like(use)
    X = np.column_stack([np.ones(use.sum()), x[use]])
    beta, resid = _ols(X, s.power[use])
    quality = Quality(int(use.sum()), _r2(s.power[use], resid), _rmse(resid))
    if test.any():
        bt, _ = _ols(np.column_stack([np.ones(train.sum()), x[train]]), s.power[train])
        err = s.power[test] - (bt[0] + bt[1] * x[test])
        quality.heldout_n, quality.heldout_rmse = int(test.sum()), _rmse(err)
        quality.heldout_mae = float(np.mean(np.abs(err)))
    leak = None
    tuse = use & np.isfinite(s.temp)
    if tuse.sum() >= 5 and np.ptp(s.temp[tuse]) > 1.0:
        XL = np.column_stack([np.ones(tuse.sum()), x[tuse], x[tuse] * (s.temp[tuse] - 60.0)])
        bl, _ = _ols(XL, s.power[tuse])
        if bl[1] > 0:
            leak = float(bl[2] / bl[1])
    return PowerFit(float(beta[0]), float(beta[1]), leak, quality)


# --- dynamics ----------------------------------------------------------------------------


def lowpass(ts: np.ndarray, u: np.ndarray, seg: np.ndarray, tau_s: float) -> np.ndarray:
    """First-order low-pass of ``u`` (linear between samples), restarted at each segment."""
    y = np.empty(len(u))
    dt = np.diff(ts, prepend=ts[:1]) / 1000.0
    tau = float(tau_s)
    prev_u = prev_y = 0.0
    for i in range(len(u)):
        if i == 0 or seg[i] != seg[i - 1]:
            prev_y = prev_u = u[i]
        else:
            d = dt[i]
            e = math.exp(-d / tau)
            frac = 1.0 - tau * (1.0 - e) / d if d > 0 else 0.0
            prev_y = e * prev_y + (1.0 - e) * prev_u + (u[i] - prev_u) * frac
            prev_u = u[i]
        y[i] = prev_y
    return y


def _baseline_basis(
    ts: np.ndarray, seg: np.ndarray, knot_s: float = KNOT_S
) -> tuple[np.ndarray, list[tuple[int, int]]]:
    """Hat functions, knots every ``knot_s`` within each segment: the slow baseline."""
    cols, knots = [], []
    for g in np.unique(seg):
        idx = np.nonzero(seg == g)[0]
        t0, t1 = ts[idx[0]], ts[idx[-1]]
        n = max(1, math.ceil((t1 - t0) / (knot_s * 1000)))
        points = np.linspace(t0, t1, n + 1) if t1 > t0 else np.array([t0])
        for kp in points:
            col = np.zeros(len(ts))
            t = ts[idx]
            if len(points) == 1:
                col[idx] = 1.0
            else:
                width = points[1] - points[0]
                col[idx] = np.clip(1.0 - np.abs(t - kp) / width, 0.0, 1.0)
            cols.append(col)
            knots.append((int(g), int(kp)))
    return np.column_stack(cols), knots


def fit_thermal(s: Series, asic: str | None = None) -> ThermalFit:
    """Die temperature against measured power, as README §4's 2-node fit.

    Rows in the first ``STEADY_DROP_S`` of a segment (after a restart or a gap) are left
    out of the regression: the die starts cold there and the filters start at rest.
    Caveat: over hours, leakage makes power follow temperature (README §3), which the
    hourly baseline absorbs only in part; the held-out error shows how well it worked.
    """
    use = np.isfinite(s.temp) & np.isfinite(s.power) & (s.power > 0) & (s.temp > 0)
    if use.sum() < 20:
        raise FitError("dynamics: needs at least 20 readings with temperature and power")
    ts, temp, pw = s.ts[use], s.temp[use], s.power[use]
    seg = _segments(ts, s.uptime[use])
    if len(ts) > MAX_ROWS:  # thin evenly; the low-pass handles any spacing
        keep = np.linspace(0, len(ts) - 1, MAX_ROWS).astype(int)
        ts, temp, pw, seg = ts[keep], temp[keep], pw[keep], seg[keep]
    if np.ptp(pw) < 0.5:
        raise FitError("dynamics: power never changed by 0.5 W; R cannot be told from ambient")
    starts = np.array([ts[seg == g][0] for g in seg])
    warm = (ts - starts) >= STEADY_DROP_S * 1000
    if len(np.unique(seg)) == 1:
        warm[:] = True  # one segment: the log starts mid-run, nothing to drop
    basis, knots = _baseline_basis(ts, seg)
    test = _heldout_mask(ts) & warm
    train = ~_heldout_mask(ts) & warm
    if train.sum() <= basis.shape[1] + 1:
        raise FitError("dynamics: too few readings for the baseline knots")
    fast = lowpass(ts, pw, seg, TAU_FAST_S)
    slows = {tau: lowpass(ts, pw, seg, tau) for tau in TAU_SLOW_GRID}

    def search(rows: np.ndarray) -> tuple[float, float]:
        best = None
        for tau, slow in slows.items():
            for phi in SHARE_GRID:
                X = np.column_stack([basis[rows], phi * fast[rows] + (1 - phi) * slow[rows]])
                _, resid = _ols(X, temp[rows])
                sse = float(np.sum(resid**2))
                if best is None or sse < best[0]:
                    best = (sse, tau, phi)
        return best[1], best[2]

    quality = Quality(int(warm.sum()), None, 0.0)
    if test.any():  # the whole procedure on the other blocks, then predict these
        tau, phi = search(train)
        X = np.column_stack([basis, phi * fast + (1 - phi) * slows[tau]])
        bt, _ = _ols(X[train], temp[train])
        err = temp[test] - X[test] @ bt
        quality.heldout_n = int(test.sum())
        quality.heldout_rmse, quality.heldout_mae = _rmse(err), float(np.mean(np.abs(err)))
    tau, phi = search(warm)
    X = np.column_stack([basis, phi * fast + (1 - phi) * slows[tau]])
    beta, resid = _ols(X[warm], temp[warm])
    quality.r2, quality.rmse = _r2(temp[warm], resid), _rmse(resid)
    r = float(beta[-1])
    baseline = [(t, round(float(b), 3)) for (_, t), b in zip(knots, beta[:-1])]
    case_offset, power_offset = _plant_offsets(asic or s.asic)
    ambient = [(t, round(b - case_offset + r * power_offset, 3)) for t, b in baseline]
    return ThermalFit(r, phi, TAU_FAST_S, float(tau), quality, baseline, ambient)


def _plant_offsets(asic: str | None) -> tuple[float, float]:
    from tempctl.sim.plant import params_for

    try:
        p = params_for(asic or "BM1370")
    except ValueError:
        p = params_for("BM1370")
    return p.case_offset_c, p.power_offset_w


# --- steady state (README §1/§4 method) -----------------------------------------------------


def fit_steady(s: Series) -> SteadyFit:
    seg = _segments(s.ts, s.uptime)
    means = []
    start = 0
    n = len(s.ts)
    for i in range(1, n + 1):
        if (
            i == n
            or seg[i] != seg[i - 1]
            or s.freq[i] != s.freq[i - 1]
            or (
                s.volt[i] != s.volt[i - 1] and not (np.isnan(s.volt[i]) and np.isnan(s.volt[i - 1]))
            )
        ):
            idx = np.arange(start, i)
            idx = idx[(s.ts[idx] - s.ts[start]) >= STEADY_DROP_S * 1000]
            idx = idx[np.isfinite(s.temp[idx]) & np.isfinite(s.power[idx]) & (s.temp[idx] > 0)]
            if len(idx) >= STEADY_MIN_SAMPLES:
                means.append((float(np.mean(s.power[idx])), float(np.mean(s.temp[idx]))))
            start = i
    if len(means) < 3 or np.ptp([m[0] for m in means]) < 0.3:
        raise FitError(f"steady state: {len(means)} settings segments; needs 3 at different power")
    p = np.array([m[0] for m in means])
    t = np.array([m[1] for m in means])
    beta, resid = _ols(np.column_stack([np.ones(len(p)), p]), t)
    return SteadyFit(float(beta[1]), float(beta[0]), len(means), _r2(t, resid))


def fit_vr(s: Series) -> float | None:
    use = _settled(s) & np.isfinite(s.vr) & np.isfinite(s.power) & (s.power > 0)
    if use.sum() < 5 or np.ptp(s.power[use]) < 0.5:
        return None
    beta, _ = _ols(np.column_stack([np.ones(use.sum()), s.power[use]]), s.vr[use])
    return float(beta[1])


def fit_device(
    conn: sqlite3.Connection, device: str, since_ms: int | None = None, until_ms: int | None = None
) -> PlantFit:
    """Every fit that the data allow; what could not be fitted is explained in ``notes``."""
    s = load(conn, device, since_ms, until_ms)
    if len(s.ts) == 0:
        raise FitError(f"no readings for device {device!r}")
    volt = s.volt[np.isfinite(s.volt)]
    out = PlantFit(
        device,
        len(s.ts),
        round(float(s.ts[-1] - s.ts[0]) / 3.6e6, 3),
        s.asic,
        float(np.median(volt)) if len(volt) else None,
    )
    for name, fn in (("power", fit_power), ("thermal", fit_thermal), ("steady", fit_steady)):
        try:
            setattr(out, name, fn(s))
        except FitError as e:
            out.notes.append(str(e))
    out.vr_c_per_w = fit_vr(s)
    return out


# --- converting the shared traces into recorded runs ------------------------------------------


TRACE_COLUMNS = (
    "timestamp",
    "device",
    "asic_model",
    "frequency_mhz",
    "core_voltage_set_mv",
    "core_voltage_actual_mv",
    "hashrate_ghs",
    "power_w",
    "asic_temp_c",
    "vr_temp_c",
    "fan_rpm",
    "input_voltage_mv",
    "uptime_s",
)


def _ts_ms(text: str) -> int:
    """Trace timestamps are local time without a zone (README §2); stored as if UTC."""
    dt = datetime.fromisoformat(text)
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=UTC)
    return round(dt.timestamp() * 1000)


def import_trace(
    csv_path: str | Path, db_path: str | Path, source: dict, devices: list[str] | None = None
) -> dict[str, int]:
    """A shared/data/traces CSV as a tempctl log: one run of kind 'import', readings only.

    ``source`` (repo, path, commit, ...) goes into the run's config as provenance. A
    temperature <= 0 (the firmware's "sensor not ready" after a reboot) is stored as an
    invalid reading. Returns readings written per device.
    """
    from tempctl.core.reading import Reading
    from tempctl.store.eventlog import Log

    with open(csv_path, newline="") as fh:
        rows = [r for r in csv.DictReader(fh) if devices is None or r["device"] in devices]
    rows.sort(key=lambda r: _ts_ms(r["timestamp"]))  # a few rows are out of order by < 1 s

    def num(r: dict, key: str, cast=float):
        v = r.get(key, "")
        return cast(float(v)) if v not in ("", None) else None

    log = Log(db_path)
    try:
        log.start_run(
            {"imported_from": source},
            {"import": "fit.import_trace"},
            kind="import",
            ts_ms=_ts_ms(rows[0]["timestamp"]) if rows else 0,
        )
        ops, counts = [], {}
        for r in rows:
            temp = num(r, "asic_temp_c")
            asic = (r.get("asic_model") or "").split(" ")[0] or None
            reading = Reading(
                r["device"],
                _ts_ms(r["timestamp"]),
                temp=temp if temp is not None and temp > 0 else None,
                vr_temp=num(r, "vr_temp_c"),
                frequency=num(r, "frequency_mhz"),
                core_voltage=num(r, "core_voltage_set_mv", int),
                core_voltage_actual=num(r, "core_voltage_actual_mv", int),
                hashrate=num(r, "hashrate_ghs"),
                power=num(r, "power_w"),
                fan_rpm=num(r, "fan_rpm", int),
                uptime_s=num(r, "uptime_s", int),
                asic_model=asic,
                raw_temp=temp,
                error=None if temp is not None and temp > 0 else "sensor not ready (temp <= 0)",
            )
            ops.append(log.reading_op(reading))
            counts[r["device"]] = counts.get(r["device"], 0) + 1
        log.conn.execute("BEGIN")
        log.conn.executemany(ops[0][0], [p for _, p in ops]) if ops else None
        log.conn.execute("COMMIT")
    finally:
        log.close()
    return counts


def format_fit(fit: PlantFit) -> str:
    """A short report for people; ``--json`` has everything."""
    lines = [
        f"{fit.device}: {fit.readings} readings over {fit.hours:g} h"
        + (f", {fit.asic}" if fit.asic else "")
        + (f", {fit.core_v:.3f} V" if fit.core_v else "")
    ]

    def q(qual: Quality, unit: str) -> str:
        text = (
            f"R² {qual.r2:.3f}, RMSE {qual.rmse:.3f} {unit}"
            if qual.r2 is not None
            else (f"RMSE {qual.rmse:.3f} {unit}")
        )
        if qual.heldout_n:
            text += f"; held-out ({qual.heldout_n}) RMSE {qual.heldout_rmse:.3f} {unit}"
        return text

    if fit.power:
        p = fit.power
        leak = f", leakage {p.leak_per_c * 100:.2f} %/°C" if p.leak_per_c is not None else ""
        lines.append(
            f"  power    P = {p.p0_w:.2f} W + {p.k_w:.4f}·f·V²{leak}  "
            f"({q(p.quality, 'W')}, n={p.quality.n})"
        )
    if fit.thermal:
        t = fit.thermal
        lines.append(
            f"  thermal  {t.r_c_per_w:.3f} °C/W, fast share {t.fast_share:.2f} "
            f"(τ {t.tau_fast_s:g} s), τ slow {t.tau_slow_s:g} s  "
            f"({q(t.quality, '°C')})"
        )
        if t.ambient:
            amb = [a for _, a in t.ambient]
            lines.append(
                f"  ambient  estimated {min(amb):.1f} .. {max(amb):.1f} °C "
                f"({len(amb)} knots; assumes the plant's cooling, see --json)"
            )
    if fit.steady:
        s = fit.steady
        r2 = f", R² {s.r2:.2f}" if s.r2 is not None else ""
        lines.append(
            f"  steady   T = {s.intercept_c:.1f} + {s.r_c_per_w:.3f}·P over "
            f"{s.segments} settings segments{r2}"
        )
    if fit.vr_c_per_w is not None:
        lines.append(f"  VR       {fit.vr_c_per_w:.2f} °C/W")
    lines.extend(f"  note: {n}" for n in fit.notes)
    return "\n".join(lines)
