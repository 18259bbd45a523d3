"""End to end, issue 20: `tempctl run` against `tempctl emulate` on a noisy two-sensor board.

The plant is replay/scenarios/panel/two_sensor_hot_temp2.toml (temp2 reads the die + 1.5 °C,
so the parser must control on temp2) with 0.3 °C sensor noise, the median of the real traces
(docs/sensor.md). Everything is compressed 120x: the emulator's plant time (--scale 120), and
the daemon's 30 s polls, 180 s settle and 1 h stable window, each divided by 120. The
emulator runs with ``--pace 45``: plant time never runs more than 45 s (1.5 polls) past the
latest poll, so a daemon scheduled late on a busy machine meets a plant that waited for it,
as a real board is watched every 30 s, instead of one left unwatched for minutes.

The true hot-sensor value comes from the emulator's ``/_emulator/state`` (die_c + the offset),
sampled in plant time; judgements are made in plant time and on the log, never on wall time.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
from procs import daemon_env
from test_model_e2e import rows, tempctl

pytestmark = pytest.mark.slow

SCALE = 120
THRESHOLD = 63.0  # the default; the oracle below is for it
TEMP2_OFFSET = 1.5
ORACLE_MHZ = 528.0  # the panel file's oracle in its 30.5 °C room
PLANT_RUN_S = 2.5 * 3600  # plant time to run: 75 s of wall time at 120x
PACE_S = 45.0  # plant seconds the emulator may run past the latest poll
FIRST_SETTLE_S = 1800.0  # plant seconds from the start before the die is judged
PANEL = Path(__file__).resolve().parent.parent / "replay/scenarios/panel/two_sensor_hot_temp2.toml"


def prompt() -> None:
    """Run the compressed pair ahead of the rest of the suite where allowed (root, as CI):
    at 120x, 10 ms of scheduling delay is 1.2 s of plant time, and the suite's other
    workers start processes by the dozen. Without the privilege nothing changes."""
    try:
        os.nice(-10)
    except OSError:
        pass


def state(url: str) -> dict:
    with urllib.request.urlopen(url + "/_emulator/state", timeout=10) as resp:
        return json.load(resp)


@pytest.fixture
def noisy_two_sensor(tmp_path):
    scenario = tmp_path / "two_sensor_noisy.toml"
    scenario.write_text(PANEL.read_text() + "noise_c = 0.3\n")  # [plant] is the last table
    proc = tempctl(
        "emulate",
        *("--scenario", str(scenario), "--scale", str(SCALE), "--pace", str(PACE_S)),
        *("--seed", "7"),
        preexec_fn=prompt,
    )
    url = proc.stdout.readline().strip()
    assert url.startswith("http://127.0.0.1:"), url
    yield url
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=20) == 0


def test_noisy_two_sensor_board_holds_the_hot_sensor_under_the_threshold(
    noisy_two_sensor, tmp_path
):
    url = noisy_two_sensor
    db = tmp_path / "tempctl.db"
    env = daemon_env(
        url,
        db,
        tmp_path,
        check_interval=30 / SCALE,
        settle=180 / SCALE,
        stable_timeframe=1.0 / SCALE,  # hours
        temp_threshold=THRESHOLD,
        max_frequency=575,
        law="model",
    )
    proc = tempctl("run", env=env, preexec_fn=prompt)
    samples = []  # (plant s, true hot sensor °C, frequency MHz, overheat trips)
    held = 0.0  # plant seconds the pace held back (the daemon polled late)
    wall_deadline = time.monotonic() + 4 * PLANT_RUN_S / SCALE  # generous: a busy CI box
    try:
        while True:
            s = state(url)
            samples.append(
                (
                    s["plant_time_s"],
                    s["die_c"] + TEMP2_OFFSET,
                    s["frequency_mhz"],
                    s["overheat_trips"],
                )
            )
            held = s["pace_held_s"]
            if s["plant_time_s"] >= PLANT_RUN_S:
                break
            if proc.poll() is not None:
                pytest.fail(f"daemon exited {proc.returncode}:\n{proc.stdout.read()}")
            if time.monotonic() > wall_deadline:
                pytest.fail(f"plant time reached only {s['plant_time_s']:.0f} s")
            time.sleep(0.05)
    finally:
        proc.send_signal(signal.SIGTERM)
        out, _ = proc.communicate(timeout=30)
    assert proc.returncode == 0, out

    # the daemon read temp2 (the hotter sensor) and decided
    n_readings = rows(db, "SELECT count(*) FROM readings WHERE valid = 1")[0][0]
    assert n_readings > 100, n_readings
    freqs = [f for (f,) in rows(db, "SELECT frequency FROM commands WHERE kind = 'set_frequency'")]
    assert freqs and min(freqs) < 575, freqs  # 575 MHz is above the oracle: it must come down
    t0 = samples[0][0]
    judged = [s for s in samples if s[0] - t0 >= FIRST_SETTLE_S]
    assert len(judged) > 50, len(judged)

    # the true hot sensor against the threshold, after the first settle
    worst = max(t for _, t, _, _ in judged)
    share_above = sum(t > THRESHOLD for _, t, _, _ in judged) / len(judged)
    figures = dict(
        worst=round(worst, 2),
        share_above=round(share_above, 4),
        held_s=held,
        # what the law did (plant minutes, MHz), for a failure to be read from
        moves=[
            (round((ts - first_ms) / 60_000 * SCALE, 1), f)
            for first_ms in [rows(db, "SELECT min(ts_ms) FROM readings")[0][0]]
            for ts, f in rows(
                db, "SELECT ts_ms, frequency FROM commands WHERE kind = 'set_frequency'"
            )
        ],
        model=rows(db, "SELECT message FROM events WHERE kind = 'model' ORDER BY id DESC LIMIT 1"),
    )
    print(f"noisy two-sensor e2e: {figures}")
    assert worst <= THRESHOLD + 0.5, figures
    assert share_above <= 0.01, figures  # issue 20: at most 1 % of the time above

    # the firmware never tripped, neither in the plant nor in the log
    assert samples[-1][3] == 0, samples[-1]
    assert rows(db, "SELECT count(*) FROM readings WHERE overheat = 1") == [(0,)]

    # the frequency is held near the oracle (loose: 0.9 of it on average, never above MAX)
    mean_f = sum(f for _, _, f, _ in judged) / len(judged)
    assert 0.9 * ORACLE_MHZ <= mean_f <= 575.5, mean_f

    check = subprocess.run(
        [sys.executable, "-m", "tempctl", "replay", str(db), "--check"],
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert check.returncode == 0, check.stdout + check.stderr
