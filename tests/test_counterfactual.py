"""The counterfactual replay against ground truth (issue 14): predict a setting from a
recorded run on the emulator's plant, run that setting for real on the same plant (same
scenario and seed), compare hash, peak and time above the thresholds."""

from __future__ import annotations

from dataclasses import replace

import pytest

from tempctl.config import Settings
from tempctl.offline.truth import (
    GRAZE_DEGMIN,
    HASH_RATIO_TOL,
    MINUTES_ABS_TOL,
    MINUTES_REL_TOL,
    PEAK_TOL_C,
    cases,
    compare,
    markdown,
    record,
)
from tempctl.sim.scenario import load_scenario

# TEMPCTL_MIN_FREQUENCY 300: the floor binds at the heatwave's peak (holding 63 °C at 38 °C
# takes ~270 MHz), so lowering it is a case that matters.
BASE = Settings(check_interval=5.0, min_frequency=300.0)
# Pinned to the quiet sensor issue 14's tolerances were set on ([plant] noise 0.06 °C, no
# spikes). On the median real sensor (0.27 °C, docs/sensor.md) "STABLE_TIMEFRAME halved" errs
# by +0.021 in hash ratio (tolerance 0.01): the offline tools' accuracy there is issue 20's.
SCENARIO = replace(load_scenario("heatwave"), plant=(("noise_c", 0.06), ("spike_rate", 0.0)))
CASES = cases(BASE)


@pytest.fixture(scope="module")
def recorded(tmp_path_factory):
    workdir = tmp_path_factory.mktemp("truth")
    return workdir, record(SCENARIO, BASE, workdir / "recorded.db")


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_prediction_matches_the_real_run(recorded, case):
    workdir, db = recorded
    r = compare(SCENARIO, BASE, case, workdir, db)
    table = markdown([r], BASE)
    # the case must matter, or the comparison proves nothing
    assert r["real_differs"], "the real run decided exactly as the recorded one\n" + table
    assert abs(r["hash_ratio"]["error"]) <= HASH_RATIO_TOL, table
    assert abs(r["peak_c"]["error"]) <= PEAK_TOL_C, table
    assert len(r["minutes_above"]) == (2 if "TEMP_THRESHOLD" in case.name else 1)
    for m in r["minutes_above"].values():
        grazes = abs(m["degree_minutes_error"]) <= GRAZE_DEGMIN  # hundredths of a degree
        assert grazes or abs(m["error"]) <= max(MINUTES_ABS_TOL, MINUTES_REL_TOL * m["measured"]), (
            table
        )
    assert r["ok"]


def test_the_recorded_settings_predict_the_recording_exactly(recorded):
    """No change, no difference: the same commands at the same polls (the device's report of
    a change may lag a poll; both sides lag alike), so every metric is the recorded one."""
    import sqlite3

    from tempctl.offline.counterfactual import counterfactual

    _, db = recorded
    with sqlite3.connect(db) as conn:
        rep = counterfactual(conn, {})["devices"]["sim-tempctl"]
    rec, cf = rep["recorded"], rep["counterfactual"]
    assert rec["frequency_changes"] > 20  # the model law moved a lot in the heatwave
    for key in ("gh_hours", "frequency_changes", "minutes_above", "max_temp", "mean_frequency"):
        assert cf[key] == rec[key], key
