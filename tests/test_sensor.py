"""The simulated sensor against its calibration (issue 20, docs/sensor.md): the statistics of
generated readings, the steps, the spikes, the held conversions, temp2 on either side, and
the calibration script on the traces copied into tests/data."""

from __future__ import annotations

import json
import math
import statistics
from dataclasses import replace
from pathlib import Path

import pytest
from benchload import load_benchmark

from tempctl.device import parse_info
from tempctl.sim.firmware import Firmware
from tempctl.sim.plant import Plant, params_for
from tempctl.sim.scenario import parse_scenario

ROOT = Path(__file__).resolve().parent.parent
GAMMA = params_for("BM1370")

SCENARIO = {
    "description": "sensor test",
    "duration_h": 2,
    "ambient": [[0, 28.0]],
    "device": {
        "asic": "BM1370",
        "firmware": "v2.15.0",
        "frequency_mhz": 525,
        "core_voltage_mv": 1150,
    },
    "fan": {"mode": "fixed", "pct": 100},
}


def scenario(**plant):
    return parse_scenario({**SCENARIO, "plant": plant}, name="sensor")


def diff_sd(values: list[float]) -> float:
    return statistics.pstdev([b - a for a, b in zip(values, values[1:])]) / math.sqrt(2)


@pytest.mark.parametrize("noise", [0.15, 0.3, 0.45])
def test_successive_differences_give_back_the_configured_noise(noise):
    p = replace(GAMMA, noise_c=noise, spike_rate=0.0)
    plant = Plant(p, 28.0, seed=3, freq_mhz=525, core_mv=1150)
    readings = [plant.read_die() for _ in range(6000)]
    # the calibration's estimator on the simulator's readings: the noise, plus the step's
    # rounding (step²/12), within 5 % (its sampling error at n = 6000 is about 1 %)
    expected = math.sqrt(noise**2 + p.temp_step_c**2 / 12)
    assert diff_sd(readings) == pytest.approx(expected, rel=0.05)


def test_the_default_is_the_median_real_sensor_not_the_best_case():
    assert 0.25 <= GAMMA.noise_c <= 0.35  # docs/sensor.md: median 0.27 over 18 devices
    assert GAMMA.spike_rate > 0 and GAMMA.hash_noise_old > 0.05


@pytest.mark.parametrize("asic, step", [("BM1370", 0.125), ("BM1368", 1.0)])
def test_readings_come_in_the_sensor_steps(asic, step):
    p = params_for(asic)
    assert p.temp_step_c == step
    plant = Plant(p, 30.0, seed=5, freq_mhz=500, core_mv=1166)
    readings = [plant.read_die() for _ in range(2000)]
    assert all(abs(r / step - round(r / step)) < 1e-9 for r in readings)
    gaps = {round(abs(b - a), 6) for a, b in zip(readings, readings[1:])} - {0.0}
    assert min(gaps) == step  # the smallest change is one step, not finer


def test_spikes_are_rare_big_and_either_way():
    p = replace(GAMMA, noise_c=0.1, spike_rate=0.01, spike_min_c=2.0, spike_max_c=6.0)
    plant = Plant(p, 28.0, seed=9, freq_mhz=525, core_mv=1150)
    die = plant.die_c
    errors = [plant.read_die() - die for _ in range(20000)]
    spikes = [e for e in errors if abs(e) > 1.0]  # 10 sd of the white noise
    assert len(spikes) == pytest.approx(200, rel=0.2)
    assert all(1.5 <= abs(e) <= 6.5 for e in spikes)
    up = sum(1 for e in spikes if e > 0)
    assert 0.35 < up / len(spikes) < 0.65
    quiet = Plant(replace(p, spike_rate=0.0), 28.0, seed=9, freq_mhz=525, core_mv=1150)
    assert max(abs(quiet.read_die() - die) for _ in range(20000)) < 1.0


def _temps(fw: Firmware, n: int, every_s: float):
    out = []
    for k in range(1, n + 1):
        fw.advance(k * every_s)
        body = fw.info()
        out.append((body["temp"], body.get("temp2"), fw.plant.die_c, body))
    return out


@pytest.mark.parametrize("offset", [1.5, -1.5])
def test_temp2_reads_hotter_or_cooler_as_configured(offset):
    fw = Firmware(scenario(sensors=2, temp2_offset_c=offset, noise_c=0.15), seed=2)
    rows = _temps(fw, 200, 30.0)
    gap = statistics.fmean(t2 - t for t, t2, _, _ in rows)
    assert gap == pytest.approx(offset, abs=0.15)
    # the parser controls on the hotter sensor: temp2 when it runs hotter
    hotter = [parse_info(b, "d", 0).temp for *_, b in rows]
    want = [max(t, t2) for t, t2, _, _ in rows]
    assert hotter == want
    if offset > 0:
        assert fw.plant.hot_c == pytest.approx(fw.plant.die_c + offset)
    else:
        assert fw.plant.hot_c == fw.plant.die_c


def test_a_single_sensor_board_reports_no_temp2():
    rows = _temps(Firmware(scenario(), seed=2), 5, 30.0)
    assert all(t2 == -1 for _, t2, _, _ in rows)  # v2.11+: -1 means no second sensor


def test_values_are_held_between_conversions():
    fw = Firmware(scenario(temp_refresh_s=3.0, noise_c=0.3), seed=4)
    temps = [t for t, *_ in _temps(fw, 600, 0.5)]  # 5 min at 2 Hz
    changes = sum(1 for a, b in zip(temps, temps[1:]) if a != b)
    assert changes <= 300 / 3.0 + 1  # at most one new value per conversion
    assert changes > 50  # and the conversions do come


def test_old_firmware_hashrate_noise_is_the_traces():
    fw = Firmware(replace(scenario(), firmware="v2.8.0"), seed=6)
    rates = [b["hashRate"] for *_, b in _temps(fw, 400, 60.0)]
    rel = statistics.pstdev([math.log(b / a) for a, b in zip(rates, rates[1:])]) / math.sqrt(2)
    assert rel == pytest.approx(GAMMA.hash_noise_old, rel=0.25)  # 60 s polls, as the traces


def test_the_calibration_script_on_the_copied_traces(capsys):
    """tests/data holds two of the 30-60 s traces; the data README gives their figures."""
    assert (
        load_benchmark("sensor_calibration").main(["--traces", str(ROOT / "tests" / "data")]) == 0
    )
    doc = json.loads(capsys.readouterr().out)
    perflog = doc["traces"]["ThePeacemaker82-bitaxe-safe-overclock_Gamma_2025-09-10_perflog.csv"]
    dev = perflog["devices"]["ThePeacemaker82:gamma"]
    assert dev["noise_sd_c"] == pytest.approx(0.21, abs=0.01)  # data/README §3: 0.21
    assert dev["max_jump_c"] == 2.0 and dev["step_c"] == 0.125
    jojo = doc["traces"]["jojo4751-BitaxeAutopilot_Worker5_2025-07-01_log.csv"]
    assert jojo["devices"]["jojo4751:Worker5"]["noise_sd_c"] == pytest.approx(0.32, abs=0.03)
    assert 0.04 < jojo["devices"]["jojo4751:Worker5"]["hash_noise"] < 0.1  # ±5-10 %
    fast = doc["traces"]["pmcochrane-bitaxe-stabiliser_Gamma_2026-02-19_1Hz.csv"]
    assert fast["devices"]["pmcochrane:bitaxe-g1"]["held_share"] > 0.6  # repeats at 1 Hz
    assert "bitaxe-steady-state_single-BM1370.csv" not in doc["traces"]
