"""tempctl simulate: policies against the emulated firmware, log format, oracle, plot."""

from __future__ import annotations

import itertools
import json
import sqlite3

import pytest
from click.testing import CliRunner

from tempctl.cli import cli
from tempctl.config import Settings
from tempctl.core.tally import METRIC_KEYS
from tempctl.offline.replay import check
from tempctl.sim.policies import parse_spec
from tempctl.sim.scenario import load_scenario
from tempctl.sim.simulate import simulate

# A hot afternoon in 4 hours: a Gamma at 575 MHz passes 63 °C when the room passes ~30.6 °C.
AFTERNOON = """
description = "test: room 27 -> 33 -> 27 °C"
duration_h = 4
ambient = [[0, 27], [0.5, 27], [1.5, 33], [2.5, 33], [3.5, 27], [4, 27]]

[device]
asic = "BM1370"
firmware = "v2.15.0"
frequency_mhz = 575
core_voltage_mv = 1150

[fan]
mode = "fixed"
pct = 100
"""


@pytest.fixture(scope="module")
def afternoon(tmp_path_factory):
    path = tmp_path_factory.mktemp("scn") / "afternoon.toml"
    path.write_text(AFTERNOON)
    return str(path)


@pytest.fixture(scope="module")
def sim(afternoon, tmp_path_factory):
    db = tmp_path_factory.mktemp("sim") / "out.db"
    report = simulate(
        load_scenario(afternoon), ["tempctl", "seed", "fixed:490"], Settings(), poll_s=5, db=str(db)
    )
    return report, db


def test_report_has_every_policy_the_oracle_and_the_metric_keys(sim):
    report, _ = sim
    assert set(report["policies"]) == {"tempctl", "seed", "fixed:490"}
    assert report["oracle"]["gh_hours"] > 0
    for m in report["policies"].values():
        assert set(METRIC_KEYS) <= set(m)
        assert m["hash_ratio"] == pytest.approx(
            m["gh_hours"] / report["oracle"]["gh_hours"], abs=1e-3
        )
        assert m["hours"] == pytest.approx(4.0)


def test_tempctl_throttles_without_restarts_and_beats_the_seed_on_hash(sim):
    p = sim[0]["policies"]
    assert p["tempctl"]["restarts"] == 0
    assert p["tempctl"]["state_minutes"].get("THROTTLED_1", 0) > 0
    assert p["tempctl"]["max_temp"] < 66
    # the original script restarts the miner after every change it makes
    assert p["seed"]["restarts"] >= p["seed"]["frequency_changes"] > 0
    assert p["tempctl"]["gh_hours"] > p["seed"]["gh_hours"]
    # a fixed 490 MHz never restarts and never changes after the first PATCH
    assert p["fixed:490"]["restarts"] == 0 and p["fixed:490"]["frequency_changes"] == 1
    assert p["fixed:490"]["mean_frequency"] == pytest.approx(490, abs=2)


def test_log_is_the_daemon_format_one_device_per_policy_and_replays(sim):
    _, db = sim
    conn = sqlite3.connect(db)
    runs = conn.execute("SELECT kind, config FROM runs ORDER BY id").fetchall()
    assert [k for k, _ in runs] == ["simulation"] * 3
    assert [json.loads(c)["policy"] for _, c in runs] == ["tempctl", "seed", "fixed:490"]
    devices = {r[0] for r in conn.execute("SELECT DISTINCT device FROM readings")}
    assert devices == {"sim-tempctl", "sim-seed", "sim-fixed-490"}
    n = conn.execute("SELECT count(*) FROM readings WHERE device = 'sim-tempctl'").fetchone()[0]
    assert n == 4 * 3600 // 5 + 1
    kinds = conn.execute("SELECT DISTINCT to_state FROM transitions WHERE device = 'sim-tempctl'")
    assert {"THROTTLED_1"} <= {k for (k,) in kinds}
    # every command has its outcome, written in the same poll
    orphans = conn.execute(
        "SELECT count(*) FROM commands c LEFT JOIN command_results r "
        "ON r.command_id = c.id WHERE r.id IS NULL"
    ).fetchone()[0]
    assert orphans == 0
    result = check(conn)
    assert result.ok, result.divergence and result.divergence.describe()
    assert result.runs == 1 and result.transitions > 0
    assert any("policy seed" in s for s in result.skipped)


def test_seed_quirks_440_and_a_restart_after_every_patch(sim):
    _, db = sim
    conn = sqlite3.connect(db)
    cmds = conn.execute(
        "SELECT kind, frequency FROM commands WHERE device = 'sim-seed' ORDER BY id"
    ).fetchall()
    sets = [f for k, f in cmds if k == "set_frequency"]
    assert sets and set(sets) <= {440.0, 465.0, 490.0, 515.0, 540.0, 565.0, 575.0}
    assert sets[0] == 440.0  # max(SECOND 400, FIRST 490 - 50), never SECOND itself
    for (k1, _), (k2, _) in itertools.pairwise(cmds):
        if k1 == "set_frequency":
            assert k2 == "restart"


def test_a_run_with_faults_logs_them_and_replays(tmp_path):
    db = tmp_path / "faults.db"
    report = simulate(
        load_scenario("heatwave_faults"),
        ["tempctl", "levels", "seed"],
        Settings(),
        days=7.5 / 24,  # past the reboot at hour 7
        poll_s=30,
        db=str(db),
    )
    for m in report["policies"].values():
        assert m["faults_applied"].get("5xx", 0) > 0 and m["restarts"] >= 1
        assert m["firmware_trips"] >= m["firmware_trips_injected"]
    conn = sqlite3.connect(db)
    errors = dict(
        conn.execute(
            "SELECT substr(error, 1, instr(error, ':') - 1) AS kind, count(*) FROM readings "
            "WHERE device = 'sim-tempctl' AND valid = 0 GROUP BY kind"
        ).fetchall()
    )
    assert {"timeout", "bad_response", "unreachable"} <= set(errors)
    assert errors.get("temp=-1", 0) > 0  # the -1 °C sensor values
    result = check(conn)
    assert result.ok, result.divergence and result.divergence.describe()
    assert result.runs == 2  # tempctl and levels; the seed port is not replayable


def test_constant_room_nothing_happens():
    report = simulate(load_scenario("constant"), ["tempctl"], Settings(), days=1 / 24, poll_s=5)
    m = report["policies"]["tempctl"]
    assert m["frequency_changes"] == 0 and m["restarts"] == 0
    assert m["hash_ratio"] == pytest.approx(1.0, abs=0.01)
    assert m["state_minutes"] == {"NORMAL": 60.0}


def test_plot_writes_a_png(afternoon, tmp_path):
    out = tmp_path / "sim.png"
    simulate(
        load_scenario(afternoon),
        ["tempctl", "seed"],
        Settings(),
        days=1 / 24,
        poll_s=10,
        plot_path=str(out),
    )
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_appending_to_a_log_starts_after_what_is_there(afternoon, tmp_path):
    db = str(tmp_path / "twice.db")
    simulate(load_scenario(afternoon), ["tempctl"], Settings(), days=1 / 48, poll_s=10, db=db)
    simulate(load_scenario(afternoon), ["tempctl"], Settings(), days=1 / 48, poll_s=10, db=db)
    conn = sqlite3.connect(db)
    (_a, a_end), (b, _) = conn.execute(
        "SELECT min(ts_ms), max(ts_ms) FROM readings GROUP BY run_id ORDER BY run_id"
    ).fetchall()
    assert b > a_end
    assert check(conn).ok  # the second run resumes from the first one's log


@pytest.mark.parametrize(
    "spec, want",
    [
        ("tempctl", ("tempctl", None)),
        ("levels", ("levels", None)),
        ("seed", ("seed", None)),
        ("seed:300", ("seed", 300.0)),
        ("fixed:500", ("fixed", 500.0)),
    ],
)
def test_policy_specs(spec, want):
    assert parse_spec(spec) == want


@pytest.mark.parametrize(
    "spec", ["pid", "fixed", "fixed:abc", "fixed:-5", "seed:0", "tempctl:1", "levels:5"]
)
def test_bad_policy_specs(spec):
    with pytest.raises(ValueError):
        parse_spec(spec)


def test_a_policy_given_twice_is_refused():
    with pytest.raises(ValueError, match="once"):
        simulate(load_scenario("constant"), ["seed", "seed:5"], Settings(), days=0.01, poll_s=5)


def test_cli_json_and_errors(afternoon, tmp_path):
    runner = CliRunner()
    res = runner.invoke(
        cli,
        [
            "simulate",
            "--scenario",
            afternoon,
            "--days",
            "0.02",
            "--poll",
            "10",
            "--policy",
            "tempctl",
            "--policy",
            "seed",
            "--json",
        ],
    )
    assert res.exit_code == 0, res.output
    data = json.loads(res.output)
    assert set(data["policies"]) == {"tempctl", "seed"} and "oracle" in data
    res = runner.invoke(
        cli, ["simulate", "--scenario", afternoon, "--days", "0.01", "--set", "TEMP_THRESHOLD=62"]
    )
    assert res.exit_code == 0 and "threshold 62 °C" in res.output and "oracle" in res.output
    res = runner.invoke(cli, ["simulate", "--scenario", "no-such-scenario"])
    assert res.exit_code == 1 and "no scenario named" in res.output
    res = runner.invoke(cli, ["simulate", "--set", "TEMP_THRESHOLD=abc"])
    assert res.exit_code == 2 and "TEMP_THRESHOLD=abc" in res.output
    res = runner.invoke(cli, ["simulate", "--policy", "pid"])
    assert res.exit_code == 1 and "unknown policy" in res.output
