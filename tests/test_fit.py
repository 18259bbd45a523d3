"""tempctl fit: the plant from a log, validated on the simulator and on the shared traces.

Reference values: shared/data/README.md §4 (the team's own OLS fits of the same traces).
"""

from __future__ import annotations

import json
import math
import sqlite3
from pathlib import Path

import pytest
from click.testing import CliRunner

from tempctl.cli import cli
from tempctl.config import Settings
from tempctl.offline.counterfactual import response_from_fit
from tempctl.offline.fit import FitError, fit_device, fit_thermal, import_trace, load
from tempctl.sim.plant import PlantParams
from tempctl.sim.scenario import load_scenario
from tempctl.sim.simulate import simulate

RUNS = Path(__file__).resolve().parent.parent / "replay" / "runs"
TESTS_DATA = Path(__file__).resolve().parent / "data"


def _ro(name: str) -> sqlite3.Connection:
    return sqlite3.connect(f"file:{RUNS / name}?mode=ro", uri=True)


@pytest.fixture(scope="module")
def heatwave_log(tmp_path_factory):
    db = tmp_path_factory.mktemp("fit") / "hw.db"
    # the levels law's big steps excite the plant more than the model law's fine ones
    simulate(load_scenario("heatwave"), ["levels"], Settings(), days=0.3, poll_s=5, db=str(db))
    return db


def test_recovers_the_simulators_own_plant(heatwave_log):
    """A log from the emulated Gamma: the fit must give back plant.py's constants."""
    truth = PlantParams()
    f = fit_device(sqlite3.connect(heatwave_log), "sim-levels")
    t = f.thermal
    assert t.r_c_per_w == pytest.approx(truth.r_c_per_w_fixed, rel=0.08)
    assert 36 <= t.tau_slow_s <= 65  # truth 48 s; the residual is flat around it
    assert t.fast_share == pytest.approx(truth.fast_share, abs=0.1)
    # the residual is the sensor's: white noise plus the rare spikes (docs/sensor.md), and
    # little more (0.09 °C fitted, 0.12 °C held out, the margins the quiet sensor had)
    spikes = truth.spike_rate * (truth.spike_max_c**3 - truth.spike_min_c**3)
    sensor = math.sqrt(truth.noise_c**2 + spikes / (3 * (truth.spike_max_c - truth.spike_min_c)))
    assert t.quality.rmse < sensor + 0.09 and t.quality.heldout_rmse < sensor + 0.12
    assert f.power.leak_per_c == pytest.approx(truth.leak_per_c, rel=0.15)
    assert f.power.quality.r2 > 0.98
    # the heatwave room: 28 °C, ramping to 38 °C from hour 2 (plant.py's case offset assumed)
    first_ambient = t.ambient[0][1]
    assert first_ambient == pytest.approx(28.0, abs=1.0)
    assert max(a for _, a in t.ambient) == pytest.approx(38.0, abs=1.0)  # from hour 6


def test_dynamics_of_the_1hz_trace_match_the_readme():
    """README §4: 2-node fit, τ_fast < 1 s, τ_slow ≈ 48 s (flat 30-48), fast share 0.51,
    RMSE 0.24 °C on the pmcochrane trace."""
    f = fit_device(_ro("pmcochrane-gamma-1hz.db"), "pmcochrane:bitaxe-g1")
    t = f.thermal
    assert 0.8 <= t.r_c_per_w <= 1.25  # README §4 Gamma fits: 1.05-1.14 °C/W
    assert 15 <= t.tau_slow_s <= 60
    assert 0.4 <= t.fast_share <= 0.7
    assert t.quality.rmse < 0.3 and t.quality.heldout_rmse < 0.5
    # measured power here: 1245 mV, 580-925 MHz
    assert 0.018 <= f.power.k_w <= 0.03


@pytest.mark.parametrize("device", ["Worker1", "Worker4", "Worker5"])
def test_steady_state_of_the_jojo_gammas_matches_the_readme(device):
    """README §4: jojo4751 segments, T = a + 1.05·P with per-device a of 40-44 °C."""
    f = fit_device(_ro("jojo4751-5xgamma.db"), f"jojo4751:{device}")
    assert 0.85 <= f.steady.r_c_per_w <= 1.25
    assert 38 <= f.steady.intercept_c <= 46
    assert f.steady.segments >= 5
    # power: pooled single-BM1370 fit P = 5.8 + 0.0170·f·V² (README §4); per device it varies
    assert 0.015 <= f.power.k_w <= 0.026 and f.power.quality.r2 > 0.9
    assert f.power.quality.heldout_rmse < 0.5


def test_a_confounded_dynamic_fit_is_not_trusted_for_counterfactuals():
    """Over 40 h the jojo temperatures drift with the room and power follows by leakage
    (README §3): the dynamic °C/W comes out 2-5x the steady-state slope. Counterfactual
    replay then uses the steady slope, or the plant's default when that is weak too."""
    for device, want in (("Worker5", "steady-state slope"), ("Worker2", "plant")):
        f = fit_device(_ro("jojo4751-5xgamma.db"), f"jojo4751:{device}")
        assert f.thermal.quality.heldout_n > 50
        assert f.thermal.r_c_per_w > 1.5 * 1.05
        resp = response_from_fit(f)
        assert resp.r_c_per_w <= 1.25 and want in resp.source


def test_too_little_data_is_explained(tmp_path):
    s = load(_ro("peacemaker82-gamma-perflog.db"), "ThePeacemaker82:gamma")
    f = fit_device(_ro("peacemaker82-gamma-perflog.db"), "ThePeacemaker82:gamma")
    assert any("steady state" in n for n in f.notes)
    with pytest.raises(FitError):
        fit_thermal(
            s.__class__(
                *(getattr(s, k)[:10] if k != "asic" else s.asic for k in s.__dataclass_fields__)
            )
        )


def test_import_trace_keeps_provenance_and_marks_invalid_rows(tmp_path):
    src = TESTS_DATA / "ThePeacemaker82-bitaxe-safe-overclock_Gamma_2025-09-10_perflog.csv"
    db = tmp_path / "pm.db"
    counts = import_trace(
        src,
        db,
        {
            "repo": "ThePeacemaker82/bitaxe-safe-overclock",
            "commit": "4df3287af07128d795c2aa507da2f99249caa74d",
        },
    )
    conn = sqlite3.connect(db)
    kind, config = conn.execute("SELECT kind, config FROM runs").fetchone()
    assert kind == "import"
    assert json.loads(config)["imported_from"]["commit"].startswith("4df3287")
    assert counts == {"ThePeacemaker82:gamma": 114}
    assert conn.execute("SELECT count(*) FROM readings").fetchone()[0] == 114


def test_shipped_runs_have_a_readme_naming_their_sources():
    text = (RUNS / "README.md").read_text()
    for db in RUNS.glob("*.db"):
        assert db.name in text
        conn = _ro(db.name)
        source = json.loads(conn.execute("SELECT config FROM runs").fetchone()[0])
        assert source["imported_from"]["commit"] in text


def test_cli(heatwave_log):
    runner = CliRunner()
    res = runner.invoke(cli, ["fit", str(heatwave_log)])
    assert res.exit_code == 0, res.output
    assert "°C/W" in res.output and "held-out" in res.output and "ambient" in res.output
    res = runner.invoke(
        cli, ["fit", str(RUNS / "jojo4751-5xgamma.db"), "--device", "jojo4751:Worker5", "--json"]
    )
    data = json.loads(res.output)
    assert res.exit_code == 0 and data[0]["steady"]["segments"] >= 5
    res = runner.invoke(cli, ["fit", str(heatwave_log), "--device", "nobody"])
    assert res.exit_code == 1 and "no readings" in res.output
