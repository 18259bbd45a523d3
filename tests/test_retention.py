"""Retention: folding old raw readings into readings_1m (real SQLite files in tmp_path)."""

from __future__ import annotations

import json
import shutil
import sqlite3

import pytest
from click.testing import CliRunner

from tempctl.cli import cli
from tempctl.core.controller import Command, Controller, Decision, Event, Limits
from tempctl.core.reading import Reading
from tempctl.core.window import StableWindow
from tempctl.store.eventlog import Log
from tempctl.store.retention import (
    DAY_MS,
    MINUTE_MS,
    Retention,
    folded_readings,
    horizon_ms,
    prune,
)

T0 = 1_700_000_000_000 // DAY_MS * DAY_MS  # midnight UTC
NOW = T0 + 3 * DAY_MS
STEP_MS = 30_000


def temp_at(ts: int, device: int) -> float:
    """A device-specific 4-hour triangle from 57 to 65 °C (hot above 63 for about an hour)."""
    phase = ((ts - T0) // MINUTE_MS % 240) / 120.0
    tri = phase if phase <= 1 else 2 - phase
    return round(57.0 + device + 8.0 * tri + (ts // STEP_MS % 3) * 0.13, 2)


def history(log: Log, devices=("a", "b"), days: float = 3.0, step_ms: int = STEP_MS):
    rows = []
    for i, dev in enumerate(devices):
        for ts in range(T0, T0 + int(days * DAY_MS), step_ms):
            k = (ts - T0) // step_ms
            if k % 97 == 5:  # now and then a poll that failed outright
                rows.append(Reading(dev, ts, error="timeout: no answer"))
            else:
                rows.append(
                    Reading(
                        dev,
                        ts,
                        temp=temp_at(ts, i),
                        vr_temp=50.0 + (k % 7),
                        frequency=575.0 if k % 500 < 400 else 490.0,
                        hashrate=1100.0 + k % 11,
                        power=18.0,
                        fan_pct=100.0,
                    )
                )
    rows.sort(key=lambda r: r.ts_ms)
    log.transaction([log.reading_op(r) for r in rows])
    return rows


@pytest.fixture(scope="module")
def template(tmp_path_factory):
    """Three days of two devices, built once; each test gets its own copy."""
    path = tmp_path_factory.mktemp("retention") / "template.db"
    log = Log(path)
    log.start_run({"test": True}, ts_ms=T0)
    rows = history(log)
    # history that must survive: an old overheat reading, a transition, a command, an event
    log.transaction(
        [
            log.reading_op(
                Reading("a", T0 + 3_600_015, overheat=True, frequency=50.0, error="overheat")
            )
        ]
    )
    dec = Decision(
        events=[Event("alarm", "critical: temp 71 °C", level="alarm")],
        commands=[Command("set_frequency", "critical", 400.0)],
    )
    log.save_decision("a", T0 + 3_600_000, dec)
    ctl = Controller(Limits(), "a")
    log.save_decision("a", T0, ctl.step(Reading("a", T0, temp=60.0, frequency=575.0), T0))
    log.close()  # checkpoints the WAL: the file alone is the whole database
    return path, rows


@pytest.fixture
def filled(template, tmp_path):
    path, rows = template
    shutil.copy(path, tmp_path / "tempctl.db")
    log = Log(tmp_path / "tempctl.db")
    yield log, rows
    log.close()


def counts(conn) -> dict:
    return {
        t: conn.execute(f"SELECT count(*) FROM {t}").fetchone()[0]
        for t in ("readings", "readings_1m", "transitions", "commands", "events", "runs")
    }


def minute_view(conn, before_ms: int) -> dict:
    """readings_minute (raw + folded) as
    {(device, minute): (n, n_valid, max, vr max, freq, avg)}."""
    out: dict = {}
    for dev, minute, n, nv, avg, tmax, vrmax, freq in conn.execute(
        "SELECT device, minute_ms, n, n_valid, temp_avg, temp_max, vr_temp_max, frequency "
        "FROM readings_minute WHERE minute_ms < ?",
        (before_ms,),
    ):
        out[(dev, minute)] = (n, nv, tmax, vrmax, freq, avg)
    return out


def test_prune_folds_old_minutes_and_keeps_the_rest(filled):
    log, rows = filled
    conn = log.conn
    before = counts(conn)
    cutoff = horizon_ms(1, NOW)
    view_before = minute_view(conn, cutoff)
    recent = conn.execute("SELECT count(*) FROM readings WHERE ts_ms >= ?", (cutoff,)).fetchone()[0]

    s = prune(log, 1, NOW)

    assert s.done and s.cutoff_ms == NOW - DAY_MS and s.devices == 2
    old = [r for r in rows if r.ts_ms < cutoff]
    assert s.folded == len(old)
    assert s.minutes == len({(r.device, r.ts_ms // MINUTE_MS) for r in old})
    after = counts(conn)
    assert after["readings"] == before["readings"] - len(old)
    assert after["readings_1m"] == s.minutes
    for table in ("transitions", "commands", "events", "runs"):
        assert after[table] == before[table] > 0
    # the overheat row stays raw; every newer reading is untouched
    assert conn.execute("SELECT count(*) FROM readings WHERE ts_ms < ?", (cutoff,)).fetchone() == (
        1,
    )
    assert (
        conn.execute("SELECT count(*) FROM readings WHERE ts_ms >= ?", (cutoff,)).fetchone()[0]
        == recent
    )
    # Datasette's readings_minute view reads the same before and after (but for the
    # minute whose overheat row stays raw: it shows as two rows there).
    view_after = minute_view(conn, cutoff)
    overheat_minute = ("a", (T0 + 3_600_015) // MINUTE_MS * MINUTE_MS)
    view_before.pop(overheat_minute)
    view_after.pop(overheat_minute)
    assert view_after.keys() == view_before.keys()
    for key, row in view_before.items():
        assert view_after[key][:5] == row[:5]
        assert view_after[key][5] == pytest.approx(row[5], abs=0.006)  # the view rounds raw means


def test_the_append_only_guard_is_back_after_pruning(filled):
    log, _ = filled
    prune(log, 1, NOW)
    assert log.conn.execute("SELECT value FROM meta WHERE key = 'pruning'").fetchone() == ("0",)
    with pytest.raises(sqlite3.IntegrityError, match="append-only"):
        log.conn.execute("DELETE FROM readings WHERE id = (SELECT max(id) FROM readings)")


def test_prune_is_idempotent(filled):
    log, _ = filled
    prune(log, 1, NOW)
    folded = log.conn.execute("SELECT * FROM readings_1m ORDER BY device, minute_ms").fetchall()
    again = prune(log, 1, NOW)
    assert (again.folded, again.minutes, again.devices, again.done) == (0, 0, 0, True)
    assert (
        log.conn.execute("SELECT * FROM readings_1m ORDER BY device, minute_ms").fetchall()
        == folded
    )


def test_batches_give_the_same_result_as_one_transaction(filled, tmp_path):
    log, _ = filled
    with sqlite3.connect(tmp_path / "copy.db") as dst:
        log.conn.backup(dst)
    one = prune(log, 1, NOW)
    other = Log(tmp_path / "copy.db")
    try:
        total, calls = 0, 0
        while True:
            s = prune(other, 1, NOW, max_rows=1000)
            total += s.folded
            calls += 1
            assert s.folded <= 1000
            if s.done:
                break
        assert total == one.folded and calls > one.folded // 1000
        table = "SELECT * FROM readings_1m ORDER BY device, minute_ms"
        assert other.conn.execute(table).fetchall() == log.conn.execute(table).fetchall()
    finally:
        other.close()


def test_late_rows_of_a_folded_minute_are_merged(log):
    m = T0 + 10 * MINUTE_MS
    log.transaction(
        [
            log.reading_op(
                Reading("a", m + 1000 * i, temp=60.0 + i, hashrate=10.0, frequency=575.0)
            )
            for i in range(2)
        ]
    )
    prune(log, 1, NOW)
    # an import brings two more readings of the same minute
    log.transaction(
        [
            log.reading_op(
                Reading("a", m + 30_000 + 1000 * i, temp=70.0 + i, hashrate=20.0, frequency=490.0)
            )
            for i in range(2)
        ]
        + [log.reading_op(Reading("a", m + 40_000, error="timeout: x"))]
    )
    prune(log, 1, NOW)
    row = log.conn.execute(
        "SELECT n, n_valid, temp_avg, temp_max, frequency, hashrate_avg FROM readings_1m"
    ).fetchall()
    # means weighted by valid readings: exact whenever invalid rows carry no values
    assert row == [
        (
            5,
            4,
            pytest.approx((60 + 61 + 70 + 71) / 4),
            71.0,
            575.0,
            pytest.approx((10 + 10 + 20 + 20) / 4),
        )
    ]


def test_a_failure_rolls_everything_back(filled):
    log, _ = filled
    conn = log.conn
    table = "SELECT count(*), coalesce(sum(ts_ms), 0) FROM readings"
    before = conn.execute(table).fetchone()
    victim = conn.execute(
        "SELECT id FROM readings WHERE device = 'b' ORDER BY ts_ms LIMIT 1 OFFSET 100"
    ).fetchone()[0]
    conn.execute(
        f"CREATE TRIGGER boom BEFORE DELETE ON readings WHEN old.id = {victim} "
        "BEGIN SELECT RAISE(ABORT, 'disk on fire'); END"
    )
    with pytest.raises(sqlite3.IntegrityError, match="disk on fire"):
        prune(log, 1, NOW)
    assert conn.execute(table).fetchone() == before
    assert counts(conn)["readings_1m"] == 0  # device a's fold was rolled back too
    assert conn.execute("SELECT value FROM meta WHERE key = 'pruning'").fetchone() in (None, ("0",))


def test_at_least_a_day_is_kept_and_dry_run_changes_nothing(filled):
    log, _ = filled
    assert horizon_ms(0.01, NOW) == NOW - DAY_MS
    assert horizon_ms(2.5, NOW + 59_999) == NOW - int(2.5 * DAY_MS)  # minute-aligned
    before = counts(log.conn)
    s = prune(log, 0.01, NOW, dry_run=True)
    assert s.dry_run and s.folded > 0 and s.cutoff_ms == NOW - DAY_MS
    assert counts(log.conn) == before
    with pytest.raises(ValueError):
        prune(log, 0, NOW)


def test_the_daemon_job_batches_then_waits_a_day(filled):
    log, rows = filled
    job = Retention(1, batch_rows=2000)
    results = [job(log, NOW)]
    while not results[-1].done:
        results.append(job(log, NOW + len(results)))
    assert len(results) > 2
    assert sum(r.folded for r in results) == sum(r.ts_ms < NOW - DAY_MS for r in rows)
    assert job(log, NOW + 3_600_000) is None  # not due before a day has passed
    later = NOW + len(results) + DAY_MS
    nxt = [job(log, later)]
    while not nxt[-1].done:
        nxt.append(job(log, later))
    assert sum(r.folded for r in nxt) == 2 * DAY_MS // STEP_MS  # one more day of each device


def test_replay_over_folded_history_is_close_to_the_raw_one(log):
    """The stable window and the control law see nearly the same thing after folding."""
    limits = Limits(check_interval=30.0, settle=180.0, stable_timeframe=1.0)
    rows = history(log, devices=("a",), days=2.0)
    raw = [r for r in rows if r.ts_ms < T0 + DAY_MS]  # the day that gets folded
    prune(log, 1, T0 + 2 * DAY_MS)
    folded = list(folded_readings(log.conn, "a"))
    assert len(folded) == len(raw)
    assert all(a.ts_ms // MINUTE_MS == b.ts_ms // MINUTE_MS for a, b in zip(raw, folded))
    assert sum(r.valid for r in folded) == sum(r.valid for r in raw)

    def run(readings):
        win, ctl, states, stats = StableWindow(limits), Controller(limits, "a"), [], []
        ctl.step(Reading("a", T0 - 1, temp=50.0, frequency=575.0), T0 - 1)
        for r in readings:
            if r.valid:
                win.add(r.ts_ms, r.temp, r.vr_temp)
            d = ctl.step(
                Reading("a", r.ts_ms, temp=r.temp, vr_temp=r.vr_temp, frequency=ctl.frequency),
                r.ts_ms,
                window=lambda now=r.ts_ms: win.stats(now),
            )
            if d.transition:
                states.append((r.ts_ms, d.transition.to_state, d.transition.frequency))
            stats.append(win.stats(r.ts_ms))
        return states, stats

    a, raw_stats = run(raw)
    b, folded_stats = run(folded)
    # the same decisions (state and frequency), each within the minute it was taken
    assert [t[1:] for t in a] == [t[1:] for t in b] and len(a) >= 20
    assert all(abs(tb[0] - ta[0]) < MINUTE_MS for ta, tb in zip(a, b))
    # after each minute's last poll the window's count and mean agree
    for r, x, y in zip(raw, raw_stats, folded_stats):
        if (r.ts_ms + STEP_MS) % MINUTE_MS == 0:
            assert x.count == y.count
            assert abs(x.sum_mc - y.sum_mc) <= x.count  # ≤ 1 milli-°C per reading (rounding)


def test_prune_command(filled, tmp_path):
    log, _ = filled
    path = log.path
    log.close()
    runner = CliRunner()
    env = {"TEMPCTL_DB": path}
    res = runner.invoke(cli, ["prune"], env=env)
    assert res.exit_code == 2 and "TEMPCTL_RETENTION_DAYS" in res.output
    res = runner.invoke(cli, ["prune", "--retention-days", "1", "--dry-run", "--json"], env=env)
    assert res.exit_code == 0, res.output
    dry = json.loads(res.output)
    assert dry["dry_run"] is True and dry["folded"] > 0
    res = runner.invoke(
        cli, ["prune", "--retention-days", "1", "--batch-rows", "5000", "--vacuum"], env=env
    )
    assert res.exit_code == 0, res.output
    assert res.output.startswith(f"folded {dry['folded']} readings from before ")
    res = runner.invoke(cli, ["prune", "--retention-days", "1", "--json"], env=env)
    assert json.loads(res.output)["folded"] == 0
    res = runner.invoke(cli, ["prune", "--retention-days", "1", "--db", str(tmp_path / "no.db")])
    assert res.exit_code == 2 and "no such tempctl log" in res.output
    empty = tmp_path / "empty.db"
    empty.touch()
    res = runner.invoke(cli, ["prune", "--retention-days", "1", "--db", str(empty)])
    assert res.exit_code == 2 and "an empty file, not a tempctl log" in res.output, res.output
    assert empty.stat().st_size == 0  # not turned into a log by pruning it


def test_retention_and_vacuum_write_through_the_log():
    """Issue 15.6: the log (store/eventlog.py, store/writer.py) is the one place that opens
    connections and begins, ends or compacts transactions; retention and the CLI ask it."""
    from pathlib import Path

    root = Path(__file__).resolve().parent.parent / "tempctl"
    words = ("BEGIN", "COMMIT", "ROLLBACK", "VACUUM", "sqlite3.connect(")
    for path in (root / "store" / "retention.py", root / "cli" / "daemon.py"):  # prune
        text = path.read_text()
        assert not [w for w in words if w in text], path


def test_counterfactual_replays_folded_history(tmp_path):
    """``replay --set`` over a log whose first hours retention folded into readings_1m:
    those hours are replayed from the minute rows, close to the raw replay."""
    from tempctl.config import Settings
    from tempctl.offline.counterfactual import counterfactual, response_from_fit
    from tempctl.offline.fit import fit_device
    from tempctl.sim.scenario import parse_scenario
    from tempctl.sim.simulate import SIM_EPOCH_MS, simulate

    hot = parse_scenario(
        {
            "description": "test: room 27 -> 33 -> 27 °C",
            "duration_h": 4,
            "ambient": [[0, 27], [0.5, 27], [1.5, 33], [2.5, 33], [3.5, 27], [4, 27]],
            "device": {
                "asic": "BM1370",
                "firmware": "v2.15.0",
                "frequency_mhz": 575,
                "core_voltage_mv": 1150,
            },
            "fan": {"mode": "fixed", "pct": 100},
        },
        name="afternoon",
    )
    raw_db, folded_db = tmp_path / "raw.db", tmp_path / "folded.db"
    simulate(hot, ["tempctl"], Settings(law="levels"), poll_s=5, db=str(raw_db))
    shutil.copy(raw_db, folded_db)
    log = Log(folded_db)
    try:  # fold the first two hours (the throttling starts in them)
        prune(log, 1, SIM_EPOCH_MS + 2 * 3_600_000 + DAY_MS, min_keep_ms=0)
    finally:
        log.close()
    raw, folded = sqlite3.connect(raw_db), sqlite3.connect(folded_db)
    kept = folded.execute("SELECT count(*) FROM readings").fetchone()[0]
    assert 0 < kept < raw.execute("SELECT count(*) FROM readings").fetchone()[0] * 0.6
    resp = response_from_fit(fit_device(raw, "sim-tempctl"))  # the same plant for both
    a = counterfactual(raw, {"temp_threshold": 61.0}, response=resp)["devices"]["sim-tempctl"]
    b = counterfactual(folded, {"temp_threshold": 61.0}, response=resp)["devices"]["sim-tempctl"]
    for side in ("recorded", "counterfactual"):
        x, y = a[side], b[side]
        assert y["hours"] == pytest.approx(x["hours"], abs=2 / 60)  # the folded hours count
        assert y["gh_hours"] == pytest.approx(x["gh_hours"], rel=0.01)
        # a folded minute puts its hottest reading last, so a decision can come up to a
        # minute later than in the raw replay: the peak may differ by a little more
        assert y["max_temp"] == pytest.approx(x["max_temp"], abs=1.0)
        for t in ("63", "61"):
            assert y["above"][t]["minutes"] == pytest.approx(x["above"][t]["minutes"], abs=5)
    # the counterfactual still throttled earlier than the recording in the folded part
    assert b["counterfactual"]["gh_hours"] < b["recorded"]["gh_hours"]
    # a run whose raw rows are all gone is found by its span and replayed from the minutes
    log = Log(folded_db)
    try:
        prune(log, 1, SIM_EPOCH_MS + 5 * 3_600_000 + DAY_MS, min_keep_ms=0)
    finally:
        log.close()
    assert folded.execute("SELECT count(*) FROM readings WHERE overheat = 0").fetchone()[0] == 0
    c = counterfactual(folded, {"temp_threshold": 61.0}, response=resp)["devices"]["sim-tempctl"]
    assert c["recorded"]["hours"] == pytest.approx(a["recorded"]["hours"], abs=2 / 60)
