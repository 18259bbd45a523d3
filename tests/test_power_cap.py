"""The power cap (issue 21.3): TEMPCTL_POWER_LIMIT per device, TEMPCTL_POWER_BUDGET shared.

Invariants of the pure parts (core/powercap.py) by hypothesis; the controller against the
simulator holding a cap within 3 % of its 1-minute means; the real Daemon on a fake clock
with two emulated Gammas under a shared budget; replay --check on both logs.
"""

from __future__ import annotations

import json
import sqlite3
import subprocess
import threading
from dataclasses import replace
from pathlib import Path

import procs
import requests
from dashboard import Server, free_port
from hypothesis import given, settings
from hypothesis import strategies as st
from prometheus_client.parser import text_string_to_metric_families

from tempctl.config import Device, Settings
from tempctl.core import powercap
from tempctl.core.clock import FakeClock
from tempctl.core.controller import Controller, Limits
from tempctl.core.decision import Decision
from tempctl.core.limits import PLL_STEP
from tempctl.core.reading import Reading
from tempctl.daemon.loop import Daemon
from tempctl.offline.replay import check
from tempctl.sim.emulator import Emulator
from tempctl.sim.scenario import load_scenario
from tempctl.sim.simulate import simulate
from tempctl.store.eventlog import Log
from tempctl.store.status import device_status, format_status

START_MS = 1_767_225_600_000  # 2026-01-01 00:00 UTC
COOL_ROOM = replace(
    load_scenario("constant"), name="cool", duration_s=86_400.0, ambient_points=((0.0, 25.0),)
)


# -- the pure parts -----------------------------------------------------------------------------


@given(
    p=st.floats(3, 150),
    f=st.floats(100, 1000),
    slope=st.floats(0.002, 0.5),
    cap=st.floats(5, 200),
)
def test_the_ceiling_is_the_highest_grid_frequency_predicted_under_the_cap(p, f, slope, cap):
    c = powercap.ceiling_for(p, f, slope, cap)
    assert c % PLL_STEP == 0
    assert p + slope * (c - f) <= powercap.AIM * cap + 1e-9  # never above the prediction
    assert p + slope * (c + PLL_STEP - f) > powercap.AIM * cap - 1e-9  # no grid step wasted


demands = st.lists(
    st.builds(
        lambda i, p, h, up, down: powercap.Demand(f"d{i}", p, h, p + up, max(p - down, 0.0)),
        st.integers(0, 10**6),
        st.floats(5, 120),
        st.one_of(st.none(), st.floats(100, 5000)),
        st.floats(0, 10),
        st.floats(0, 100),
    ),
    min_size=1,
    max_size=8,
    unique_by=lambda d: d.device,
)


@given(demands, st.floats(5, 2000))
def test_allocation_fits_the_budget_and_the_least_efficient_gives_way_first(ds, budget):
    shares = powercap.allocate(ds, budget)
    assert set(shares) == {d.device for d in ds}
    floors = sum(d.floor for d in ds)
    for d in ds:
        assert shares[d.device] >= round(d.floor, 1) - 0.05  # never below the floor
        assert shares[d.device] <= max(d.want, d.floor) + 0.05  # never more than wanted
    if floors <= budget:
        assert sum(shares.values()) <= budget + 0.05 * len(ds)  # rounding to 0.1 W
    # anyone short of what it wants: every less efficient device is down to its floor
    for d in ds:
        if shares[d.device] < d.want - 0.1:
            for e in ds:
                if e.j_per_th > d.j_per_th:
                    assert shares[e.device] <= e.floor + 0.1, (d, e, shares)


def test_allocation_cuts_the_least_efficient_device():
    good = powercap.Demand("good", 15.0, 1000.0, 15.5, 6.0)  # 15 J/TH
    bad = powercap.Demand("bad", 18.0, 900.0, 18.5, 7.0)  # 20 J/TH
    shares = powercap.allocate([bad, good], 30.0)
    assert shares == {"good": 15.5, "bad": 14.5}


# -- the controller ---------------------------------------------------------------------------


def reading(ts_s: float, power: float, f: float = 575.0, mv: int = 1150) -> Reading:
    return Reading(
        "gamma", START_MS + int(ts_s * 1000), temp=55.0, frequency=f, core_voltage=mv,
        hashrate=1200.0 * f / 575, power=power, asic_model="BM1370", version="v2.15.0",
    )  # fmt: skip


def feed(c: Controller, readings) -> list[Decision]:
    return [c.step(r, r.ts_ms) for r in readings]


def test_one_power_spike_moves_no_ceiling():
    c = Controller(Limits(power_limit=20.0, settle=30.0, check_interval=5.0), "gamma")
    feed(c, [reading(5 * i, 18.0) for i in range(6)])
    assert c.power_mhz is None  # 18 W at MAX_FREQUENCY fits under 20 W
    ds = feed(c, [reading(30, 380.0), reading(35, 18.1), reading(40, 17.9)])
    assert c.power_mhz is None and not any(e.kind == "power_cap" for d in ds for e in d.events)
    # two in three over the cap: the median moves it
    ds = feed(c, [reading(45, 23.0), reading(50, 23.2)])
    assert c.power_mhz is not None and c.power_mhz < 575
    assert c.limits.max_frequency == c.power_mhz


def test_the_power_cap_never_raises_over_the_user_cap_or_max_frequency():
    c = Controller(Limits(power_limit=100.0, max_frequency=500.0), "gamma")
    feed(c, [reading(5 * i, 12.0, f=450) for i in range(5)])
    assert c.limits.max_frequency == 500.0  # a cap far above changes nothing
    c = Controller(Limits(power_limit=15.0, max_frequency=575.0), "gamma")
    c.user_cap = 400.0
    feed(c, [reading(5 * i, 11.0, f=400) for i in range(5)])
    from tempctl.core import usercap

    usercap.apply(c, 400.0, START_MS)
    assert c.limits.max_frequency == 400.0  # min of all ceilings


def one_minute_means(db, after_ms: int) -> list[float]:
    conn = sqlite3.connect(db)
    rows = conn.execute(
        "SELECT ts_ms / 60000, avg(power) FROM readings WHERE power IS NOT NULL AND ts_ms > ? "
        "GROUP BY device, ts_ms / 60000 ORDER BY 1",
        (after_ms,),
    ).fetchall()
    conn.close()
    return [p for _, p in rows][1:-1]  # whole minutes only


def test_simulated_gamma_holds_the_cap_within_3_percent_and_replays(tmp_path):
    db = str(tmp_path / "cap.db")
    scn = replace(COOL_ROOM, duration_s=3 * 3600.0)
    report = simulate(scn, ["tempctl"], Settings(power_limit=15.0), poll_s=5, db=db)
    conn = sqlite3.connect(db)
    t0 = conn.execute("SELECT min(ts_ms) FROM readings").fetchone()[0]
    uncapped = conn.execute("SELECT power FROM readings ORDER BY id LIMIT 1").fetchone()[0]
    assert uncapped > 17  # the cap binds: a Gamma at 575 MHz draws ~18 W
    means = one_minute_means(db, t0 + 180_000)  # after the first settle (TEMPCTL_SETTLE)
    assert len(means) > 170
    assert all(abs(m - 15.0) <= 0.03 * 15.0 for m in means), (min(means), max(means))
    assert report["policies"]["tempctl"]["mean_frequency"] < 500
    res = check(conn)
    assert res.ok and res.transitions > 0, res


def test_the_levels_law_holds_the_cap_too_and_status_shows_it(tmp_path):
    """TEMPCTL_LAW=levels (tempctl 0.1's law) is no reason to ignore a power limit: its own
    rows take the device down to the ceiling and restore by TEMPCTL_STEP when it rises."""
    db = str(tmp_path / "levels.db")
    scn = replace(COOL_ROOM, duration_s=3 * 3600.0)
    report = simulate(scn, ["levels"], Settings(power_limit=15.0), poll_s=5, db=db)
    conn = sqlite3.connect(db)
    t0 = conn.execute("SELECT min(ts_ms) FROM readings").fetchone()[0]
    means = one_minute_means(db, t0 + 180_000)
    assert len(means) > 170
    assert all(abs(m - 15.0) <= 0.03 * 15.0 for m in means), (min(means), max(means))
    assert report["policies"]["levels"]["mean_frequency"] < 500
    reasons = [r for (r,) in conn.execute("SELECT reason FROM transitions ORDER BY id")]
    assert "above the power cap" in reasons
    assert "below MAX_FREQUENCY under a power cap that rose" in reasons
    res = check(conn)
    assert res.ok and res.transitions > 0, res
    # tempctl status, from the log alone
    last = conn.execute("SELECT max(ts_ms) FROM readings").fetchone()[0]
    s = device_status(conn, "sim-levels", last)
    ceiling = conn.execute(
        "SELECT frequency_to FROM events WHERE kind = 'power_cap' ORDER BY id DESC LIMIT 1"
    ).fetchone()[0]
    assert s["power_cap"] == {
        "limit_w": 15.0, "budget_w": None, "share_w": None, "watts": 15.0,
        "mhz": ceiling, "binds": True,
    }  # fmt: skip
    assert s["frequency"] <= ceiling < 575
    assert f"power cap  15 W (TEMPCTL_POWER_LIMIT): ceiling {ceiling:g} MHz" in format_status(s)
    # Datasette's canned query, on the real server (tempctl ui)
    srv = Server(Path(db), tmp_path / "datasette.log")
    try:
        rows = srv.query("power_caps_now", device="")
    finally:
        srv.stop()
    assert rows[0]["ceiling_mhz"] == ceiling and rows[0]["kind"] == "power_cap"
    assert (
        len(rows)
        == conn.execute("SELECT count(*) FROM events WHERE kind = 'power_cap'").fetchone()[0]
    )


def test_the_levels_law_without_a_binding_cap_is_unchanged():
    """A cap above what the levels law runs changes none of its decisions."""
    hot = replace(COOL_ROOM, duration_s=3 * 3600.0, ambient_points=((0.0, 32.0),))
    capped = simulate(hot, ["levels"], Settings(power_limit=40.0), poll_s=5)
    free = simulate(hot, ["levels"], Settings(), poll_s=5)
    a, b = capped["policies"]["levels"], free["policies"]["levels"]
    keys = ("mean_frequency", "max_temp", "frequency_changes", "gh_hours")
    assert [a[k] for k in keys] == [b[k] for k in keys]


def test_simulated_heat_keeps_the_threshold_below_the_cap(tmp_path):
    """A cap above what the threshold allows never raises the frequency over it."""
    hot = replace(COOL_ROOM, duration_s=3 * 3600.0, ambient_points=((0.0, 38.0),))
    capped = simulate(hot, ["tempctl"], Settings(power_limit=40.0), poll_s=5)
    free = simulate(hot, ["tempctl"], Settings(), poll_s=5)
    a, b = capped["policies"]["tempctl"], free["policies"]["tempctl"]
    assert a["mean_frequency"] == b["mean_frequency"] and a["max_temp"] == b["max_temp"]


# -- the daemon: two Gammas, one budget -------------------------------------------------------


def test_daemon_shares_a_budget_and_the_least_efficient_gives_way(tmp_path):
    db = tmp_path / "tempctl.db"
    clock = FakeClock(start_ms=START_MS)
    with Emulator(COOL_ROOM, clock=clock.monotonic, devices=2, seed=3) as emu:
        # the second board runs 1250 mV: more joules per terahash at any frequency
        r = requests.patch(emu.urls[1] + "/api/system", json={"coreVoltage": 1250}, timeout=10)
        assert r.status_code == 200, r.text
        s = Settings(
            check_interval=30.0,
            devices=(Device("efficient", emu.urls[0]), Device("hungry", emu.urls[1])),
            sources={},
            power_budget=30.0,
        )
        log = Log(db)
        try:
            Daemon(s, eventlog=log, clock=clock, stop=threading.Event()).run(max_polls=2 * 240)
        finally:
            log.close()
    conn = sqlite3.connect(db)
    rows = conn.execute(
        "SELECT ts_ms / 60000, device, avg(power), avg(frequency) FROM readings "
        "WHERE power IS NOT NULL AND ts_ms > ? GROUP BY 1, 2 ORDER BY 1",
        (START_MS + 900_000,),
    ).fetchall()
    by_min: dict[int, dict[str, tuple[float, float]]] = {}
    for m, dev, p, f in rows:
        by_min.setdefault(m, {})[dev] = (p, f)
    whole = [v for v in by_min.values() if len(v) == 2]
    assert len(whole) > 60
    steps = []
    for v in whole:
        total = v["efficient"][0] + v["hungry"][0]
        steps.append(total)
        # one device's step: TEMPCTL_STEP (25 MHz) at ~25 mW/MHz is well under 1 W
        assert total <= 30.0 + 1.0, v
        assert v["hungry"][1] < v["efficient"][1], v  # the hungry one gave way
    assert max(steps) > 28.5  # the budget is used, not left idle
    shares = conn.execute("SELECT count(*) FROM events WHERE kind = 'power_budget'").fetchone()[0]
    assert shares >= 2
    # tempctl status shows each device's share of the budget (the last power_budget event)
    last = conn.execute("SELECT max(ts_ms) FROM readings").fetchone()[0]
    for dev in ("efficient", "hungry"):
        cap = device_status(conn, dev, last)["power_cap"]
        share = conn.execute(
            "SELECT frequency_to FROM events WHERE kind = 'power_budget' AND device = ? "
            "ORDER BY id DESC LIMIT 1",
            (dev,),
        ).fetchone()[0]
        assert (cap["limit_w"], cap["budget_w"], cap["share_w"]) == (None, 30.0, share)
        assert cap["watts"] == share
    text = format_status(device_status(conn, "hungry", last))
    assert "of TEMPCTL_POWER_BUDGET 30 W" in text
    res = check(conn)
    assert res.ok, res


def test_a_low_cap_keeps_the_runs_floor_and_raises_no_heat_alarm():
    c = Controller(Limits(power_limit=8.0, settle=30.0, check_interval=5.0), "gamma")
    floor = c.limits.lowest  # TEMPCTL_MIN_FREQUENCY=0: 40 % of MAX_FREQUENCY
    ds = feed(c, [reading(5 * i, 18.0) for i in range(12)])
    assert c.power_mhz == floor and c.limits.max_frequency == floor
    assert c.limits.lowest == floor  # not 40 % of the narrowed MAX
    assert c.frequency == floor  # the above_max row took it down
    kinds = [e.kind for d in ds for e in d.events]
    assert "power_cap" in kinds and "floor" not in kinds


def test_a_restart_keeps_the_ceiling_and_replays(tmp_path):
    """The ceiling is read back from the log (the last power_cap event): the restarted
    controller does not climb over the cap while it re-derives it."""
    db = str(tmp_path / "restart.db")
    scn = replace(COOL_ROOM, duration_s=1800.0)
    for _ in range(2):
        simulate(scn, ["tempctl"], Settings(power_limit=15.0), poll_s=5, db=db)
    conn = sqlite3.connect(db)
    run_id = conn.execute("SELECT max(id) FROM runs WHERE kind = 'simulation'").fetchone()[0]
    powers = [
        p
        for (p,) in conn.execute(
            "SELECT power FROM readings WHERE run_id = ? ORDER BY id", (run_id,)
        )
    ]
    # the simulated board starts at 575 MHz each run: the first reading is before any command
    assert len(powers) > 300 and max(powers[1:]) <= 15.0 * 1.03, max(powers[1:])
    res = check(conn)
    assert res.ok, res


# -- end to end: `tempctl run` (levels law) against `tempctl emulate` --------------------------


def test_tempctl_run_under_the_levels_law_holds_and_shows_the_cap(tmp_path):
    """The real daemon (FAST timing: TEMPCTL_LAW=levels) with TEMPCTL_POWER_LIMIT=15 on an
    emulated Gamma (~18 W at 575 MHz): the device goes under the ceiling, Prometheus and
    `tempctl status` show it, and `tempctl replay` reproduces every decision."""
    emu = procs.start_emulator(tmp_path, scenario="constant", seed=4)
    db = tmp_path / "tempctl.db"
    port = free_port()
    d = procs.start_daemon(emu.address, db, tmp_path, power_limit=15.0, metrics_port=port)
    url = f"http://127.0.0.1:{port}/metrics"

    def gauges() -> dict[str, float]:
        try:
            text = requests.get(url, timeout=2).text
        except requests.RequestException:
            return {}
        return {
            s.name: s.value
            for fam in text_string_to_metric_families(text)
            for s in fam.samples
            if s.name.startswith(("tempctl_power", "tempctl_target_frequency"))
        }

    try:
        g = procs.wait_for(
            lambda: (x := gauges()).get("tempctl_power_cap_binding") == 1 and x,
            60,
            "a binding power ceiling on /metrics",
            d,
        )
        assert g["tempctl_power_limit_watts"] == 15.0
        assert g["tempctl_target_frequency_mhz"] <= g["tempctl_power_ceiling_mhz"] < 575
        procs.wait_for(
            lambda: gauges().get("tempctl_power_watts", 99) <= 15.0, 60, "power under the cap", d
        )
        procs.assert_clean_exit(d)
    finally:
        d.stop()
        emu.stop()
    env = procs.daemon_env(emu.address, db, tmp_path)
    r = subprocess.run(
        [procs.PYTHON, "-m", "tempctl", "status", "--db", str(db), "--json"],
        env=env, capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert r.returncode == 0, r.stderr
    cap = json.loads(r.stdout)[0]["power_cap"]
    conn = sqlite3.connect(db)
    assert json.loads(conn.execute("SELECT config FROM runs").fetchone()[0])["law"] == "levels"
    last = conn.execute(
        "SELECT frequency_to FROM events WHERE kind = 'power_cap' ORDER BY id DESC LIMIT 1"
    )
    assert cap["limit_w"] == cap["watts"] == 15.0 and cap["mhz"] == last.fetchone()[0]
    conn.close()
    r = subprocess.run(
        [procs.PYTHON, "-m", "tempctl", "replay", str(db)],
        env=env, capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert r.returncode == 0 and r.stdout.startswith("ok: 1 run(s)"), r.stdout + r.stderr


@settings(max_examples=150, deadline=None)
@given(
    law=st.sampled_from(["levels", "model"]),
    cap=st.floats(8, 20),
    polls=st.lists(
        st.tuples(st.floats(45, 70), st.floats(0.7, 1.3), st.booleans()), min_size=5, max_size=80
    ),
)
def test_either_law_never_stays_above_the_ceiling_past_a_settle(law, cap, polls):
    """Whatever the temperatures and powers: tempctl never commands above MAX_FREQUENCY or
    below the floor, and is above a power ceiling only within TEMPCTL_SETTLE of its last
    change (the row that takes it down waits for the change to settle)."""
    lim = Limits(law=law, power_limit=cap, settle=30.0, check_interval=5.0)
    c = Controller(lim, "gamma")
    f = lim.max_frequency
    for i, (temp, scale, spike) in enumerate(polls):
        ts = START_MS + 5000 * i
        power = 900.0 if spike else 18.0 * (f / 575) * scale  # issue 20's spikes too
        r = Reading(
            "gamma", ts, temp=temp, frequency=f, core_voltage=1150, hashrate=2.1 * f,
            power=power, asic_model="BM1370", version="v2.15.0",
        )  # fmt: skip
        d = c.step(r, ts)
        for cmd in d.commands:
            if cmd.frequency is not None:
                assert lim.lowest - 1e-6 <= cmd.frequency <= lim.max_frequency + 1e-6
                f = cmd.frequency  # the device follows
        if c.power_mhz is not None and c.frequency > c.limits.max_frequency + 1e-6:
            assert ts - c.last_change_ms < lim.settle * 1000, (c.frequency, c.power_mhz)
