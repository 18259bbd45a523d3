"""The wall clock jumps backwards and forwards while the daemon runs (NTP step, a Pi without
RTC): the schedule stays on monotonic time, stamps stay on "wall time at start + monotonic",
and settle times and the stable window are measured right across the jumps.

Two ways to move the wall clock, with the same checks:

* ``faketime``: the real `tempctl run` process under libfaketime (Debian package
  ``faketime``), whose offset file is rewritten while it runs; monotonic time is not faked.
  Skipped when libfaketime is not installed (CI: ``apt-get install faketime``).
* ``in-process``: ``Daemon`` with the real ``SystemClock`` in a thread of this process, with
  ``time.time`` (the stdlib wall clock, not our code) shifted by pytest's monkeypatch.

The device is ``procs.FakeAxeOS``, so the test decides when it is hot and when it cools.
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


class InProcessDaemon:
    """``Daemon`` with the real SystemClock in a thread; ``time.time`` shifted by monkeypatch."""

    def __init__(self, tmp_path, address, db, monkeypatch, offset: int = 0):
        real = time.time
        self.offset = offset
        monkeypatch.setattr(time, "time", lambda: real() + self.offset)
        settings = load_settings(
            {"devices": address, "db": str(db), **{k: str(v) for k, v in procs.FAST.items()}},
            environ={},
            default_config=str(procs.empty_config(tmp_path)),
        )
        self.log = Log(db)
        self.stop_event = threading.Event()
        self.daemon = Daemon(settings, eventlog=self.log, stop=self.stop_event)
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        try:
            self.daemon.run()
        except Exception as exc:  # noqa: BLE001 (re-raised by check() in the test thread)
            self.error = exc

    def jump(self, offset_s: int) -> None:
        self.offset = offset_s

    def check(self) -> None:
        if self.error is not None:
            raise self.error

    def stop(self) -> int:
        self.stop_event.set()
        self.thread.join(10)
        assert not self.thread.is_alive()
        self.check()
        return 0

    def close(self) -> None:
        if self.thread.is_alive():
            self.stop_event.set()
            self.thread.join(10)
        self.log.close()


def start(how, tmp_path, address, db, monkeypatch, offset=0, name="daemon"):
    if how == "faketime":
        return FaketimeDaemon(tmp_path, address, db, offset, name=name)
    return InProcessDaemon(tmp_path, address, db, monkeypatch, offset)


def wait(d, cond, what: str, timeout: float = 20.0):
    if isinstance(d, FaketimeDaemon):
        return wait_for(cond, timeout, what, d.proc)

    def checked():
        d.check()  # the in-process daemon's thread must not have died
        return cond()

    return wait_for(checked, timeout, what)


@pytest.mark.parametrize("how", ["faketime", "in-process"])
def test_wall_clock_jumps(tmp_path, fault, monkeypatch, how):
    if how == "faketime" and LIBFAKETIME is None:
        pytest.skip("libfaketime not installed (Debian: apt-get install faketime)")
    row = fault(
        f"wall clock jumping backwards and forwards ({how})",
        "schedule on monotonic time (polls keep their pace), stamps never jump, "
        "settle and stable window measured right across the jumps; a 'clock' "
        "warning per jump; after a restart with the clock a day behind, stamps "
        "continue after the last logged row",
    )
    db = tmp_path / "tempctl.db"
    v = LogView(db)
    with fake_device() as dev:
        dev.info["temp"] = 66.0  # hot: THROTTLED_1 at once, THROTTLED_2 after settling
        d = start(how, tmp_path, dev.address, db, monkeypatch)
        try:
            wait(d, lambda: v.count("transitions") >= 1, "THROTTLED_1")
            t1 = time.monotonic()
            d.jump(-HOUR)  # NTP steps the clock an hour back during the settle time
            wait(
                d,
                lambda: v.count("transitions", "to_state = 'THROTTLED_2'") >= 1,
                "THROTTLED_2 after settling",
            )
            settle_real = time.monotonic() - t1
            dev.info["temp"] = 55.0  # cool: the stable window starts
            cooled = time.monotonic()
            first_cool = v.value("SELECT coalesce(max(id), 0) FROM readings")
            d.jump(+2 * HOUR)  # and two hours forward while the window fills
            wait(
                d,
                lambda: v.count("transitions", "to_state = 'RECOVERING'") >= 1,
                "RECOVERING after the stable window",
            )
            window_real = time.monotonic() - cooled
            d.stop()
        finally:
            d.close()
        trans = {t["to_state"]: t for t in v.transitions()}
        settle_db = (trans["THROTTLED_2"]["ts_ms"] - trans["THROTTLED_1"]["ts_ms"]) / 1000
        cool_ts = v.value("SELECT min(ts_ms) FROM readings WHERE id > ? AND temp < 60", first_cool)
        window_db = (trans["RECOVERING"]["ts_ms"] - cool_ts) / 1000
        ts = [r[0] for r in v.rows("SELECT ts_ms FROM readings ORDER BY id")]
        steps = [(b - a) / 1000 for a, b in pairwise(ts)]
        clock = [e["message"] for e in v.events("clock")]
        last_ts = ts[-1]

        # a restart while the wall clock is a day behind the log (a Pi without RTC)
        run = v.value("SELECT max(id) FROM runs")
        d = start(how, tmp_path, dev.address, db, monkeypatch, offset=-24 * HOUR, name="again")
        try:
            wait(
                d,
                lambda: v.count("readings", "run_id = ?", run + 1) >= 3,
                "readings after the restart",
            )
            d.stop()
        finally:
            d.close()
    restarted = v.value("SELECT min(ts_ms) FROM readings WHERE run_id = ?", run + 1)
    row.observed = (
        f"steps between stamps {min(steps):.2f}–{max(steps):.2f} s (polls every "
        f"{INTERVAL:g} s); settle {settle_db:.2f} s in the log ({settle_real:.1f} s "
        f"real) across a −1 h jump; stable window {window_db:.1f} s in the log "
        f"({window_real:.1f} s real) across a +2 h jump; clock events: {clock}; "
        f"after a restart 24 h behind: first stamp {restarted - last_ts:+d} ms "
        f"after the last logged row"
    )
    # no stamp jumps with the clock (that would be a step of an hour, or a negative one);
    # the pace holds: polls jitter (more so under libfaketime on a loaded machine), but they
    # neither stop for the jump nor burst to catch up
    assert 0 < min(steps) and max(steps) < 2.0
    assert 0.8 * INTERVAL < sum(steps) / len(steps) < 1.5 * INTERVAL
    assert SETTLE <= settle_db < SETTLE + 3 * INTERVAL
    assert SETTLE - 0.1 <= settle_real < SETTLE + 1.5
    assert WINDOW_S - INTERVAL <= window_db < WINDOW_S + 3 * INTERVAL
    assert window_real >= WINDOW_S - 0.5, "a forward jump completed the stable window early"
    assert len(clock) == 2 and "-3600.0 s" in clock[0] and "+7200.0 s" in clock[1], clock
    assert 0 < restarted - last_ts < 10_000
    assert check_log(db, limits_for()) == []
