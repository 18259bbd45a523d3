"""Webhook alerts against loopback receivers (pytest-httpserver, and one that never answers)."""

from __future__ import annotations

import json
import socket
import time

import pytest
from pytest_httpserver import HTTPServer
from werkzeug import Response

from tempctl.core.controller import Command, Controller, Limits
from tempctl.core.driver import Driver
from tempctl.core.reading import Reading
from tempctl.daemon.alerts import Alerter, body, target
from tempctl.daemon.loop import Device

T = 1_700_000_000_000


class Clock:
    def __init__(self):
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t


@pytest.fixture(scope="module")
def _server():
    server = HTTPServer(host="127.0.0.1", port=0)
    server.start()
    yield server
    server.stop()


@pytest.fixture
def receiver(_server):
    _server.clear()
    yield _server
    _server.clear()


def received(server) -> list[tuple[str, dict]]:
    return [(req.path, json.loads(req.get_data())) for req, _ in server.log]


def device(name="gamma", limits=None) -> Device:
    limits = limits or Limits(law="levels")  # fixed levels: these tests count alerts exactly
    return Device(
        name, "http://127.0.0.1:1", limits, client=None, driver=Driver(Controller(limits, name))
    )


def poll(alerter, d, r):
    decision = d.controller.step(r, r.ts_ms)
    alerter.on_reading(d, r, decision)
    return decision


def test_target_picks_ntfy_or_generic():
    assert target("https://ntfy.sh/my-miners") == ("https://ntfy.sh/", "my-miners")
    assert target("http://127.0.0.1:8080/tempctl") == ("http://127.0.0.1:8080/", "tempctl")
    for generic in (
        "http://127.0.0.1:9000/hooks/tempctl",
        "http://127.0.0.1:9000/tempctl/",
        "http://127.0.0.1:9000/",
        "http://127.0.0.1:9000/x?token=1",
    ):
        assert target(generic) == (generic, None)


def test_critical_alert_published_the_ntfy_way(receiver):
    receiver.expect_request("/", method="POST").respond_with_json({"id": "x"})
    alerter = Alerter(receiver.url_for("/miners"))
    poll(alerter, device(), Reading("gamma", T, temp=71.25, frequency=575.0))
    alerter.close()
    assert received(receiver) == [
        (
            "/",
            {
                "topic": "miners",
                "title": "tempctl: gamma critical",
                "message": "ASIC at 71.25 °C (TEMPCTL_CRITICAL 70 °C)",
                "priority": 5,
                "tags": ["fire"],
            },
        )
    ]
    req = receiver.log[0][0]
    assert req.headers["Content-Type"] == "application/json"
    assert alerter.sent == 1 and alerter.failed == 0


def test_generic_webhook_gets_the_full_record(receiver):
    receiver.expect_request("/hooks/tempctl", method="POST").respond_with_data("ok")
    alerter = Alerter(receiver.url_for("/hooks/tempctl"))
    poll(alerter, device(), Reading("gamma", T, temp=66.0, frequency=575.0, overheat=True))
    alerter.close()
    ((path, got),) = received(receiver)
    assert path == "/hooks/tempctl"
    assert got == {
        "title": "tempctl: gamma overheat",
        "message": "the firmware's overheat trip is showing (frequency 575 MHz)",
        "priority": 5,
        "tags": ["fire", "warning"],
        "device": "gamma",
        "kind": "overheat",
        "ts_ms": T,
        "suppressed": 0,
    }


def test_rate_limit_per_device_and_kind(receiver):
    receiver.expect_request("/h/x", method="POST").respond_with_data("ok")
    clock = Clock()
    alerter = Alerter(receiver.url_for("/h/x"), min_interval_s=600, clock=clock)
    a, b = device("a"), device("b")
    for i in range(5):  # one poll every 30 s, all critical
        poll(alerter, a, Reading("a", T + i * 30_000, temp=72.0, frequency=400.0))
        poll(alerter, b, Reading("b", T + i * 30_000, temp=72.0, frequency=400.0))
        clock.t += 30
    alerter.on_result(a, Command("set_frequency", "critical", 400.0), "failed", "timeout: x")
    clock.t += 600
    poll(alerter, a, Reading("a", T + 10 * 60_000, temp=72.0, frequency=400.0))
    alerter.close()
    got = [(m["device"], m["kind"], m["suppressed"]) for _, m in received(receiver)]
    assert got == [
        ("a", "critical", 0),
        ("b", "critical", 0),
        ("a", "command_failed", 0),
        ("a", "critical", 4),
    ]
    assert "(4 more held back by the rate limit)" in received(receiver)[-1][1]["message"]
    assert alerter.suppressed == 8


def test_unreachable_after_n_failures_then_reachable_again(receiver):
    receiver.expect_request("/h/x", method="POST").respond_with_data("ok")
    alerter = Alerter(receiver.url_for("/h/x"), unreachable_after=3)
    d = device()
    poll(alerter, d, Reading("gamma", T, temp=60.0, frequency=575.0))
    poll(alerter, d, Reading("gamma", T + 1, error="unreachable: connection refused"))
    poll(alerter, d, Reading("gamma", T + 2, temp=60.0, frequency=575.0))  # resets the count
    # a bad sensor value is not "unreachable": the device answered
    poll(alerter, d, Reading("gamma", T + 3, frequency=575.0, raw_temp=-1.0, error="temp -1"))
    for i in range(4):
        poll(alerter, d, Reading("gamma", T + 10 + i, error="unreachable: connection refused"))
    poll(alerter, d, Reading("gamma", T + 20, temp=60.0, frequency=575.0))
    alerter.close()
    got = [(m["kind"], m["message"]) for _, m in received(receiver)]
    refused = "unreachable: connection refused"
    assert got == [
        ("unreachable", f"no answer for 3 polls in a row: {refused}"),
        ("reachable", "answering again after 4 failed polls"),
    ]


def test_identity_change_and_other_alarms(receiver):
    receiver.expect_request("/h/x", method="POST").respond_with_data("ok")
    alerter = Alerter(receiver.url_for("/h/x"))
    d = device()
    poll(
        alerter,
        d,
        Reading("gamma", T, temp=60.0, frequency=575.0, mac="AA:BB:CC:00:00:01", hostname="gamma"),
    )
    decision = poll(
        alerter,
        d,
        Reading(
            "gamma",
            T + 30_000,
            temp=60.0,
            frequency=575.0,
            mac="AA:BB:CC:00:00:02",
            hostname="other",
        ),
    )
    assert [e.kind for e in decision.events] == ["identity", "device"]  # alarm, then the new id
    alerter.close()
    ((_, got),) = received(receiver)
    assert got["kind"] == "identity" and "a different device answers" in got["message"]


def test_a_failing_webhook_is_logged_not_retried(receiver, caplog):
    receiver.expect_request("/h/x", method="POST").respond_with_data("no", status=500)
    alerter = Alerter(receiver.url_for("/h/x"))
    poll(alerter, device(), Reading("gamma", T, temp=75.0, frequency=575.0))
    alerter.close()
    assert len(receiver.log) == 1
    assert alerter.failed == 1 and alerter.sent == 0
    assert "alert critical for gamma not delivered" in caplog.text and "500" in caplog.text


def test_a_hanging_receiver_never_slows_the_caller(receiver):
    """A webhook that accepts the connection and never answers; then one that is slow."""
    with socket.socket() as hang:
        hang.bind(("127.0.0.1", 0))
        hang.listen(128)  # the kernel completes handshakes; nobody ever reads or answers
        url = f"http://127.0.0.1:{hang.getsockname()[1]}/h/x"
        alerter = Alerter(url, timeout_s=10, queue_size=20)
        devices = [device(f"d{i}") for i in range(300)]
        worst = 0.0
        start = time.perf_counter()
        for d in devices:  # 300 distinct devices: nothing is rate-limited
            t0 = time.perf_counter()
            poll(alerter, d, Reading(d.name, T, temp=71.0, frequency=575.0))
            worst = max(worst, time.perf_counter() - t0)
        total = time.perf_counter() - start
        assert alerter.dropped >= 300 - 20 - 1  # the queue is bounded
        t0 = time.perf_counter()
        alerter.close(timeout_s=0.2)
        assert time.perf_counter() - t0 < 1.0
    assert total < 0.5 and worst < 0.05, (total, worst)

    # A receiver that takes 0.3 s per alert: the caller still returns at once.
    receiver.expect_request("/slow/x", method="POST").respond_with_handler(
        lambda req: (time.sleep(0.3), Response("ok"))[1]
    )
    alerter = Alerter(receiver.url_for("/slow/x"))
    t0 = time.perf_counter()
    for i in range(3):
        poll(alerter, device(f"s{i}"), Reading(f"s{i}", T, temp=71.0, frequency=575.0))
    assert time.perf_counter() - t0 < 0.1
    alerter.close(timeout_s=5)
    assert alerter.sent == 3


def test_body_without_topic_for_generic_urls():
    from tempctl.daemon.alerts import Alert

    b = body(Alert("a", "reachable", "ok again", T, suppressed=0), None)
    assert b["priority"] == 2 and "topic" not in b and b["kind"] == "reachable"


def test_second_frequency_not_holding_is_an_alert(receiver):
    # the model law going below SECOND_FREQUENCY says so once, as an alarm the alerter sends
    receiver.expect_request("/h/x", method="POST").respond_with_data("ok")
    alerter = Alerter(receiver.url_for("/h/x"))
    d = device(limits=Limits())
    poll(alerter, d, Reading("gamma", T, temp=60.0, frequency=400.0))
    decision = poll(alerter, d, Reading("gamma", T + 30_000, temp=71.0, frequency=400.0))
    assert any(e.kind == "floor" and e.level == "alarm" for e in decision.events)
    alerter.close()
    kinds = [m["kind"] for _, m in received(receiver)]
    assert "alarm" in kinds and "critical" in kinds
    msg = next(m["message"] for _, m in received(receiver) if m["kind"] == "alarm")
    assert "SECOND_FREQUENCY cannot hold TEMP_THRESHOLD" in msg
