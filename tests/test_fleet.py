"""Several devices from one daemon, end to end: a real `tempctl run` process on loopback.

Three emulated miners with ambient offsets -5, 0 and +5 °C, one dead address (a closed
port) and one slow miner (a handler that takes 0.9 s per answer: within the daemon's
read timeout, 0.8 x CHECK_INTERVAL but at least 1 s, and longer than an interval).
The healthy devices must keep their schedule; the hot one is throttled, the others
left alone; metrics, alerts and the retention job are wired in by `run`.
"""

from __future__ import annotations

import itertools
import json
import os
import signal
import socket
import statistics
import subprocess
import sys
import time
from pathlib import Path

import pytest
import requests
from click.testing import CliRunner
from prometheus_client.parser import text_string_to_metric_families
from pytest_httpserver import HTTPServer
from werkzeug import Response

from tempctl.cli import cli
from tempctl.core.reading import Reading
from tempctl.sim.emulator import Emulator
from tempctl.sim.firmware import BODIES_DIR
from tempctl.store.eventlog import Log

ROOT = Path(__file__).resolve().parent.parent
INTERVAL = 0.5
SLOW_S = 0.9
DAY_MS = 86_400_000


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def metrics(port: int) -> dict:
    text = requests.get(f"http://127.0.0.1:{port}/metrics", timeout=2).text
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for fam in text_string_to_metric_families(text)
        for s in fam.samples
    }


def per_device(samples: dict, name: str) -> dict[str, float]:
    return {
        labels[0][1]: v
        for (n, labels), v in samples.items()
        if n == name and len(labels) == 1 and labels[0][0] == "device"
    }


@pytest.fixture
def servers():
    slow = HTTPServer(host="127.0.0.1", port=0, threaded=True)
    hooks = HTTPServer(host="127.0.0.1", port=0)
    body = (BODIES_DIR / "v2.15.0_gamma-602_BM1370.json").read_bytes()

    def slow_info(request):
        time.sleep(SLOW_S)  # the slow miner itself: this is what the test is about
        return Response(body, content_type="application/json")

    slow.expect_request("/api/system/info").respond_with_handler(slow_info)
    hooks.expect_request("/hooks/tempctl", method="POST").respond_with_data("ok")
    for s in (slow, hooks):
        s.start()
    yield slow, hooks
    for s in (slow, hooks):
        s.clear()
        s.stop()


def seed_old_history(path: Path, now_ms: int) -> int:
    """Two hours of a retired miner, three days ago: the retention job must fold it."""
    log = Log(path)
    start = (now_ms - 3 * DAY_MS) // 60_000 * 60_000
    rows = [
        Reading("retired", start + i * 30_000, temp=58.0 + (i % 5), frequency=575.0)
        for i in range(240)
    ]
    log.transaction([log.reading_op(r) for r in rows])
    log.close()
    return len(rows)


def test_one_daemon_guards_many_devices(tmp_path, servers):
    slow, hooks = servers
    db = tmp_path / "tempctl.db"
    seeded = seed_old_history(db, int(time.time() * 1000))
    with Emulator("heatwave", devices=3, ambient_spread_c=10.0, seed=5) as emu:
        dead = f"127.0.0.1:{free_port()}"
        slow_addr = f"127.0.0.1:{slow.port}"
        healthy = [u.removeprefix("http://") for u in emu.urls]
        cool, mild, hot = healthy
        port = free_port()
        env = {k: v for k, v in os.environ.items() if not k.startswith(("TEMPCTL_", "BITAXE"))}
        env.update(
            PYTHONPATH=str(ROOT),
            BITAXE_IP=",".join(healthy + [dead, slow_addr]),
            CHECK_INTERVAL=str(INTERVAL),
            TEMPCTL_DB=str(db),
            TEMPCTL_METRICS_PORT=str(port),
            TEMPCTL_RETENTION_DAYS="1",
            TEMPCTL_ALERT_URL=hooks.url_for("/hooks/tempctl"),
            TEMPCTL_CONFIG=str(tmp_path / "none.toml"),
        )
        (tmp_path / "none.toml").write_text("")
        proc = subprocess.Popen(
            [sys.executable, "-m", "tempctl", "run"],
            cwd=tmp_path,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        try:
            samples: dict = {}
            deadline = time.monotonic() + 20
            while time.monotonic() < deadline and proc.poll() is None:
                try:
                    samples = metrics(port)
                except requests.ConnectionError:
                    samples = {}
                polls = per_device(samples, "tempctl_polls_total")
                if (
                    polls
                    and min(polls.get(h, 0) for h in healthy) >= 10
                    and polls.get(slow_addr, 0) >= 2
                ):
                    break
                time.sleep(0.2)  # waiting on another process: nothing to inject a clock into
            states = [requests.get(u + "/_emulator/state", timeout=5).json() for u in emu.urls]
        finally:
            proc.send_signal(signal.SIGTERM)
            out, _ = proc.communicate(timeout=20)
    assert proc.returncode == 0, out
    assert samples, f"metrics never answered; daemon output:\n{out}"

    # Every configured device is on the metrics page; slow ones are skipped, not waited for.
    assert set(per_device(samples, "tempctl_polls_total")) == set(healthy + [dead, slow_addr])
    missed = per_device(samples, "tempctl_missed_polls_total")
    assert all(missed[h] == 0 for h in healthy), (missed, out)
    assert missed[slow_addr] >= 2

    conn = Log(db, create=False).conn
    for name in healthy:
        ts = [
            r[0]
            for r in conn.execute(
                "SELECT ts_ms FROM readings WHERE device = ? AND ts_ms > ? ORDER BY ts_ms",
                (name, int(time.time() * 1000) - DAY_MS),
            )
        ]
        gaps = [(b - a) / 1000 for a, b in itertools.pairwise(ts)]
        assert len(ts) >= 10
        assert statistics.median(gaps) == pytest.approx(INTERVAL, abs=0.05), gaps
        assert max(gaps) < INTERVAL + 0.35 < SLOW_S, gaps  # never held up by the slow device
    slow_ts = [
        r[0]
        for r in conn.execute(
            "SELECT ts_ms FROM readings WHERE device = ? ORDER BY ts_ms", (slow_addr,)
        )
    ]
    assert min(b - a for a, b in itertools.pairwise(slow_ts)) >= SLOW_S * 1000
    assert conn.execute(
        "SELECT count(*) FROM readings WHERE device = ? AND valid = 0", (slow_addr,)
    ).fetchone() == (0,)  # slow, but it answers
    errors = conn.execute(
        "SELECT count(*), min(error) FROM readings WHERE device = ?", (dead,)
    ).fetchone()
    assert errors[0] >= 3 and errors[1].startswith("unreachable")

    # Control per device: only the hot one (ambient +5 °C, ~65 °C) was throttled.
    last = {
        name: conn.execute(
            "SELECT to_state, frequency FROM transitions WHERE device = ? ORDER BY id DESC LIMIT 1",
            (name,),
        ).fetchone()
        for name in healthy
    }
    # the model law picks the hot miner's frequency from its own response: below MAX, at
    # or above SECOND (this room does not need less)
    state, mhz = last[hot]
    assert state == "THROTTLED_1" and 400 <= mhz < 575, last
    assert last[cool] == last[mild] == ("NORMAL", 575.0), last
    assert [s["frequency_mhz"] for s in states] == [575, 575, mhz]  # what the miners run

    # Retention ran: the retired miner's three-day-old readings are now minute rows.
    assert conn.execute("SELECT count(*) FROM readings WHERE device = 'retired'").fetchone() == (0,)
    assert conn.execute(
        "SELECT sum(n), count(*) FROM readings_1m WHERE device = 'retired'"
    ).fetchone() == (seeded, seeded // 2)
    conn.close()

    # The dead device raised an "unreachable" alert on the webhook.
    alerts = [json.loads(req.get_data()) for req, _ in hooks.log]
    assert ("unreachable", dead) in {(a["kind"], a["device"]) for a in alerts}, alerts

    # `tempctl status` shows every device.
    res = CliRunner().invoke(cli, ["status", "--json"], env={"TEMPCTL_DB": str(db)})
    assert res.exit_code == 0, res.output
    shown = {row["device"]: row for row in json.loads(res.output)}
    assert set(healthy + [dead, slow_addr]) <= set(shown)
    assert shown[hot]["state"] == "THROTTLED_1" and shown[cool]["state"] == "NORMAL"
