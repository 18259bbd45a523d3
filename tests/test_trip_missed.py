"""A firmware trip the poller never saw, and learning while the room warms.

Found by ``benchmarks/control_quality.py --seed 1/2`` (heatwave_faults): a 127 °C sensor
glitch trips a v2.15 Gamma (axeos-api.md §9.1) and it recovers within seconds at
F - 100 MHz / V - 100 mV (§9.2), between two 30 s polls. Before the fix tempctl only
adopted the frequency: the voltage stayed 100 mV down for good, a second trip then asked
the regulator for less than its 1.0 V minimum and the core stalled for the rest of the
day (hash 0.38 of the oracle), and a trip while NORMAL left the device below
MAX_FREQUENCY with no row to climb from.
"""

from __future__ import annotations

import sqlite3
import tomllib
from dataclasses import replace

import pytest

from tempctl.config import Settings
from tempctl.core.controller import Controller, Limits, State
from tempctl.core.reading import Reading
from tempctl.resources import scenarios_dir
from tempctl.sim.faults import FaultyDevice
from tempctl.sim.scenario import Faults, load_scenario, parse_scenario
from tempctl.sim.simulate import SIM_EPOCH_MS, SimDevice, SimFirmware, simulate

LIM = Limits(check_interval=30, settle=180, stable_timeframe=1.0)


def reading(t_s: float, temp: float, freq: float, mv: int, **kw) -> Reading:
    base = dict(
        temp=temp,
        frequency=freq,
        actual_frequency=freq,
        core_voltage=mv,
        power=15.0,
        hashrate=freq * 2.04,
        fan_pct=100.0,
        autofan=False,
        uptime_s=int(3600 + t_s),
        version="v2.15.0",
        asic_model="BM1370",
    )
    base.update(kw)
    return Reading("gamma", int(t_s * 1000), **base)


def drive(ctl: Controller, polls):
    """(t, temp, freq, mv) per poll; every command is obeyed by the next poll's values."""
    out = []
    for t, temp, freq, mv in polls:
        d = ctl.step(reading(t, temp, freq, mv), int(t * 1000))
        for c in d.commands:
            d.events.extend(ctl.command_result(c, True, int(t * 1000)).events)
        out.append((t, d))
    return out


def test_the_frequency_a_trip_leaves_is_a_trip_and_its_voltage_comes_back_once_cool():
    ctl = Controller(LIM, "gamma")
    before = [(30.0 * i, 58.0, 575.0, 1150) for i in range(10)]
    after = [(300 + 30.0 * i, 58.0, 475.0, 1050) for i in range(4)]  # F-100, V-100, no flag
    steps = drive(ctl, before + after)
    events = [e for _, d in steps for e in d.events]
    trip = [e for e in events if e.kind == "trip"]
    assert trip and "before trip" in trip[0].message and '"core_voltage": 1150' in trip[0].message
    fields = [c for _, d in steps for c in d.commands if c.kind == "set_fields"]
    assert [dict(c.fields) for c in fields] == [{"coreVoltage": 1150}]
    assert all(c.frequency is None or c.frequency <= 575 for _, d in steps for c in d.commands)


def test_a_hot_chip_keeps_the_lower_voltage_until_it_is_cool():
    ctl = Controller(LIM, "gamma")
    steps = drive(
        ctl,
        [(30.0 * i, 62.5, 575.0, 1150) for i in range(10)]
        + [(300 + 30.0 * i, 62.5, 475.0, 1050) for i in range(4)],
    )
    assert not [c for _, d in steps for c in d.commands if c.kind == "set_fields"]


def test_normal_below_max_after_a_trip_climbs_again():
    ctl = Controller(LIM, "gamma")
    polls = [(30.0 * i, 58.0, 575.0, 1150) for i in range(10)]
    polls += [(300 + 30.0 * i, 58.0, 475.0, 1150) for i in range(20)]
    steps = drive(ctl, polls)
    moved = [d.transition for _, d in steps if d.transition is not None]
    assert [(t.from_state, t.to_state) for t in moved[:2]] == [
        ("NORMAL", "NORMAL"),  # the start
        ("NORMAL", "RECOVERING"),
    ]
    assert "below MAX_FREQUENCY while NORMAL" in moved[1].reason
    resumed = next(t for t, d in steps if d.transition is moved[1])
    assert resumed - 300 >= LIM.settle  # judged for a settle first, like a start below MAX
    assert ctl.current in (State.RECOVERING, State.NORMAL)


def test_a_patch_of_fields_meets_the_same_faults_as_a_frequency_patch():
    fw = SimFirmware(load_scenario("heatwave"), seed=0)
    dev = FaultyDevice(SimDevice(fw, "sim-test", SIM_EPOCH_MS), Faults("5xx=1"), 0)
    fw.advance(600.0)
    outcome, status, error = dev.set_fields({"coreVoltage": 1150})
    assert (outcome, status) == ("failed", 500) and "PATCH" in error
    ok = FaultyDevice(SimDevice(fw, "sim-test", SIM_EPOCH_MS), Faults(""), 0)
    assert ok.set_fields({"coreVoltage": 1100})[0] == "ok"
    assert fw.nvs_mv == 1100


@pytest.mark.parametrize("seed", [1, 2])
def test_the_heat_wave_with_faults_keeps_its_hash(tmp_path, seed):
    db = tmp_path / "hwf.db"
    # the faults' effect, on the quiet sensor issue 12 tuned the law on (pinned by [plant]);
    # the law under real sensor noise is judged by control_quality.py --panel
    data = tomllib.loads((scenarios_dir() / "heatwave_faults.toml").read_text())
    data["plant"] = {"noise_c": 0.06, "spike_rate": 0.0}
    scenario = parse_scenario(data, name="heatwave_faults")
    report = simulate(scenario, ["tempctl"], Settings(), poll_s=30, seed=seed, db=str(db))
    m = report["policies"]["tempctl"]
    assert m["hash_ratio"] >= 0.97 and m["minutes_above"] <= 15, m
    with sqlite3.connect(db) as conn:
        stalled = conn.execute(
            "SELECT count(*) FROM readings WHERE hashrate = 0 AND core_voltage < 1000"
        ).fetchone()[0]
    assert stalled <= 4, stalled  # a stall, if any, lasts a poll or two, not the day


def test_learning_in_a_warming_room_does_not_take_the_warming_for_the_step(tmp_path):
    """The closet warms all day and tempctl steps down 6.25-12.5 MHz at a time (~0.3 W):
    those steps say little about °C/W next to the room's drift, and learning from them
    drove R from the plant's 1.10 to 2.3 °C/W (model.LEARN_MIN_DP)."""
    db = tmp_path / "closet.db"
    # the warming, not the sensor noise, is this test's subject: the quiet sensor (pinned)
    closet = replace(load_scenario("closet"), plant=(("noise_c", 0.06), ("spike_rate", 0.0)))
    simulate(closet, ["tempctl"], Settings(), poll_s=30, db=str(db))
    from tempctl.core.model import ModelParams
    from tempctl.sim.plant import params_for

    with sqlite3.connect(db) as conn:
        rows = conn.execute("SELECT message FROM events WHERE kind = 'model'").fetchall()
    true_r = params_for("BM1370").r_c_per_w_fixed
    prior = ModelParams(r=true_r, k=0.0)
    for (message,) in rows:
        r = ModelParams.from_json(message.split("model=", 1)[1], prior).r
        assert true_r / 1.35 <= r <= true_r * 1.35, message
