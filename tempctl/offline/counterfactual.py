"""`tempctl replay --set`: what other settings would have done, from a recorded log.

The same readings, with each temperature moved by what the plant fitted from this very
history (``fit.py``) says the frequency difference would have done, through a controller
with the new settings that the (imaginary) device obeys at once. The plant's answer is
the 2-node response (R, fast share, τ) to the power difference, with the power model
``P = p0 + k·f·V²·(1 + leak·(T − 60))`` on both sides: the frequency difference at the
recorded temperature plus the leakage of the temperature difference itself.

Both sides are summarised with the metrics of ``core.tally.Tally`` against the recorded
threshold, so a lower threshold shows up as fewer °C·min above it and less hash, and
also against the counterfactual's own TEMP_THRESHOLD (the report names which is which).

History that retention folded into ``readings_1m`` is replayed too: each minute row
becomes its readings again (``retention.folded_readings``), merged in time order with
the raw rows still kept; a run whose raw rows are all gone is found by its time span.
Checked against ground truth by ``truth.py`` (tests/test_counterfactual.py).
"""

from __future__ import annotations

import heapq
import math
import sqlite3
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from itertools import chain

from tempctl.config import FIELDS
from tempctl.core.controller import Controller
from tempctl.core.driver import Driver
from tempctl.core.tally import Tally
from tempctl.device import reading_capabilities
from tempctl.offline.replay import (
    PROGRESS_ROWS,
    ReplayWindow,
    Run,
    WindowProbe,
    limits_for,
    select_runs,
    settings_for,
)
from tempctl.store.eventlog import restore
from tempctl.store.retention import folded_readings
from tempctl.store.rows import LoggedReading, reading_sql

MAX_GAP_S = 600.0  # a longer hole in a log is not counted as time at the last temperature
# Firmware timings for a restart (firmware.py: 1 s reply, 7 s down, 8 s boot, ~6 s ramp)
RESTART_DOWN_S = 22.0
FOLLOW_MS = 60_000  # a reported frequency this long unexplained by a command is adopted
MAX_FOLLOW_UPS = 3  # re-sends the driver may ask for right after an outcome
VOLTAGE_SETTINGS = ("voltage", "min_voltage", "max_voltage", "goal")
VOLTAGE_NOTE = (
    "{names}: the counterfactual moves the frequency only; its device keeps the recorded core "
    "voltage. What the voltage governor gains depends on the chip's lowest stable voltage, "
    "which errors logged at the recorded voltage cannot tell. Measure it: "
    "benchmarks/voltage_quality.py in simulation, or TEMPCTL_DRY_RUN=true on the device."
)


@dataclass
class Response:
    """How the die answers a change of frequency: °C per W, W per MHz·V², two time constants."""

    r_c_per_w: float
    k_w: float
    leak_per_c: float  # leakage: power grows by this fraction per °C above 60 °C
    fast_share: float
    tau_fast_s: float
    tau_slow_s: float
    vr_c_per_w: float
    source: str


def response_from_fit(fit, asic: str | None = None) -> Response:
    """The plant for counterfactuals: the fits where they are credible, else plant defaults.

    Credible: the dynamic fit's °C/W within 0.2-2.5 (README §4 spans 0.24 for a 4-chip
    board to 1.84 for a Supra) with a held-out RMSE under 1 °C. Over long logs the room
    drifts and leakage makes power follow temperature (README §3), which can inflate the
    dynamic °C/W; when a steady-state fit (R² >= 0.3) disagrees by more than 1.5x, its
    slope is used instead (with the dynamic time constants).
    """
    from tempctl.sim.plant import params_for

    try:
        p = params_for(asic or (fit.asic if fit else None) or "BM1370")
    except ValueError:
        p = params_for("BM1370")
    r, phi, tf, ts_, k = p.r_c_per_w_fixed, p.fast_share, p.tau_fast_s, p.tau_slow_s, p.k_w
    leak = p.leak_per_c
    sources = []
    th = fit.thermal if fit else None
    st = fit.steady if fit else None
    steady_ok = st is not None and 0.2 <= st.r_c_per_w <= 2.5 and (st.r2 or 0) >= 0.3
    if th and 0.2 <= th.r_c_per_w <= 2.5 and (th.quality.heldout_rmse or 99) < 1.0:
        r, phi, tf, ts_ = th.r_c_per_w, th.fast_share, th.tau_fast_s, th.tau_slow_s
        sources.append("thermal fit")
        if steady_ok and not 1 / 1.5 <= th.r_c_per_w / st.r_c_per_w <= 1.5:
            r = st.r_c_per_w
            sources[-1] = "steady-state slope, thermal fit time constants"
    elif steady_ok:
        r = st.r_c_per_w
        sources.append("steady-state fit")
    else:
        sources.append(f"plant °C/W and time constants ({p.asic})")
    pw = fit.power if fit else None
    if pw and 0.005 <= pw.k_w <= 0.05:
        k = pw.k_w
        if pw.leak_per_c is not None and 0 <= pw.leak_per_c <= 0.05 and pw.k_leak_w:
            # the leakage variant's own k: the plain fit's k absorbs part of the leakage
            k, leak = pw.k_leak_w, pw.leak_per_c
        sources.append("power fit")
    vr = fit.vr_c_per_w if fit and fit.vr_c_per_w and 0.3 <= fit.vr_c_per_w <= 5 else p.vr_c_per_w
    return Response(r, k, leak, phi, tf, ts_, vr, ", ".join(sources))


def counterfactual(
    conn: sqlite3.Connection,
    overrides: dict,
    *,
    device: str | None = None,
    run_id: int | None = None,
    since_ms: int | None = None,
    until_ms: int | None = None,
    response: Response | None = None,
    also: tuple[float, ...] = (),
    progress: Callable[[int], None] | None = None,
    recorded: bool = True,
) -> dict:
    """Recorded vs what ``overrides`` would have done, per device (JSON-ready).

    ``also``: more thresholds to report time above (``above`` in each side's metrics),
    beside the recorded and the counterfactual TEMP_THRESHOLD. ``progress``: called
    with the number of readings done, every ``PROGRESS_ROWS``. ``recorded=False``
    skips the recorded side's metrics (tune judges candidates on the other side only).
    """
    from tempctl.offline.fit import FitError, fit_device

    runs = select_runs(
        conn, device=device, run_id=run_id, since_ms=since_ms, until_ms=until_ms, folded=True
    )
    devices = sorted({d for r in runs for d in r.devices})
    out: dict = {"overrides": {k: v for k, v in overrides.items()}, "devices": {}}
    volt = [f.env for f in FIELDS if f.attr in VOLTAGE_SETTINGS and f.attr in overrides]
    if volt:  # said, not silently shown as "no gain"
        out["notes"] = [VOLTAGE_NOTE.format(names=", ".join(volt))]
    for dev in devices:
        dev_runs = [r for r in runs if dev in r.devices]
        resp = response
        if resp is None:
            try:
                fit = fit_device(conn, dev, since_ms, until_ms)
            except FitError:
                fit = None
            resp = response_from_fit(fit)
        out["devices"][dev] = _counterfactual_one(
            conn, dev, dev_runs, overrides, resp, since_ms, until_ms, also, progress, recorded
        )
    return out


def _counterfactual_one(
    conn,
    device: str,
    runs: list[Run],
    overrides: dict,
    resp: Response,
    since_ms,
    until_ms,
    also: tuple[float, ...] = (),
    progress=None,
    recorded: bool = True,
) -> dict:
    base = settings_for(runs[0].config, device)
    threshold = base.temp_threshold
    cf_threshold = settings_for(runs[-1].config, device, overrides).temp_threshold
    # both sides are judged against the recorded threshold, and also against the
    # counterfactual's own (the report names which is which)
    rec = Tally(threshold, max_gap_s=MAX_GAP_S, also=(cf_threshold, *also))
    cf = Tally(threshold, max_gap_s=MAX_GAP_S, also=(cf_threshold, *also))
    sql = reading_sql(conn)
    lo = since_ms if since_ms is not None else -(2**62)
    hi = until_ms if until_ms is not None else 2**62
    ctl: Controller | None = None
    window: ReplayWindow | None = None
    e_fast = e_slow = 0.0  # Δ°C carried by the fast and slow node
    last_ts: int | None = None
    f_cf: float | None = None  # the counterfactual's frequency setting
    f_rec_set: float | None = None  # the recorded one
    last_cmd_ts = -(2**62)
    d_power = 0.0  # ΔW held since the previous reading
    down_until = -(2**62)  # cf device restarting: no hash
    prev_rec_f = None
    probe = WindowProbe()
    count = 0
    r_cw, phi, leak, vr_ratio = (
        resp.r_c_per_w,
        resp.fast_share,
        resp.leak_per_c,
        resp.vr_c_per_w / resp.r_c_per_w,
    )
    device_cf = _Imaginary()
    decay_dt, a_f, a_s = None, 0.0, 0.0  # the decay factors of the last spacing (usually fixed)
    new, cls = tuple.__new__, LoggedReading
    for run in runs:
        limits = limits_for(run.config, device, overrides)
        snap = ctl.snapshot() if ctl is not None else restore(conn, device, before_run=run.id)
        ctl = Controller(limits, device, snapshot=snap)
        driver = Driver(ctl, _writable)
        rows = _rows(conn, sql, run, device, lo, hi)
        first = next(rows, None)
        if first is None:
            continue
        if window is None or window.limits != limits:
            window = ReplayWindow(
                conn, device, limits, (first[0], _first_raw_id(conn, device, first))
            )
        states = _recorded_states(conn, run.id, device)
        si, rec_state = 0, None
        rec_cmds = conn.execute(
            "SELECT c.ts_ms, c.frequency FROM commands c JOIN command_results r "
            "ON r.command_id = c.id WHERE c.run_id = ? AND c.device = ? "
            "AND c.kind = 'set_frequency' AND r.outcome = 'ok' ORDER BY c.id",
            (run.id, device),
        ).fetchall()
        rec_cmds.append((2**62, None))
        ci = 0
        next_state = states[0][0] if states else 2**62
        for row in chain((first,), rows):
            count += 1
            if progress is not None and count % PROGRESS_ROWS == 0:
                progress(PROGRESS_ROWS)
            if row[8]:  # backfilled: feeds the window only
                window.add(new(cls, row))
                continue
            ts = row[0]
            while next_state < ts:  # the state the interval had
                rec_state = states[si][1]
                si += 1
                next_state = states[si][0] if si < len(states) else 2**62
            f_rec, t_rec, hash_rec = row[3], row[1], row[13]
            # Both sides as settings: the recorded one changes with its accepted commands
            # (stamped at the poll that sent them), the counterfactual's with its own. The
            # device's reported frequency may lag a change by a poll or two; the imaginary
            # device reports the recorded frequency moved by the settings' difference, so
            # the same command at the same time makes no difference at all.
            while rec_cmds[ci][0] < ts:
                last_cmd_ts, f_rec_set = rec_cmds[ci]
                ci += 1
            if f_rec is not None and (
                f_rec_set is None or (f_rec != f_rec_set and ts - last_cmd_ts > FOLLOW_MS)
            ):
                f_rec_set = f_rec  # set outside tempctl (an import, a user): follow it
            if f_cf is None:
                f_cf = f_rec_set
            offset = 0.0 if f_cf is None or f_rec_set is None else f_cf - f_rec_set
            f_act = None if f_rec is None else f_rec + offset
            # the plant's answer to the frequency difference, held since the last reading
            if last_ts is not None:
                dt = ts - last_ts
                if dt != decay_dt:
                    s = max(0.0, dt / 1000.0)
                    a_f = 1.0 - math.exp(-s / resp.tau_fast_s)
                    a_s = 1.0 - math.exp(-s / resp.tau_slow_s)
                    decay_dt = dt
                gain = r_cw * d_power
                e_fast += (phi * gain - e_fast) * a_f
                e_slow += ((1.0 - phi) * gain - e_slow) * a_s
            last_ts = ts
            delta = e_fast + e_slow
            temp = None if t_rec is None else t_rec + delta
            vr = None if row[2] is None else row[2] + delta * vr_ratio
            hash_cf = None
            if hash_rec is not None and f_rec:
                hash_cf = 0.0 if ts < down_until else hash_rec * f_act / f_rec
            power = None if row[14] is None else row[14] + d_power
            mine = new(
                cls,
                (
                    ts,
                    temp,
                    vr,
                    f_act,
                    *row[4:11],
                    None if row[11] is None else row[11] + offset,  # actualFrequency
                    row[12],
                    hash_cf,
                    power,
                    *row[15:],
                ),
            )
            if recorded:
                rec.add(ts, t_rec, hash_rec, rec_state, f_rec)
                if prev_rec_f is not None and f_rec is not None and abs(f_rec - prev_rec_f) > 0.5:
                    rec.frequency_changes += 1
                if f_rec is not None:
                    prev_rec_f = f_rec
            window.add(mine)
            probe.stats, probe.now = window.win.stats, ts
            cf.add(ts, temp, hash_cf, ctl.current.value, f_act)
            d = driver.step(mine, window=probe)
            if d.commands:
                # through the driver, as the daemon and simulate do: safety check, the
                # order of a change and its restart, the outcomes fed back at once
                device_cf.mhz, device_cf.restarted = f_cf, False
                jobs = [(None, c) for c in d.commands]
                for _ in range(MAX_FOLLOW_UPS):
                    follow = driver.results(driver.carry_out(jobs, device_cf), ts)
                    jobs = [(None, c) for c in follow.commands]
                    if not jobs:
                        break
                if abs(device_cf.mhz - f_cf) > 0.5:
                    cf.frequency_changes += 1
                f_cf = device_cf.mhz
                if device_cf.restarted:
                    cf.restarts += 1
                    down_until = ts + int(RESTART_DOWN_S * 1000)
            while rec_cmds[ci][0] <= ts:  # what the recorded run sent at this poll
                last_cmd_ts, f_rec_set = rec_cmds[ci]
                ci += 1
            offset = 0.0 if f_cf is None or f_rec_set is None else f_cf - f_rec_set
            if f_rec is not None:
                # P = p0 + k·f·V²·(1 + leak·(T − 60)) on both sides (fit.py's power model):
                # the frequency difference at the recorded temperature, plus the leakage
                # of the counterfactual's own temperature difference
                volt = (row[12] or 1150) / 1000.0
                d_power = (
                    resp.k_w
                    * volt
                    * volt
                    * (
                        offset * (1.0 + leak * ((60.0 if t_rec is None else t_rec) - 60.0))
                        + (f_rec + offset) * leak * delta
                    )
                )
        rec.restarts += conn.execute(
            "SELECT count(*) FROM commands WHERE run_id = ? AND device = ? AND kind = 'restart' "
            "AND ts_ms >= ? AND ts_ms <= ?",
            (run.id, device, lo, hi),
        ).fetchone()[0]
    if progress is not None:
        progress(count % PROGRESS_ROWS)
    settings = settings_for(runs[-1].config, device, overrides)
    return {
        "threshold": threshold,
        "counterfactual_threshold": cf_threshold,
        "plant": vars(resp),
        "recorded": rec.result() if recorded else None,
        "counterfactual": cf.result(),
        "settings": {f.env: settings.as_env()[f.env] for f in FIELDS if f.attr in overrides},
    }


@dataclass(frozen=True)
class _Caps:
    live_frequency: bool
    trip_latches: bool
    write_refused: str | None = None


def _writable(reading) -> _Caps:
    """The device's capabilities, except that the imaginary device always takes commands
    (tempctl would refuse to write to an unknown firmware; a what-if asks what it would do)."""
    caps = reading_capabilities(reading)
    return _Caps(caps.live_frequency, getattr(caps, "trip_latches", False))


class _Imaginary:
    """The counterfactual's device (a ``driver.Actuator``): it does what it is told, at once."""

    def __init__(self):
        self.mhz: float | None = None
        self.restarted = False

    def set_frequency(self, mhz: float) -> float:
        self.mhz = mhz
        return 0.0

    def set_fields(self, fields) -> float:
        return 0.0

    def restart(self) -> float:
        self.restarted = True
        return 0.0


def _first_raw_id(conn, device: str, first: tuple) -> int:
    """The id bounding the stable window's pre-fill: the first row's, or for a folded
    row (id -1) that of the first raw row logged at or after it."""
    if first[9] >= 0:
        return first[9]
    row = conn.execute(
        "SELECT id FROM readings WHERE device = ? AND ts_ms >= ? ORDER BY ts_ms LIMIT 1",
        (device, first[0]),
    ).fetchone()
    return row[0] if row else 2**62


def _rows(conn, sql: str, run: Run, device: str, lo: int, hi: int) -> Iterator[tuple]:
    """The run's rows in LoggedReading order: raw rows by id, merged in time with the
    readings rebuilt from the minutes that retention folded within the run's span."""
    raw = conn.execute(
        sql + run.reading_sql + "AND ts_ms >= ? AND ts_ms <= ? ORDER BY id",
        (run.id, device, lo, hi),
    )
    if not run.folded:
        return iter(raw)
    start = max(lo, run.ts_ms)
    end = min(hi + 1, run.end_ms if run.end_ms is not None else 2**62)
    folded = (_folded_row(r) for r in folded_readings(conn, device, start, end))
    return heapq.merge(raw, folded, key=lambda row: row[0])


def _folded_row(r) -> tuple:
    """A rebuilt Reading as a row of READING_COLUMNS (id -1: it has no row of its own)."""
    valid = int(r.temp is not None)
    return (r.ts_ms, r.temp, r.vr_temp, r.frequency, None, None, None, 0, 0, -1, valid) + (
        (None, None, r.hashrate, r.power, r.fan_pct, None, None, None, None)
    )


def _recorded_states(conn, run_id: int, device: str) -> list[tuple[int, str]]:
    """(ts, state) from the run's transitions, starting with the state restored before it."""
    out = []
    before = conn.execute(
        "SELECT to_state FROM transitions WHERE device = ? AND run_id < ? "
        "ORDER BY ts_ms DESC, id DESC LIMIT 1",
        (device, run_id),
    ).fetchone()
    if before:
        out.append((-(2**62), before[0]))
    out.extend(
        conn.execute(
            "SELECT ts_ms, to_state FROM transitions WHERE run_id = ? AND device = ? ORDER BY id",
            (run_id, device),
        ).fetchall()
    )
    return out


# --- text for people ----------------------------------------------------------------------


def _other_threshold(rep: dict) -> tuple[float, str, str] | None:
    """The counterfactual threshold for report.table, or None when it is the recorded one."""
    cf = rep.get("counterfactual_threshold", rep["threshold"])
    if cf == rep["threshold"]:
        return None
    return (cf, "counterfactual TEMP_THRESHOLD", "recorded TEMP_THRESHOLD")


def format_counterfactual(report: dict) -> str:
    from tempctl.offline.report import table

    parts = []
    for dev, rep in report["devices"].items():
        plant = rep["plant"]
        changes = ", ".join(f"{k}={v}" for k, v in rep["settings"].items())
        parts.append(
            f"{dev}: recorded vs {changes or 'the recorded settings'}\n"
            f"plant ({plant['source']}): {plant['r_c_per_w']:.2f} °C/W, "
            f"{plant['k_w'] * 1000:.1f} mW per MHz·V², τ {plant['tau_slow_s']:g} s "
            f"(fast share {plant['fast_share']:g})\n"
            + table(
                {"recorded": rep["recorded"], "counterfactual": rep["counterfactual"]},
                threshold=rep["threshold"],
                other=_other_threshold(rep),
            )
        )
    parts += [f"Note: {n}" for n in report.get("notes", ())]
    return "\n\n".join(parts) if parts else "no readings in range"


__all__ = [
    "MAX_GAP_S",
    "RESTART_DOWN_S",
    "Response",
    "counterfactual",
    "format_counterfactual",
    "response_from_fit",
]
