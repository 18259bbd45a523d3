"""End to end, the model law: `tempctl run` against `tempctl emulate` in the closet.

The closet (replay/scenarios/closet.toml) is too hot for SECOND_FREQUENCY from about hour
4.6: at hour 8 the steady die at 400 MHz is above 63 °C. The emulator runs plant time 120x
faster (τ_slow 48 s becomes 0.4 s); the daemon polls every 0.5 s with a 3 s settle, so the
model's own time constants scale with it (model.py, ``time_scale``). The real daemon must
bring the die back under TEMP_THRESHOLD by going below SECOND_FREQUENCY, say so once, and
never leave [floor, MAX].
"""

from __future__ import annotations

import json
import signal
import sqlite3
import subprocess
import sys
import time
import urllib.request

import pytest
from procs import daemon_env

pytestmark = pytest.mark.slow

THRESHOLD = 63.0


def tempctl(*args: str, env=None, preexec_fn=None) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "tempctl", *args],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        preexec_fn=preexec_fn,
    )


@pytest.fixture
def closet():
    proc = tempctl(
        "emulate", "--scenario", "closet", "--scale", "120", "--start-hours", "8", "--seed", "5"
    )
    url = proc.stdout.readline().strip()
    assert url.startswith("http://127.0.0.1:"), url
    yield url
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=10) == 0


def rows(db, sql, *args):
    if not db.exists():
        return []
    conn = sqlite3.connect(db)
    try:
        return conn.execute(sql, args).fetchall()
    except sqlite3.OperationalError:
        return []
    finally:
        conn.close()


def wait_for(predicate, timeout, what, proc):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        if proc.poll() is not None:
            pytest.fail(
                f"daemon exited {proc.returncode} waiting for {what}:\n{proc.stdout.read()}"
            )
        time.sleep(0.2)
    pytest.fail(f"timed out waiting for {what}")


def test_closet_too_hot_for_second_frequency_comes_back_under_the_threshold(closet, tmp_path):
    db = tmp_path / "tempctl.db"
    env = daemon_env(
        closet,
        db,
        tmp_path,
        check_interval=0.5,
        settle=3,
        stable_timeframe=0.004,
        temp_threshold=THRESHOLD,
        first_frequency=490,
        second_frequency=400,
        max_frequency=575,
        law="model",
    )
    proc = tempctl("run", env=env)

    def settled_below_second():
        # below SECOND, and the last 20 valid readings (10 s, 25 τ) all under the threshold
        last = rows(
            db, "SELECT temp, frequency FROM readings WHERE valid = 1 ORDER BY id DESC LIMIT 20"
        )
        return (
            len(last) == 20
            and all(f < 400 for _, f in last)
            and all(t <= THRESHOLD for t, _ in last)
        )

    try:
        wait_for(settled_below_second, 120, "the die back under 63 °C below SECOND_FREQUENCY", proc)
        with urllib.request.urlopen(closet + "/_emulator/state", timeout=5) as resp:
            state = json.load(resp)
    finally:
        proc.send_signal(signal.SIGTERM)
        out, _ = proc.communicate(timeout=10)
    assert proc.returncode == 0, out
    # the plant's own die temperature agrees with the readings
    assert state["die_c"] <= THRESHOLD, state
    freqs = [f for (f,) in rows(db, "SELECT frequency FROM commands WHERE kind = 'set_frequency'")]
    assert freqs and min(freqs) < 400
    assert all(230 - 0.5 <= f <= 575 + 0.5 for f in freqs), freqs  # auto floor: 40 % of 575
    floor_events = rows(db, "SELECT level, message FROM events WHERE kind = 'floor'")
    assert len(floor_events) == 1, floor_events  # one per episode
    assert floor_events[0][0] == "alarm"
    assert "SECOND_FREQUENCY cannot hold TEMP_THRESHOLD" in floor_events[0][1]
    # no firmware trip, and the log replays to the same decisions
    assert rows(db, "SELECT count(*) FROM readings WHERE overheat = 1") == [(0,)]
    check = subprocess.run(
        [sys.executable, "-m", "tempctl", "replay", str(db), "--check"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert check.returncode == 0, check.stdout + check.stderr
