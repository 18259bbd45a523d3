"""The dashboard after `tempctl demo`, as a new user sees it in a browser (issue 16 item 10).

The demo compresses a day into about a minute of real time, so the charts must bucket
below a minute: the temperature line has a point per poll, the device-setting line goes
down to SECOND_FREQUENCY and back, and the two figures agree with the state bands drawn.
The log is a real demo run (a subprocess, stopped once it has throttled and recovered);
the expectations come from that log and from the drawing, never from constants.
"""

from __future__ import annotations

import os
import re
import signal
import sqlite3
import subprocess
import sys
from pathlib import Path

import dashboard
import pytest
from dashboard import Server, render
from procs import wait_for

from tempctl.ui import server as ui

pytestmark = pytest.mark.slow


def _story(db: Path) -> tuple[list[str], int]:
    """The states the demo's daemon has entered so far (changes only), and the readings
    logged since its latest transition."""
    if not db.exists():
        return [], 0
    try:
        conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
        try:
            rows = conn.execute("SELECT from_state, to_state FROM transitions ORDER BY id")
            states = [b for a, b in rows if a != b]
            (since,) = conn.execute(
                "SELECT count(*) FROM readings WHERE ts_ms > "
                "(SELECT coalesce(max(ts_ms), 0) FROM transitions)"
            ).fetchone()
            return states, since
        finally:
            conn.close()
    except sqlite3.Error:  # created but not initialised yet
        return [], 0


def _recovered(story: tuple[list[str], int]) -> bool:
    """A throttle, then RECOVERING, then NORMAL again for a few polls."""
    states, since = story
    throttled = [i for i, s in enumerate(states) if s.startswith("THROTTLED_")]
    if not throttled or "RECOVERING" not in states[throttled[0] :]:
        return False
    back = states[states.index("RECOVERING", throttled[0]) :]
    return "NORMAL" in back and (back[-1] != "NORMAL" or since >= 3)


@pytest.fixture(scope="module")
def demo_log(tmp_path_factory) -> Path:
    tmp = tmp_path_factory.mktemp("ui-demo")
    db = tmp / "demo.db"
    out = tmp / "demo.out"
    env = {k: v for k, v in os.environ.items() if k != "NOTIFY_SOCKET"}
    with open(out, "wb") as fh:
        proc = subprocess.Popen(
            [sys.executable, "-m", "tempctl", "demo", "--no-ui", "--db", str(db)],
            cwd=tmp,
            env=env,
            stdout=fh,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
        )
        try:
            # about 45 s of real time at the default scale; generous for a busy machine
            wait_for(
                lambda: _recovered(_story(db)) or proc.poll() is not None,
                timeout=300,
                what="the demo to throttle and recover",
            )
            assert _recovered(_story(db)), out.read_text(errors="replace")
        finally:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
    return db


def _log_facts(db: Path) -> dict:
    conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    try:
        limits = conn.execute(
            "SELECT temp_threshold, hysteresis, max_frequency, second_frequency "
            "FROM run_limits WHERE device = '*' ORDER BY run_id DESC LIMIT 1"
        ).fetchone()
        periods = conn.execute(
            "SELECT state, start_ms, end_ms FROM state_periods ORDER BY start_ms"
        ).fetchall()
        (valid,) = conn.execute("SELECT count(*) FROM readings WHERE valid = 1").fetchone()
        (lowest,) = conn.execute(
            "SELECT min(frequency) FROM readings WHERE valid = 1 AND frequency > 0"
        ).fetchone()
    finally:
        conn.close()
    threshold, hysteresis, max_mhz, second = limits
    return dict(
        threshold=threshold,
        cool=threshold - hysteresis,
        max_mhz=max_mhz,
        second=second,
        periods=periods,
        valid=valid,
        lowest_mhz=lowest,
    )


def _values(line: dict, html: str, axis: str, height: float) -> list[float]:
    """The data values of a drawn line, from its pixel y and its axis's value range."""
    lo, hi = dashboard.y_domain(html, axis)
    return [hi - y / height * (hi - lo) for _, y in dashboard.path_points(line["_d"])]


def test_demo_dashboard_shows_the_throttle_and_recovery(demo_log, tmp_path):
    facts = _log_facts(demo_log)
    assert facts["lowest_mhz"] == facts["second"], "the demo never reached SECOND_FREQUENCY"
    srv = Server(demo_log, tmp_path / "datasette.log")
    try:
        dom, _shot = render(srv, tmp_path, "dashboard-demo")
    finally:
        srv.stop()
    spec = ui.render_metadata("x")["plugins"]["datasette-dashboards"]["tempctl-history"]["charts"]

    # The temperature line: a point per poll, not two points for the whole run.
    temp_html = dashboard.chart(dom, "temperature")
    [temp_line] = dashboard.marks(temp_html, "line")
    temps = _values(temp_line, temp_html, "°C", spec["temperature"]["display"]["spec"]["height"])
    assert len(temps) >= 0.9 * facts["valid"] > 40, (len(temps), facts["valid"])
    assert max(temps) > facts["threshold"] and min(temps) < facts["cool"]

    # The device setting goes down to SECOND_FREQUENCY and back up to MAX_FREQUENCY.
    freq_html = dashboard.chart(dom, "frequency")
    [freq_line] = dashboard.marks(freq_html, "line")
    mhz = _values(freq_line, freq_html, "MHz", spec["frequency"]["display"]["spec"]["height"])
    assert min(mhz) == pytest.approx(facts["second"], abs=1.0), min(mhz)
    assert max(mhz) == pytest.approx(facts["max_mhz"], abs=1.0), max(mhz)
    after = mhz[mhz.index(min(mhz)) :]
    assert max(after) == pytest.approx(facts["max_mhz"], abs=1.0)  # and back up

    # Every state period of the log is a band, each exactly where the log has it.
    bands = dashboard.band_spans(temp_html)
    assert len(bands) == len(facts["periods"]) >= 4
    for (state, start, end), (p_state, p_start, p_end) in zip(bands, facts["periods"]):
        assert state == p_state
        assert start == pytest.approx(p_start, abs=1) and end == pytest.approx(p_end, abs=1)
    assert dashboard.band_spans(freq_html) == bands

    # The figures say what the bands show.
    throttled_ms, lost_pct = dashboard.figures_from_marks(dom, facts["max_mhz"])
    assert throttled_ms > 10_000
    shown, half_digit = dashboard.duration_ms(dashboard.metric(dom, "throttled"))
    assert shown == pytest.approx(throttled_ms, abs=half_digit + 5)
    lost_shown = float(dashboard.metric(dom, "lost").removesuffix(" %"))
    assert lost_shown == pytest.approx(lost_pct, abs=0.01) and lost_pct > 1

    # Time in state is labelled in seconds for a run this short.
    labels = re.findall(r">([^<>]+)</text>", dashboard.chart(dom, "time_in_state"))
    assert any(label.endswith(" s") for label in labels), labels
