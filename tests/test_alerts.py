"""Webhook alerts against loopback receivers (pytest-httpserver, and one that never answers)."""

from __future__ import annotations

import base64
import json
import re
import socket
import socketserver
import threading
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


@pytest.mark.parametrize("status", [301, 302, 303, 307, 308])
def test_a_redirect_is_a_failure_and_never_followed(receiver, caplog, status):
    # Issue 13 item 14: an alert goes only where it was configured to go.
    receiver.expect_request("/hooks/a", method="POST").respond_with_data(
        "moved", status=status, headers={"Location": receiver.url_for("/elsewhere")}
    )
    receiver.expect_request("/elsewhere").respond_with_data("stolen")
    alerter = Alerter(receiver.url_for("/hooks/a"))
    poll(alerter, device(), Reading("gamma", T, temp=75.0, frequency=575.0))
    alerter.close()
    assert [req.path for req, _ in receiver.log] == ["/hooks/a"]
    assert alerter.failed == 1 and alerter.sent == 0
    assert f"HTTP Error {status}" in caplog.text


@pytest.mark.parametrize(
    ("fault", "priority"), [("power_fault", 4), ("hardware_fault", 4), ("pool_down", 3)]
)
def test_a_fault_is_alerted_once_per_interval(receiver, fault, priority):
    receiver.expect_request("/hooks/f", method="POST").respond_with_data("ok")
    alerter = Alerter(receiver.url_for("/hooks/f"), clock=Clock())
    d = device()
    for i in range(3):
        poll(alerter, d, Reading("gamma", T + i, temp=50.0, frequency=525.0, fault=fault))
    alerter.close()
    ((path, sent),) = received(receiver)
    assert (sent["kind"], sent["priority"]) == ("fault", priority)
    assert sent["message"].startswith(f"{fault}: ") and "overheat" not in sent["tags"]


# --- issue 23 item 2: a slow webhook, an overall deadline, one lane per destination ---------


class Trickle:
    """A webhook on 127.0.0.1 that reads the request, then drips: ``body`` answers 200 with
    its headers at once and then one body byte every ``every`` s; ``head`` drips the status
    line itself. It drips until the client hangs up or the test ends."""

    def __init__(self, mode: str, every: float = 0.2):
        self.mode, self.every = mode, every
        trickle = self

        class Handler(socketserver.BaseRequestHandler):
            def handle(self) -> None:
                trickle._serve(self.request)

        self.server = socketserver.ThreadingTCPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.requests: list[bytes] = []
        self.open = 0  # connections the client has not hung up yet
        self.hung_up = threading.Event()
        self._stop = threading.Event()
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def _serve(self, conn: socket.socket) -> None:
        self.open += 1
        try:
            self._drip(conn)
        except (OSError, EOFError):  # the client hung up (a shut-down socket resets us)
            self.hung_up.set()
        finally:
            self.open -= 1

    def _drip(self, conn: socket.socket) -> None:
        def more(data: bytes) -> bytes:
            chunk = conn.recv(4096)
            if not chunk:
                raise EOFError
            return data + chunk

        data = b""
        while b"\r\n\r\n" not in data:
            data = more(data)
        head, _, rest = data.partition(b"\r\n\r\n")
        length = int(re.search(rb"(?i)content-length: *(\d+)", head).group(1))
        while len(rest) < length:
            rest = more(rest)
        self.requests.append(head + b"\r\n\r\n" + rest)
        drip = b"HTTP/1.1 200 OK\r\nContent-Length: 1000\r\n\r\n" + b"x" * 1000
        if self.mode == "body":
            end = drip.index(b"\r\n\r\n") + 4
            conn.sendall(drip[:end])
            drip = drip[end:]
        for byte in drip:
            if self._stop.wait(self.every):
                return
            conn.sendall(bytes([byte]))

    def close(self) -> None:
        self._stop.set()
        self.server.shutdown()
        self.server.server_close()


def wait_until(condition, seconds: float, what: str) -> None:
    """Generous bounds only: the condition is what the test is about, not the timing."""
    end = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < end, f"not within {seconds} s: {what}"
        time.sleep(0.02)


@pytest.fixture
def trickle():
    made: list[Trickle] = []

    def make(mode: str) -> Trickle:
        made.append(Trickle(mode))
        return made[-1]

    yield make
    for t in made:
        t.close()


def test_a_webhook_that_trickles_its_body_still_gets_every_alert(trickle):
    """Issue 23 item 2: it answers 200 and then drips; the 200 is what counts."""
    slow = trickle("body")
    alerter = Alerter(slow.url + "/hooks/a")
    for name in ("a", "b"):
        poll(alerter, device(name), Reading(name, T, temp=72.0, frequency=575.0))
    wait_until(lambda: alerter.sent == 2, 20, f"2 alerts sent (sent {alerter.sent})")
    assert [json.loads(r.partition(b"\r\n\r\n")[2])["device"] for r in slow.requests] == [
        "a",
        "b",
    ]
    assert alerter.failed == 0
    alerter.close(timeout_s=1)


def test_a_delivery_has_an_overall_deadline(trickle, caplog):
    """A webhook that drips its status line never trips the per-read timeout; the
    deadline cuts it off, and the next alert is tried."""
    slow = trickle("head")
    alerter = Alerter(slow.url + "/hooks/a", timeout_s=5, deadline_s=1)
    for name in ("a", "b"):
        poll(alerter, device(name), Reading(name, T, temp=72.0, frequency=575.0))
    wait_until(lambda: alerter.failed == 2, 30, f"both deliveries cut off ({alerter.failed})")
    assert alerter.sent == 0
    assert slow.hung_up.wait(10), "the webhook saw the connection closed"
    assert "alert critical for a not delivered to" in caplog.text
    assert "no answer within the 1 s deadline" in caplog.text
    alerter.close(timeout_s=1)


def test_a_slow_destination_never_holds_a_healthy_one(receiver, trickle):
    """Two destinations in TEMPCTL_ALERT_URL; one hangs mid-answer. The healthy one gets
    every alert while the slow one is still stuck on the first."""
    receiver.expect_request("/hooks/ok", method="POST").respond_with_data("ok")
    slow = trickle("head")
    alerter = Alerter(f"{slow.url}/hooks/slow,{receiver.url_for('/hooks/ok')}", deadline_s=600)
    t0 = time.perf_counter()
    for name in ("a", "b", "c"):
        poll(alerter, device(name), Reading(name, T, temp=72.0, frequency=575.0))
    assert time.perf_counter() - t0 < 1.0  # the caller never waits for a webhook
    wait_until(lambda: len(receiver.log) == 3, 20, "3 alerts at the healthy destination")
    assert [m["device"] for _, m in received(receiver)] == ["a", "b", "c"]
    slow_lane, ok_lane = alerter.lanes
    wait_until(lambda: len(slow.requests) == 1, 20, "the first alert at the slow destination")
    assert slow.open == 1  # still stuck on the first alert
    assert (slow_lane.sent, slow_lane.failed, slow_lane.queue.qsize()) == (0, 0, 2)
    assert (ok_lane.sent, ok_lane.failed) == (3, 0)
    t0 = time.perf_counter()
    alerter.close(timeout_s=0.5)  # the stuck lane is abandoned, not waited for
    assert time.perf_counter() - t0 < 5.0


# --- issue 23 item 3: credentials never leak, and work as HTTP Basic auth -------------------


def _basic(req) -> str:
    header = req.headers.get("Authorization", "")
    assert header.startswith("Basic "), header
    return base64.b64decode(header[6:]).decode("utf-8")


def test_inline_credentials_never_reach_the_resolver_nor_the_log(receiver, caplog):
    receiver.expect_request("/hooks/a", method="POST").respond_with_data("no", status=500)
    url = receiver.url_for("/hooks/a").replace("http://", "http://alice:s3cret-pw@")
    alerter = Alerter(url)
    poll(alerter, device(), Reading("gamma", T, temp=75.0, frequency=575.0))
    alerter.close(timeout_s=5)
    ((req, _),) = receiver.log  # it got there: the host was not "alice:s3cret-pw@127.0.0.1"
    assert req.headers["Host"] == f"127.0.0.1:{receiver.port}"
    assert _basic(req) == "alice:s3cret-pw"
    assert f"not delivered to {receiver.url_for('/hooks/a')}: HTTP Error 500" in caplog.text
    assert "s3cret" not in caplog.text and "alice" not in caplog.text


def test_the_password_file_gives_basic_auth_to_urls_that_name_a_user(receiver):
    receiver.expect_request("/", method="POST").respond_with_data("ok")
    receiver.expect_request("/hooks/open", method="POST").respond_with_data("ok")
    port = receiver.port
    alerter = Alerter(
        f"http://alice@127.0.0.1:{port}/miners,http://127.0.0.1:{port}/hooks/open",
        password="Sälzburg:42",
    )
    poll(alerter, device(), Reading("gamma", T, temp=75.0, frequency=575.0))
    alerter.close(timeout_s=5)
    by_path = {req.path: req for req, _ in receiver.log}
    assert _basic(by_path["/"]) == "alice:Sälzburg:42"  # ntfy topic URL, with auth
    assert json.loads(by_path["/"].get_data())["topic"] == "miners"
    assert "Authorization" not in by_path["/hooks/open"].headers  # no user: no password
