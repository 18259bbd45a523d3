"""The firmware model alone: pure, time-driven, no HTTP (tempctl/firmware.py).

References are to shared/reference/axeos-api.md. Time is the device's own clock, moved
with ``advance``; nothing sleeps.
"""

from __future__ import annotations

import json
import re
from dataclasses import replace
from itertools import pairwise

import pytest

from tempctl.sim.firmware import BODIES_DIR, TEMPLATES, Firmware, dumps, version_of
from tempctl.sim.scenario import load_scenario

CONSTANT = load_scenario("constant")  # Gamma, v2.15.0, 575 MHz / 1150 mV, fan 100 %, 28 °C


def make(version="v2.15.0", asic="BM1370", seed=0, **scenario):
    return Firmware(
        replace(CONSTANT, **scenario),
        firmware=version,
        asic=asic,
        seed=seed,
        restart_downtime_s=5.0,
        boot_s=3.0,
    )


def run(fw, until, step=0.1, probe=None):
    """Advance in small steps; collect probe(fw) after each one."""
    out = []
    t = fw.t
    while t < until - 1e-9:
        t = min(until, t + step)
        fw.advance(t)
        if probe:
            out.append(probe(fw))
    return out


def heat_until_trip(fw, shift=25.0, limit_s=600.0):
    fw.ambient_shift_c = shift
    start = fw.t
    while fw.overheat_trips == 0:
        assert fw.t - start < limit_s, "never tripped"
        fw.advance(fw.t + 0.5)
    fw.ambient_shift_c = 0.0  # the room recovers; only the firmware's own sequence remains
    return fw.t


# --- bodies: layout, number formatting, key sets -------------------------------------------------


@pytest.mark.parametrize("name", [name for _, name in TEMPLATES])
def test_cjson_serialiser_reproduces_reference_bodies_byte_for_byte(name):
    # §2: TAB pretty-print <= v2.13, compact v2.14+; float tails and 7-decimal rounding as printed.
    raw = (BODIES_DIR / name).read_text()
    assert dumps(json.loads(raw), pretty=not raw.startswith('{"')) == raw


PROFILES = [
    ("v2.1.10", "BM1366"),
    ("v2.4.5", "BM1368"),
    ("v2.10.1", "BM1370"),
    ("v2.13.2", "hex"),
    ("v2.15.0", "BM1370"),
]


def kind(value):
    return (
        "number"
        if isinstance(value, (int, float)) and not isinstance(value, bool)
        else type(value).__name__
    )


@pytest.mark.parametrize(("profile", "template"), list(zip(PROFILES, [n for _, n in TEMPLATES])))
def test_info_has_the_generations_key_set_order_and_types(profile, template):
    fw = make(*profile)
    info = fw.info()
    ref = json.loads((BODIES_DIR / template).read_text())
    assert list(info) == list(ref)
    assert {k: kind(v) for k, v in info.items()} == {k: kind(v) for k, v in ref.items()}
    assert info["version"] == profile[0]
    assert json.loads(fw.info_bytes(info)) == info  # the text parses back to the same dict


def test_board_follows_the_asic_not_the_template():
    # v2.13.2's template is a Hex; asked for a BM1370 it is a single-chip Gamma (§10)
    info = make("v2.13.2", "BM1370").info()
    assert (info["ASICModel"], info["boardVersion"], info["smallCoreCount"]) == (
        "BM1370",
        "601",
        2040,
    )
    assert len(info["hashrateMonitor"]["asics"]) == 1 and info["fan2rpm"] == 0
    assert info["temp2"] == -1  # single sensor, v2.11+ (§10)
    assert make("v2.10.1").info()["temp2"] == 0  # 0 in v2.10


def test_number_formatting_per_generation():
    old = make("v2.10.1").info_bytes().decode()
    assert old.startswith('{\n\t"power":\t') and "\n" in old
    power = re.search(r'"power":\t([0-9.]+)', old)[1]
    assert len(power.split(".")[1]) > 7  # raw float->double tail (§2)
    mid = make("v2.13.2", "hex").info_bytes().decode()
    decimals = [len(m) for m in re.findall(r":\t-?\d+\.(\d+)", mid)]
    assert decimals and max(decimals) <= 7  # v2.12+ rounds to 7 places
    new = make("v2.15.0", fan_mode="auto", fan_pct=25, frequency_mhz=450).info_bytes().decode()
    assert "\n" not in new and "\t" not in new and new.startswith('{"power":')
    fan = re.search(r'"fanspeed":([0-9.]+)', new)[1]
    assert float(fan) != round(float(fan)) and len(fan.split(".")[1]) > 7  # unrounded in v2.14+


def test_version_of():
    assert version_of("v2.13.0-12-gabc") == (2, 13, 0)
    assert version_of("2.15.0") == (2, 15, 0)
    with pytest.raises(ValueError, match="not a firmware version"):
        version_of("latest")


# --- frequency: ramp timing and live vs restart -----------------------------------------------


def test_frequency_ramp_v215_steps_of_6_25_mhz_every_100_ms():
    fw = make("v2.15.0", frequency_mhz=525)
    assert fw.patch(b'{"frequency": 400}') == (200, "text/html", b"")
    t0 = fw.t
    assert fw.info()["frequency"] == 400  # the setting shows at once (§5.3)
    trace = run(fw, t0 + 3.0, step=0.05, probe=lambda f: (round(f.t - t0, 2), f.actual_mhz))
    changes = [(t, f) for (_, prev), (t, f) in pairwise([(0.0, 525.0)] + trace) if f != prev]
    first_t = changes[0][0]
    assert first_t <= 0.1 + 0.1 + 1e-6  # <= one 100 ms loop of latency, then the first step
    assert [f for _, f in changes] == [525 - 6.25 * k for k in range(1, 20)] + [400]
    gaps = {round(b[0] - a[0], 2) for a, b in pairwise(changes)}
    assert gaps == {0.1}
    assert changes[-1][0] - first_t == pytest.approx(1.9)  # 20 steps: about 2 s (§5.3)
    assert fw.info()["actualFrequency"] == 400


def test_ramp_latency_is_one_power_loop_on_v213():
    fw = make("v2.13.2", frequency_mhz=525)
    fw.patch(b'{"frequency": 500}')
    t0 = fw.t
    trace = run(fw, t0 + 4.0, step=0.05, probe=lambda f: (f.t - t0, f.actual_mhz))
    start = next(t for t, f in trace if f != 525)
    assert 0.0 < start <= 1.8 + 0.1 + 1e-6  # v2.7-v2.13 loop period 1.8 s (§4.3)
    end = next(t for t, f in trace if f == 500)
    assert end - start == pytest.approx(0.3, abs=1e-6)  # 4 steps, 100 ms apart


@pytest.mark.parametrize(
    ("version", "asic", "live"),
    [
        ("v2.1.10", "BM1366", False),  # <= v2.1.10: only at boot
        ("v2.4.5", "BM1368", True),  # v2.2.0+: live
        ("v2.10.1", "BM1397", False),  # Max: no live path before v2.12
        ("v2.12.0", "BM1397", True),
        ("v2.13.2", "hex", True),
        ("v2.15.0", "BM1370", True),
    ],
)
def test_live_change_vs_restart_needed(version, asic, live):
    fw = make(version, asic, frequency_mhz=485)
    fw.patch(b'{"frequency": 450}')
    run(fw, fw.t + 10, step=0.5)
    assert fw.info()["frequency"] == 450  # stored either way
    assert fw.actual_mhz == (450 if live else 485)
    if not live:
        fw.restart()
        run(fw, fw.t + 1 + 5 + 3 + 8, step=0.5)  # reply, downtime, boot, ramp from 50
        assert fw.actual_mhz == 450


def test_v22_to_v25_ramp_on_other_chips_starts_at_56_25_mhz():
    fw = make("v2.4.5", "BM1370", frequency_mhz=525)
    fw.patch(b'{"frequency": 500}')
    trace = run(fw, fw.t + 3, step=0.05, probe=lambda f: f.actual_mhz)
    assert 56.25 + 6.25 in trace  # §5.3 caveat: the shared BM1368 ramp starts from 56.25


def test_voltage_outside_the_regulator_window_is_stored_not_applied():
    fw = make("v2.15.0")
    fw.patch(b'{"coreVoltage": 2500}')
    run(fw, fw.t + 2)
    info = fw.info()
    assert info["coreVoltage"] == 2500 and info["coreVoltageActual"] < 1200  # §10


# --- overheat sequences (§9.2, §9.3) ---------------------------------------------------------


def test_overheat_v215_auto_recovery_with_penalty_and_sticky_fan():
    fw = make("v2.15.0", fan_mode="auto", fan_pct=25, frequency_mhz=575)
    uptime0 = fw.info()["uptimeSeconds"]
    t_trip = heat_until_trip(fw)
    seen = run(fw, t_trip + 60, step=0.5, probe=lambda f: (f.t - t_trip, f.info()))
    assert all(i["overheat_mode"] == 0 for _, i in seen)  # practically invisible on v2.14+
    assert all(
        i["autofanspeed"] == 0 and i["manualFanSpeed"] == 100 and i["fanspeed"] == 100
        for _, i in seen
    )
    stopped = [i for t, i in seen if 9 < t < 29]  # ramp to 50 takes (575-50)/6.25 x 0.1 s
    assert stopped and all(
        i["actualFrequency"] == 50
        and i["hashRate"] == 0
        and i["expectedHashrate"] == 0
        and i["frequency"] == 575
        for i in stopped
    )
    recovered = [t for t, i in seen if i["frequency"] == 475]
    assert recovered and 30 <= recovered[0] <= 36  # >= 6 x 5 s cool-down
    last = seen[-1][1]
    assert (last["frequency"], last["coreVoltage"]) == (475, 1050)  # F-100, V-100
    assert last["actualFrequency"] == 475 and last["hashRate"] > 0
    assert fw.restarts == 0 and last["uptimeSeconds"] > uptime0  # live re-init, no reboot
    run(fw, fw.t + 600, step=5)
    assert fw.info()["fanspeed"] == 100 and fw.info()["autofanspeed"] == 0  # still sticky


def test_overheat_v213_shows_overheat_mode_and_freezes_temp():
    fw = make("v2.13.2", "BM1370")
    t_trip = heat_until_trip(fw)
    seen = run(fw, t_trip + 45, step=0.5, probe=lambda f: (f.t - t_trip, f.info()))
    cooling = [i for t, i in seen if t < 29]
    assert all(i["overheat_mode"] == 1 for i in cooling)
    assert len({i["temp"] for i in cooling}) == 1 and cooling[0]["temp"] > 75  # frozen
    assert all(i["expectedHashrate"] == 0 for i in cooling)
    after = seen[-1][1]
    assert after["overheat_mode"] == 0 and after["frequency"] == 475
    assert after["coreVoltage"] == 1050 and fw.restarts == 0


def test_overheat_v210_latches_at_50_mhz_after_a_crash_reboot():
    fw = make("v2.10.1", fan_mode="auto", fan_pct=25)
    t_trip = heat_until_trip(fw)
    assert not fw.reachable() and fw.restarts == 1  # exit() -> crash reboot
    run(fw, t_trip + 600, step=1.0)
    info = fw.info()
    assert (info["frequency"], info["coreVoltage"], info["overheat_mode"]) == (50, 1000, 1)
    assert (info["autofanspeed"], info["fanspeed"]) == (0, 100)
    assert fw.actual_mhz == 50 and info["uptimeSeconds"] <= 600  # latched, hashing at a fraction
    # only a user/daemon PATCH gets it out (§9.2)
    fw.patch(b'{"frequency": 525, "coreVoltage": 1150, "overheat_mode": 0, "autofanspeed": 1}')
    run(fw, fw.t + 15, step=0.5)
    info = fw.info()
    assert (info["frequency"], info["overheat_mode"], fw.actual_mhz) == (525, 0, 525)


def test_sensor_reading_127_trips_like_a_real_overheat():
    fw = make("v2.15.0")
    fw.inject_temp(127.0)  # EMC2101 diode open: logged, not filtered (§10)
    assert fw.overheat_trips == 1 and fw.phase == "cooldown"
    fw.inject_temp(-1.0)  # while stopped nothing more happens
    assert fw.overheat_trips == 1


# --- fan control and the thermal scenarios -------------------------------------------------------


def test_autofan_pid_holds_60_until_the_fan_saturates():
    fw = Firmware(load_scenario("autofan"), seed=1)  # 20 -> 34 -> 20 °C room, temptarget 60
    samples = []
    for k in range(1, 24 * 12 + 1):  # every 5 min of a day
        fw.advance(k * 300.0)
        samples.append((fw.ambient_c(), fw.plant.die_c, fw.fan_pct, fw.info()["temp"]))
    regulating = [s for s in samples if s[2] < 99.0]
    saturated = [s for s in samples if s[2] >= 100.0]
    assert len(regulating) > 100 and len(saturated) > 20
    worst = max(abs(die - 60.0) for _, die, _, _ in regulating)
    assert worst < 0.5, f"PID let the die wander {worst:.2f} °C from 60"
    # the readings show it, scattered by the sensor's noise (rare spikes aside)
    temps = [temp for *_, temp in regulating]
    assert abs(sum(temps) / len(temps) - 60.0) < 0.15
    misread = sorted(abs(temp - die) for _, die, _, temp in regulating)
    assert misread[len(misread) * 9 // 10] <= 2 * fw.params.noise_c + fw.params.temp_step_c
    assert max(die for _, die, _, _ in saturated) > 63.0  # past saturation the room wins
    assert min(fan for _, _, fan, _ in regulating) < 80.0  # and it does move the fan


def test_autofan_pid_recovers_from_an_ambient_step():
    fw = Firmware(load_scenario("autofan"), seed=2)
    fw.ambient_shift_c = 3.0
    trace = run(fw, 600, step=5.0, probe=lambda f: f.plant.die_c)
    assert max(trace) < 62.5 and abs(trace[-1] - 60.0) < 0.3


def test_heatwave_at_575_fixed_fan_goes_above_63_in_the_hot_part():
    fw = Firmware(load_scenario("heatwave"), seed=3)
    temps = {}
    for hour in (1, 8, 24):
        fw.advance(hour * 3600.0)
        temps[hour] = fw.info()["temp"]
    assert temps[1] < 63.0 < temps[8]
    assert temps[24] < 63.0
    assert fw.overheat_trips == 0 and fw.actual_mhz == 575  # hot, but under the 75 °C trip


def test_a_day_of_device_time_is_cheap():
    import time

    fw = Firmware(load_scenario("heatwave"))
    t = time.perf_counter()
    fw.advance(24 * 3600.0)
    assert time.perf_counter() - t < 3.0


# --- restart, pause, determinism, statistics, asic ---------------------------------------------


@pytest.mark.parametrize(
    ("version", "status", "ctype", "body"),
    [
        ("v2.1.5", 0, "", b""),  # no reply, the connection drops (§6)
        ("v2.10.1", 200, "text/html", b"System will restart shortly."),
        ("v2.12.0", 200, "text/plain", b"System will restart shortly."),
        ("v2.15.0", 200, "application/json", b'{"message":"System will restart shortly."}'),
    ],
)
def test_restart_reply_by_version(version, status, ctype, body):
    assert make(version, "BM1366").restart() == (status, ctype, body)


def test_restart_downtime_then_boot_phase():
    fw = make("v2.15.0", fan_mode="auto", fan_pct=25)
    fw.restart()
    fw.advance(fw.t + 0.9)
    assert fw.reachable()  # the handler waits 1 s first
    t_down = fw.t + 0.1
    fw.advance(t_down + 4.9)
    assert not fw.reachable()
    fw.advance(t_down + 5.2)
    info = fw.info()
    assert fw.reachable() and info["temp"] == -1 and info["hashRate"] == 0
    assert info["fanspeed"] == 70 and info["uptimeSeconds"] <= 6  # 70 % "startup" duty
    assert info["resetReason"] == "Software reset via esp_restart"
    assert "hashrateMonitor" not in info  # omitted before ASIC init (v2.14+)
    fw.advance(t_down + 5 + 3 + 0.5)
    assert 50 < fw.info()["actualFrequency"] < 575  # ramping from 50 MHz
    fw.advance(t_down + 5 + 3 + 10)
    assert fw.info()["actualFrequency"] == 575 and fw.info()["temp"] > 0


def test_pause_and_resume_v214():
    fw = make("v2.15.0")
    assert fw.pause()
    run(fw, fw.t + 10)
    info = fw.info()
    assert info["miningPaused"] is True and info["actualFrequency"] == 50
    assert info["fanspeed"] == 30 and info["temp"] == -1 and info["hashRate"] == 0
    assert fw.resume()
    run(fw, fw.t + 3 + 9)
    assert fw.info()["miningPaused"] is False and fw.actual_mhz == 575
    assert not make("v2.13.2").pause()  # no such endpoint before v2.14


def test_same_seed_and_calls_give_the_same_bodies():
    def session(seed):
        fw = make("v2.10.1", seed=seed, fan_mode="auto", fan_pct=25)
        bodies = []
        for k in range(20):
            fw.advance(fw.t + 7.3)
            if k == 5:
                fw.patch(b'{"frequency": 500}')
            bodies.append(fw.info_bytes())
        return bodies

    assert session(4) == session(4)
    assert session(4) != session(5)


def test_statistics_ring():
    assert make("v2.4.5", "BM1368").statistics() is None  # no endpoint before v2.8
    fw = make("v2.15.0")
    assert fw.statistics()["statistics"] == []  # statsFrequency 0: recording is off
    fw.patch(b'{"statsFrequency": 10}')
    run(fw, fw.t + 3600, step=5)
    stats = fw.statistics("asicTemp,power")
    assert stats["labels"] == ["asicTemp", "power", "timestamp"]
    assert 355 <= len(stats["statistics"]) <= 361
    stamps = [row[-1] for row in stats["statistics"]]
    assert stamps == sorted(stamps) and stamps[-1] <= stats["currentTimestamp"]
    run(fw, fw.t + 6 * 3600, step=30)
    assert len(fw.statistics()["statistics"]) == 720  # ring limit (§8)
    old = make("v2.10.1").statistics()
    assert len(old["labels"]) == 12  # v2.8-v2.10: 12 fixed columns


def test_asic_endpoint_by_version():
    assert make("v2.6.0").asic() is None
    assert list(make("v2.8.0").asic()) == [
        "ASICModel",
        "defaultFrequency",
        "frequencyOptions",
        "defaultVoltage",
        "voltageOptions",
    ]
    new = make("v2.15.0").asic()
    assert list(new) == [
        "ASICModel",
        "deviceModel",
        "swarmColor",
        "asicCount",
        "hashDomains",
        "defaultFrequency",
        "frequencyOptions",
        "defaultVoltage",
        "voltageOptions",
    ]
    assert (new["defaultFrequency"], new["frequencyOptions"][-1]) == (525, 625)


def test_second_trip_stalls_a_gamma_on_v213_too():
    # §9.2/§14: v2.11-v2.13 cut the core at once; 1150 -> 1050 -> 950 mV, below the TPS546's
    # 1.0 V minimum, so the second recovery leaves the device answering but not hashing.
    fw = Firmware(load_scenario("constant"), firmware="v2.13.2", asic="BM1370")
    for trips in (1, 2):
        assert fw.force_overheat()
        fw.advance(fw.t + 60)
        assert fw.overheat_trips == trips
    body = fw.info()
    assert (body["coreVoltage"], body["frequency"], body["hashRate"]) == (950, 375, 0)
    assert fw.state()["stalled"] and fw.reachable()
    assert fw.patch(b'{"coreVoltage": 1100}')[0] == 200
    fw.advance(fw.t + 20)
    assert fw.info()["hashRate"] > 0 and not fw.state()["stalled"]
