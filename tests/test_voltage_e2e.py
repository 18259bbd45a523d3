"""End to end, issue 21: the real daemon against `tempctl emulate` in the heat wave's peak.

A steady 38 °C room (the heat wave's peak, replay/scenarios/heatwave.toml): at 1150 mV the
oracle is about 285 MHz. Steady, so the two runs meet the same room however long each
takes. With TEMPCTL_VOLTAGE=auto the daemon lowers the core voltage towards the device's own
V_min + margin (the emulated chip, sim/stability.py), and the law then fits a higher
frequency under the same threshold. Timing is scaled as in test_model_e2e (plant 120x,
0.5 s polls, 3 s settle); every wait is on a condition in the log, not on the clock.
"""

from __future__ import annotations

import json
import signal
import statistics
import subprocess
import sys
import urllib.request
from pathlib import Path

import pytest
from procs import daemon_env
from test_model_e2e import rows, tempctl, wait_for

pytestmark = pytest.mark.slow

THRESHOLD = 63.0
TAIL = 40  # readings judged at the end (20 s, 40 plant minutes)


HOT_ROOM = (Path(__file__).parent.parent / "replay/scenarios/heatwave.toml").read_text()
HOT_ROOM = HOT_ROOM.replace(
    "ambient = [[0, 28], [2, 28], [6, 38], [10, 38], [16, 30], [24, 30]]", "ambient = [[0, 38]]"
)


def emulator(tmp_path):
    scenario = tmp_path / "hot.toml"
    scenario.write_text(HOT_ROOM)
    proc = tempctl("emulate", "--scenario", str(scenario), "--scale", "120", "--seed", "4")
    url = proc.stdout.readline().strip()
    assert url.startswith("http://127.0.0.1:"), url
    return proc, url


def run_daemon(tmp_path, voltage: str, done):
    emu, url = emulator(tmp_path)
    db = tmp_path / f"{voltage}.db"
    env = daemon_env(
        url,
        db,
        tmp_path,
        check_interval=0.5,
        settle=3,
        stable_timeframe=0.004,
        temp_threshold=THRESHOLD,
        max_frequency=575,
        voltage=voltage,
    )
    proc = tempctl("run", env=env)
    try:
        wait_for(lambda: done(db), 300, f"voltage {voltage}: settled", proc)
        with urllib.request.urlopen(url + "/_emulator/state", timeout=5) as resp:
            state = json.load(resp)
    finally:
        proc.send_signal(signal.SIGTERM)
        out, _ = proc.communicate(timeout=10)
        emu.send_signal(signal.SIGTERM)
        emu.wait(timeout=10)
    assert proc.returncode == 0, out
    tail = rows(
        db,
        "SELECT temp, frequency, hashrate, core_voltage FROM readings WHERE valid = 1 "
        "ORDER BY id DESC LIMIT ?",
        TAIL,
    )
    return db, state, tail


def test_auto_voltage_holds_the_threshold_at_a_higher_hashrate(tmp_path):
    def off_done(db):  # 300 polls: 5 plant hours of settling
        return rows(db, "SELECT count(*) FROM readings WHERE valid = 1")[0:1] >= [(300,)]

    def auto_done(db):  # the voltage came down 90 mV or more, then 2 x TAIL more readings
        first = rows(db, "SELECT min(id) FROM readings WHERE core_voltage <= 1060")
        if not first or first[0][0] is None:
            return False
        n = rows(db, "SELECT count(*) FROM readings WHERE id > ?", first[0][0])
        return n[0][0] >= 2 * TAIL

    _, off_state, off_tail = run_daemon(tmp_path, "off", off_done)
    db, auto_state, auto_tail = run_daemon(tmp_path, "auto", auto_done)
    off_hash = statistics.median(h for _, _, h, _ in off_tail)
    auto_hash = statistics.median(h for _, _, h, _ in auto_tail)
    assert auto_hash > 1.05 * off_hash, (off_hash, auto_hash)
    # the true die holds the threshold in both (the emulator's plant, not a reading)
    assert auto_state["die_c"] <= THRESHOLD + 0.5 and off_state["die_c"] <= THRESHOLD + 0.5
    assert all(v == 1150 for *_, v in off_tail)
    assert all(1000 <= v <= 1200 for *_, v in auto_tail)
    assert rows(db, "SELECT count(*) FROM readings WHERE overheat = 1") == [(0,)]
    check = subprocess.run(
        [sys.executable, "-m", "tempctl", "replay", str(db), "--check"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert check.returncode == 0, check.stdout + check.stderr
    assert rows(db, "SELECT count(*) FROM commands WHERE kind = 'set_fields'")[0][0] > 5
