"""The wall clock jumps backwards and forwards while the daemon runs (NTP step, a Pi without
RTC): the schedule stays on monotonic time, stamps stay on "wall time at start + monotonic",
and settle times and the stable window are measured right across the jumps.

Two ways to move the wall clock, with the same checks:

* ``faketime``: the real `tempctl run` process under libfaketime (Debian package
  ``faketime``), whose offset file is rewritten while it runs; monotonic time is not faked.
  Skipped when libfaketime is not installed (CI: ``apt-get install faketime``).
* ``in-process``: ``Daemon`` with the real ``SystemClock`` class fed by a stepped time
  source: monotonic time moves only when the loop sleeps (by exactly what it asked for),
  and the wall clock is that plus an offset the script changes. Nothing depends on how
  fast this machine is, so its checks are exact.

The faketime variant is a real process on real time: it checks only what holds however
slowly the machine runs (stamps never jump, settle and window never judged early), and
waits on conditions with generous deadlines.

The device is ``procs.FakeAxeOS``, so the test decides when it is hot and when it cools.

Anchoring at start (issue 13.12): a run whose clock was far ahead must not drag later runs
into its future; a wall clock behind every row (no RTC, no NTP yet) still never stamps
before the log's last row. Both are logged as a ``clock`` event.
"""

from __future__ import annotations

import glob
import threading
import time
from itertools import pairwise
from pathlib import Path

import procs
import pytest
from procs import LogView, check_log, fake_device, limits_for, start_daemon, wait_for

from tempctl.config import load_settings
from tempctl.core.clock import SystemClock
from tempctl.core.controller import Command, Decision, Transition
from tempctl.core.reading import Reading
from tempctl.daemon.loop import Daemon
from tempctl.store.eventlog import Log

pytestmark = pytest.mark.slow
fault = procs.fault_recorder()

LIBFAKETIME = next(
    iter(
        sorted(
            glob.glob("/usr/lib/*/faketime/libfaketimeMT.so.1")
            + glob.glob("/usr/lib/faketime/libfaketimeMT.so.1")
            + glob.glob("/usr/local/lib/faketime/libfaketimeMT.so.1")
        )
    ),
    None,
)
INTERVAL, SETTLE, WINDOW_S = procs.FAST["check_interval"], procs.FAST["settle"], 7.2
HOUR = 3600
BEHIND = -6 * HOUR  # the restart: a Pi without RTC whose clock came back hours behind


class FaketimeDaemon:
    """`tempctl run` under libfaketime; ``jump(s)`` sets the wall clock offset to s seconds."""

    def __init__(self, tmp_path: Path, address: str, db: Path, offset: int = 0, name="daemon"):
        self.offset_file = tmp_path / "faketime-offset"
        self.jump(offset)
        # The offset file is read again at most every second (FAKETIME_NO_CACHE, reading it
        # on every call, slows each thread hand-off to ~0.2 s and would skew the pace).
        env = {
            "LD_PRELOAD": LIBFAKETIME,
            "FAKETIME_TIMESTAMP_FILE": str(self.offset_file),
            "FAKETIME_CACHE_DURATION": "1",
            "FAKETIME_DONT_FAKE_MONOTONIC": "1",
        }
        self.proc = start_daemon(address, db, tmp_path, env_extra=env, name=name)

    def jump(self, offset_s: int) -> None:
        self.offset_file.write_text(f"{offset_s:+d}\n")

    def stop(self) -> int:
        procs.assert_clean_exit(self.proc)
        return 0

    def close(self) -> None:
        self.proc.stop()


class SteppedTime:
    """Monotonic and wall time for ``SystemClock``: ``t`` moves only in ``wait``."""

    def __init__(self, wall0: float, script=None):
        self.t = 1000.0
        self.wall0 = wall0 - self.t
        self.offset = 0.0
        self.script = script  # called with the elapsed seconds after every step

    def wall(self) -> float:
        return self.wall0 + self.t + self.offset

    def monotonic(self) -> float:
        return self.t


class SteppedClock(SystemClock):
    def __init__(self, time_: SteppedTime):
        super().__init__(wall=time_.wall, monotonic=time_.monotonic)
        self.time = time_
        self.t0 = time_.t

    def wait(self, seconds: float, stop: threading.Event) -> bool:
        if not stop.is_set():
            self.time.t += max(0.0, seconds)
            if self.time.script is not None:
                self.time.script(self.time.t - self.t0)
        return stop.is_set()


def settings_for(tmp_path, address, db):
    return load_settings(
        {"devices": address, "db": str(db), **{k: str(v) for k, v in procs.FAST.items()}},
        environ={},
        default_config=str(procs.empty_config(tmp_path)),
    )


def run_stepped(tmp_path, address, db, script, *, wall0: float, polls: int = 4000) -> None:
    """``Daemon`` on a SteppedClock until ``script(time, elapsed, stop)`` sets ``stop``."""
    settings = load_settings(
        {"devices": address, "db": str(db), **{k: str(v) for k, v in procs.FAST.items()}},
        environ={},
        default_config=str(procs.empty_config(tmp_path)),
    )
    time_ = SteppedTime(wall0)
    stop = threading.Event()
    time_.script = lambda e: script(time_, e, stop)
    log = Log(db)
    try:
        Daemon(settings, eventlog=log, clock=SteppedClock(time_), stop=stop).run(max_polls=polls)
    finally:
        log.close()


def measure(v: LogView) -> dict:
    trans: dict[str, dict] = {}
    for t in v.transitions():
        trans.setdefault(t["to_state"], t)  # the first time in each state
    ts = [r[0] for r in v.rows("SELECT ts_ms FROM readings WHERE run_id = 1 ORDER BY id")]
    cool = v.value("SELECT min(ts_ms) FROM readings WHERE run_id = 1 AND temp < 60")
    # the stable streak starts at the last hot reading (however late the next poll came)
    last_hot = v.value(
        "SELECT max(ts_ms) FROM readings WHERE run_id = 1 AND temp >= 60 AND ts_ms < ?", cool
    )
    return {
        "settle": (trans["THROTTLED_2"]["ts_ms"] - trans["THROTTLED_1"]["ts_ms"]) / 1000,
        "window": (trans["RECOVERING"]["ts_ms"] - (last_hot or cool)) / 1000,
        "steps": [(b - a) / 1000 for a, b in pairwise(ts)],
        "clock": [e["message"] for e in v.events("clock")],
        "last_ts": ts[-1],
    }


def test_wall_clock_jumps_in_process(tmp_path, fault):
    row = fault(
        "wall clock jumping backwards and forwards (in-process, stepped time)",
        "schedule on monotonic time (polls keep their pace), stamps never jump, "
        "settle and stable window measured right across the jumps; a 'clock' "
        "warning per jump; after a restart with the clock hours behind, stamps "
        "continue after the last logged row",
    )
    db = tmp_path / "tempctl.db"
    v = LogView(db)
    with fake_device() as dev:
        dev.info["temp"] = 66.0  # hot: THROTTLED_1 at once, THROTTLED_2 after settling

        def script(t, e, stop):
            if e >= 1.0 and t.offset == 0:
                t.offset = -HOUR  # NTP steps the clock an hour back during the settle time
            if e >= 3.0:
                dev.info["temp"] = 55.0  # cool: the stable window starts
            if e >= 5.0 and t.offset == -HOUR:
                t.offset = 2 * HOUR  # and to two hours ahead while the window fills
            if e >= 14.0:
                stop.set()

        run_stepped(tmp_path, dev.address, db, script, wall0=time.time())
        m = measure(v)

        def again(t, e, stop):
            if e >= 1.0:
                stop.set()

        run_stepped(tmp_path, dev.address, db, again, wall0=m["last_ts"] / 1000 + BEHIND)
    restarted = v.value("SELECT min(ts_ms) FROM readings WHERE run_id = 2")
    row.observed = (
        f"steps between stamps {min(m['steps']):.2f}–{max(m['steps']):.2f} s (polls every "
        f"{INTERVAL:g} s); settle {m['settle']:.2f} s in the log across a −1 h jump; stable "
        f"window {m['window']:.2f} s in the log across a +3 h jump; clock events: "
        f"{m['clock']}; after a restart 6 h behind: first stamp "
        f"{restarted - m['last_ts']:+d} ms after the last logged row"
    )
    assert set(m["steps"]) == {INTERVAL}  # the pace holds exactly: no stop, no burst
    assert SETTLE <= m["settle"] <= SETTLE + INTERVAL
    assert WINDOW_S - INTERVAL <= m["window"] <= WINDOW_S + INTERVAL
    assert m["clock"][:2] == [
        "wall clock moved -3600.0 s from the monotonic schedule; timestamps keep the "
        "monotonic timeline until restart",
        "wall clock moved +7200.0 s from the monotonic schedule; timestamps keep the "
        "monotonic timeline until restart",
    ]
    assert 0 < restarted - m["last_ts"] <= 1000 * INTERVAL + 1000
    assert check_log(db, limits_for()) == []


def test_wall_clock_jumps_faketime(tmp_path, fault):
    if LIBFAKETIME is None:
        pytest.skip("libfaketime not installed (Debian: apt-get install faketime)")
    row = fault(
        "wall clock jumping backwards and forwards (faketime, real process)",
        "stamps never jump with the clock; settle and stable window are never judged "
        "early; a 'clock' warning per jump; after a restart with the clock hours behind, "
        "stamps continue after the last logged row",
    )
    db = tmp_path / "tempctl.db"
    v = LogView(db)
    with fake_device() as dev:
        dev.info["temp"] = 66.0
        d = FaketimeDaemon(tmp_path, dev.address, db)
        try:
            wait_for(lambda: v.count("transitions") >= 1, 60, "THROTTLED_1", d.proc)
            d.jump(-HOUR)
            # each jump is seen (libfaketime re-reads its file each second) before the next
            wait_for(lambda: len(v.events("clock")) >= 1, 60, "the -1 h clock event", d.proc)
            wait_for(
                lambda: v.count("transitions", "to_state = 'THROTTLED_2'") >= 1,
                60,
                "THROTTLED_2 after settling",
                d.proc,
            )
            dev.info["temp"] = 55.0
            d.jump(+2 * HOUR)
            wait_for(lambda: len(v.events("clock")) >= 2, 60, "the +2 h clock event", d.proc)
            wait_for(
                lambda: v.count("transitions", "to_state = 'RECOVERING'") >= 1,
                120,
                "RECOVERING after the stable window",
                d.proc,
            )
            d.stop()
        finally:
            d.close()
        m = measure(v)
        d = FaketimeDaemon(tmp_path, dev.address, db, offset=BEHIND, name="again")
        try:
            wait_for(lambda: v.count("readings", "run_id = 2") >= 3, 60, "run 2", d.proc)
            d.stop()
        finally:
            d.close()
    restarted = v.value("SELECT min(ts_ms) FROM readings WHERE run_id = 2")
    row.observed = (
        f"longest step between stamps {max(m['steps']):.2f} s; settle {m['settle']:.2f} s "
        f"and stable window {m['window']:.2f} s in the log across −1 h and +3 h jumps; "
        f"clock events: {len(m['clock'])}; after a restart 6 h behind: first stamp "
        f"{restarted - m['last_ts']:+d} ms after the last logged row"
    )
    # A jump carried into the stamps would be a step of an hour or a negative one. How
    # long a step is otherwise depends on the machine's load, so only that is checked.
    assert min(m["steps"]) > 0 and max(m["steps"]) < 600
    assert m["settle"] >= SETTLE  # never judged early, however the clock moved
    assert m["window"] >= WINDOW_S  # never judged early, however late a poll came
    assert len(m["clock"]) == 2 and "-3600.0 s" in m["clock"][0], m["clock"]
    assert "+7200.0 s" in m["clock"][1], m["clock"]
    assert restarted > m["last_ts"]
    assert check_log(db, limits_for()) == []


# --- anchoring at start (issue 13.12) ------------------------------------------------------

DAY_MS = 86_400_000


def seed_log(db, device: str, at_ms: int, ahead_ms: int) -> None:
    """Run 1 at ``at_ms``, then run 2 stamped ``ahead_ms`` later: THROTTLED_1 at 490 MHz."""
    log = Log(db)
    log.start_run({}, ts_ms=at_ms)
    log.save_reading(Reading(device, at_ms + 1000, temp=50.0, frequency=575.0))
    future = at_ms + ahead_ms
    log.start_run({}, ts_ms=future)
    log.save_reading(Reading(device, future + 1000, temp=66.0, frequency=575.0))
    t = Transition("NORMAL", "THROTTLED_1", "above threshold", 490.0, 66.0, None, None, 0.0, None)
    log.save_decision(
        device, future + 1000, Decision(t, [Command("set_frequency", "above threshold", 490.0)])
    )
    log.close()


def run_real(tmp_path, address, db, polls: int) -> None:
    settings = load_settings(
        {"devices": address, "db": str(db), **{k: str(v) for k, v in procs.FAST.items()}},
        environ={},
        default_config=str(procs.empty_config(tmp_path)),
    )
    log = Log(db)
    try:
        Daemon(settings, eventlog=log).run(max_polls=polls)  # the daemon's own SystemClock
    finally:
        log.close()


def test_a_future_stamped_run_does_not_drag_later_runs(tmp_path):
    db = tmp_path / "tempctl.db"
    v = LogView(db)
    with fake_device() as dev:
        dev.info.update(temp=66.0, frequency=490, actualFrequency=490)
        now = int(time.time() * 1000)
        seed_log(db, dev.address, now - HOUR * 1000, 30 * DAY_MS)
        run_real(tmp_path, dev.address, db, polls=int(3 * SETTLE / INTERVAL))
        wall = int(time.time() * 1000)
    first, last = v.rows("SELECT min(ts_ms), max(ts_ms) FROM readings WHERE run_id = 3")[0]
    assert now <= first <= last <= wall + 1000, (first - now, last - wall)
    event = v.dicts("SELECT * FROM events WHERE kind = 'clock' AND run_id = 3")
    assert len(event) == 1 and event[0]["level"] == "warning"
    assert "30.0 days ahead of the wall clock" in event[0]["message"], event
    # the latest decision (THROTTLED_1) was restored and its future stamp does not hold
    # off settling: still hot after SETTLE, the law goes on to THROTTLED_2
    states = [r[0] for r in v.rows("SELECT to_state FROM transitions WHERE run_id = 3")]
    assert "THROTTLED_2" in states, states


def test_a_wall_clock_behind_every_row_still_stamps_after_them(tmp_path):
    db = tmp_path / "tempctl.db"
    v = LogView(db)
    with fake_device() as dev:
        ahead = int(time.time() * 1000) + 40 * DAY_MS  # the log is from "the future"
        seed_log(db, dev.address, ahead, 1000)
        last = v.value("SELECT max(ts_ms) FROM readings")
        run_real(tmp_path, dev.address, db, polls=3)
    first = v.value("SELECT min(ts_ms) FROM readings WHERE run_id = 3")
    assert 0 < first - last < 60_000
    events = [e["message"] for e in v.events("clock")]
    assert sum("behind every row in the log" in e for e in events) == 1, events
    assert any("wall clock moved -" in e for e in events), events  # and the skew, as ever


# --- replay of a log written across a clock that was days ahead (issue 23.4) ---------------


def replay_check(db) -> tuple[int, str]:
    from click.testing import CliRunner

    from tempctl.cli import cli

    res = CliRunner().invoke(cli, ["replay", str(db)], env={"TEMPCTL_CONFIG": ""})
    return res.exit_code, res.output


def test_replay_checks_a_log_written_with_the_clock_two_days_ahead_in_between(tmp_path):
    # The recipe: a run on the true clock, one with the clock 2 days ahead, one on the true
    # clock again. The third run's daemon restores the second run's last decision (the
    # latest written); replay used to restore the first run's (the latest stamped before).
    db = tmp_path / "tempctl.db"
    v = LogView(db)
    wall = time.time()
    with fake_device() as dev:
        dev.info["temp"] = 66.0  # hot: THROTTLED_1, then THROTTLED_2 after settling

        def hot(t, e, stop):
            if e >= 2 * SETTLE + 1:
                stop.set()

        run_stepped(tmp_path, dev.address, db, hot, wall0=wall)
        dev.info["temp"] = 50.0  # cool: the stable window passes, tempctl restores

        def cool(t, e, stop):
            if e >= 4 * WINDOW_S:
                stop.set()

        def recovering(t, e, stop):
            if e >= WINDOW_S + 2.5 * SETTLE:  # stopped half-way up
                stop.set()

        run_stepped(tmp_path, dev.address, db, recovering, wall0=wall + 2 * DAY_MS / 1000)

        def hot_then_cool(t, e, stop):  # the stable window counts again
            dev.info["temp"] = 66.0 if e < 2 * SETTLE + 1 else 50.0
            if e >= 4 * WINDOW_S:
                stop.set()

        run_stepped(tmp_path, dev.address, db, hot_then_cool, wall0=wall + 60)
    runs = v.rows("SELECT id, ts_ms FROM runs ORDER BY id")
    assert [r[0] for r in runs] == [1, 2, 3]
    assert runs[1][1] - runs[0][1] > DAY_MS and runs[2][1] < runs[1][1]  # the recipe held
    states = [
        [r[0] for r in v.rows("SELECT to_state FROM transitions WHERE run_id = ? ORDER BY id", i)]
        for i in (1, 2, 3)
    ]
    assert states[0][-1] == "THROTTLED_2" and states[1][-1] == "RECOVERING", states
    assert states[2][:2] == ["THROTTLED_2", "RECOVERING"], states  # hot, then the window
    code, out = replay_check(db)
    assert code == 0, out
    assert out.startswith("ok: 3 run(s)"), out


def test_replay_checks_a_log_written_with_the_clock_two_days_ahead_faketime(tmp_path):
    # The same recipe with real `tempctl run` processes, the middle one under libfaketime
    # two days ahead, and `tempctl replay` as a user runs it. What the runs decide depends
    # on this machine's pace; that replay reproduces it exactly does not.
    if LIBFAKETIME is None:
        pytest.skip("libfaketime not installed (Debian: apt-get install faketime)")
    import subprocess

    db = tmp_path / "tempctl.db"
    v = LogView(db)

    def in_run(run: int, state: str, n: int = 1):
        return lambda: v.count("transitions", "run_id = ? AND to_state = ?", run, state) >= n

    with fake_device() as dev:
        dev.info["temp"] = 66.0
        d = FaketimeDaemon(tmp_path, dev.address, db, name="true-clock")
        try:
            wait_for(in_run(1, "THROTTLED_2"), 60, "THROTTLED_2 in run 1", d.proc)
            d.stop()
        finally:
            d.close()
        dev.info["temp"] = 50.0
        d = FaketimeDaemon(tmp_path, dev.address, db, offset=2 * DAY_MS // 1000, name="ahead")
        try:
            wait_for(in_run(2, "RECOVERING", 2), 120, "RECOVERING steps in run 2", d.proc)
            d.stop()
        finally:
            d.close()
        dev.info["temp"] = 66.0
        d = FaketimeDaemon(tmp_path, dev.address, db, name="true-again")
        try:
            wait_for(in_run(3, "THROTTLED_2"), 60, "THROTTLED_2 in run 3", d.proc)
            dev.info["temp"] = 50.0
            wait_for(in_run(3, "RECOVERING"), 120, "RECOVERING in run 3", d.proc)
            d.stop()
        finally:
            d.close()
    runs = v.rows("SELECT ts_ms FROM runs ORDER BY id")
    assert runs[1][0] - runs[0][0] > DAY_MS and runs[2][0] < runs[1][0]  # the recipe held
    r = subprocess.run(
        [procs.PYTHON, "-m", "tempctl", "replay", str(db)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert r.returncode == 0, r.stdout + r.stderr
    assert r.stdout.startswith("ok: 3 run(s)"), r.stdout
