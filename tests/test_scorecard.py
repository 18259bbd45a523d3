"""The live scorecard: core.tally's sums and window by hand, then the daemon's scorecard
against the Datasette query on one real log (the daemon against the emulator, restarted)."""

from __future__ import annotations

import re
import sqlite3
import threading

import pytest
from dashboard import Server

from tempctl.config import Device, Settings
from tempctl.core.clock import FakeClock
from tempctl.core.model import fan_scale
from tempctl.core.tally import Rolling, Tally, best_frequency
from tempctl.daemon.loop import Daemon
from tempctl.daemon.scorecard import KEYS, Scorecard
from tempctl.sim.emulator import Emulator
from tempctl.store.eventlog import Log, open_read_only
from tempctl.ui import server as ui

T0 = 1_767_225_600_000  # 2026-01-01T00:00Z, on a minute


# --- the sums, by hand ----------------------------------------------------------------


def test_tally_scorecard_by_hand():
    t = Tally(threshold=60.0)
    t.add(T0, temp=61.0, hashrate=1000.0, power=15.0)  # first sample: no interval yet
    t.add(T0 + 30_000, temp=62.0, hashrate=1000.0, power=15.0, best_hashrate=1250.0)
    t.add(T0 + 90_000, temp=59.0, hashrate=500.0, power=10.0, best_hashrate=500.0)
    t.frequency_changes += 1
    c = t.scorecard()
    assert c["above_min"] == pytest.approx(0.5)  # 30 s at 62 °C
    assert c["above_degmin"] == pytest.approx(1.0)  # 2 °C for half a minute
    assert c["max_excess_c"] == pytest.approx(2.0)
    assert c["changes"] == 1 and c["trips"] == 0
    # (1000·30 + 500·60) / (1250·30 + 500·60)
    assert c["hash_ratio_est"] == pytest.approx(60_000 / 67_500)
    # (15·30 + 10·60) J / (1000·30 + 500·60) GH = 0.0175 J/GH
    assert c["j_per_th"] == pytest.approx(17.5)
    # the simulation's report is untouched by the extras
    assert "j_per_th" not in t.result() and t.result()["minutes_above"] == 0.5


def test_rolling_window_drops_whole_minutes():
    w = Rolling(threshold=60.0, steps=5, step_ms=60_000)  # five one-minute slots
    for m in range(12):  # one sample a minute: hot (62 °C) for minutes 1-3, a change at 2
        temp = 62.0 if 1 <= m <= 3 else 59.0
        w.add(T0 + m * 60_000, changed=m == 2, trips=int(m == 3), temp=temp)
        if m == 5:  # window: minutes 1-5, all three hot minutes
            c = w.scorecard()
            assert (c["above_min"], c["changes"], c["trips"]) == (3.0, 1, 1)
            assert c["above_degmin"] == pytest.approx(6.0) and c["max_excess_c"] == 2.0
        if m == 7:  # minutes 3-7: only minute 3 is hot; the change at 2 is gone
            c = w.scorecard()
            assert (c["above_min"], c["changes"], c["trips"], c["max_excess_c"]) == (1, 0, 1, 2)
    c = w.scorecard()  # minutes 7-11: cool
    assert (c["above_min"], c["above_degmin"], c["changes"], c["trips"]) == (0, 0, 0, 0)
    assert c["max_excess_c"] == 0.0  # below all the time: no excess
    assert w.tally.scorecard()["above_min"] == 3.0  # the tally itself runs on


def test_best_frequency_by_hand():
    # fan 100 %: 1.1 °C/W x 72 % of 20 W over 500 MHz = 0.03168 °C per MHz
    assert best_frequency(60.0, 20.0, 500.0, 100.0, False, 1.1, 61.0, 575.0) == pytest.approx(
        500 + 1 / 0.03168
    )
    assert best_frequency(60.0, 20.0, 500.0, 100.0, False, 1.1, 66.0, 575.0) == 575.0  # capped
    assert best_frequency(65.0, 20.0, 500.0, 100.0, False, 1.1, 61.0, 575.0) < 500
    # fixed fan at 50 %: the same step heats s(50) times more
    s = fan_scale(50.0)
    assert best_frequency(60.0, 20.0, 500.0, 50.0, False, 1.1, 61.0, 575.0) == pytest.approx(
        500 + 1 / (0.03168 * s)
    )
    # the fan PID at 50 %: the die is held; the headroom is that of the fan at 100 %
    full = 60.0 - (s - 1) * 1.1 * 20.0
    assert best_frequency(60.0, 20.0, 500.0, 50.0, True, 1.1, 61.0, 900.0) == pytest.approx(
        500 + (61.0 - full) / 0.03168
    )


# --- the daemon's scorecard and the Datasette query on one log ---------------------------


@pytest.fixture(scope="module")
def daemon_log(tmp_path_factory):
    """Two daemon runs (fake clock, 60 s polls) against a heat wave (from its hot fifth hour)
    with overheat faults: 15 h, 6 h down, 6 h. The 24 h window of the second run starts
    three hours into the first one. Two devices: ``gamma`` under the levels law (time above
    the threshold, trips), ``learner`` under the model law with its own threshold (the
    model events that set the estimate's °C/W).

    (log, gamma's figures at the first run's end and at the second's - whose scorecard
    read its 24 h back from the log -, one scorecard that watched both runs live with no
    log, and learner's figures at the second run's end). A
    scorecard whose history arrives only after the run's last poll says the same."""
    db = tmp_path_factory.mktemp("scorecard") / "tempctl.db"
    clock = FakeClock(start_ms=T0)
    watched = Scorecard()
    cards, learner = [], []
    with Emulator(
        "heatwave",
        clock=clock.monotonic,
        seed=2,
        faults="overheat=0.01",
        start_hours=5.0,
        devices=2,
    ) as emu:
        devices = (
            Device("gamma", emu.urls[0], {"law": "levels"}),
            Device("learner", emu.urls[1], {"temp_threshold": 61.0}),
        )
        settings = Settings(devices=devices, check_interval=60.0)
        for polls in (900, 360):
            sc = Scorecard.for_log(db)
            # a second one whose history comes in only after the whole run was polled
            gate = threading.Event()
            late = Scorecard(lambda g=gate: g.wait(60) and open_read_only(str(db)))
            log = Log(db)
            try:
                Daemon(settings, eventlog=log, clock=clock, observers=[sc, late, watched]).run(
                    max_polls=polls
                )
            finally:
                log.close()
            gate.set()
            for card in (sc, late):  # the history is read back on a thread of its own
                card.settle(timeout=60)
                card.close()
            cards.append(sc.values("gamma"))
            learner.append(sc.values("learner"))
            for name in ("gamma", "learner"):
                assert_same(late.values(name), sc.values(name))
            clock.advance(6 * 3600)
    return db, cards[0], cards[1], watched, learner[-1]


def assert_same(a: dict, b: dict) -> None:
    """The same figures, to float rounding (None where not known)."""
    assert a.keys() == b.keys()
    for k in a:
        if a[k] is None or b[k] is None:
            assert a[k] is b[k], k
        else:
            assert a[k] == pytest.approx(b[k], rel=1e-9, abs=1e-9), k


def query(db, device: str = "gamma") -> dict:
    sql = ui.render_metadata("tempctl")["databases"]["tempctl"]["queries"]["scorecard"]["sql"]
    assert not re.search(r"__[A-Z_]+__", sql)  # every shared constant pasted in
    conn = sqlite3.connect(db)
    conn.row_factory = sqlite3.Row
    try:
        [row] = conn.execute(sql, {"device": device}).fetchall()
    finally:
        conn.close()
    return dict(row)


def assert_agree(py: dict, sql: dict) -> None:
    for k in KEYS:
        if py[k] is None:
            assert sql[k] is None, k
        else:  # the query rounds (3 decimals, the hash ratio 4, J/TH 2)
            assert sql[k] == pytest.approx(py[k], abs=0.006), k


def test_the_log_is_worth_scoring(daemon_log):
    db, first, restarted, _, _ = daemon_log
    conn = sqlite3.connect(db)
    runs = conn.execute("SELECT count(*) FROM runs").fetchone()[0]
    conn.close()
    assert runs == 2
    # excursions, changes and trips in the first run; the window reaches into it
    assert first["above_min_start"] > 10 and first["max_excess_c_start"] > 0.5
    assert first["trips_start"] >= 3 and first["changes_start"] > first["trips_start"]
    assert restarted["changes_24h"] > restarted["changes_start"] > 0
    assert restarted["trips_24h"] > restarted["trips_start"]
    assert 0.3 < restarted["hash_ratio_est_24h"] < 1.2  # an estimate, but a sane one
    # A Gamma hashes at about 15-17 J/TH (plant.py); here a second trip within the hour
    # leaves its core stalled (issue 20.4: not re-powered), drawing power for no hash.
    assert 10 < restarted["j_per_th_24h"] < 100


def test_python_and_sql_agree_on_the_daemon_log(daemon_log):
    db, _, restarted, _, _ = daemon_log
    assert_agree(restarted, query(db))


def test_python_and_sql_agree_for_a_learning_model(daemon_log):
    """The model law logs what it learns; both sides take each reading's °C/W from the
    newest model event (the device's own threshold, 61 °C, applies)."""
    db, *_, learner = daemon_log
    conn = sqlite3.connect(db)
    learned = conn.execute(
        "SELECT count(*) FROM events WHERE device = 'learner' AND kind = 'model'"
    ).fetchone()[0]
    conn.close()
    assert learned >= 2
    sql = query(db, "learner")
    assert sql["threshold"] == 61.0
    assert_agree(learner, sql)
    assert sql["hash_ratio_est_24h"] is not None and sql["changes_24h"] > 0


def test_the_24h_window_survives_a_restart(daemon_log):
    """The restarted daemon read its window back from the log and says what a scorecard
    that watched both runs says; its since-start figures are its own run's only."""
    _, first, restarted, watched, _ = daemon_log
    seen = watched.values("gamma")
    assert_same(
        {k: v for k, v in restarted.items() if k.endswith("_24h")},
        {k: v for k, v in seen.items() if k.endswith("_24h")},
    )
    # since start: the second run only
    across = seen["changes_start"] - first["changes_start"] - restarted["changes_start"]
    assert across in (0, 1)  # a change across the restart is nobody's since start
    assert seen["trips_start"] == first["trips_start"] + restarted["trips_start"]


def test_the_window_drops_what_is_older_than_24h(daemon_log):
    """27 h of log: the first run's first three hours (hot ones) are outside the window."""
    db, _, restarted, watched, _ = daemon_log
    whole = watched._cards["gamma"].day.tally.scorecard()  # the window's tally runs on
    assert whole["changes"] > restarted["changes_24h"]
    assert whole["above_min"] > restarted["above_min_24h"]
    assert whole["above_degmin"] > restarted["above_degmin_24h"]
    conn = sqlite3.connect(db)
    lo = conn.execute("SELECT (max(ts_ms) / 300000 - 287) * 300000 FROM readings").fetchone()[0]
    old = conn.execute("SELECT count(*) FROM readings WHERE ts_ms < ?", (lo,)).fetchone()[0]
    conn.close()
    assert old > 100  # hours of readings the window leaves out


@pytest.mark.slow
def test_the_canned_query_in_a_real_datasette(daemon_log, tmp_path):
    db, _, restarted, _, learner = daemon_log
    srv = Server(db, tmp_path / "datasette.log")
    try:
        [row] = srv.query("scorecard", device="gamma")
        every = srv.query("scorecard", device="")
    finally:
        srv.stop()
    assert_agree(restarted, row)
    assert [r["device"] for r in every] == ["gamma", "learner"] and every[0] == row
    assert_agree(learner, every[1])


def test_the_contract_the_exporters_read():
    """values(device): exactly these keys (the MQTT bridge codes against them)."""
    figures = (
        "above_min",
        "above_degmin",
        "max_excess_c",
        "changes",
        "trips",
        "hash_ratio_est",
        "j_per_th",
    )
    assert set(KEYS) == {f"{f}_{w}" for f in figures for w in ("24h", "start")}
    assert Scorecard().values("never-seen") == dict.fromkeys(KEYS)


def test_an_unreadable_log_leaves_the_live_figures(caplog):
    from tempctl.core.controller import Controller, Limits
    from tempctl.core.driver import Driver
    from tempctl.core.reading import Reading
    from tempctl.daemon.loop import Device as LoopDevice

    def broken():
        raise sqlite3.OperationalError("unable to open database file")

    sc = Scorecard(broken)
    limits = Limits(check_interval=30.0)
    d = LoopDevice("gamma", "http://127.0.0.1:1", limits, None, Driver(Controller(limits, "g")))
    for i, temp in enumerate((62.0, 64.0, 65.0, 62.0)):
        sc.on_reading(d, Reading("gamma", T0 + i * 30_000, temp=temp, frequency=500.0), None)
    sc.settle(timeout=30)
    sc.close()
    v = sc.values("gamma")
    assert v["above_min_24h"] == v["above_min_start"] == 1.0  # 2 x 30 s above 63 °C
    assert v["max_excess_c_24h"] == 2.0 and v["j_per_th_24h"] is None
    assert "no history read from the log (unable to open database file)" in caplog.text
    assert sc._cards["gamma"].pending is None  # nothing kept waiting for a history
