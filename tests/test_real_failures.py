"""The failures of real devices (issue 20, item 4), each against the emulated firmware.

Every test drives the daemon's controller (``TempctlPolicy``: read, log, step, carry out)
against ``SimFirmware`` on an injected clock, with the failure scheduled through the
simulator's faults (``FaultyDevice``: ``cooling``, ``stuck_s``) or done to the firmware
as a person or the firmware would (a PATCH, its overheat trip). The true die comes from
the plant, not the readings. Each log is re-driven by ``replay --check``.
"""

from __future__ import annotations

import json
import sqlite3
from dataclasses import replace

import pytest
from failure_sim import oracle_mhz, start

from tempctl.config import Settings
from tempctl.core.limits import Limits
from tempctl.sim.scenario import load_scenario
from tempctl.sim.simulate import SIM_EPOCH_MS
from tempctl.store.eventlog import restore

H = 3600.0


def room(ambient: float, hours: float, name: str = "constant", **kw):
    return replace(
        load_scenario(name), ambient_points=((0.0, ambient),), duration_s=hours * H, **kw
    )


def mean_mhz(run, t0: float, t1: float) -> float:
    vals = [f for t, f in run.mhz if t0 <= t <= t1]
    return sum(vals) / len(vals)


def alarms(run, text: str) -> list[tuple[float, str]]:
    return [(t, m) for t, k, m in run.events("alarm") if text in m]


# -- cooling loss ---------------------------------------------------------------------------


def test_cooling_lost_by_a_third_throttles_to_the_new_oracle_and_says_the_cooling_got_worse(
    tmp_path,
):
    """R × 1.5 at hour 3 (a failing fan: the duty it reports is unchanged), 25 °C room."""
    sc, lost = room(25.0, 5.0), 3 * H
    run = start(sc, tmp_path, cooling=((lost, 1.5),))
    run.poll_until(5 * H)
    assert run.fw.overheat_trips == 0
    said = alarms(run, "cooling got worse")
    assert said and lost <= said[0][0] <= lost + 600, said
    # The throttle overshoots (to 250 MHz, 0.84 of the new oracle) and the climb back
    # waits for STABLE_TIMEFRAME: back within 0.95 after ~1.2 h, not 1 h (issue 20's
    # target; the estimator's relearning is issue 20 item 3).
    new_oracle = oracle_mhz(sc, Settings(), 25.0, scale=1.5)
    assert mean_mhz(run, lost + 1.5 * H, lost + 2 * H) >= 0.95 * new_oracle
    assert max(d for t, d in run.die if t >= lost + 600) <= Settings().temp_threshold + 0.5
    assert run.replay_ok()


def test_once_the_model_relearned_the_cooling_the_climb_does_not_wait_a_stable_window(tmp_path):
    """The throttle after the loss picks its level before the model has relearned (the die
    is still rising); once the step has taught the model, the law climbs on its prediction
    (row climb_relearned), once per jump, instead of a STABLE_TIMEFRAME (1 h) at that level."""
    sc, lost = room(25.0, 5.0), 1.5 * H
    run = start(sc, tmp_path, cooling=((lost, 1.5),))
    run.poll_until(lost + H)
    climbs = run.rows(
        "SELECT ts_ms, frequency FROM transitions WHERE device = ? AND reason LIKE ?",
        run.policy.name,
        "the model relearned the cooling%",
    )
    assert len(climbs) == 1, climbs
    at = (climbs[0][0] - SIM_EPOCH_MS) / 1000.0
    assert lost < at < lost + 0.5 * H, at
    run.poll_until(5 * H)
    assert run.fw.overheat_trips == 0
    new_oracle = oracle_mhz(sc, Settings(), 25.0, scale=1.5)
    assert mean_mhz(run, lost + H, 5 * H) >= 0.95 * new_oracle
    assert max(d for t, d in run.die if t >= lost + 600) <= Settings().temp_threshold + 0.5
    assert run.replay_ok()


def test_after_a_trip_the_cooling_caused_nothing_is_restored_blind(tmp_path):
    """R × 3 at hour 3 in a 28 °C room: the firmware trips, a second step-down between two
    polls leaves the Gamma's core unpowered (950 mV, reading -1). 1d92cc0 re-powered it at
    the 1150 mV that tripped while it could not read the die."""
    sc, lost = room(28.0, 5.0), 3 * H
    run = start(sc, tmp_path, cooling=((lost, 3.0),))
    run.poll_until(5 * H)
    assert run.fw.overheat_trips >= 1
    sent = run.rows(
        "SELECT c.ts_ms, c.payload, r.temp FROM commands c JOIN readings r "
        "ON r.device = c.device AND r.ts_ms = c.ts_ms WHERE c.kind = 'set_fields'"
    )
    limit = Settings().temp_threshold - Settings().hysteresis
    blind = [(ts, p, temp) for ts, p, temp in sent if temp is None or temp > limit]
    assert not blind, blind
    assert alarms(run, "not re-powered blind") or alarms(run, "second firmware overheat trip")
    assert run.replay_ok()


def test_critical_at_the_floor_is_said_once_not_every_poll(tmp_path):
    """Cooling failing over 40 min (R up to x 2.3) with TEMPCTL_MIN_FREQUENCY=400: the floor
    holds 71 °C, over
    TEMPCTL_CRITICAL and under the firmware's 75. Nothing tempctl may command is safer;
    1d92cc0 repeated 'critical' every poll for two hours (235 alarms) and said no more.
    No sensor spikes here: a +4 °C spike at 71 °C is a firmware trip, another test's case."""
    sc, lost = room(28.0, 5.0, plant=(("spike_rate", 0.0),)), 3 * H
    failing = tuple((lost + k * 300, 1 + 1.3 * (k + 1) / 8) for k in range(8))
    run = start(sc, tmp_path, Settings(min_frequency=400), cooling=failing)
    run.poll_until(5 * H)
    assert run.fw.overheat_trips == 0
    crit = [(t, m) for t, m in alarms(run, "critical") if t > lost]
    assert 1 <= len(crit) <= 3, crit[:5]
    assert any("at the floor" in m and "cooling got worse" in m for t, m in crit), crit
    assert min(f for t, f in run.mhz if t > lost + 600) >= 400  # never below the user's range
    assert run.replay_ok()


def test_a_second_trip_within_the_hour_is_not_undone(tmp_path):
    """The first trip's V - 100 mV comes back once the chip is cool; a second trip 25 min
    later stays: the firmware's step-down is the last protection. 1d92cc0 undid both."""
    sc = room(25.0, 2.0)
    run = start(sc, tmp_path)
    trip = lambda fw: fw.force_overheat()  # noqa: E731
    run.poll_until(2 * H, actions=[(0.5 * H, trip), (0.5 * H + 25 * 60, trip)])
    assert run.fw.overheat_trips == 2
    restores = run.rows("SELECT ts_ms, payload FROM commands WHERE kind = 'set_fields'")
    assert len(restores) == 1, restores  # the first trip's only
    assert run.fw.nvs_mv == 1150 - 100
    assert alarms(run, "second firmware overheat trip")
    assert run.replay_ok()


# -- the firmware's 400 MHz rule -------------------------------------------------------------


def test_the_firmware_s_400_mhz_after_a_trip_at_200_or_less_is_the_firmware_s(tmp_path):
    """v2.11+ writes F - 100 after a trip, or 400 MHz when F - 100 <= 100 (axeos-api.md
    §9.2): at 150 MHz a trip *raises* the frequency. 1d92cc0 logged it as a user's. The
    trip comes before the law's first climb, at its floor, so it sends nothing during it."""
    sc = room(28.0, 1.0, frequency_mhz=150)
    limits = dict(min_frequency=150, max_frequency=175, first_frequency=162.5)
    run = start(sc, tmp_path, Settings(second_frequency=150, **limits))
    run.poll_until(20 * 60, actions=[(1, lambda fw: fw.force_overheat())])
    changes = [m for t, k, m in run.events("frequency_change")]
    assert any("-> 400 MHz" in m for m in changes), changes
    assert all("by firmware" in m for m in changes if "-> 400 MHz" in m), changes
    assert run.fw.nvs_mhz <= 175  # and tempctl takes it back into the range
    assert run.replay_ok()


# -- trip restore -----------------------------------------------------------------------------


def test_a_poll_during_the_trip_ramp_down_is_not_the_before_trip_settings(tmp_path):
    """v2.14+ turns autofan off and ramps the PLL down before it shows the trip; a poll
    in that second was stored as the 'before trip' settings, so autofan never came back."""
    sc = room(22.0, 2.0, name="autofan", frequency_mhz=525)
    run = start(sc, tmp_path)
    trip_at = 20 * 60 - 0.5  # half a second before a poll: the poll meets the ramp
    run.poll_until(H, actions=[(trip_at, lambda fw: fw.force_overheat())])
    before = [m for t, k, m in run.events("trip") if m.startswith("before trip")]
    assert before and json.loads(before[0][len("before trip ") :])["autofan"] is True, before
    fields = [
        json.loads(p) for (p,) in run.rows("SELECT payload FROM commands WHERE kind = 'set_fields'")
    ]
    assert {"autofanspeed": 1} in [
        {k: v for k, v in f.items() if k == "autofanspeed"} for f in fields
    ]
    assert run.fw.autofan
    assert run.replay_ok()


def test_a_voltage_and_fan_the_user_sets_after_a_trip_are_theirs(tmp_path):
    """After the trip the chip stays warm (hysteresis 10 °C) until the room cools at 1.5 h;
    meanwhile the user sets 1100 mV and a manual fan of 80 %. 1d92cc0 restored its own
    'before trip' 1150 mV and autofan over them once the chip was cool."""
    sc = replace(
        load_scenario("autofan"),
        ambient_points=((0.0, 28.0), (1.5 * H, 28.0), (1.6 * H, 15.0)),
        duration_s=3 * H,
        frequency_mhz=525,
    )
    run = start(sc, tmp_path, Settings(hysteresis=10.0))

    def user(fw):
        status, _, _ = fw.patch(b'{"coreVoltage": 1100, "autofanspeed": 0, "manualFanSpeed": 80}')
        assert status == 200

    run.poll_until(3 * H, actions=[(0.5 * H, lambda fw: fw.force_overheat()), (0.75 * H, user)])
    assert run.fw.overheat_trips == 1
    assert run.fw.nvs_mv == 1100 and not run.fw.autofan and run.fw.manual_fan == 80
    kept = " ".join(m for t, k, m in run.events("trip") if "by the user" in m)
    assert "1100 mV" in kept and "fan 80" in kept, kept
    # A restart at 1.2 h restores the same intent: the log as a daemon stopped then left it.
    conn = sqlite3.connect(":memory:")
    with sqlite3.connect(run.db) as src:
        src.backup(conn)
    cut = SIM_EPOCH_MS + int(1.2 * H * 1000)
    for (name,) in conn.execute("SELECT name FROM sqlite_master WHERE type = 'trigger'").fetchall():
        conn.execute(f"DROP TRIGGER {name}")  # the copy only: the log itself is append-only
    for table in ("readings", "transitions", "commands", "events"):
        conn.execute(f"DELETE FROM {table} WHERE ts_ms > ?", (cut,))
    snap = restore(conn, run.policy.name)
    conn.close()
    left = json.loads(snap.before_trip)
    assert not {"core_voltage", "autofan", "fan"} & set(left), left
    assert run.replay_ok()


# -- stuck sensor -------------------------------------------------------------------------------


def test_a_stuck_sensor_is_seen_by_the_power_and_the_law_holds_low(tmp_path):
    """The heat wave (28 -> 38 °C) with the temperature frozen from hour 2: the die warms
    with the room while the reading does not; its leakage shows in the power. 1d92cc0 ran
    the die to ~70 °C on a reading of ~60."""
    sc = load_scenario("heatwave")
    stuck_at = 2 * H
    run = start(sc, tmp_path, stuck_s=stuck_at)
    run.poll_until(10 * H)
    said = alarms(run, "sensor stuck")
    assert len(said) == 1 and said[0][0] <= 5 * H, said
    settle = Settings().settle
    after = [d for t, d in run.die if t >= said[0][0] + settle]
    assert max(after) <= Settings().temp_threshold + 0.5, max(after)
    floor = Limits().lowest
    assert max(f for t, f in run.mhz if t >= said[0][0] + settle) <= floor
    down = run.rows(
        "SELECT count(*) FROM transitions WHERE reason LIKE 'temperature sensor stuck%'"
    )
    assert down[0][0] == 1
    assert run.replay_ok()


SUPRA = dict(asic="BM1368", frequency_mhz=490, core_voltage_mv=1166)  # 1 °C internal sensor


@pytest.mark.parametrize(
    "name, board, threshold",
    [
        ("heatwave", {}, 63.0),
        ("autofan", {}, 63.0),
        ("closet", {}, 63.0),
        ("steady_31_5", SUPRA, 63.0),  # one value for a whole day: the power does not move
        ("heatwave", SUPRA, 55.0),  # the law tracks the warming room at a 1 °C step
    ],
)
def test_a_real_sensor_and_intact_cooling_raise_no_alarm(tmp_path, name, board, threshold):
    """Quantised, held between refreshes, and with autofan's PID holding it at temptarget:
    a moving sensor repeats values, but never while the power says the die moved. And
    rooms that warm (the heat wave, the closet) do not look like failing cooling."""
    run = start(replace(load_scenario(name), **board), tmp_path, Settings(temp_threshold=threshold))
    run.poll_until(24 * H)
    assert not alarms(run, "sensor stuck")
    assert not alarms(run, "cooling got worse")


# -- temptarget ---------------------------------------------------------------------------------


@pytest.mark.parametrize("temptarget", [63, 65])
def test_autofan_holding_the_die_above_the_threshold_does_not_ride_the_law_to_the_floor(
    tmp_path, temptarget
):
    """The fan PID slows the fan until the die sits at temptarget whatever the frequency:
    1d92cc0 throttled to the floor (231 MHz) with the die at 65 °C and the fan at 27 %."""
    sc = room(25.0, 4.0, name="autofan", temptarget_c=temptarget, frequency_mhz=575)
    run = start(sc, tmp_path)
    run.poll_until(4 * H)
    best = oracle_mhz(sc, Settings(), 25.0)
    assert mean_mhz(run, 2 * H, 4 * H) >= 0.97 * best
    notes = [m for t, k, m in run.events("note") if "temptarget" in m]
    assert len(notes) == 1, notes
    assert run.fw.overheat_trips == 0
    assert run.replay_ok()


# -- the emulator's cooling failure ---------------------------------------------------------------


def test_the_emulator_schedules_a_cooling_failure_over_http():
    """POST /_emulator/cooling {"scale": s}: the die runs hotter at the same settings while
    the fan duty the device reports stays what it was (a failing fan, issue 20)."""
    import requests

    from tempctl.core.clock import FakeClock
    from tempctl.sim.emulator import Emulator

    clock = FakeClock()
    with Emulator("constant", clock=clock.monotonic) as emu:
        url = emu.urls[0]

        def state():
            return requests.get(url + "/_emulator/state", timeout=5).json()

        clock.advance(600)
        emu.sync()
        before = state()
        fan = requests.get(url + "/api/system/info", timeout=5).json()["fanspeed"]
        r = requests.post(url + "/_emulator/cooling", json={"scale": 1.5}, timeout=5)
        assert r.status_code == 200 and r.json() == {"scale": 1.5}
        bad = requests.post(url + "/_emulator/cooling", json={"scale": "x"}, timeout=5)
        assert bad.status_code == 400
        clock.advance(600)
        emu.sync()
        after = state()
        assert after["die_c"] > before["die_c"] + 5
        assert after["fan_pct"] == before["fan_pct"]
        assert requests.get(url + "/api/system/info", timeout=5).json()["fanspeed"] == fan
