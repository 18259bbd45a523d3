"""Scenario files: the shipped ones load and behave; bad ones fail naming file and key."""

from __future__ import annotations

import itertools

import pytest

from tempctl.resources import scenarios_dir
from tempctl.sim.plant import oracle_frequency, params_for, steady_die
from tempctl.sim.scenario import (
    Faults,
    Scenario,
    ScenarioError,
    load_scenario,
    scenario_names,
)

SHIPPED = [
    "autofan",
    "closet",
    "constant",
    "daynight",
    "heatwave",
    "heatwave_faults",
    "steady_30_8",
    "steady_31_5",
    "steady_33_0",
    "week",
]

GOOD = """\
description = "test"
duration_h = 2
ambient = [[0, 20], [1, 30], [2, 25]]

[device]
asic = "BM1370"
firmware = "v2.15.0"
frequency_mhz = 525
core_voltage_mv = 1150

[fan]
mode = "fixed"
pct = 80
"""


def write(tmp_path, text: str, name: str = "s.toml"):
    path = tmp_path / name
    path.write_text(text)
    return path


def test_shipped_scenarios_are_listed():
    assert scenario_names() == SHIPPED


@pytest.mark.parametrize("name", SHIPPED)
def test_every_shipped_file_loads(name):
    s = load_scenario(name)
    assert isinstance(s, Scenario) and s.name == name
    assert s.description and s.duration_s > 0
    assert s.fan_mode in ("fixed", "auto")
    assert s.asic == "BM1370" and s.firmware.startswith("v2.")
    # loading by path gives the same scenario
    assert load_scenario(str(scenarios_dir() / f"{name}.toml")) == s
    # every shipped file explains itself in a comment header
    assert (scenarios_dir() / f"{name}.toml").read_text().startswith(f"# {name}:")
    temps = [s.ambient(t) for t in range(0, int(s.duration_s) + 1, 300)]
    assert all(10.0 < t < 45.0 for t in temps)


def test_heatwave_drives_the_gamma_over_63_and_back():
    s = load_scenario("heatwave")
    p = params_for(s.asic)
    assert (s.frequency_mhz, s.core_voltage_mv, s.fan_mode, s.fan_pct) == (575, 1150, "fixed", 100)
    assert (
        s.ambient(0),
        max(s.ambient(t) for t in range(0, 86400, 600)),
        s.ambient(s.duration_s),
    ) == (28, 38, 30)

    def die(t):
        return steady_die(p, s.frequency_mhz, s.core_voltage_mv, s.ambient(t), s.fan_pct)

    hours = [h / 4 for h in range(24 * 4 + 1)]
    over = [h for h in hours if die(h * 3600) > 63.0]
    assert die(0) < 61.0 and die(s.duration_s) < 63.0
    assert over and 2.5 <= over[0] <= 4 and 14 <= over[-1] <= 16
    assert over == [h for h in hours if over[0] <= h <= over[-1]]  # one hot spell
    # the oracle the replay benchmarks compare against
    oracle = {
        a: oracle_frequency(p, a, 63.0, s.fan_pct, s.core_voltage_mv, s.frequency_mhz)
        for a in (28, 38, 30)
    }
    assert oracle[28] == oracle[30] == 575 and 250 < oracle[38] < 320


def _gamma_die(s: Scenario, mhz: float, t: float) -> float:
    return steady_die(params_for(s.asic), mhz, s.core_voltage_mv, s.ambient(t), s.fan_pct)


def _oracle(s: Scenario, t: float) -> float:
    p = params_for(s.asic)
    return oracle_frequency(p, s.ambient(t), 63.0, s.fan_pct, s.core_voltage_mv, 575.0)


@pytest.mark.parametrize(
    ("name", "ambient", "oracle"),
    [("steady_30_8", 30.8, 568.3), ("steady_31_5", 31.5, 540.7), ("steady_33_0", 33.0, 481.7)],
)
def test_steady_rooms_have_their_oracle_between_second_and_max(name, ambient, oracle):
    s = load_scenario(name)
    assert {s.ambient(t) for t in range(0, int(s.duration_s) + 1, 600)} == {ambient}
    assert (s.frequency_mhz, s.fan_mode, s.fan_pct, s.ambient_noise_c) == (575, "fixed", 100, 0)
    assert _gamma_die(s, 575, 0) > 63.0  # MAX is too hot, so a law has work to do
    assert 400 < _oracle(s, 0) < 575
    assert _oracle(s, 0) == pytest.approx(oracle, abs=0.1)  # the number in the header
    assert f"{oracle} MHz" in s.description


def test_closet_stays_too_hot_for_second_frequency():
    s = load_scenario("closet")
    after = range(5 * 3600, int(s.duration_s) + 1, 300)
    # noise included: 400 MHz (SECOND) is over 63 °C from hour 5 to the end
    assert all(_gamma_die(s, 400, t) > 63.0 for t in after)
    assert _gamma_die(s, 400, s.duration_s) > 66.0 and _oracle(s, s.duration_s) < 300
    assert all(_gamma_die(s, 400, t) < 63.0 for t in range(0, 4 * 3600, 300))


def test_week_is_seven_different_days():
    s = load_scenario("week")
    assert s.duration_s == 7 * 86400 and not s.repeat
    peaks = [max(s.ambient(d * 86400 + h * 600) for h in range(144)) for d in range(7)]
    assert len({round(p) for p in peaks}) >= 5
    assert min(peaks) < 30.6 < max(peaks)  # one day never needs a throttle, others do
    assert max(peaks) > 34.5  # and one needs about SECOND_FREQUENCY


def test_heatwave_faults_is_the_heatwave_plus_faults():
    s, base = load_scenario("heatwave_faults"), load_scenario("heatwave")
    assert s.ambient_points == base.ambient_points and s.firmware == base.firmware
    assert s.faults.reboot_s == (7 * 3600.0,)
    names = {item.split("=")[0] for item in s.faults.requests.split(",")}
    assert names == {"timeout", "5xx", "truncated", "sensor_m1", "sensor_127"}
    assert not base.faults and s.faults


def test_faults_table(tmp_path):
    text = GOOD + '\n[faults]\nrequests = "timeout=0.1, 5xx"\nreboot_h = [1.5, 0.5]\n'
    s = load_scenario(str(write(tmp_path, text)))
    assert s.faults == Faults("timeout=0.1,5xx", (1800.0, 5400.0))


@pytest.mark.parametrize(
    ("table", "key", "match"),
    [
        ('requests = "tornado=0.1"', "faults.requests", "unknown fault"),
        ('requests = "timeout=2"', "faults.requests", "within 0..1"),
        ('requests = "huge=0.1"', "faults.requests", "not simulated"),
        ("requests = 0.1", "faults.requests", "must be a string"),
        ("reboot_h = [3]", "faults.reboot_h[0]", "within 0..2"),
        ("reboot_h = 1", "faults.reboot_h", "list of hours"),
        ("reboots = [1]", "faults.reboots", "unknown key"),
    ],
)
def test_bad_faults_name_file_and_key(tmp_path, table, key, match):
    path = write(tmp_path, GOOD + "\n[faults]\n" + table + "\n")
    with pytest.raises(ScenarioError, match=match) as err:
        load_scenario(str(path))
    assert str(err.value).startswith(f"{path}: {key}: "), str(err.value)


def test_autofan_scenario_saturates_the_fan():
    s = load_scenario("autofan")
    p = params_for(s.asic)
    assert (s.fan_mode, s.temptarget_c, s.fan_pct) == ("auto", 60, 25)
    cool = steady_die(p, s.frequency_mhz, s.core_voltage_mv, s.ambient(0), 100)
    hot = steady_die(p, s.frequency_mhz, s.core_voltage_mv, s.ambient(11 * 3600), 100)
    assert cool < s.temptarget_c < hot  # the PID holds 60 at dawn, full fan cannot at noon


def test_interpolation(tmp_path):
    s = load_scenario(str(write(tmp_path, GOOD)))
    assert s.ambient_points == ((0.0, 20.0), (3600.0, 30.0), (7200.0, 25.0))
    assert s.duration_s == 7200
    assert s.ambient(0) == 20
    assert s.ambient(1800) == pytest.approx(25)
    assert s.ambient(3600) == 30
    assert s.ambient(5400) == pytest.approx(27.5)
    assert s.ambient(7200) == 25
    assert s.ambient(99999) == 25  # holds the last value
    assert s.ambient(-5) == 20


def test_repeat_is_periodic(tmp_path):
    text = GOOD.replace("duration_h = 2", "duration_h = 10\nrepeat = true")
    s = load_scenario(str(write(tmp_path, text)))
    for t in (0, 900, 1800, 3600, 5000):
        assert s.ambient(t + 7200) == pytest.approx(s.ambient(t))
        assert s.ambient(t + 3 * 7200) == pytest.approx(s.ambient(t))
    day = load_scenario("daynight")
    assert day.repeat and day.ambient_points[-1][0] == 86400
    # 24 h period, noise aside: the draft noise is small
    assert abs(day.ambient(16 * 3600) - day.ambient(40 * 3600)) < 1.5


def test_ambient_noise_is_a_function_of_time(tmp_path):
    text = GOOD.replace("ambient = [[0, 20]", "ambient_noise_c = 0.5\nambient = [[0, 20]")
    s = load_scenario(str(write(tmp_path, text)))
    values = [s.ambient(t) for t in range(0, 7200, 30)]
    assert values == [s.ambient(t) for t in range(0, 7200, 30)]  # replays repeat exactly
    clean = [
        load_scenario(str(write(tmp_path, GOOD, "c.toml"))).ambient(t) for t in range(0, 7200, 30)
    ]
    diffs = [a - b for a, b in zip(values, clean, strict=True)]
    assert 0.1 < max(abs(d) for d in diffs) < 3.0
    assert max(abs(a - b) for a, b in itertools.pairwise(diffs)) < 0.5  # no jumps between knots


@pytest.mark.parametrize(
    ("old", "new", "key"),
    [
        ('mode = "fixed"', 'mode = "turbo"', "fan.mode"),
        ("pct = 80", "pct = 180", "fan.pct"),
        ("pct = 80", 'pct = "80"', "fan.pct"),
        ("pct = 80\n", "pct = 80\ntemptarget_c = 90\n", "fan.temptarget_c"),
        ("pct = 80\n", "", "fan.pct"),
        ('asic = "BM1370"', 'asic = "BM9999"', "device.asic"),
        ('firmware = "v2.15.0"', 'firmware = "2.15"', "device.firmware"),
        ("frequency_mhz = 525", "frequency_mhz = 0", "device.frequency_mhz"),
        ("core_voltage_mv = 1150", "core_voltage_mv = 1150.5", "device.core_voltage_mv"),
        ("duration_h = 2", "duration_h = -1", "duration_h"),
        ("duration_h = 2", "", "duration_h"),
        ("[[0, 20], [1, 30], [2, 25]]", "[[0, 20], [2, 30], [1, 25]]", "ambient[2]"),
        ("[[0, 20], [1, 30], [2, 25]]", "[[1, 20], [2, 30]]", "ambient[0]"),
        ("[[0, 20], [1, 30], [2, 25]]", "[[0, 20], [1]]", "ambient[1]"),
        ("[[0, 20], [1, 30], [2, 25]]", "[]", "ambient"),
        ("[[0, 20], [1, 30], [2, 25]]", "[[0, 20], [1, 95]]", "ambient[1]"),
        (
            "duration_h = 2",
            "duration_h = 2\nrepeat = true\nambient_noise_c = -1",
            "ambient_noise_c",
        ),
        ("duration_h = 2", "duration_h = 2\nrepeat = 1", "repeat"),
        ("duration_h = 2", "duration_h = 2\nduraton = 3", "duraton"),
        ("pct = 80", "pct = 80\nspeed = 3", "fan.speed"),
        ("[fan]", "[fans]", "fans"),
    ],
)
def test_bad_file_names_file_and_key(tmp_path, old, new, key):
    assert old in GOOD
    path = write(tmp_path, GOOD.replace(old, new, 1))
    with pytest.raises(ScenarioError) as err:
        load_scenario(str(path))
    msg = str(err.value)
    assert msg.startswith(f"{path}: {key}: "), msg


def test_unknown_key_suggests_the_right_one(tmp_path):
    path = write(tmp_path, GOOD.replace("pct = 80", "pcr = 80"))
    with pytest.raises(ScenarioError, match=r"fan\.pcr: unknown key \(did you mean fan\.pct\?\)"):
        load_scenario(str(path))


def test_missing_table(tmp_path):
    path = write(tmp_path, GOOD.split("[fan]")[0])
    with pytest.raises(ScenarioError, match=r"s\.toml: fan: missing table"):
        load_scenario(str(path))


def test_not_toml_names_the_file(tmp_path):
    path = write(tmp_path, "duration_h = = 2\n")
    with pytest.raises(ScenarioError, match=r"s\.toml: not valid TOML"):
        load_scenario(str(path))


def test_unknown_name_and_missing_path(tmp_path):
    with pytest.raises(ScenarioError, match="no scenario named 'tsunami'.*heatwave"):
        load_scenario("tsunami")
    with pytest.raises(ScenarioError, match="no such file"):
        load_scenario(str(tmp_path / "nope.toml"))


# --- [plant]: the board's physics as data (issue 20) ---------------------------------------------

PANEL = sorted(p.stem for p in (scenarios_dir() / "panel").glob("*.toml"))


def test_plant_table_overrides_the_calibration(tmp_path):
    path = write(
        tmp_path,
        GOOD
        + """
[plant]
c_per_w_scale = 1.6
tau_slow_s = 250
fast_share = 0.4
noise_c = 0.45
spike_rate = 0
p0_w = 6.0
fan_exponent = 0.7
sensors = 2
temp2_offset_c = 1.5

[plant.cooling_loss]
at_h = 1.5
fraction = 0.3333
""",
    )
    s = load_scenario(str(path))
    base = params_for("BM1370")
    p = s.plant_params(base)
    assert p.r_c_per_w_fixed == pytest.approx(1.6 * base.r_c_per_w_fixed)
    assert (p.tau_slow_s, p.fast_share, p.noise_c, p.spike_rate, p.p0_w) == (
        250,
        0.4,
        0.45,
        0.0,
        6.0,
    )
    assert p.fan_effect.exponent == 0.7 and p.fan_effect.still_air_pct == 10.0
    assert (p.sensors, p.temp2_offset_c) == (2, 1.5)
    assert p.k_w == base.k_w  # what the table does not name stays the calibration's
    assert s.cooling_loss == ((5400.0, 0.3333),)
    # an absolute °C/W and a scale: the scale applies to it
    s2 = load_scenario(str(write(tmp_path, GOOD + "[plant]\nc_per_w = 2\nc_per_w_scale = 1.5\n")))
    assert s2.plant_params(base).r_c_per_w_fixed == pytest.approx(3.0)


def test_without_a_plant_table_the_calibration_stands(tmp_path):
    s = load_scenario(str(write(tmp_path, GOOD)))
    assert s.plant == () and s.cooling_loss == ()
    assert s.plant_params(params_for("BM1370")) is params_for("BM1370")


@pytest.mark.parametrize(
    "table, key, match",
    [
        ("[plant]\nnoise = 0.3\n", "plant.noise", r"unknown key \(did you mean plant\.noise_c\?\)"),
        ("[plant]\nnoise_c = -0.1\n", "plant.noise_c", "outside 0..5"),
        ("[plant]\nnoise_c = '0.3'\n", "plant.noise_c", "must be a number"),
        ("[plant]\nnoise_c = true\n", "plant.noise_c", "must be a number"),
        ("[plant]\nsensors = 3\n", "plant.sensors", "outside 1..2"),
        ("[plant]\nsensors = 1.5\n", "plant.sensors", "must be 1 or 2"),
        ("[plant]\nc_per_w_scale = 0\n", "plant.c_per_w_scale", "outside"),
        ("[plant]\nspike_min_c = 5\nspike_max_c = 3\n", "plant.spike_min_c", "must not exceed"),
        ("plant = 3\n", "plant", "must be a table"),
        ("[plant.cooling_loss]\nat_h = 1\n", "plant.cooling_loss.fraction", "missing"),
        (
            "[plant.cooling_loss]\nat_h = 1\nfraction = 1\n",
            "plant.cooling_loss.fraction",
            r"in \(0, 1\)",
        ),
        ("[plant.cooling_loss]\nat_h = 3\nfraction = 0.3\n", "plant.cooling_loss.at_h", "0..2"),
        (
            "[plant.cooling_loss]\nat_h = 1\nfraction = 0.3\nwhen = 2\n",
            "plant.cooling_loss.when",
            "unknown key",
        ),
    ],
)
def test_a_bad_plant_table_names_file_and_key(tmp_path, table, key, match):
    text = (table + GOOD) if table.startswith("plant =") else (GOOD + table)
    path = write(tmp_path, text)
    with pytest.raises(ScenarioError, match=match) as err:
        load_scenario(str(path))
    assert str(err.value).startswith(f"{path}: {key}: "), str(err.value)


@pytest.mark.parametrize("name", PANEL)
def test_panel_plants_load_and_their_oracle_lies_between_second_and_max(name):
    from tempctl.config import Settings
    from tempctl.sim.simulate import oracle

    s = load_scenario(str(scenarios_dir() / "panel" / f"{name}.toml"))
    cfg = Settings()
    best = oracle(s, cfg, s.duration_s).mean_frequency
    assert cfg.second_frequency < best < cfg.max_frequency, (name, best)


def test_the_panel_covers_issue_20s_plants():
    plants = {n: load_scenario(str(scenarios_dir() / "panel" / f"{n}.toml")) for n in PANEL}
    base = params_for("BM1370")

    def params(s):
        return s.plant_params(params_for(s.asic))

    assert any(s.plant == () and s.fan_mode == "fixed" for s in plants.values())  # our Gamma
    assert any(
        params(s).r_c_per_w_fixed == pytest.approx(1.6 * base.r_c_per_w_fixed)
        for s in plants.values()
    )
    assert any(200 <= params(s).tau_slow_s <= 300 for s in plants.values())
    assert {"BM1368", "BM1366"} & {s.asic for s in plants.values()}
    assert any(params(s).sensors == 2 and params(s).temp2_offset_c > 0 for s in plants.values())
    targets = {s.temptarget_c for s in plants.values() if s.fan_mode == "auto"}
    assert {60.0, 65.0} <= targets


def test_the_autofan_oracle_takes_the_duty_the_pid_would_hold():
    """temptarget below the threshold: the PID reaches 100 % before the die reaches the
    threshold; at or above it the PID lets the fan fall to its minimum."""
    from tempctl.config import Settings
    from tempctl.sim.simulate import oracle

    cfg = Settings()
    s60 = load_scenario(str(scenarios_dir() / "panel" / "autofan_60.toml"))
    s65 = load_scenario(str(scenarios_dir() / "panel" / "autofan_65.toml"))
    gamma = params_for("BM1370")
    amb60, amb65 = s60.ambient(0), s65.ambient(0)
    f60 = oracle_frequency(gamma, amb60, cfg.temp_threshold, 100.0, 1150, cfg.max_frequency)
    f65 = oracle_frequency(gamma, amb65, cfg.temp_threshold, 25.0, 1150, cfg.max_frequency)
    assert oracle(s60, cfg, 3600).mean_frequency == pytest.approx(f60, abs=0.01)
    assert oracle(s65, cfg, 3600).mean_frequency == pytest.approx(f65, abs=0.01)
    assert steady_die(gamma, f65, 1150, amb65, 25.0) == pytest.approx(63.0, abs=0.05)
