"""The room's trend as the model sees it (core/trend.py, issue 20's panel): a level shift
between stretches at different settings is not a trend, a relearned °C/W re-reads the
window, and a warming room is still seen."""

from __future__ import annotations

import random

import pytest

from tempctl.core.estimator import DieFilter
from tempctl.core.model import ThermalModel, prior_for
from tempctl.core.trend import AmbientTrend

H = 3600.0


def feed(trend, t0, t1, level, rate_c_per_h=0.0, sp=18.0, noise=0.0, rng=None):
    t = t0
    while t <= t1:
        e = rng.gauss(0.0, noise) if rng else 0.0
        trend.add(t, level + rate_c_per_h * t / H + e, sp)
        t += 30.0


def test_a_level_shift_between_stretches_is_not_a_trend():
    """A climb's mispredicted step moves the estimate by a step, not a slope (it read as
    up to 10 °C/h fitted as one line)."""
    tr = AmbientTrend()
    for k in range(4):
        tr.new_stretch()
        feed(tr, k * 600.0, k * 600.0 + 570.0, 60.0 + 1.5 * k)
    assert tr.slope(1.1) == pytest.approx(0.0, abs=1e-9)


def test_a_warming_room_is_seen_across_stretches():
    tr, rng = AmbientTrend(), random.Random(1)
    for k in range(3):
        tr.new_stretch()
        feed(
            tr, k * 600.0, k * 600.0 + 570.0, 60.0 + 2.0 * k, rate_c_per_h=2.0, noise=0.05, rng=rng
        )
    assert tr.slope(1.1) * H == pytest.approx(2.0, abs=0.3)


def test_no_trend_before_ten_minutes_of_evidence():
    tr = AmbientTrend()
    feed(tr, 0.0, 500.0, 60.0, rate_c_per_h=5.0)
    assert tr.slope(1.1) == 0.0


def test_a_relearned_r_re_reads_the_window():
    """Ta = T - R·s·P is kept as T and s·P: a power drifting within a stretch, with the die
    following it at the true °C/W, is no trend under that R, whatever R the points came
    in under (a relearned R moved each later Ta by ΔR·s·P: −10 °C/h on the poor heatsink)."""
    tr = AmbientTrend()
    t = 0.0
    while t <= 1500.0:
        sp = 18.0 + t / 1500.0
        tr.add(t, 30.0 + 1.5 * sp, sp)
        t += 30.0
    assert tr.slope(1.5) == pytest.approx(0.0, abs=1e-9)
    assert tr.slope(1.1) * H == pytest.approx(0.4 * 2.4, rel=0.01)  # ΔR·dsP/dt: 0.4 x 2.4 W/h


def test_the_wander_is_zero_for_white_noise_and_seen_for_a_draft():
    """The covariance of successive innovations: about 0 for the sensor's white noise,
    positive for a draft the filter does not follow (its mean over 1000 readings)."""
    rng = random.Random(3)
    quiet, drafty = DieFilter(0.3), DieFilter(0.3)
    draft, seen_quiet, seen_drafty = 0.0, [], []
    for k in range(2000):
        quiet.predict(0.0, 1e-5)
        quiet.update(62.0 + rng.gauss(0.0, 0.3))
        draft = 0.9 * draft + rng.gauss(0.0, 0.25 * (1 - 0.81) ** 0.5)
        drafty.predict(0.0, 1e-5)
        drafty.update(62.0 + draft + rng.gauss(0.0, 0.3))
        if k >= 1000:
            seen_quiet.append(quiet.wander_var)
            seen_drafty.append(drafty.wander_var)
    assert abs(sum(seen_quiet) / 1000) < 0.005
    assert sum(seen_drafty) / 1000 > 0.01


def test_a_whole_degree_sensor_floors_the_noise():
    """A Supra reads whole degrees: between flips its readings repeat, which taught a noise
    near 0 and read each 62 -> 63 flip as a cooling jump."""
    m = ThermalModel(prior_for("BM1368"))
    for i in range(200):
        temp = 63.0 if i % 17 == 0 else 62.0
        m.observe(i * 30_000, temp, 18.0, 500.0, 1150, 100, False, 63.0)
    assert m.kf.noise_c >= (1 / 12) ** 0.5 - 1e-9
    assert m.cooling is None
