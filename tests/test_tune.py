"""tempctl tune: grids, the Pareto frontier, the recommendation, on a scenario and on a log."""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner

from tempctl.cli import cli
from tempctl.config import ConfigError, Settings, load_settings
from tempctl.offline.tune import Axis, Source, candidates, pareto, parse_grid, recommend, tune
from tempctl.sim.scenario import parse_scenario
from tempctl.sim.simulate import simulate

SHORT = parse_scenario(
    {
        "description": "test: room 27 -> 33 -> 27 °C in 1.5 h",
        "duration_h": 1.5,
        "ambient": [[0, 27], [0.2, 27], [0.5, 33], [1.0, 33], [1.3, 27], [1.5, 27]],
        "device": {
            "asic": "BM1370",
            "firmware": "v2.15.0",
            "frequency_mhz": 575,
            "core_voltage_mv": 1150,
        },
        "fan": {"mode": "fixed", "pct": 100},
    },
    name="short",
)


def test_parse_grid_ranges_and_lists():
    assert parse_grid("TEMP_THRESHOLD=62:64:0.5") == Axis(
        "temp_threshold", "TEMP_THRESHOLD", (62.0, 62.5, 63.0, 63.5, 64.0)
    )
    assert parse_grid("STABLE_TIMEFRAME=0.25,0.5,1").values == (0.25, 0.5, 1.0)
    assert parse_grid("temp_threshold=61,61,62").values == (61.0, 62.0)  # duplicates once
    assert parse_grid("TEMPCTL_APPLY=live,restart").values == ("live", "restart")


@pytest.mark.parametrize(
    "text",
    [
        "TEMP_THRESHOLD",
        "TEMP_THRESHOLD=",
        "TEMP_THRESHOLD=64:62:1",
        "TEMP_THRESHOLD=62:64:0",
        "TEMP_THRESHOLD=a:b:c",
        "TEMP_THRESHOLD=10,20",
        "NO_SUCH=1,2",
        "BITAXE_IP=1,2",
        "CHECK_INTERVAL=5,10",
    ],
)
def test_bad_grids_are_one_line_errors(text):
    with pytest.raises(ConfigError) as e:
        parse_grid(text)
    assert "\n" not in str(e.value)


def test_candidates_grid_and_random():
    axes = [parse_grid("TEMP_THRESHOLD=62:64:0.5"), parse_grid("STABLE_TIMEFRAME=0.25,0.5,1")]
    full = candidates(axes)
    assert len(full) == 15 and {"temp_threshold": 62.0, "stable_timeframe": 0.25} in full
    some = candidates(axes, random_n=4, seed=1)
    assert len(some) == 4 and all(c in full for c in some)
    assert some == candidates(axes, random_n=4, seed=1)  # seeded
    assert candidates(axes, random_n=99) == full


def _row(name, gh, deg, changes):
    return {
        "settings": {"X": name},
        "gh_hours": gh,
        "degree_minutes_above": deg,
        "changes_per_day": changes,
    }


def test_pareto_and_recommendation():
    rows = [
        _row("a", 100, 50, 10),
        _row("b", 90, 10, 10),
        _row("c", 80, 0, 4),
        _row("d", 85, 20, 12),
        _row("e", 100, 50, 10),
    ]
    front = pareto(rows)
    assert [r["settings"]["X"] for r in front] == ["a", "b", "c"]  # d is dominated by b
    assert recommend(front, _row("base", 95, 30, 8))["settings"]["X"] == "b"
    # nothing is as cool as the baseline: the coolest point
    assert recommend(front, _row("base", 95, -1, 8))["settings"]["X"] == "c"


def test_tune_a_scenario_in_two_processes():
    source = Source(Settings(), scenario=SHORT, poll_s=10)
    axes = [parse_grid("TEMP_THRESHOLD=61,63,65")]
    ticks = []
    report = tune(source, candidates(axes), jobs=2, progress=ticks.append)
    assert len(ticks) == 4  # baseline + 3 candidates
    by = {r["settings"].get("TEMP_THRESHOLD", "base"): r for r in report["results"]}
    # every candidate judged against the baseline's 63 °C, not its own threshold
    assert (
        by["61"]["degree_minutes_above"]
        <= by["63"]["degree_minutes_above"]
        < by["65"]["degree_minutes_above"]
    )
    assert by["61"]["gh_hours"] < by["63"]["gh_hours"] < by["65"]["gh_hours"]
    assert by["base"] == {**by["63"], "settings": {}, "baseline": True}  # 63 is the default
    assert report["recommended"] in report["frontier"]
    assert report["recommended"]["degree_minutes_above"] <= by["base"]["degree_minutes_above"]
    # ready to paste: what load_settings reads back to the same values
    env = dict(line.split("=", 1) for line in report["env"])
    assert set(env) == {"TEMP_THRESHOLD"}
    assert load_settings(
        {}, environ=env, default_config="/nonexistent", require_devices=False
    ).temp_threshold == float(env["TEMP_THRESHOLD"])


def test_tune_a_log_by_counterfactual_replay(tmp_path):
    db = tmp_path / "log.db"
    simulate(SHORT, ["tempctl"], Settings(), poll_s=10, db=str(db))
    res = CliRunner().invoke(
        cli,
        [
            "tune",
            str(db),
            "--grid",
            "TEMP_THRESHOLD=60,62,64",
            "--set",
            "STABLE_TIMEFRAME=0.5",
            "--jobs",
            "1",
            "--json",
        ],
    )
    assert res.exit_code == 0, res.output
    report = json.loads(res.output[res.output.index("{") :])
    assert report["candidates"] == 3 and report["frontier"]
    assert any(line.startswith("STABLE_TIMEFRAME=0.5") for line in report["env"])
    gh = {r["settings"]["TEMP_THRESHOLD"]: r["gh_hours"] for r in report["results"][1:]}
    assert gh["60"] < gh["62"] < gh["64"]


def test_cli_text_errors_and_skipped_candidates(tmp_path):
    runner = CliRunner()
    res = runner.invoke(
        cli,
        [
            "tune",
            "--scenario",
            "constant",
            "--days",
            "0.02",
            "--poll",
            "10",
            "--grid",
            "SECOND_FREQUENCY=400,500",
            "--jobs",
            "1",
        ],
    )
    assert res.exit_code == 0, res.output
    assert "Pareto frontier" in res.output and "recommended" in res.output
    assert "skipped {'SECOND_FREQUENCY': '500'}" in res.output  # not below FIRST_FREQUENCY
    res = runner.invoke(cli, ["tune", "--grid", "TEMP_THRESHOLD=62,63"])
    assert res.exit_code == 2 and "either a log DB or --scenario" in res.output
    res = runner.invoke(cli, ["tune", "--scenario", "constant", "--grid", "TEMP_THRESHOLD=abc"])
    assert res.exit_code == 2 and "TEMP_THRESHOLD=abc" in res.output
