"""The thermal plant against measured Bitaxe Gamma data (tests/data, see its README).

Each validation states the error it reached in its assert message; the figures in the
comments are what the shipped parameters give.
"""

from __future__ import annotations

import csv
import itertools
import math
import statistics
from collections import defaultdict
from dataclasses import replace
from datetime import datetime
from pathlib import Path

import pytest

from tempctl.sim.plant import (
    FanEffect,
    Plant,
    PlantParams,
    oracle_frequency,
    params_for,
    power,
    steady_die,
)

DATA = Path(__file__).parent / "data"
GAMMA = params_for("BM1370")
QUIET = replace(GAMMA, noise_c=0.0, hash_noise=0.0)


def rows(name: str) -> list[dict[str, str]]:
    with open(DATA / name, newline="") as f:
        return list(csv.DictReader(f))


def num(row: dict[str, str], key: str) -> float:
    return float(row[key])


def steady_rows() -> list[dict[str, str]]:
    return rows("bitaxe-steady-state_single-BM1370.csv")


def fit_ambient(p: PlantParams, pts: list[tuple[float, float, float, float]]) -> float:
    """Least-squares ambient for (f, mV, fan %, measured °C) points.

    The steady die is affine in ambient (slope 1/(1 − loop gain) through leakage), so the
    fit is closed form: two evaluations per point give the intercept and the slope.
    """
    base = [steady_die(p, f, mv, 0.0, fan) for f, mv, fan, _ in pts]
    slope = [steady_die(p, f, mv, 1.0, fan) - b for (f, mv, fan, _), b in zip(pts, base)]
    return sum(m * (t - b) for (*_, t), b, m in zip(pts, base, slope)) / sum(m * m for m in slope)


def fit_tau(times: list[float], temps: list[float]) -> float:
    """Single-exponential time constant (grid, 1 s) of a step response sampled at times."""
    best = (math.inf, 0.0)
    for tau in range(5, 200):
        u = [1.0 - math.exp(-t / tau) for t in times]
        # linear least squares for T = c0 + c1·u
        mu, mt = statistics.fmean(u), statistics.fmean(temps)
        c1 = sum((a - mu) * (b - mt) for a, b in zip(u, temps)) / sum((a - mu) ** 2 for a in u)
        sse = sum((mt + c1 * (a - mu) - b) ** 2 for a, b in zip(u, temps))
        best = min(best, (sse, float(tau)))
    return best[1]


# --- validation against measured data -------------------------------------------------


def test_power_mae_on_steady_state_rows():
    # All 422 single-BM1370 rows with a set voltage, at their measured temperature.
    # Reached: MAE 0.67 W (4.5 % of the mean 15.1 W); per source 0.33 (ThePeacemaker82),
    # 0.61 and 0.81 (mtab3000, low voltage), 1.19 W (jojo4751). Bound 0.8 W: the jojo4751
    # units alone differ by 2.2 W at the same setting and temperature (Worker2 vs Worker4 at
    # 725/1170), so one parameter set cannot get near zero; k scaled by 0.8 or 1.2 gives
    # 2.4 or 1.3 W.
    errors, by_source = [], defaultdict(list)
    for r in steady_rows():
        model = power(
            GAMMA, num(r, "frequency_mhz"), num(r, "core_voltage_set_mv"), num(r, "asic_temp_c")
        )
        err = abs(model - num(r, "power_w"))
        errors.append(err)
        by_source[r["source_repo"]].append(err)
    mae = statistics.fmean(errors)
    detail = ", ".join(
        f"{s}: {statistics.fmean(e):.2f} W (n={len(e)})" for s, e in sorted(by_source.items())
    )
    assert len(errors) == 422
    assert mae < 0.8, f"power MAE {mae:.3f} W over {len(errors)} rows ({detail})"
    assert max(statistics.fmean(e) for e in by_source.values()) < 1.3, detail


def _temperature_groups() -> dict[str, list[tuple[float, float, float, float]]]:
    """Fixed-fan Gamma rows with a free temperature, by device/run (one ambient each).

    ThePeacemaker82's perflog segment (22:35, 750/1150) belongs to the 22:28 tuning run:
    same device, same evening.
    """
    groups: dict[str, list] = defaultdict(list)
    for r in steady_rows():
        repo = r["source_repo"]
        if repo == "jojo4751/BitaxeAutopilot":
            key = r["device"]
        elif repo == "ThePeacemaker82/bitaxe-safe-overclock":
            key = "tpm-1705" if "170544" in r["source_path"] else "tpm-2228"
        else:
            continue  # mtab3000: autofan pinned the temperature at 60 °C
        # fan at the reference duty: the jojo fans sat at 5300-5900 rpm, near full speed
        groups[key].append(
            (
                num(r, "frequency_mhz"),
                num(r, "core_voltage_set_mv"),
                GAMMA.fan_ref_pct,
                num(r, "asic_temp_c"),
            )
        )
    return groups


def test_steady_temperature_mae_held_out():
    # Per group, fit the ambient on every other row and predict the rest, both ways round.
    # Reached: MAE 1.49 °C on 45 held-out predictions, against 2.01 °C for "the fitted half's
    # mean" (and R = 1.1 °C/W is the best of 0.5-2.0 here). Fitted ambients: 26-30 °C.
    # Bound 2.0 °C: the jojo4751 units drift ±5 °C at a fixed setting as the room changes
    # (data/README §1), which one ambient per device cannot follow; the model must also
    # beat the no-model baseline.
    groups = _temperature_groups()
    assert sum(map(len, groups.values())) == 45
    errors, baseline = [], []
    for pts in groups.values():
        for fold in (0, 1):
            fit = [pt for i, pt in enumerate(pts) if i % 2 == fold]
            held = [pt for i, pt in enumerate(pts) if i % 2 != fold]
            amb = fit_ambient(GAMMA, fit)
            mean_fit = statistics.fmean(pt[3] for pt in fit)
            for f, mv, fan, t in held:
                errors.append(abs(steady_die(GAMMA, f, mv, amb, fan) - t))
                baseline.append(abs(mean_fit - t))
    mae, base = statistics.fmean(errors), statistics.fmean(baseline)
    msg = f"held-out MAE {mae:.2f} °C on {len(errors)} rows (group-mean baseline {base:.2f} °C)"
    assert mae < 2.0, msg
    assert mae < base, msg


def test_tuning_steps_follow_frequency():
    # The ThePeacemaker82 tuning runs are the clean frequency sweeps (5-6 min per step):
    # Reached: MAE 0.53 °C with one ambient per run (27.7 and 29.3 °C) fitted on all of its
    # rows. Bound 0.8 °C: steps are 5-6 min, slightly short of steady (data/README §3), the
    # tool flagged 4 of them unstable, and run 2 switched its fan between 80 and 100 %.
    groups = _temperature_groups()
    errors = []
    for key in ("tpm-1705", "tpm-2228"):
        amb = fit_ambient(GAMMA, groups[key])
        errors += [abs(steady_die(GAMMA, f, mv, amb, fan) - t) for f, mv, fan, t in groups[key]]
    mae = statistics.fmean(errors)
    assert mae < 0.8, f"tuning-step MAE {mae:.2f} °C on {len(errors)} rows"


def test_leakage_matches_the_traces():
    # dP/dT at a fixed setting as the room drifts: the jojo4751 Worker5 log (700/1160, 15 h)
    # and the ThePeacemaker82 750/1150 log. Reached: measured 0.20 and 0.24 W/°C, model 0.15
    # and 0.16 (these two are the leakiest units; the five jojo units span 0.13-0.20).
    def slope(points):
        mt = statistics.fmean(t for t, _ in points)
        mp = statistics.fmean(p for _, p in points)
        return sum((t - mt) * (p - mp) for t, p in points) / sum((t - mt) ** 2 for t, _ in points)

    cases = [
        ("jojo4751-BitaxeAutopilot_Worker5_2025-07-01_log.csv", "700", 700.0, 1160.0),
        (
            "ThePeacemaker82-bitaxe-safe-overclock_Gamma_2025-09-10_perflog.csv",
            "750",
            750.0,
            1150.0,
        ),
    ]
    for name, freq, f, mv in cases:
        pts = [
            (num(r, "asic_temp_c"), num(r, "power_w"))
            for r in rows(name)
            if r["frequency_mhz"] == freq and num(r, "asic_temp_c") > 0
        ]
        measured = slope(pts)
        t_mean = statistics.fmean(t for t, _ in pts)
        model = power(GAMMA, f, mv, t_mean + 0.5) - power(GAMMA, f, mv, t_mean - 0.5)
        assert 0.5 < model / measured < 2.0, (
            f"{name}: dP/dT measured {measured:.3f}, model {model:.3f} W/°C (n={len(pts)})"
        )


def _pmcochrane():
    data = rows("pmcochrane-bitaxe-stabiliser_Gamma_2026-02-19_1Hz.csv")
    t0 = datetime.fromisoformat(data[0]["timestamp"]).timestamp()
    times, freqs, temps, last = [], [], [], 0.0
    for r in data:
        # rows are in logging order; a few stamps are out of order by < 1 s
        last = max(last, datetime.fromisoformat(r["timestamp"]).timestamp() - t0)
        if num(r, "asic_temp_c") > 0:
            times.append(last)
            freqs.append(num(r, "frequency_mhz"))
            temps.append(num(r, "asic_temp_c"))
    return times, freqs, temps


PMC_DT = 0.5  # s, simulation grid
PMC_DELAY_S = 6.0  # readings react 5-7 s after the command (data/README §2): ramp + refresh
PMC_MV = 1245.0


def _replay(p: PlantParams, times, freqs, ambient_c: float) -> list[float]:
    """Die temperature at each sample time, driven by the delayed commanded frequency."""
    n = int(times[-1] / PMC_DT) + 2
    cmd, j = [], 0
    for k in range(n):  # commanded frequency on the grid, PMC_DELAY_S late
        while j + 1 < len(times) and times[j + 1] <= k * PMC_DT - PMC_DELAY_S:
            j += 1
        cmd.append(freqs[j])
    plant = Plant(p, ambient_c, freq_mhz=cmd[0], core_mv=PMC_MV, fan_pct=p.fan_ref_pct)
    die = [plant.die_c]
    for k in range(1, n):
        plant.step(
            PMC_DT, freq_mhz=cmd[k - 1], core_mv=PMC_MV, fan_pct=p.fan_ref_pct, ambient_c=ambient_c
        )
        die.append(plant.die_c)
    return [die[round(t / PMC_DT)] for t in times]


def _replay_fit(p: PlantParams, times, freqs, temps) -> tuple[float, float]:
    """(RMSE °C, ambient) with only the ambient fitted; the plant is linear in it."""
    d0 = _replay(p, times, freqs, 0.0)
    m = [a - b for a, b in zip(_replay(p, times, freqs, 1.0), d0)]
    amb = sum(mi * (t - b) for mi, t, b in zip(m, temps, d0)) / sum(mi * mi for mi in m)
    sq = [(b + amb * mi - t) ** 2 for b, mi, t in zip(d0, m, temps)]
    return math.sqrt(statistics.fmean(sq)), amb


def test_pmcochrane_step_response():
    # The 30-min 1 Hz trace (580-925 MHz at 1245 mV, two ±300 MHz steps) replayed from the
    # commanded frequency; only the ambient is fitted (fan unknown: the reference duty).
    # Reached: RMSE 0.39 °C with the shipped τ_slow 48 s (ambient 25.8 °C); the fitted τ_slow
    # (4 s grid) is 36 s at RMSE 0.38 °C. Bound 0.5 °C: readings come in 0.125 °C steps and
    # repeat between API refreshes, and this unit draws ~20 % more power than the model
    # (34 W measured vs 28 W at 830 MHz), which the fitted ambient only partly absorbs.
    times, freqs, temps = _pmcochrane()
    assert len(times) > 1500
    rmse, amb = _replay_fit(QUIET, times, freqs, temps)
    fits = {
        tau: _replay_fit(replace(QUIET, tau_slow_s=tau), times, freqs, temps)[0]
        for tau in range(20, 81, 4)
    }
    best_tau = min(fits, key=fits.get)
    msg = (
        f"RMSE {rmse:.3f} °C at τ_slow {QUIET.tau_slow_s:g} s (ambient {amb:.1f} °C); "
        f"fitted τ_slow {best_tau} s at RMSE {fits[best_tau]:.3f} °C"
    )
    assert rmse < 0.5, msg
    assert 24 <= best_tau <= 60, msg
    assert rmse <= 1.1 * fits[best_tau], msg


def test_jojo_30s_up_step_time_constant():
    # Worker5 stepped 700/1160 -> 800/1200 at 09:56 on 07-03 and held it 8 min (30 s polls).
    # A single exponential on those samples gives τ ≈ 48 s (data/README §4: 36-48 s up); the
    # plant sampled at the same instants gives 31 s (its fast half shows up at once).
    # The amplitude is not compared: this unit's power rose 6.2 W, twice the model's 3.5 W.
    data = [
        r
        for r in rows("jojo4751-BitaxeAutopilot_Worker5_2025-07-01_log.csv")
        if "2025-07-03T09:55:30" <= r["timestamp"] <= "2025-07-03T10:04:10"
    ]
    assert [r["frequency_mhz"] for r in data[:2]] == ["700", "800"]
    t0 = datetime.fromisoformat(data[0]["timestamp"]).timestamp()
    times = [datetime.fromisoformat(r["timestamp"]).timestamp() - t0 for r in data]
    tau_data = fit_tau(times, [num(r, "asic_temp_c") for r in data])

    plant = Plant(QUIET, 25.0, freq_mhz=700, core_mv=1160)
    sim = [plant.die_c]
    for a, b in itertools.pairwise(times):
        plant.step(b - a, freq_mhz=800, core_mv=1200, fan_pct=100, ambient_c=25.0)
        sim.append(plant.die_c)
    tau_plant = fit_tau(times, sim)
    msg = f"apparent τ at 30 s sampling: data {tau_data:g} s, plant {tau_plant:g} s"
    assert 36 <= tau_data <= 60, msg
    assert 20 <= tau_plant <= 60 and abs(tau_plant - tau_data) <= 25, msg


# --- properties of the model -------------------------------------------------------------


def test_exact_discretisation_any_dt():
    fine = Plant(QUIET, 28.0, freq_mhz=575, core_mv=1150)
    coarse = Plant(QUIET, 28.0, freq_mhz=575, core_mv=1150)
    inputs = {"freq_mhz": 700, "core_mv": 1200, "fan_pct": 60, "ambient_c": 31.0}
    for _ in range(60):
        fine.step(1.0, **inputs)
    coarse.step(60.0, **inputs)
    assert fine.die_c != pytest.approx(Plant(QUIET, 28.0, freq_mhz=575, core_mv=1150).die_c)
    assert fine.die_c == pytest.approx(coarse.die_c, abs=1e-9)
    assert fine.vr_c == pytest.approx(coarse.vr_c, abs=1e-9)
    assert fine.power_w == pytest.approx(coarse.power_w, abs=1e-9)
    # tiny and huge steps stay stable and end at the fixed point
    tiny = Plant(QUIET, 28.0, freq_mhz=575, core_mv=1150)
    for _ in range(200):
        tiny.step(0.05, **inputs)
    assert math.isfinite(tiny.die_c)
    coarse.step(1e6, **inputs)
    assert coarse.die_c == pytest.approx(steady_die(QUIET, 700, 1200, 31.0, 60), abs=1e-6)


def test_step_response_has_fast_and_slow_parts():
    plant = Plant(QUIET, 25.0, freq_mhz=500, core_mv=1150)
    start, end = plant.die_c, steady_die(QUIET, 700, 1150, 25.0, 100)
    plant.step(5.0, freq_mhz=700, core_mv=1150, fan_pct=100, ambient_c=25.0)
    early = (plant.die_c - start) / (end - start)
    plant.step(QUIET.tau_slow_s - 5.0, freq_mhz=700, core_mv=1150, fan_pct=100, ambient_c=25.0)
    at_tau = (plant.die_c - start) / (end - start)
    # ~half within seconds (fast share), ~1 − 0.5/e after τ_slow
    assert 0.45 < early < 0.6, early
    assert 0.75 < at_tau < 0.85, at_tau


def test_monotonic_in_frequency_voltage_ambient_and_fan():
    def die(f=575.0, mv=1150.0, amb=28.0, fan=100.0):
        return steady_die(GAMMA, f, mv, amb, fan)

    temps = [die(f=f) for f in range(50, 1001, 25)]
    assert temps == sorted(temps) and len(set(temps)) == len(temps)
    assert die(mv=1100) < die(mv=1150) < die(mv=1200)
    assert die(amb=20) < die(amb=28) < die(amb=38)
    assert die(fan=100) < die(fan=70) < die(fan=40) < die(fan=25)
    powers = [power(GAMMA, f, 1150, 60.0) for f in range(50, 1001, 25)]
    assert powers == sorted(powers)


def test_leakage_fixed_point_converges():
    # Iterating T <- amb + rise(P(T)) converges (loop gain < 1) to the closed form.
    f, mv, amb, fan = 700.0, 1200.0, 32.0, 60.0
    s = GAMMA.fan_scale(fan)
    t = amb
    for _ in range(200):
        heat = power(GAMMA, f, mv, t) - GAMMA.power_offset_w
        t = amb + s * (GAMMA.case_offset_c + GAMMA.r_c_per_w_fixed * heat)
    assert t == pytest.approx(steady_die(GAMMA, f, mv, amb, fan), abs=1e-9)
    # leakage makes the fixed point hotter than the same power at t_ref
    no_leak = replace(GAMMA, leak_per_c=0.0)
    assert steady_die(GAMMA, f, mv, amb, fan) > steady_die(no_leak, f, mv, amb, fan)
    # and with the fan stopped at a silly overclock there is no fixed point at all
    assert steady_die(GAMMA, 1500, 1400, 40, 0) == math.inf


def test_oracle_is_the_largest_safe_frequency():
    for amb in (28.0, 33.0, 38.0):
        f = oracle_frequency(GAMMA, amb, 63.0, 100, 1150, 575)
        assert steady_die(GAMMA, f, 1150, amb, 100) <= 63.0
        if f < 575:
            assert steady_die(GAMMA, f + 0.02, 1150, amb, 100) > 63.0
    assert oracle_frequency(GAMMA, 28.0, 63.0, 100, 1150, 575) == 575.0
    assert oracle_frequency(GAMMA, 38.0, 63.0, 100, 1150, 575) == pytest.approx(285, abs=5)
    # even the floor is too hot: the floor comes back
    assert oracle_frequency(GAMMA, 55.0, 63.0, 100, 1150, 575, min_mhz=50) == 50.0


def test_heatwave_calibration():
    # The modelling choice behind case_offset_c (plant.py): at 575 MHz / 1150 mV, fan 100 %.
    assert 58.0 <= steady_die(GAMMA, 575, 1150, 28, 100) <= 61.0
    assert steady_die(GAMMA, 575, 1150, 30, 100) < 63.0
    assert steady_die(GAMMA, 575, 1150, 38, 100) > 66.0


# --- readings, fan and other boards -------------------------------------------------------


def test_readings_are_quantized_and_deterministic():
    a = Plant(GAMMA, 28.0, seed=7, freq_mhz=575, core_mv=1150)
    b = Plant(GAMMA, 28.0, seed=7, freq_mhz=575, core_mv=1150)
    ra = [a.read_die() for _ in range(200)]
    assert ra == [b.read_die() for _ in range(200)]
    assert all(abs(r / 0.125 - round(r / 0.125)) < 1e-9 for r in ra)
    assert statistics.fmean(ra) == pytest.approx(a.die_c, abs=0.05)
    assert len(set(ra)) > 1  # noise is on
    vr = [a.read_vr() for _ in range(50)]
    assert all(v == int(v) for v in vr) and abs(statistics.fmean(vr) - a.vr_c) < 1.0
    # the die stream does not depend on how often VR or hashrate are read
    c = Plant(GAMMA, 28.0, seed=7, freq_mhz=575, core_mv=1150)
    assert [c.read_die() if i % 2 else (c.read_vr(), c.hashrate(575))[0] for i in range(400)][
        1::2
    ] == ra


def test_hashrate():
    p = Plant(GAMMA, 28.0, seed=1)
    rates = [p.hashrate(525) for _ in range(500)]
    assert statistics.fmean(rates) == pytest.approx(1071 * GAMMA.hash_efficiency, rel=0.01)
    assert 0.01 < statistics.stdev(rates) / statistics.fmean(rates) < 0.03
    assert p.hashrate(525, running=False) == 0.0
    assert Plant(QUIET, 28.0).hashrate(600) == pytest.approx(600 * 2040 / 1000)


def test_stopped_asic_reports_the_offset_and_cools():
    plant = Plant(QUIET, 30.0, freq_mhz=600, core_mv=1150)
    hot = plant.die_c
    plant.step(30.0, freq_mhz=600, core_mv=1150, fan_pct=100, ambient_c=30.0, running=False)
    assert plant.power_w == GAMMA.power_offset_w
    assert plant.die_c < hot - 10
    idle = Plant(QUIET, 30.0)  # default start: idle steady state
    assert idle.die_c == pytest.approx(30.0 + GAMMA.case_offset_c)
    assert idle.power_w == GAMMA.power_offset_w


def test_fan_effect():
    fan = FanEffect()
    assert fan.scale(100, 100) == 1.0
    assert fan.scale(50, 100) > 1.0 > fan.scale(100, 60)
    assert fan.rpm(0) == 0 and fan.rpm(100) == 5700 and fan.rpm(150) == 5700

    # Under autofan at 60 °C the fan must follow power by roughly +150-300 rpm per W
    # (mtab3000 traces, data/README §3): solve the duty that holds 60 °C at two loads.
    def duty_for_60(freq, amb=22.0):
        lo, hi = 0.0, 100.0
        for _ in range(60):
            mid = (lo + hi) / 2
            lo, hi = (mid, hi) if steady_die(GAMMA, freq, 1150, amb, mid) > 60 else (lo, mid)
        return hi

    f1, f2 = 500.0, 550.0
    d1, d2 = duty_for_60(f1), duty_for_60(f2)
    p1 = power(GAMMA, f1, 1150, 60.0)
    p2 = power(GAMMA, f2, 1150, 60.0)
    rpm_per_w = (fan.rpm(d2) - fan.rpm(d1)) / (p2 - p1)
    assert 150 <= rpm_per_w <= 450, f"{rpm_per_w:.0f} rpm/W at duty {d1:.0f}-{d2:.0f} %"


@pytest.mark.parametrize("asic", ["BM1370", "BM1368", "BM1366", "BM1397", "bm1370"])
def test_params_for_known_chips(asic):
    p = params_for(asic)
    assert p.asic == asic.upper()
    plant = Plant(p, 25.0, freq_mhz=485, core_mv=1200)
    assert 5.0 < plant.power_w < 25.0
    assert 30.0 < plant.die_c < 75.0


def test_params_for_unknown_chip():
    with pytest.raises(ValueError, match="BM9999"):
        params_for("BM9999")


# --- cooling loss (issue 20) ---------------------------------------------------------------------


def test_cooling_scale_multiplies_the_thermal_resistance_only():
    plant = Plant(QUIET, 30.0, freq_mhz=525, core_mv=1150)
    before = plant.die_c
    assert plant.cooling_scale == 1.0
    plant.cooling_scale = 1.5
    assert plant.die_c == before  # the state does not jump
    assert plant.params.r_c_per_w_fixed == pytest.approx(1.5 * QUIET.r_c_per_w_fixed)
    assert plant.nominal is QUIET and plant.params.fan_effect == QUIET.fan_effect
    for _ in range(60):
        plant.step(30.0, freq_mhz=525, core_mv=1150, fan_pct=100, ambient_c=30.0)
    hotter = replace(QUIET, r_c_per_w_fixed=1.5 * QUIET.r_c_per_w_fixed)
    assert plant.die_c == pytest.approx(steady_die(hotter, 525, 1150, 30.0, 100), abs=0.01)
    assert plant.die_c > before + 3
    plant.cooling_scale = 1.0  # repaired
    assert plant.params is QUIET
    with pytest.raises(ValueError):
        plant.cooling_scale = 0.0


def test_a_scheduled_cooling_loss_heats_the_die_with_the_duty_unchanged():
    import tomllib

    from tempctl.config import Settings
    from tempctl.resources import scenarios_dir
    from tempctl.sim.firmware import Firmware
    from tempctl.sim.scenario import parse_scenario
    from tempctl.sim.simulate import oracle

    table = tomllib.loads((scenarios_dir() / "constant.toml").read_text())  # 28 °C, fan 100 %
    table.update(duration_h=2, plant={"cooling_loss": {"at_h": 1, "fraction": 1 / 3}})
    s = parse_scenario(table, name="loss")
    fw = Firmware(s, seed=1)
    fw.advance(3599.0)
    assert fw.plant.cooling_scale == 1.0
    die, fan = fw.plant.die_c, fw.info()["fanspeed"]
    fw.advance(3601.0)
    assert fw.plant.cooling_scale == pytest.approx(1.5)
    fw.advance(7200.0)
    assert fw.info()["fanspeed"] == fan  # a failing fan: the duty reads the same
    assert fw.plant.die_c > die + 3
    # the oracle after the loss is the oracle of the plant that is left
    orc = oracle(s, Settings(), s.duration_s)
    lost = replace(GAMMA, r_c_per_w_fixed=1.5 * GAMMA.r_c_per_w_fixed)
    before, after = orc.mhz[30], orc.mhz[-1]
    assert before == oracle_frequency(GAMMA, 28.0, 63.0, 100, 1150, 575)
    assert after == oracle_frequency(lost, 28.0, 63.0, 100, 1150, 575) < before
