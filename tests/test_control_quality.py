"""The control-quality benchmark's measuring code: metrics, faults, targets, table.

Not the benchmark's numbers (those are the law's business): each metric is checked on a
run whose answer is known from its construction or computed here another way.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

from tempctl.config import Settings
from tempctl.core.tally import Tally
from tempctl.sim.faults import FaultyDevice
from tempctl.sim.policies import NullSink, make_policy
from tempctl.sim.scenario import Faults, load_scenario
from tempctl.sim.simulate import SIM_EPOCH_MS, SimDevice, SimFirmware, Trace, run_policy, simulate

ROOT = Path(__file__).resolve().parent.parent


def _load_benchmark():
    spec = importlib.util.spec_from_file_location(
        "control_quality", ROOT / "benchmarks" / "control_quality.py"
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


cq = _load_benchmark()

# A room that steps from 28 to 33 °C: a Gamma at 575 MHz passes 63 °C at ~30.6 °C.
STEP = """
description = "test: 28 °C, then 33 °C"
duration_h = 2
ambient = [[0, 28], [0.5, 28], [0.75, 33], [2, 33]]

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
def step_room(tmp_path_factory):
    path = tmp_path_factory.mktemp("cq") / "step.toml"
    path.write_text(STEP)
    return str(path)


# -- Tally: after the first settle --------------------------------------------------------


def constructed(tally: Tally, cut_at_s: float | None = None) -> None:
    """10 s samples: 60 °C to 600 s, 64 °C to 900 s, 62 °C to 1200 s, 63.5 °C to 1320 s."""
    for i in range(133):
        t = i * 10
        if cut_at_s is not None and t == cut_at_s:
            tally.start_settle(t * 1000)
        temp = 60.0 if t <= 600 else 64.0 if t <= 900 else 62.0 if t <= 1200 else 63.5
        tally.add(t * 1000, temp=temp)


def test_first_settle_starts_at_the_first_hot_sample():
    tally = Tally(threshold=63.0, settle_s=185.0)  # off the 10 s grid: a sample counts in part
    constructed(tally)
    m = tally.result()
    # hot: 610..900 (30 samples of 10 s) and 1210..1320 (12 samples)
    assert m["minutes_above"] == pytest.approx((300 + 120) / 60)
    assert m["degree_minutes_above"] == pytest.approx((300 * 1.0 + 120 * 0.5) / 60)
    assert m["pct_time_above"] == pytest.approx(100 * 420 / 1320, abs=1e-3)
    # first hot sample at 610 s -> settled at 795 s; after it: 5 s of the sample at 800,
    # 810..900 (100 s) at 64 °C and 1210..1320 (120 s) at 63.5 °C
    assert m["settled_at_hours"] == pytest.approx(795 / 3600, abs=1e-4)
    assert m["minutes_above_after_settle"] == pytest.approx((105 + 120) / 60, abs=1e-3)
    assert m["degree_minutes_above_after_settle"] == pytest.approx((105 + 60) / 60, abs=1e-3)
    assert m["max_temp_after_settle"] == 64.0


def test_an_earlier_cut_starts_the_settle_and_a_later_hot_sample_does_not_move_it():
    tally = Tally(threshold=63.0, settle_s=180.0)
    constructed(tally, cut_at_s=300)
    m = tally.result()
    assert m["settled_at_hours"] == pytest.approx(480 / 3600, abs=1e-4)
    assert m["minutes_above_after_settle"] == pytest.approx(m["minutes_above"])
    assert m["max_temp_after_settle"] == 64.0


def test_a_quiet_run_settles_after_settle_s_and_an_early_peak_does_not_count():
    tally = Tally(threshold=63.0, settle_s=180.0)
    for i in range(100):
        tally.add(i * 10_000, temp=62.5 if i == 10 else 61.0)  # 62.5 at 100 s < 180 s
    m = tally.result()
    assert m["settled_at_hours"] == pytest.approx(0.05)
    assert m["max_temp_after_settle"] == 61.0 and m["max_temp"] == 62.5
    assert m["minutes_above_after_settle"] == 0 and m["pct_time_above"] == 0


def test_without_settle_s_the_settle_keys_are_empty():
    tally = Tally(threshold=63.0)
    constructed(tally)
    m = tally.result()
    assert m["max_temp_after_settle"] is None and m["settled_at_hours"] is None
    assert m["minutes_above"] == pytest.approx(7.0)


# -- simulate: a fixed policy, checked against its own trace ------------------------------


def test_fixed_policy_minutes_above_match_its_trace(step_room):
    scn, settings = load_scenario(step_room), Settings(check_interval=30.0)
    policy = make_policy("fixed:575", settings, NullSink())
    trace = Trace()
    tally, fw, dev = run_policy(
        scn,
        policy,
        threshold=63.0,
        duration_s=scn.duration_s,
        seed=0,
        epoch_ms=SIM_EPOCH_MS,
        grid_s=10.0,
        trace=trace,
        settle_s=180.0,
    )
    m = tally.result()
    hot = [(h, t) for h, t in zip(trace.hours, trace.temp) if t > 63.0]
    assert hot, "the step room must be too hot for 575 MHz"
    assert m["minutes_above"] == pytest.approx(len(hot) * 10 / 60, abs=1e-3)
    assert m["degree_minutes_above"] == pytest.approx(
        sum(t - 63.0 for _, t in hot) * 10 / 60, abs=1e-3
    )
    # fixed:575 never cuts (it starts at 575): the settle starts at the first hot sample
    assert dev.first_cut_t is None
    settled_h = hot[0][0] + 180 / 3600
    assert m["settled_at_hours"] == pytest.approx(settled_h, abs=1e-4)
    after = [t for h, t in zip(trace.hours, trace.temp) if h >= settled_h - 1e-9]
    assert m["max_temp_after_settle"] == pytest.approx(max(after), abs=1e-3)
    assert fw.overheat_trips == 0


def test_a_cut_starts_the_settle(step_room):
    report = simulate(load_scenario(step_room), ["fixed:490"], Settings(), poll_s=30)
    m = report["policies"]["fixed:490"]
    # 575 -> 490 at the first poll (t = 0) is the first cut: settled 180 s later
    assert m["frequency_changes"] == 1 and m["settled_at_hours"] == pytest.approx(0.05)


def test_levels_policy_runs_the_levels_law_whatever_the_setting(step_room):
    model = Settings(law="model", check_interval=30.0)
    assert make_policy("levels", model, NullSink()).limits.law == "levels"
    assert make_policy("tempctl", model, NullSink()).limits.law == "model"
    report = simulate(load_scenario(step_room), ["tempctl", "levels"], model, poll_s=30)
    assert set(report["policies"]) == {"tempctl", "levels"}
    assert report["policies"]["levels"]["device"] == "sim-levels"
    assert report["settings"]["TEMPCTL_LAW"] == "model"


# -- faults ----------------------------------------------------------------------------------


def faulty(requests: str, seed: int = 0) -> FaultyDevice:
    fw = SimFirmware(load_scenario("heatwave"), seed=seed)
    return FaultyDevice(SimDevice(fw, "sim-test", SIM_EPOCH_MS), Faults(requests), seed)


def polls(dev: FaultyDevice, n: int, every_s: float = 30.0):
    out = []
    for i in range(n):
        dev.fw.advance(600.0 + i * every_s)  # past the boot
        out.append(dev.read())
    return out


def test_a_timeout_is_an_error_reading_and_the_seed_port_sees_one_request():
    dev = faulty("timeout")
    dev.fw.advance(600.0)
    assert dev.info() is None
    r = dev.read()  # the seed port logs its failed GET: the same request, not a new draw
    assert r.error.startswith("timeout: ") and not r.valid
    assert dev.applied["timeout"] == 1


def test_truncated_json_and_5xx_are_invalid_readings():
    for spec, kind in (("truncated", "bad_response"), ("5xx", "bad_response")):
        r = polls(faulty(spec), 1)[0]
        assert not r.valid and r.error.startswith(kind + ": "), r.error


def test_sensor_127_trips_the_firmware_and_the_trip_is_counted_as_injected():
    dev = faulty("sensor_127=1")
    r = polls(dev, 1)[0]
    assert not r.valid and "127" in r.error
    assert dev.fw.overheat_trips == dev.injected_trips == 1


def test_sensor_m1_is_invalid_and_trips_nothing():
    dev = faulty("sensor_m1")
    rs = polls(dev, 5)
    assert all(not r.valid and "temp=-1" in r.error for r in rs)
    assert dev.fw.overheat_trips == dev.injected_trips == 0


def test_faults_follow_the_probability_and_the_seed_not_the_policy():
    a = [r.valid for r in polls(faulty("5xx=0.2"), 2000)]
    b = [r.valid for r in polls(faulty("5xx=0.2"), 2000)]
    c = [r.valid for r in polls(faulty("5xx=0.2", seed=1), 2000)]
    assert a == b  # same seed, same poll times: the same faults
    assert a != c
    assert 0.15 < a.count(False) / len(a) < 0.25


def test_a_failed_patch_changes_nothing():
    dev = faulty("5xx")
    dev.fw.advance(600.0)
    before = dev.fw.nvs_mhz
    outcome, status, error = dev.set_frequency(490)
    assert (outcome, status) == ("failed", 500) and error.startswith("bad_response")
    assert dev.fw.nvs_mhz == before and dev.changes == 0 and dev.first_cut_t is None


def test_a_scenario_reboot_happens_for_every_policy(step_room, tmp_path):
    text = Path(step_room).read_text() + '\n[faults]\nrequests = ""\nreboot_h = [0.25]\n'
    path = tmp_path / "reboot.toml"
    path.write_text(text)
    report = simulate(load_scenario(str(path)), ["fixed:575", "seed"], Settings(), poll_s=30)
    assert report["faults"] == {"requests": "", "reboot_h": [0.25]}
    fixed = report["policies"]["fixed:575"]
    assert fixed["restarts"] == 1  # the reboot, and nothing else restarts a fixed policy
    quiet = simulate(load_scenario(step_room), ["fixed:575"], Settings(), poll_s=30)
    assert quiet["policies"]["fixed:575"]["restarts"] == 0
    assert fixed["gh_hours"] < quiet["policies"]["fixed:575"]["gh_hours"]  # no hash while down


# -- targets and the table ------------------------------------------------------------------


def metrics(**kw) -> dict:
    base = dict(
        hash_ratio=0.98,
        gh_hours=100.0,
        pct_time_above=0.5,
        max_temp_after_settle=63.9,
        firmware_trips=0,
        firmware_trips_injected=None,
        changes_per_day=10.0,
        degree_minutes_above=5.0,
    )
    return base | kw


def verdicts(checks: list[dict]) -> dict[str, bool | None]:
    return {c["target"]: c["met"] for c in checks}


def test_targets_pass_and_fail_at_their_limits():
    seed = metrics(gh_hours=90.0, degree_minutes_above=5.0)
    ok = verdicts(cq.targets({"tempctl": metrics(), "seed": seed}, 63.0, steady=True))
    assert all(ok.values()) and len(ok) == 7
    bad = metrics(
        hash_ratio=0.969,
        pct_time_above=1.01,
        max_temp_after_settle=64.01,
        firmware_trips=1,
        changes_per_day=24.5,
        gh_hours=89.9,
        degree_minutes_above=5.1,
    )
    assert not any(verdicts(cq.targets({"tempctl": bad, "seed": seed}, 63.0, True)).values())
    edge = metrics(hash_ratio=0.97, pct_time_above=1.0, max_temp_after_settle=64.0)
    assert all(verdicts(cq.targets({"tempctl": edge, "seed": seed}, 63.0, True)).values())


def test_injected_trips_do_not_count_and_steady_weather_only_judges_changes():
    seed = metrics()
    m = metrics(firmware_trips=2, firmware_trips_injected=2, changes_per_day=99.0)
    v = verdicts(cq.targets({"tempctl": m, "seed": seed}, 63.0, steady=False))
    assert v["firmware trips (not injected)"] is True
    assert "frequency changes per day" not in v
    v = verdicts(cq.targets({"tempctl": m, "seed": seed}, 63.0, steady=True))
    assert v["frequency changes per day"] is False


def test_the_benchmark_on_a_short_room_and_its_markdown(step_room):
    doc = cq.measure([(step_room, True)], poll_s=30.0, seed=0, jobs=1)
    s = doc["scenarios"][step_room]
    assert set(s["policies"]) == {"tempctl", "levels", "seed"}
    assert len(s["targets"]) == 7 and doc["targets_total"] == 7
    assert s["met"] == all(c["met"] for c in s["targets"])
    assert doc["settings"]["TEMPCTL_LAW"] == "model"
    table = cq.markdown(doc)
    lines = table.splitlines()
    assert lines[0].startswith("| scenario") and sum("| seed" in ln for ln in lines) == 1
    for c in s["targets"]:
        assert c["target"] in table
    if not doc["all_met"]:
        assert "**FAIL**" in table
