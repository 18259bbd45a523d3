"""End to end: `tempctl run` as a subprocess against `tempctl emulate`, compressed time.

Scenario (written here): a Gamma at 575 MHz, fixed fan; ambient 28 °C, a heat
wave to 38 °C, then a cool night at 24 °C. The emulator runs plant time 1200x
faster; the daemon polls every 0.5 s with a 3 s settle and a 14.4 s stable
window (STABLE_TIMEFRAME=0.004 h), so the whole story takes about a minute.
"""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

SCENARIO = """
description = "test heat wave with a cool night"
duration_h = 48
ambient = [[0, 28], [1, 28], [2, 38], [4, 38], [5, 24], [48, 24]]

[device]
asic = "BM1370"
firmware = "v2.15.0"
frequency_mhz = 575
core_voltage_mv = 1150

[fan]
mode = "fixed"
pct = 100
"""

pytestmark = pytest.mark.slow


def tempctl(*args: str, env=None, **kw) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "tempctl", *args],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        **kw,
    )


@pytest.fixture
def emulator(tmp_path):
    scenario = tmp_path / "wave.toml"
    scenario.write_text(SCENARIO)
    proc = tempctl(
        "emulate",
        "--scenario",
        str(scenario),
        "--scale",
        "1200",
        "--start-hours",
        "1.0",
        "--seed",
        "3",
    )
    url = proc.stdout.readline().strip()
    assert url.startswith("http://127.0.0.1:"), url
    yield url
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=10) == 0


def daemon_env(url: str, db: Path, interval: str = "0.5") -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("TEMPCTL_", "BITAXE"))}
    env.update(
        BITAXE_IP=url,
        CHECK_INTERVAL=interval,
        TEMPCTL_SETTLE="3",
        STABLE_TIMEFRAME="0.004",
        TEMPCTL_DB=str(db),
        TEMP_THRESHOLD="63",
        FIRST_FREQUENCY="490",
        SECOND_FREQUENCY="400",
        MAX_FREQUENCY="575",
        TEMPCTL_LAW="levels",  # the fixed levels of tempctl 0.1; test_model_e2e.py: the model law
    )
    return env


def states(db: Path) -> list[tuple]:
    if not db.exists():
        return []
    conn = sqlite3.connect(db)
    try:
        return conn.execute(
            "SELECT ts_ms, from_state, to_state, frequency, run_id FROM transitions ORDER BY id"
        ).fetchall()
    except sqlite3.OperationalError:
        return []
    finally:
        conn.close()


def wait_for(predicate, timeout: float, what: str, proc=None):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        if proc is not None and proc.poll() is not None:
            pytest.fail(
                f"daemon exited {proc.returncode} while waiting for {what}:\n" + proc.stdout.read()
            )
        time.sleep(0.2)
    pytest.fail(f"timed out waiting for {what}")


def test_heat_wave_throttles_and_recovers(emulator, tmp_path):
    db = tmp_path / "tempctl.db"
    proc = tempctl("run", env=daemon_env(emulator, db))
    try:
        wait_for(
            lambda: any(s[2] == "NORMAL" and s[1] == "RECOVERING" for s in states(db)),
            150,
            "RECOVERING -> NORMAL",
            proc,
        )
    finally:
        proc.send_signal(signal.SIGTERM)
        out, _ = proc.communicate(timeout=10)
    assert proc.returncode == 0, out
    rows = states(db)
    path = [rows[0][1]] + [s[2] for s in rows]
    # NORMAL -> THROTTLED_1 -> THROTTLED_2 -> RECOVERING (steps) -> NORMAL, in that order
    order = [p for i, p in enumerate(path) if i == 0 or p != path[i - 1]]
    assert order[-5:] == ["NORMAL", "THROTTLED_1", "THROTTLED_2", "RECOVERING", "NORMAL"], order
    conn = sqlite3.connect(db)
    freqs = [
        r[0]
        for r in conn.execute(
            "SELECT frequency FROM commands WHERE kind = 'set_frequency' ORDER BY id"
        )
    ]
    assert freqs[:2] == [490, 400] and freqs[-1] == 575
    assert all(400 <= f <= 575 for f in freqs)
    assert conn.execute("SELECT count(*) FROM commands WHERE kind = 'restart'").fetchone()[0] == 0
    outcomes = {r[0] for r in conn.execute("SELECT outcome FROM command_log")}
    assert outcomes == {"ok"}
    # the device really runs what tempctl set: the last readings show 575 MHz
    assert (
        conn.execute("SELECT frequency FROM readings ORDER BY id DESC LIMIT 1").fetchone()[0] == 575
    )
    assert "THROTTLED_1" in out and "stopped" in out


def test_kill_9_while_throttled_resumes_throttled(emulator, tmp_path):
    db = tmp_path / "tempctl.db"
    env = daemon_env(emulator, db, interval="1")  # 3 s gap allowance covers the restart
    first = tempctl("run", env=env)
    wait_for(lambda: any(s[2] == "THROTTLED_2" for s in states(db)), 60, "THROTTLED_2", first)

    def cool_for(seconds):
        conn = sqlite3.connect(db)
        try:
            rows = conn.execute(
                "SELECT ts_ms, temp FROM readings WHERE valid = 1 ORDER BY ts_ms DESC LIMIT 40"
            ).fetchall()
        finally:
            conn.close()
        span = 0
        for (_, temp), (ts_prev, _) in zip(rows, rows[1:]):
            if temp > 61:
                break
            span = rows[0][0] - ts_prev
        return span >= seconds * 1000

    wait_for(lambda: cool_for(6), 60, "6 s of cool readings", first)
    first.send_signal(signal.SIGKILL)
    first.wait(timeout=5)
    killed_at = max(s[0] for s in states(db))
    second = tempctl("run", env=env)
    try:
        wait_for(
            lambda: any(s[2] == "RECOVERING" and s[4] == 2 for s in states(db)),
            60,
            "RECOVERING after the restart",
            second,
        )
    finally:
        second.send_signal(signal.SIGTERM)
        out, _ = second.communicate(timeout=10)
    assert second.returncode == 0, out
    conn = sqlite3.connect(db)
    run2_start = conn.execute("SELECT ts_ms FROM runs WHERE id = 2").fetchone()[0]
    # It resumed throttled: no command to MAX at start, the first decision is a restore step.
    cmds = conn.execute("SELECT frequency FROM commands WHERE run_id = 2 ORDER BY id").fetchall()
    assert cmds and cmds[0][0] == 425, cmds
    event = conn.execute(
        "SELECT message FROM events WHERE run_id = 2 AND kind = 'reconcile'"
    ).fetchone()
    assert event and "resumed THROTTLED_2" in event[0]
    # The stable window (14.4 s) counted readings from before the kill: recovery came sooner.
    recovered = conn.execute(
        "SELECT min(ts_ms) FROM transitions WHERE run_id = 2 AND to_state = 'RECOVERING'"
    ).fetchone()[0]
    assert recovered - run2_start < 14_400, recovered - run2_start
    assert killed_at < run2_start
    # History is whole: each transition starts where the previous one ended.
    rows = conn.execute("SELECT from_state, to_state FROM transitions ORDER BY id").fetchall()
    assert all(prev[1] == cur[0] for prev, cur in zip(rows, rows[1:]))
