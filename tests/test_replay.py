"""tempctl replay: recorded logs re-driven to the same decisions; counterfactual replays."""

from __future__ import annotations

import json
import shutil
import sqlite3
from pathlib import Path

import pytest
from click.testing import CliRunner
from fixtures import build_log

from tempctl.cli import cli
from tempctl.config import Device, Settings, config_dict
from tempctl.core.clock import FakeClock
from tempctl.core.controller import Controller, Limits
from tempctl.core.reading import Reading
from tempctl.core.tally import METRIC_KEYS
from tempctl.daemon.loop import Daemon
from tempctl.offline.counterfactual import counterfactual
from tempctl.offline.replay import (
    LoggedReading,
    check,
    parse_time,
    reading_sql,
    select_runs,
    settings_for,
)
from tempctl.sim.emulator import Emulator
from tempctl.sim.scenario import parse_scenario
from tempctl.sim.simulate import simulate
from tempctl.store.eventlog import Log

RUNS_DIR = Path(__file__).resolve().parent.parent / "replay" / "runs"

# One quick hot hour: 575 MHz passes 63 °C when the room passes ~30.6 °C.
QUICK = parse_scenario(
    {
        "description": "test: room 27 -> 33 -> 27 °C in an hour",
        "duration_h": 1,
        "ambient": [[0, 27], [0.1, 27], [0.3, 33], [0.6, 33], [0.9, 27], [1, 27]],
        "device": {
            "asic": "BM1370",
            "firmware": "v2.15.0",
            "frequency_mhz": 575,
            "core_voltage_mv": 1150,
        },
        "fan": {"mode": "fixed", "pct": 100},
    },
    name="quick",
)
AFTERNOON = parse_scenario(
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


@pytest.fixture(scope="module")
def fixture_log(tmp_path_factory):
    path = tmp_path_factory.mktemp("fx") / "fixture.db"
    return build_log(path)


@pytest.fixture(scope="module")
def simulated(tmp_path_factory):
    db = tmp_path_factory.mktemp("sim") / "sim.db"
    simulate(AFTERNOON, ["tempctl", "levels"], Settings(), poll_s=5, db=str(db))
    return db


def test_fixture_log_two_devices_two_runs_replays_identically(fixture_log):
    conn = sqlite3.connect(fixture_log.path)
    result = check(conn)
    assert result.ok, result.divergence.describe()
    assert result.runs == 2
    assert result.transitions == len(fixture_log.transitions)
    assert result.commands == conn.execute("SELECT count(*) FROM commands").fetchone()[0]
    assert result.readings == conn.execute("SELECT count(*) FROM readings").fetchone()[0]
    # per device and per run, too
    assert check(conn, device="office").ok and check(conn, run_id=2).ok


def test_the_daemon_itself_writes_logs_that_replay(tmp_path):
    """The real Daemon (fake clock) against the emulator over loopback, then replay."""
    clock = FakeClock(start_ms=1_767_225_600_000)
    settings = Settings(check_interval=5.0, settle=20.0, stable_timeframe=0.02)
    with Emulator(QUICK, clock=clock.monotonic, seed=3) as emu:
        settings = Settings(
            **{**settings.__dict__, "devices": (Device("gamma", emu.urls[0]),), "sources": {}}
        )
        log = Log(tmp_path / "daemon.db")
        try:
            Daemon(settings, eventlog=log, clock=clock).run(max_polls=720)
        finally:
            log.close()
    conn = sqlite3.connect(tmp_path / "daemon.db")
    states = {s for (s,) in conn.execute("SELECT DISTINCT to_state FROM transitions")}
    assert {"THROTTLED_1", "RECOVERING"} <= states  # it did something worth replaying
    result = check(conn)
    assert result.ok, result.divergence.describe()
    assert result.readings == 720 and result.transitions > 3


def test_an_inserted_transition_is_a_divergence_with_both_sides(fixture_log, tmp_path):
    db = tmp_path / "tampered.db"
    shutil.copy(fixture_log.path, db)
    conn = sqlite3.connect(db)
    ts = conn.execute(
        "SELECT ts_ms FROM readings WHERE device = 'garage' AND run_id = 1 "
        "ORDER BY id LIMIT 1 OFFSET 50"
    ).fetchone()[0]
    conn.execute(
        "INSERT INTO transitions (run_id, device, ts_ms, from_state, to_state, reason, "
        "frequency) VALUES (1, 'garage', ?, 'NORMAL', 'THROTTLED_1', 'made up', 490)",
        (ts,),
    )
    conn.commit()
    conn.close()
    res = CliRunner().invoke(cli, ["replay", str(db)])
    assert res.exit_code == 1
    assert "first divergence: run 1, device garage, transition" in res.output
    assert "recorded: ts_ms=" in res.output and "reason=made up" in res.output
    assert "replayed: (none)" in res.output
    res = CliRunner().invoke(cli, ["replay", str(db), "--json"])
    data = json.loads(res.output)
    assert res.exit_code == 1 and data["ok"] is False
    assert data["divergence"]["recorded"]["to"] == "THROTTLED_1"


def test_changed_settings_in_the_runs_row_diverge(fixture_log, tmp_path):
    db = tmp_path / "other-threshold.db"
    shutil.copy(fixture_log.path, db)
    conn = sqlite3.connect(db)
    config = json.loads(conn.execute("SELECT config FROM runs WHERE id = 2").fetchone()[0])
    config["temp_threshold"] = 69.0
    conn.execute("UPDATE runs SET config = ? WHERE id = 2", (json.dumps(config),))
    conn.commit()
    result = check(conn)
    assert not result.ok and (result.divergence.run, result.divergence.device) == (2, "garage")


def test_runs_whose_raw_readings_were_folded_are_skipped(fixture_log, tmp_path):
    from fixtures import HOUR_MS, START_MS

    from tempctl.store.retention import prune

    db = tmp_path / "pruned.db"
    shutil.copy(fixture_log.path, db)
    log = Log(db)
    try:  # fold the first 5 hours of run 1 into readings_1m
        prune(log, days=(24 - 5) / 24, now_ms=START_MS + 24 * HOUR_MS, min_keep_ms=0)
    finally:
        log.close()
    conn = sqlite3.connect(db)
    assert conn.execute("SELECT count(*) FROM readings_1m").fetchone()[0] > 0
    result = check(conn)
    assert result.ok, result.divergence and result.divergence.describe()
    assert any("run 1 device garage (raw readings folded" in s for s in result.skipped)
    assert result.transitions > 0  # run 2 was still checked


# --- a log written the daemon's way, by hand: backfill and cut-off commands ------------------

LIM_SETTINGS = Settings(
    check_interval=1.0,
    settle=5.0,
    stable_timeframe=30 / 3600,
    devices=(Device("dev", "http://127.0.0.1:9"),),
)


def _daemon_poll(log: Log, ctl: Controller, r: Reading, *, answer: bool = True) -> None:
    """What daemon._on_reading/_act/_on_results do, with the stable window read from SQL."""
    log.save_reading(r)
    d = ctl.step(r, r.ts_ms, window=lambda: log.window("dev", r.ts_ms, ctl.limits))
    for cid, cmd in log.save_decision("dev", r.ts_ms, d):
        if answer:
            log.transaction([log.result_op(cid, r.ts_ms + 40, "ok")])
            follow = ctl.command_result(cmd, True, r.ts_ms + 40)
            log.save_decision("dev", r.ts_ms + 40, follow)


def _reading(t_s: float, temp: float, freq: float, **kw) -> Reading:
    return Reading(
        "dev",
        int(t_s * 1000),
        temp=temp,
        frequency=freq,
        version="v2.15.0",
        asic_model="BM1370",
        **kw,
    )


def _record(path: Path, backfill_hot: bool, cut_off: bool = False) -> list[tuple]:
    limits = Limits.from_settings(LIM_SETTINGS)
    log = Log(path)
    freq = 575.0
    log.start_run(config_dict(LIM_SETTINGS), {}, ts_ms=0)
    ctl = Controller(limits, "dev")
    for t in range(41):
        temp = 64.0 if t < 12 else 58.0
        _daemon_poll(log, ctl, _reading(t, temp, freq))
        freq = ctl.frequency
    # the daemon stops at 41 s and starts again at 60 s; backfill fills 42..59 from statistics
    log.start_run(config_dict(LIM_SETTINGS), {}, ts_ms=60_000)
    ctl = Controller(limits, "dev", snapshot=log.restore("dev"))
    log.transaction(
        [
            log.reading_op(
                _reading(t, 64.0 if backfill_hot and t == 50 else 58.0, None, backfilled=True)
            )
            for t in range(42, 60)
        ]
    )
    for t in range(60, 130):
        _daemon_poll(log, ctl, _reading(t, 58.0, freq), answer=not (cut_off and t >= 95))
        freq = ctl.frequency
    log.close()
    conn = sqlite3.connect(path)
    rows = conn.execute("SELECT ts_ms, to_state FROM transitions ORDER BY id").fetchall()
    conn.close()
    return rows


def test_backfilled_rows_feed_the_window_and_never_step(tmp_path):
    with_hot = _record(tmp_path / "a.db", backfill_hot=True)
    without = _record(tmp_path / "b.db", backfill_hot=False)
    recover = next(ts for ts, s in with_hot if s == "RECOVERING")
    # the backfilled hot row at 50 s restarts the 30 s streak: recovery at 80 s, not 72 s
    assert recover == 80_000
    assert next(ts for ts, s in without if s == "RECOVERING") < recover
    for db in ("a.db", "b.db"):
        result = check(sqlite3.connect(tmp_path / db))
        assert result.ok, result.divergence.describe()
        assert result.readings == 41 + 18 + 70


def test_a_command_without_outcome_gets_no_result(tmp_path):
    rows = _record(tmp_path / "c.db", backfill_hot=True, cut_off=True)
    conn = sqlite3.connect(tmp_path / "c.db")
    orphans = conn.execute(
        "SELECT count(*) FROM commands c LEFT JOIN command_results r ON "
        "r.command_id = c.id WHERE r.id IS NULL"
    ).fetchone()[0]
    assert orphans >= 1 and rows
    result = check(conn)
    assert result.ok, result.divergence.describe()


# --- counterfactual --------------------------------------------------------------------------


def test_counterfactual_with_the_recorded_settings_is_the_recording(simulated):
    conn = sqlite3.connect(simulated)
    rep = counterfactual(conn, {})["devices"]["sim-tempctl"]
    rec, cf = rep["recorded"], rep["counterfactual"]
    for key in ("gh_hours", "degree_minutes_above", "max_temp", "frequency_changes"):
        assert cf[key] == pytest.approx(rec[key], rel=1e-3), key


def test_lower_threshold_shows_fewer_degree_minutes_and_less_hash(simulated):
    conn = sqlite3.connect(simulated)
    rep = counterfactual(conn, {"temp_threshold": 61.0})["devices"]["sim-levels"]
    rec, cf = rep["recorded"], rep["counterfactual"]
    assert rep["threshold"] == 63.0  # both judged against the recorded threshold
    assert set(METRIC_KEYS) <= set(rec) and set(METRIC_KEYS) <= set(cf)
    assert cf["degree_minutes_above"] < rec["degree_minutes_above"]
    assert cf["gh_hours"] < rec["gh_hours"]
    assert cf["max_temp"] < rec["max_temp"]
    assert rep["plant"]["source"].startswith("thermal fit")  # fitted from this very log
    higher = counterfactual(conn, {"temp_threshold": 65.0})["devices"]["sim-tempctl"]
    assert higher["counterfactual"]["gh_hours"] > rec["gh_hours"]
    assert higher["counterfactual"]["degree_minutes_above"] > rec["degree_minutes_above"]


def test_imported_traces_are_skipped_by_check_but_answer_what_if():
    conn = sqlite3.connect(f"file:{RUNS_DIR / 'jojo4751-5xgamma.db'}?mode=ro", uri=True)
    result = check(conn)
    assert result.ok and result.runs == 0 and "imported" in result.skipped[0]
    rep = counterfactual(conn, {"temp_threshold": 66.0}, device="jojo4751:Worker5")
    dev = rep["devices"]["jojo4751:Worker5"]
    # that miner ran at 68-72 °C: tempctl at 66 °C would have throttled it
    assert dev["counterfactual"]["frequency_changes"] > 0
    assert dev["counterfactual"]["max_temp"] < dev["recorded"]["max_temp"]
    assert dev["counterfactual"]["gh_hours"] < dev["recorded"]["gh_hours"]


def test_settings_for_applies_device_overrides(fixture_log):
    conn = sqlite3.connect(fixture_log.path)
    run = select_runs(conn)[0]
    assert settings_for(run.config, "office").temp_threshold == 60.0
    assert settings_for(run.config, "garage").temp_threshold == 63.0
    assert settings_for(run.config, "office", {"temp_threshold": 61.5}).temp_threshold == 61.5


def test_logged_reading_has_what_the_controller_reads():
    row = (
        1000,
        61.5,
        50.0,
        575.0,
        10,
        "v2.15.0",
        "BM1370",
        0,
        0,
        7,
        1,
        574.0,
        1150,
        600.0,
        18.5,
        100.0,
        0,
        None,
        "aa:bb",
        "gamma",
        None,
        0.31,
        1173.0,
    )
    r = LoggedReading._make(row)
    full = Reading(
        "d",
        1000,
        temp=61.5,
        vr_temp=50.0,
        frequency=575.0,
        uptime_s=10,
        version="v2.15.0",
        asic_model="BM1370",
        actual_frequency=574.0,
        core_voltage=1150,
        hashrate=600.0,
        power=18.5,
        fan_pct=100.0,
        mac="aa:bb",
        hostname="gamma",
        error_pct=0.31,
        expected_hashrate=1173.0,
    )
    for name in (
        "error_pct",
        "expected_hashrate",
        "ts_ms",
        "temp",
        "vr_temp",
        "frequency",
        "uptime_s",
        "version",
        "asic_model",
        "overheat",
        "backfilled",
        "mac",
        "hostname",
        "valid",
        "actual_frequency",
        "core_voltage",
        "hashrate",
        "power",
        "fan_pct",
        "fault",
    ):
        assert getattr(r, name) == getattr(full, name), name
    conn = sqlite3.connect(":memory:")
    # a log of schema v1 (no autofan, fault, mac, hostname columns) reads them as NULL
    conn.execute(
        "CREATE TABLE readings (ts_ms, temp, vr_temp, frequency, uptime_s, firmware, "
        "asic, overheat, backfilled, id, actual_frequency, core_voltage, hashrate, power, fan)"
    )
    conn.execute("INSERT INTO readings (ts_ms, overheat, backfilled, id) VALUES (1, 1, 0, 1)")
    conn.execute(
        "INSERT INTO readings (ts_ms, temp, overheat, backfilled, id) VALUES (2, 60.5, 0, 0, 2)"
    )
    rows = conn.execute(reading_sql(conn) + "ORDER BY id").fetchall()
    assert [LoggedReading._make(r).valid for r in rows] == [0, 1]


@pytest.mark.parametrize(
    "text, ms",
    [
        ("1767225600000", 1_767_225_600_000),
        ("2026-01-01T00:00:00Z", 1_767_225_600_000),
        ("2026-01-01T01:00", 1_767_229_200_000),
        ("2026-01-01T02:00:00+01:00", 1_767_229_200_000),
    ],
)
def test_parse_time(text, ms):
    assert parse_time(text) == ms


def test_cli(simulated, tmp_path):
    runner = CliRunner()
    res = runner.invoke(cli, ["replay", str(simulated)])
    assert res.exit_code == 0 and res.output.startswith("ok: 2 run(s)")
    res = runner.invoke(cli, ["replay", str(simulated), "--check", "--json"])
    assert res.exit_code == 0 and json.loads(res.output)["ok"] is True
    res = runner.invoke(
        cli,
        ["replay", str(simulated), "--since", "2026-01-01T02:00", "--until", "2026-01-01T03:00"],
    )
    assert res.exit_code == 0  # a run overlapping the range is checked whole
    res = runner.invoke(cli, ["replay", str(simulated), "--set", "TEMP_THRESHOLD=61"])
    assert res.exit_code == 0
    assert "recorded" in res.output and "counterfactual" in res.output
    # time above each threshold, each labelled with whose it is
    assert "°C·min above 63 °C (recorded TEMP_THRESHOLD)" in res.output
    assert "minutes above 61 °C (counterfactual TEMP_THRESHOLD)" in res.output
    assert "°C·min above 61 °C (counterfactual TEMP_THRESHOLD)" in res.output
    res = runner.invoke(cli, ["replay", str(simulated), "--set", "TEMP_THRESHOLD=61", "--json"])
    data = json.loads(res.output)["devices"]["sim-tempctl"]
    assert data["settings"] == {"TEMP_THRESHOLD": "61"}
    assert (data["threshold"], data["counterfactual_threshold"]) == (63.0, 61.0)
    for side in ("recorded", "counterfactual"):
        above = data[side]["above"]
        assert set(above) == {"63", "61"}
        assert above["63"]["minutes"] == data[side]["minutes_above"]
        assert above["61"]["minutes"] >= above["63"]["minutes"]
    assert "notes" not in json.loads(res.output)
    # voltage settings: said to be outside what the counterfactual models, not shown as "no gain"
    res = runner.invoke(cli, ["replay", str(simulated), "--set", "TEMPCTL_VOLTAGE=auto"])
    assert res.exit_code == 0, res.output
    assert "Note: TEMPCTL_VOLTAGE: the counterfactual moves the frequency only" in res.output
    res = runner.invoke(
        cli,
        [
            "replay",
            str(simulated),
            "--set",
            "TEMPCTL_VOLTAGE=auto",
            "--set",
            "TEMPCTL_GOAL=efficiency",
        ]
        + ["--json"],
    )
    (note,) = json.loads(res.output)["notes"]
    assert note.startswith("TEMPCTL_VOLTAGE, TEMPCTL_GOAL: ")
    res = runner.invoke(cli, ["replay", str(simulated), "--check", "--set", "TEMP_THRESHOLD=61"])
    assert res.exit_code == 2
    res = runner.invoke(cli, ["replay", str(simulated), "--set", "NO_SUCH=1"])
    assert res.exit_code == 2 and "unknown setting" in res.output
    res = runner.invoke(cli, ["replay", str(simulated), "--since", "yesterday"])
    assert res.exit_code == 2
    other = tmp_path / "other.db"
    sqlite3.connect(other).execute("CREATE TABLE t (x)").connection.commit()
    res = runner.invoke(cli, ["replay", str(other)])
    assert res.exit_code == 2 and "not a tempctl log" in res.output


def _zero_bytes(path: Path) -> None:
    path.write_bytes(b"")


def _no_tables(path: Path) -> None:
    conn = sqlite3.connect(path)
    conn.execute("CREATE TABLE t (x)")
    conn.execute("DROP TABLE t")  # a valid SQLite file with nothing in it
    conn.close()


def _foreign(path: Path) -> None:
    sqlite3.connect(path).execute("CREATE TABLE photos (x)").connection.close()


NOT_LOGS = {
    "0 bytes": (_zero_bytes, "an empty file, not a tempctl log"),
    "no tables": (_no_tables, "an empty database, no tempctl log in it yet"),
    "foreign": (_foreign, "a SQLite database that is not a tempctl log (tables: photos)"),
}
LOG_READERS = {
    "replay": ["replay", "{db}"],
    "replay --set": ["replay", "{db}", "--set", "TEMP_THRESHOLD=61"],
    "fit": ["fit", "{db}"],
    "tune": ["tune", "{db}", "--grid", "TEMP_THRESHOLD=60,61"],
    "status": ["status", "--db", "{db}"],
}


@pytest.mark.parametrize("command", LOG_READERS, ids=list(LOG_READERS))
@pytest.mark.parametrize("kind", NOT_LOGS, ids=list(NOT_LOGS))
def test_a_file_that_is_no_tempctl_log_is_a_clear_error(tmp_path, kind, command):
    # issue 23.6: an empty SQLite file crashed replay and fit with a traceback
    make, message = NOT_LOGS[kind]
    db = tmp_path / "x.db"
    make(db)
    before = db.read_bytes()
    argv = [a.format(db=db) for a in LOG_READERS[command]]
    res = CliRunner().invoke(cli, argv, env={"TEMPCTL_CONFIG": ""})
    assert res.exit_code == 2, (res.output, res.exception)
    lines = res.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"Error: {db}: {message}"), res.output
    assert "Traceback" not in res.output and db.read_bytes() == before
