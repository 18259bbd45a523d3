"""`tempctl replay`: feed a recorded log back through the controller, offline.

``check`` re-drives every run as the daemon drove it and compares the decisions
with what was recorded. Per run and device: a new Controller restored from the log
as the daemon starting the run restored it (``log.restore``: the rows written before, in
write order, whatever their stamps), Limits from that run's ``runs.config``
(+ the device's overrides), a ``StableWindow`` pre-filled with the readings that the
window query would have seen, then every reading in logged order. Backfilled
readings only feed the window. Each command's recorded outcome is fed back
(``command_result``) before the first reading stamped at or after the outcome; a
command without an outcome row was cut off by a stop and gets none. (A poll that
started just before an outcome was handled is stamped earlier but may have been judged
after it; the log cannot tell these apart, and replay takes the stamps' order.) Transitions
(ts, from, to, reason, frequency) and commands (ts, kind, frequency, attempt) must
match one for one; the first difference is reported with both sides.

The counterfactual replay (``--set``) is in ``counterfactual.py``.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Callable
from dataclasses import dataclass, field, replace

from tempctl.config import FIELDS, Device, Settings, validate
from tempctl.core import powercap
from tempctl.core.controller import Controller, Limits
from tempctl.core.decision import Outcome
from tempctl.core.driver import Driver
from tempctl.core.window import StableWindow, suspect
from tempctl.device import reading_capabilities
from tempctl.store.eventlog import restore
from tempctl.store.rows import LoggedReading, reading_sql

PROGRESS_ROWS = 8192  # readings between progress reports


_make = LoggedReading._make


@dataclass
class Run:
    id: int
    ts_ms: int
    kind: str
    config: dict
    devices: list[str]
    device_count: int = 1  # devices with readings in the run (before any --device filter)
    end_ms: int | None = None  # the next run's start: the end of this one's span
    folded: bool = False  # also replay minutes folded into readings_1m (counterfactual)

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
    folded: bool = False,
) -> list[Run]:
    """Runs with readings in range (a run overlapping the range is taken whole).

    ``folded``: also runs and devices with minutes in ``readings_1m`` within the run's
    span (from its start to the next run's), where retention removed the raw rows.
    """
    lo = since_ms if since_ms is not None else -(2**62)
    hi = until_ms if until_ms is not None else 2**62
    out = []
    all_runs = conn.execute(
        "SELECT id, ts_ms, kind, config FROM runs ORDER BY ts_ms, id"
    ).fetchall()
    ends = [r[1] for r in all_runs[1:]] + [None]
    if folded:
        folded = bool(
            conn.execute(
                "SELECT 1 FROM sqlite_master WHERE name = 'readings_1m' "
                "AND EXISTS (SELECT 1 FROM readings_1m)"
            ).fetchone()
        )
    for (rid, ts, kind, config), end in zip(all_runs, ends):
        if run_id is not None and rid != run_id:
            continue
        sql = "SELECT DISTINCT device FROM readings WHERE run_id = ? AND ts_ms >= ? AND ts_ms <= ?"
        args: list = [rid, lo, hi]
        if device is not None:
            sql += " AND device = ?"
            args.append(device)
        devices = {r[0] for r in conn.execute(sql, args)}
        if folded:
            fsql = (
                "SELECT DISTINCT device FROM readings_1m WHERE minute_ms >= ? AND minute_ms < ? "
                "AND minute_ms <= ?"
            )
            fargs: list = [max(lo // 60_000 * 60_000, ts // 60_000 * 60_000), end or 2**62, hi]
            if device is not None:
                fsql += " AND device = ?"
                fargs.append(device)
            devices.update(r[0] for r in conn.execute(fsql, fargs))
        devices = sorted(devices)
        if devices:
            count = (
                len(devices)
                if device is None
                else conn.execute(
                    "SELECT count(DISTINCT device) FROM readings WHERE run_id = ?", (rid,)
                ).fetchone()[0]
            )
            run = Run(rid, ts, kind, json.loads(config or "{}"), devices, count, end, folded)
            out.append(run)
    return out


def settings_for(config: dict, device: str, overrides: dict | None = None) -> Settings:
    """The effective settings of a logged run for one device, plus ``overrides``."""
    values = {
        f.attr: config[f.attr]
        for f in FIELDS
        if f.attr in config and f.attr != "devices" and config[f.attr] is not None
    }
    values.setdefault("law", "levels")  # logs written before the model law (tempctl 0.1)
    values.setdefault("user_cap", "off")  # before the user cap (issue 23.8) tempctl climbed back
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


class WindowProbe:
    """The ``window`` callable handed to ``Controller.step``: stats as of ``now``."""

    __slots__ = ("now", "stats")

    def __call__(self):
        return self.stats(self.now)


class ReplayWindow:
    """A StableWindow fed in (ts, id) order, rebuilt from the log if a row arrives late."""

    def __init__(self, conn: sqlite3.Connection, device: str, limits: Limits, first: tuple):
        self.conn, self.device, self.limits = conn, device, limits
        self.win = StableWindow(limits)
        self.last_ts = -(2**62)
        first_ts, first_id = first
        self._fill(first_ts, first_id, strict=True)

    def _fill(self, now_ts: int, upto_id: int, strict: bool) -> None:
        # As the window query sees it at now_ts: rows stamped after it (a run whose clock
        # was ahead wrote them earlier, issue 23.4) are not in the window.
        op = "<" if strict else "<="
        lo_ts = now_ts - self.limits.window_ms - self.limits.gap_ms - 1
        for ts, temp, vr, oh, up, hr, f, live in self.conn.execute(
            "SELECT ts_ms, temp, vr_temp, overheat, uptime_s, hashrate, frequency, "
            "actual_frequency FROM readings WHERE device = ? AND ts_ms > ? AND ts_ms <= ? "
            f"AND id {op} ? ORDER BY ts_ms, id",
            (self.device, lo_ts, now_ts, upto_id),
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
        self._fill(newest, r.id, strict=False)


def _transition_dict(ts, from_state, to_state, reason, frequency) -> dict:
    return {
        "ts_ms": ts,
        "from": from_state,
        "to": to_state,
        "reason": reason,
        "frequency": frequency,
    }


def _command_dict(ts, kind, frequency, attempt, body=None) -> dict:
    out = {"ts_ms": ts, "kind": kind, "frequency": frequency, "attempt": attempt}
    return {**out, "payload": body} if body is not None else out


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
        Controller(limits, device, snapshot=restore(conn, device, before_run=run.id)),
        reading_capabilities,
    )
    rec_t = conn.execute(
        "SELECT ts_ms, from_state, to_state, reason, frequency FROM transitions "
        "WHERE run_id = ? AND device = ? ORDER BY id",
        (run.id, device),
    ).fetchall()
    rec_c = conn.execute(
        "SELECT id, ts_ms, kind, frequency, attempt, "
        "CASE kind WHEN 'set_fields' THEN payload END FROM commands "
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
    # the daemon's TEMPCTL_POWER_BUDGET shares, handed over at the reading they were logged at
    shares = conn.execute(
        "SELECT ts_ms, frequency_to FROM events WHERE run_id = ? AND device = ? "
        "AND kind = 'power_budget' ORDER BY id",
        (run.id, device),
    ).fetchall()
    next_s = shares[0][0] if shares else 2**62
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
    window = ReplayWindow(conn, device, limits, first)
    n_t, n_c = len(rec_t), len(rec_c)
    big = 2**62
    ti = ci = 0
    next_t = rec_t[0][0] if n_t else big  # ts of the next recorded transition / command
    next_c = rec_c[0][1] if n_c else big
    pending: list[tuple] = []  # (ts, result id, command, ok, error), fed in order
    next_p = big
    ts = first[0]
    step = driver.step
    probe = WindowProbe()
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
        if next_s <= ts:
            next_s = _shares(driver.controller, shares, ts)
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
                # set_fields (voltage, trip restores) compare their body too (issue 21)
                body = json.dumps(cmd.payload, sort_keys=True) if cmd.kind == "set_fields" else None
                mine = (ts, cmd.kind, cmd.frequency, cmd.attempt, body)
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


def _shares(controller, shares: list, upto_ts: int) -> int:
    while shares and shares[0][0] <= upto_ts:
        powercap.set_share(controller, shares.pop(0)[1])
    return shares[0][0] if shares else 2**62


def _feed(driver: Driver, pending: list, upto_ts: int) -> None:
    while pending and pending[0][0] <= upto_ts:
        rts, _, outcome = pending.pop(0)
        driver.results([outcome], rts)


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
    "PROGRESS_ROWS",
    "ReplayWindow",
    "Run",
    "WindowProbe",
    "check",
    "limits_for",
    "parse_time",
    "reading_sql",
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
