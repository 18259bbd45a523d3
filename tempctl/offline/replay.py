"""`tempctl replay`: feed a recorded log back through the controller, offline.

``check`` re-drives every run as the daemon drove it and compares the decisions
with what was recorded. Per run and device: a new Controller restored from the log
as of the run's start (``log.restore``), Limits from that run's ``runs.config``
(+ the device's overrides), a ``StableWindow`` pre-filled with the readings that the
window query would have seen, then every reading in logged order. Backfilled
readings only feed the window. Each command's recorded outcome is fed back
(``command_result``) before the first reading stamped at or after the outcome; a
command without an outcome row was cut off by a stop and gets none. (A poll that
started just before an outcome was handled is stamped earlier but may have been judged
after it; the log cannot tell these apart, and replay takes the stamps' order.) Transitions
(ts, from, to, reason, frequency) and commands (ts, kind, frequency, attempt) must
match one for one; the first difference is reported with both sides.

``counterfactual`` answers "what if these settings had been in force": the same
readings, with each temperature moved by what the plant fitted from this very
history (``fit.py``) says the frequency difference would have done, through a
controller with the new settings that the (imaginary) device obeys at once. Both
sides are summarised with the metrics of ``metrics_report`` against the recorded
threshold, so a lower threshold shows up as fewer °C·min above it and less hash.
"""

from __future__ import annotations

import json
import math
import sqlite3
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import NamedTuple

from tempctl.config import FIELDS, Device, Settings, validate
from tempctl.core.controller import Controller, Limits
from tempctl.core.decision import Outcome
from tempctl.core.driver import Driver
from tempctl.core.window import StableWindow, suspect
from tempctl.device import reading_capabilities
from tempctl.offline.report import Tally
from tempctl.store.eventlog import restore

# The columns the controller reads, in LoggedReading's order. Logs older than schema v2
# lack the last four (autofan, fault, mac, hostname): ``reading_sql`` reads NULL for them.
READING_COLUMNS = (
    "ts_ms",
    "temp",
    "vr_temp",
    "frequency",
    "uptime_s",
    "firmware",
    "asic",
    "overheat",
    "backfilled",
    "id",
    "temp IS NOT NULL",
    "actual_frequency",
    "core_voltage",
    "hashrate",
    "power",
    "fan",
    "autofan",
    "fault",
    "mac",
    "hostname",
)
V2_COLUMNS = ("autofan", "fault", "mac", "hostname")


def reading_sql(conn: sqlite3.Connection) -> str:
    have = {r[1] for r in conn.execute("PRAGMA table_info(readings)")}
    cols = [c if c not in V2_COLUMNS or c in have else f"NULL AS {c}" for c in READING_COLUMNS]
    return f"SELECT {', '.join(cols)} FROM readings "


PROGRESS_ROWS = 8192  # readings between progress reports
MAX_GAP_S = 600.0  # a longer hole in a log is not counted as time at the last temperature
# Firmware timings for a restart (firmware.py: 1 s reply, 7 s down, 8 s boot, ~6 s ramp)
RESTART_DOWN_S = 22.0


class LoggedReading(NamedTuple):
    """A reading row as the controller reads it (same attribute names as ``Reading``).

    A tuple is built ~10x faster than the frozen ``Reading`` dataclass, and replay
    builds one per row. Fields the log does not keep (mac, hostname) are None.
    """

    ts_ms: int
    temp: float | None
    vr_temp: float | None
    frequency: float | None
    uptime_s: int | None
    version: str | None
    asic_model: str | None
    overheat: int
    backfilled: int
    id: int
    valid: int  # temp IS NOT NULL, computed by SQLite (a field reads faster than a property)
    actual_frequency: float | None
    core_voltage: int | None
    hashrate: float | None
    power: float | None
    fan_pct: float | None
    autofan: int | None
    fault: str | None
    mac: str | None
    hostname: str | None


_make = LoggedReading._make


@dataclass
class Run:
    id: int
    ts_ms: int
    kind: str
    config: dict
    devices: list[str]
    device_count: int = 1  # devices with readings in the run (before any --device filter)

    @property
    def reading_sql(self) -> str:
        """FROM/WHERE for one device's rows in logged (id) order. With one device in the run,
        a rowid scan is twice as fast as the (device, ts) index plus a sort by id."""
        hint = "NOT INDEXED " if self.device_count == 1 else ""
        return f"{hint}WHERE run_id = ? AND device = ? "

    @property
    def policy(self) -> str:
        return self.config.get("policy") or "tempctl"


@dataclass
class Divergence:
    run: int
    device: str
    ts_ms: int
    what: str  # transition | command
    recorded: dict | None
    replayed: dict | None

    def describe(self) -> str:
        def side(d):
            if d is None:
                return "(none)"
            return ", ".join(f"{k}={v}" for k, v in d.items())

        return (
            f"first divergence: run {self.run}, device {self.device}, {self.what} at "
            f"{_iso(self.ts_ms)} ({self.ts_ms})\n"
            f"  recorded: {side(self.recorded)}\n"
            f"  replayed: {side(self.replayed)}"
        )


@dataclass
class CheckResult:
    runs: int = 0
    readings: int = 0
    transitions: int = 0
    commands: int = 0
    skipped: list[str] = field(default_factory=list)
    divergence: Divergence | None = None

    @property
    def ok(self) -> bool:
        return self.divergence is None

    def to_dict(self) -> dict:
        return {
            "ok": self.ok,
            "runs": self.runs,
            "readings": self.readings,
            "transitions": self.transitions,
            "commands": self.commands,
            "skipped": self.skipped,
            "divergence": None if self.divergence is None else vars(self.divergence),
        }


# --- selecting what to replay -------------------------------------------------------------


def select_runs(
    conn: sqlite3.Connection,
    *,
    device: str | None = None,
    run_id: int | None = None,
    since_ms: int | None = None,
    until_ms: int | None = None,
) -> list[Run]:
    """Runs with readings in range (a run overlapping the range is taken whole)."""
    lo = since_ms if since_ms is not None else -(2**62)
    hi = until_ms if until_ms is not None else 2**62
    out = []
    for rid, ts, kind, config in conn.execute(
        "SELECT id, ts_ms, kind, config FROM runs ORDER BY ts_ms, id"
    ):
        if run_id is not None and rid != run_id:
            continue
        sql = "SELECT DISTINCT device FROM readings WHERE run_id = ? AND ts_ms >= ? AND ts_ms <= ?"
        args: list = [rid, lo, hi]
        if device is not None:
            sql += " AND device = ?"
            args.append(device)
        devices = sorted(r[0] for r in conn.execute(sql, args))
        if devices:
            count = (
                len(devices)
                if device is None
                else conn.execute(
                    "SELECT count(DISTINCT device) FROM readings WHERE run_id = ?", (rid,)
                ).fetchone()[0]
            )
            out.append(Run(rid, ts, kind, json.loads(config or "{}"), devices, count))
    return out


def settings_for(config: dict, device: str, overrides: dict | None = None) -> Settings:
    """The effective settings of a logged run for one device, plus ``overrides``."""
    values = {
        f.attr: config[f.attr]
        for f in FIELDS
        if f.attr in config and f.attr != "devices" and config[f.attr] is not None
    }
    values.setdefault("law", "levels")  # logs written before the model law (tempctl 0.1)
    devices = tuple(
        Device(d["name"], d["url"], d.get("overrides") or {}, d.get("where", ""))
        for d in config.get("devices") or ()
        if isinstance(d, dict)
    )
    settings = Settings(devices=devices, **values)
    dev = next((d for d in devices if d.name == device), None)
    if dev is not None:
        settings = settings.for_device(dev)
    if overrides:
        settings = validate(replace(settings, devices=(), **overrides))
    return settings


def limits_for(config: dict, device: str, overrides: dict | None = None) -> Limits:
    return Limits.from_settings(settings_for(config, device, overrides))


# --- check --------------------------------------------------------------------------------


class _Probe:
    """The ``window`` callable handed to ``Controller.step``: stats as of ``now``."""

    __slots__ = ("now", "stats")

    def __call__(self):
        return self.stats(self.now)


class _Window:
    """A StableWindow fed in (ts, id) order, rebuilt from the log if a row arrives late."""

    def __init__(self, conn: sqlite3.Connection, device: str, limits: Limits, first: tuple):
        self.conn, self.device, self.limits = conn, device, limits
        self.win = StableWindow(limits)
        self.last_ts = -(2**62)
        first_ts, first_id = first
        self._fill(first_ts - limits.window_ms - limits.gap_ms - 1, first_id, strict=True)

    def _fill(self, lo_ts: int, upto_id: int, strict: bool) -> None:
        op = "<" if strict else "<="
        for ts, temp, vr, oh, up, hr, f, live in self.conn.execute(
            "SELECT ts_ms, temp, vr_temp, overheat, uptime_s, hashrate, frequency, "
            f"actual_frequency FROM readings WHERE device = ? AND ts_ms > ? AND id {op} ? "
            "ORDER BY ts_ms, id",
            (self.device, lo_ts, upto_id),
        ):
            self.win.add(ts, temp, vr, oh, suspect(up, hr, f, live))
            self.last_ts = ts

    def add(self, r: LoggedReading) -> None:
        if r.ts_ms >= self.last_ts:
            self.win.add(
                r.ts_ms,
                r.temp,
                r.vr_temp,
                r.overheat,
                suspect(r.uptime_s, r.hashrate, r.frequency, r.actual_frequency),
            )
            self.last_ts = r.ts_ms
            return
        # out of time order (a backfilled row): rebuild as the SQL query would see it
        newest = self.last_ts
        self.win = StableWindow(self.limits)
        self.last_ts = -(2**62)
        self._fill(newest - self.limits.window_ms - self.limits.gap_ms - 1, r.id, strict=False)


def _transition_dict(ts, from_state, to_state, reason, frequency) -> dict:
    return {
        "ts_ms": ts,
        "from": from_state,
        "to": to_state,
        "reason": reason,
        "frequency": frequency,
    }


def _command_dict(ts, kind, frequency, attempt) -> dict:
    return {"ts_ms": ts, "kind": kind, "frequency": frequency, "attempt": attempt}


def check(
    conn: sqlite3.Connection,
    *,
    device: str | None = None,
    run_id: int | None = None,
    since_ms: int | None = None,
    until_ms: int | None = None,
    progress: Callable[[int], None] | None = None,
) -> CheckResult:
    """Re-drive every tempctl run in range; stops at the first divergence.

    ``progress``: called with the number of readings done, every ``PROGRESS_ROWS``.
    """
    result = CheckResult()
    sql = reading_sql(conn)
    for run in select_runs(
        conn, device=device, run_id=run_id, since_ms=since_ms, until_ms=until_ms
    ):
        if run.kind == "import" or run.policy not in ("tempctl", "levels"):
            why = "imported, no decisions" if run.kind == "import" else f"policy {run.policy}"
            result.skipped.append(f"run {run.id} ({why})")
            if progress is not None:  # its readings count as done
                progress(_run_rows(conn, run, device, since_ms, until_ms))
            continue
        result.runs += 1
        for dev in run.devices:
            div = _check_one(conn, run, dev, sql, result, progress)
            if div is not None:
                result.divergence = div
                return result
    return result


def _run_rows(conn, run: Run, device, since_ms, until_ms) -> int:
    sql = "SELECT count(*) FROM readings WHERE run_id = ? AND ts_ms >= ? AND ts_ms <= ?"
    args: list = [run.id, -(2**62) if since_ms is None else since_ms]
    args.append(2**62 if until_ms is None else until_ms)
    if device is not None:
        sql += " AND device = ?"
        args.append(device)
    return conn.execute(sql, args).fetchone()[0]


def _check_one(
    conn, run: Run, device: str, sql: str, result: CheckResult, progress=None
) -> Divergence | None:
    limits = limits_for(run.config, device)
    driver = Driver(
        Controller(limits, device, snapshot=restore(conn, device, before_ms=run.ts_ms)),
        reading_capabilities,
    )
    rec_t = conn.execute(
        "SELECT ts_ms, from_state, to_state, reason, frequency FROM transitions "
        "WHERE run_id = ? AND device = ? ORDER BY id",
        (run.id, device),
    ).fetchall()
    rec_c = conn.execute(
        "SELECT id, ts_ms, kind, frequency, attempt FROM commands "
        "WHERE run_id = ? AND device = ? ORDER BY id",
        (run.id, device),
    ).fetchall()
    outcomes = {
        cid: (ts, rid, outcome, error)
        for rid, cid, ts, outcome, error in conn.execute(
            "SELECT r.id, r.command_id, r.ts_ms, r.outcome, r.error FROM command_results r "
            "JOIN commands c ON c.id = r.command_id WHERE c.run_id = ? AND c.device = ?",
            (run.id, device),
        )
    }
    cur = conn.execute(sql + run.reading_sql + "ORDER BY id", (run.id, device))
    first = conn.execute(
        "SELECT ts_ms, id FROM readings WHERE run_id = ? AND device = ? ORDER BY id LIMIT 1",
        (run.id, device),
    ).fetchone()
    starts = [rows[0][i] for rows, i in ((rec_t, 0), (rec_c, 1)) if rows]
    if starts and min(starts) < first[0]:
        # retention folded the run's first raw readings into readings_1m (tempctl prune)
        result.skipped.append(
            f"run {run.id} device {device} (raw readings folded by "
            "retention: not replayable exactly)"
        )
        return None
    window = _Window(conn, device, limits, first)
    n_t, n_c = len(rec_t), len(rec_c)
    big = 2**62
    ti = ci = 0
    next_t = rec_t[0][0] if n_t else big  # ts of the next recorded transition / command
    next_c = rec_c[0][1] if n_c else big
    pending: list[tuple] = []  # (ts, result id, command, ok, error), fed in order
    next_p = big
    ts = first[0]
    step = driver.step
    probe = _Probe()
    win_add, probe.stats, last_ts = window.win.add, window.win.stats, window.last_ts
    new, cls = tuple.__new__, LoggedReading
    count = 0
    tick = PROGRESS_ROWS if progress is not None else -1

    def diverged(what, recorded, replayed):
        result.readings += count
        return Divergence(run.id, device, ts, what, recorded, replayed)

    # The hot loop (>= 150,000 readings/s): plain locals, row fields by index where it pays.
    for row in cur:
        r = new(cls, row)
        ts = row[0]
        count += 1
        if count == tick:
            progress(PROGRESS_ROWS)
            tick += PROGRESS_ROWS
        if ts >= last_ts:
            win_add(ts, row[1], row[2], row[7], suspect(row[4], row[13], row[3], row[11]))
            last_ts = ts
        else:  # a row older than the last one (backfill): rebuild the window as SQL sees it
            window.last_ts = last_ts
            window.add(r)
            win_add, probe.stats, last_ts = window.win.add, window.win.stats, window.last_ts
        if row[8]:  # backfilled: feeds the window only
            continue
        if next_p <= ts:
            _feed(driver, pending, ts)
            next_p = pending[0][0] if pending else big
        probe.now = ts
        d = step(r, probe)
        t = d.transition
        if t is not None:
            mine = (ts, t.from_state, t.to_state, t.reason, t.frequency)
            if ti >= n_t or rec_t[ti] != mine:
                return diverged(
                    "transition",
                    _transition_dict(*rec_t[ti]) if ti < n_t else None,
                    _transition_dict(*mine),
                )
            ti += 1
            next_t = rec_t[ti][0] if ti < n_t else big
        elif next_t <= ts:
            return diverged("transition", _transition_dict(*rec_t[ti]), None)
        if d.commands:
            for cmd in d.commands:
                mine = (ts, cmd.kind, cmd.frequency, cmd.attempt)
                if ci >= n_c or rec_c[ci][1:] != mine:
                    return diverged(
                        "command",
                        _command_dict(*rec_c[ci][1:]) if ci < n_c else None,
                        _command_dict(*mine),
                    )
                got = outcomes.get(rec_c[ci][0])
                if got is not None:
                    rts, rid, outcome, error = got
                    pending.append((rts, rid, Outcome(rid, cmd, outcome, error=error)))
                    pending.sort(key=lambda p: (p[0], p[1]))
                    next_p = pending[0][0]
                ci += 1
            next_c = rec_c[ci][1] if ci < n_c else big
        elif next_c <= ts:
            return diverged("command", _command_dict(*rec_c[ci][1:]), None)
    _feed(driver, pending, big)
    if ti < n_t:
        return diverged("transition", _transition_dict(*rec_t[ti]), None)
    if ci < n_c:
        return diverged("command", _command_dict(*rec_c[ci][1:]), None)
    result.readings += count
    result.transitions += n_t
    result.commands += n_c
    if progress is not None:
        progress(count % PROGRESS_ROWS)
    return None


def _feed(driver: Driver, pending: list, upto_ts: int) -> None:
    while pending and pending[0][0] <= upto_ts:
        rts, _, outcome = pending.pop(0)
        driver.results([outcome], rts)


# --- counterfactual -------------------------------------------------------------------------


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
) -> dict:
    """Recorded vs what ``overrides`` would have done, per device (JSON-ready).

    ``also``: more thresholds to report time above (``above`` in each side's metrics),
    beside the recorded and the counterfactual TEMP_THRESHOLD. ``progress``: called
    with the number of readings done, every ``PROGRESS_ROWS``.
    """
    from tempctl.offline.fit import FitError, fit_device

    runs = select_runs(conn, device=device, run_id=run_id, since_ms=since_ms, until_ms=until_ms)
    devices = sorted({d for r in runs for d in r.devices})
    out: dict = {"overrides": {k: v for k, v in overrides.items()}, "devices": {}}
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
            conn, dev, dev_runs, overrides, resp, since_ms, until_ms, also, progress
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
    window: _Window | None = None
    e_fast = e_slow = 0.0  # Δ°C carried by the fast and slow node
    last_ts: int | None = None
    f_cf: float | None = None
    d_power = 0.0  # ΔW held since the previous reading
    down_until = -(2**62)  # cf device restarting: no hash
    prev_rec_f = None
    probe = _Probe()
    count = 0
    for run in runs:
        limits = limits_for(run.config, device, overrides)
        snap = ctl.snapshot() if ctl is not None else restore(conn, device, before_ms=run.ts_ms)
        ctl = Controller(limits, device, snapshot=snap)
        driver = Driver(ctl, reading_capabilities)
        first = conn.execute(
            "SELECT ts_ms, id FROM readings WHERE run_id = ? AND device = ? "
            "AND ts_ms >= ? ORDER BY id LIMIT 1",
            (run.id, device, lo),
        ).fetchone()
        if first is None:
            continue
        if window is None or window.limits != limits:
            window = _Window(conn, device, limits, first)
        states = _recorded_states(conn, run.id, device)
        si, rec_state = 0, None
        for row in conn.execute(
            sql + run.reading_sql + "AND ts_ms >= ? AND ts_ms <= ? ORDER BY id",
            (run.id, device, lo, hi),
        ):
            r = _make(row)
            count += 1
            if progress is not None and count % PROGRESS_ROWS == 0:
                progress(PROGRESS_ROWS)
            hash_rec, core_mv = r.hashrate, r.core_voltage
            if r.backfilled:
                window.add(r)
                continue
            ts = r.ts_ms
            while si < len(states) and states[si][0] < ts:  # the state the interval had
                rec_state = states[si][1]
                si += 1
            f_rec = r.frequency
            if f_cf is None:
                f_cf = f_rec
            # the plant's answer to the frequency difference, held since the last reading
            if last_ts is not None:
                dt = max(0.0, (ts - last_ts) / 1000.0)
                a_f = 1.0 - math.exp(-dt / resp.tau_fast_s)
                a_s = 1.0 - math.exp(-dt / resp.tau_slow_s)
                gain = resp.r_c_per_w * d_power
                e_fast += (resp.fast_share * gain - e_fast) * a_f
                e_slow += ((1.0 - resp.fast_share) * gain - e_slow) * a_s
            last_ts = ts
            delta = e_fast + e_slow
            temp = None if r.temp is None else round(r.temp + delta, 3)
            vr = (
                None
                if r.vr_temp is None
                else round(r.vr_temp + delta / resp.r_c_per_w * resp.vr_c_per_w, 1)
            )
            hash_cf = None
            if hash_rec is not None and f_rec and f_cf is not None:
                hash_cf = 0.0 if ts < down_until else hash_rec * f_cf / f_rec
            power = None if r.power is None else r.power + d_power
            mine = r._replace(
                temp=temp,
                vr_temp=vr,
                power=power,
                frequency=f_cf if f_rec is not None else None,
                actual_frequency=None,
                hashrate=hash_cf,
            )
            rec.add(ts, r.temp, hash_rec, rec_state, f_rec)
            if prev_rec_f is not None and f_rec is not None and abs(f_rec - prev_rec_f) > 0.5:
                rec.frequency_changes += 1
            if f_rec is not None:
                prev_rec_f = f_rec
            window.add(mine)
            probe.stats, probe.now = window.win.stats, ts
            cf.add(ts, temp, hash_cf, ctl.current.value, f_cf)
            d = driver.step(mine, window=probe)
            for cmd in d.commands:
                if cmd.kind == "set_frequency" and not limits.dry_run:
                    if abs(cmd.frequency - f_cf) > 0.5:
                        cf.frequency_changes += 1
                    f_cf = cmd.frequency
                elif cmd.kind == "restart":
                    cf.restarts += 1
                    down_until = ts + int(RESTART_DOWN_S * 1000)
                ctl.command_result(cmd, True, ts)
            volt = (core_mv or 1150) / 1000.0
            if f_rec is not None and f_cf is not None:
                # P = p0 + k·f·V²·(1 + leak·(T − 60)) on both sides (fit.py's power model):
                # the frequency difference at the recorded temperature, plus the leakage
                # of the counterfactual's own temperature difference
                t_rec = r.temp if r.temp is not None else 60.0
                kv = resp.k_w * volt * volt
                d_power = kv * (
                    (f_cf - f_rec) * (1.0 + resp.leak_per_c * (t_rec - 60.0))
                    + f_cf * resp.leak_per_c * delta
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
        "recorded": rec.result(),
        "counterfactual": cf.result(),
        "settings": {f.env: settings.as_env()[f.env] for f in FIELDS if f.attr in overrides},
    }


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


def _iso(ts_ms: int) -> str:
    from datetime import UTC, datetime

    return datetime.fromtimestamp(ts_ms / 1000, tz=UTC).isoformat().replace("+00:00", "Z")


def parse_time(text: str) -> int:
    """--since/--until: epoch milliseconds, or an ISO date/time (UTC unless it says)."""
    from datetime import UTC, datetime

    text = text.strip()
    if text.lstrip("-").isdigit():
        return int(text)
    dt = datetime.fromisoformat(text)
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=UTC)
    return round(dt.timestamp() * 1000)


__all__ = [
    "CheckResult",
    "Divergence",
    "LoggedReading",
    "Response",
    "Run",
    "check",
    "counterfactual",
    "limits_for",
    "parse_time",
    "response_from_fit",
    "select_runs",
    "settings_for",
]


# --- text for people ------------------------------------------------------------------------


def format_check(result: CheckResult) -> str:
    if result.divergence is not None:
        return result.divergence.describe()
    text = (
        f"ok: {result.runs} run(s), {result.readings} readings, {result.transitions} "
        f"transitions and {result.commands} commands replayed identically"
    )
    if result.skipped:
        text += "\nskipped: " + "; ".join(result.skipped)
    return text


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
    return "\n\n".join(parts) if parts else "no readings in range"
