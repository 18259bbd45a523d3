"""tempctl.device (the AxeOS client) against real loopback HTTP servers (pytest-httpserver,
plus a raw socket server for connections that drop), and the parsers against the reference
bodies."""

from __future__ import annotations

import hashlib
import json
import math
import re
import socket
import struct
import sys
import threading
from pathlib import Path

import pytest
from pytest_httpserver import HTTPServer
from werkzeug import Request, Response

from tempctl.device import (
    STATS_COLUMNS,
    AuthRequired,
    AxeOSError,
    BadResponse,
    Client,
    Rejected,
    Timeout,
    TooLarge,
    Unreachable,
    capabilities,
    normalize_url,
    parse_info,
    parse_statistics,
    plausible_temp,
)
from tempctl.resources import PACKAGE_DIR

BODIES = PACKAGE_DIR / "data" / "bodies"
INFO = "/api/system/info"


def body(name: str) -> dict:
    return json.loads((BODIES / name).read_bytes())


# --- servers --------------------------------------------------------------------------


@pytest.fixture(scope="module")
def _server():
    # Threaded, so a handler held open by a timeout test never blocks the next test.
    server = HTTPServer(host="127.0.0.1", port=0, threaded=True)
    server.start()
    yield server
    server.clear()
    server.stop()


@pytest.fixture
def httpserver(_server):
    _server.clear()
    yield _server
    _server.clear()


def make_client(server: HTTPServer, **kwargs) -> Client:
    kwargs.setdefault("backoff", 0)  # retry tests must not sleep
    return Client(f"http://127.0.0.1:{server.port}", **kwargs)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class HangUpServer:
    """Reads each HTTP request head, then hangs up without answering: AxeOS ≤ v2.1.5 on
    restart, or (reset=True) a device that resets the socket as it reboots (§6)."""

    def __init__(self, *, reset: bool) -> None:
        self.reset = reset
        self.request_lines: list[bytes] = []
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            with conn:
                conn.settimeout(2)
                data = b""
                while b"\r\n\r\n" not in data:
                    chunk = conn.recv(4096)
                    if not chunk:
                        break
                    data += chunk
                self.request_lines.append(data.split(b"\r\n", 1)[0])
                if self.reset:  # linger 0: close() sends RST instead of FIN
                    conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))

    def close(self) -> None:
        self.sock.shutdown(socket.SHUT_RDWR)  # wakes the blocked accept()
        self.sock.close()
        self.thread.join(timeout=5)


# --- the reference bodies -------------------------------------------------------------


def test_bodies_are_byte_identical_to_the_reference():
    readme = (BODIES / "README.md").read_text()
    pairs = re.findall(r"^([0-9a-f]{64})  (\S+\.json)$", readme, re.MULTILINE)
    listed = {name: digest for digest, name in pairs}
    on_disk = {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in BODIES.glob("*.json")}
    assert len(on_disk) == 5
    assert on_disk == listed


EXPECTED = {
    # file: temp, vr_temp, frequency, actual_frequency, hashrate, version, asic, uptime, fan %, rpm
    "v2.1.10_ultra-204_BM1366.json": (
        55.0, None, 485.0, None, 421.87352100471838, "v2.1.10", "BM1366", 86133, 56.0, 4215,
    ),
    "v2.4.5_supra-401_BM1368.json": (
        58.0, None, 490.0, None, 612.490761336527, "v2.4.5", "BM1368", 190044, 63.0, 4730,
    ),
    "v2.10.1_gamma-601_BM1370.json": (
        60.125, 54.0, 525.0, None, 1062.3781049531258, "v2.10.1", "BM1370", 302411, 47.0, 3862,
    ),
    "v2.13.2_hex-302_6xBM1366.json": (
        61.5625, 57.0, 485.0, None, 2541.894043, "v2.13.2", "BM1366", 171234, 43.7185287, 3120,
    ),
    "v2.15.0_gamma-602_BM1370.json": (
        60.125, 56.0, 525.0, 525.0, 1066.387207, "v2.15.0", "BM1370", 523817, 48.73126220703125,
        3874,
    ),
}  # fmt: skip


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_parse_example_bodies(name):
    temp, vr, freq, actual, hashrate, version, asic, uptime, fan, rpm = EXPECTED[name]
    reading = parse_info(body(name), "dev", 1_700_000_000_000)
    assert (reading.device, reading.ts_ms) == ("dev", 1_700_000_000_000)
    assert reading.temp == temp and reading.raw_temp == temp and reading.valid
    assert reading.vr_temp == vr  # None on the Ultra and Supra 401: no TPS546 (vrTemp 0)
    assert reading.frequency == freq
    assert reading.actual_frequency == actual  # only v2.14+ sends actualFrequency
    assert reading.hashrate == pytest.approx(hashrate)
    assert (reading.version, reading.asic_model, reading.uptime_s) == (version, asic, uptime)
    assert reading.fan_pct == pytest.approx(fan) and reading.fan_rpm == rpm
    assert reading.autofan is True and reading.overheat is False
    assert reading.error is None and reading.backfilled is False


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_read_over_http_matches_parse(httpserver, name):
    raw = (BODIES / name).read_bytes()
    httpserver.expect_request(INFO, method="GET").respond_with_data(
        raw, content_type="application/json"
    )
    with make_client(httpserver) as client:
        assert client.fetch_info() == json.loads(raw)
        assert client.read("dev", 5) == parse_info(json.loads(raw), "dev", 5)


# --- sensor failures and field validation --------------------------------------------------


@pytest.mark.parametrize(
    ("value", "why"),
    [
        (-1, "sensor not ready"),
        (-1.0, "sensor not ready"),
        (0, "I2C read error"),
        (-3.5, "below zero"),
        (127, "EMC2101 diode"),
        (127.9, "EMC2101 diode"),
        (-128, "EMC2103 diode"),
        (float("nan"), "not a finite"),
        (float("inf"), "not a finite"),
        ("hot", "not a number"),
        (True, "not a number"),
        (None, "temp missing"),
        (1e308, "above 150"),
        (151, "above 150"),
    ],
)
def test_implausible_temp_makes_an_invalid_reading(value, why):
    info = body("v2.15.0_gamma-602_BM1370.json") | {"temp": value}
    reading = parse_info(info, "dev", 0)
    assert reading.temp is None and not reading.valid
    assert reading.error is not None and reading.error.startswith("temp")
    assert why in reading.error
    numeric = isinstance(value, (int, float)) and not isinstance(value, bool)
    expected_raw = float(value) if numeric and math.isfinite(value) else None
    assert reading.raw_temp == expected_raw
    assert reading.frequency == 525.0  # the rest of the reading still parses


def test_missing_temp_key():
    info = body("v2.13.2_hex-302_6xBM1366.json")
    del info["temp"]
    reading = parse_info(info, "dev", 0)
    assert reading.temp is None and reading.raw_temp is None
    assert reading.error == "temp missing"


def test_error_text_names_the_value():
    assert plausible_temp(-1) == (
        None,
        "temp=-1: sensor not ready (ASIC not initialised, paused or I2C error)",
    )
    assert plausible_temp(60.125) == (60.125, None)
    assert plausible_temp(127.0, field="vrTemp") == (127.0, None)  # no EMC2101 on the VR
    assert plausible_temp(0, field="vrTemp") == (None, None)  # no TPS546: not an error


def test_vr_temp_zero_is_not_an_error_but_garbage_is():
    info = body("v2.13.2_hex-302_6xBM1366.json")
    assert parse_info(info | {"vrTemp": 0}, "d", 0).error is None
    broken = parse_info(info | {"vrTemp": "x"}, "d", 0)
    assert broken.vr_temp is None and broken.valid and "vrTemp='x'" in broken.error


@pytest.mark.parametrize(
    ("key", "value", "field"),
    [
        ("frequency", -525, "frequency"),
        ("frequency", 0, "frequency"),
        ("frequency", float("nan"), "frequency"),
        ("frequency", 1e308, "frequency"),
        ("frequency", "525", "frequency"),
        ("actualFrequency", -1, "actual_frequency"),
        ("hashRate", "1066", "hashrate"),
        ("hashRate", 1e308, "hashrate"),
        ("hashRate", -5.0, "hashrate"),
        ("power", float("inf"), "power"),
        ("fanspeed", 250, "fan_pct"),
        ("fanrpm", [1, 2], "fan_rpm"),
        ("uptimeSeconds", -4, "uptime_s"),
        ("coreVoltage", True, "core_voltage"),
    ],
)
def test_bad_field_becomes_none_with_a_note(key, value, field):
    reading = parse_info(body("v2.15.0_gamma-602_BM1370.json") | {key: value}, "d", 0)
    assert getattr(reading, field) is None
    assert reading.error is not None and reading.error.startswith(f"{key}=")
    assert reading.temp == 60.125  # a bad side field does not invalidate the temperature


def test_non_object_body_gives_an_invalid_reading():
    reading = parse_info([1, 2], "d", 0)  # type: ignore[arg-type]
    assert not reading.valid and "not a JSON object" in reading.error


def test_hotter_second_sensor_counts():
    hex_body = body("v2.13.2_hex-302_6xBM1366.json")
    assert parse_info(hex_body | {"temp2": 68.5}, "d", 0).temp == 68.5
    single = parse_info(hex_body | {"temp2": -1}, "d", 0)
    assert single.temp == 61.5625 and single.error is None
    faulty = parse_info(hex_body | {"temp2": -128}, "d", 0)  # EMC2103 diode fault on chip 2
    assert faulty.temp == 61.5625 and "temp2=-128" in faulty.error
    dead_primary = parse_info(hex_body | {"temp": -1, "temp2": 58.0}, "d", 0)
    assert dead_primary.temp is None


def test_old_firmware_fan_keys():
    # v2.0.x–v2.1.3: fanSpeed (capital S) is rpm and fanspeed is the manual *setting* (§4.2).
    old = {"temp": 50, "fanSpeed": 4100, "fanspeed": 80, "autofanspeed": 1, "version": "v2.1.3"}
    reading = parse_info(old, "d", 0)
    assert reading.fan_rpm == 4100 and reading.fan_pct is None
    manual = parse_info(old | {"autofanspeed": 0}, "d", 0)
    assert manual.fan_pct == 80.0  # in manual mode the setting is the applied duty
    rpm_renamed = parse_info({"temp": 50, "fanSpeedRpm": 3900}, "d", 0)
    assert rpm_renamed.fan_rpm == 3900


# --- overheat -----------------------------------------------------------------------


def v215_tripped(**changes) -> dict:
    """v2.15 during the firmware's own overheat cool-down, per §9.3."""
    info = body("v2.15.0_gamma-602_BM1370.json") | {
        "actualFrequency": 50,
        "expectedHashrate": 0,
        "hashRate": 0,
        "miningPaused": False,
        "autofanspeed": 0,
        "manualFanSpeed": 100,
        "fanspeed": 100,
        "overheat_mode": 0,
        "temp": 75.25,
    }
    return {k: v for k, v in (info | changes).items() if v is not None}  # None drops a key


@pytest.mark.parametrize(
    ("info", "expected"),
    [
        (body("v2.13.2_hex-302_6xBM1366.json") | {"overheat_mode": 1}, True),
        (body("v2.13.2_hex-302_6xBM1366.json"), False),
        (body("v2.10.1_gamma-601_BM1370.json") | {"overheat_mode": 1, "frequency": 50}, True),
        ({"temp": 40, "overheat": 1, "version": "v2.1.9"}, True),
        (v215_tripped(), True),
        (v215_tripped(fanspeed=None), True),  # no applied duty: manualFanSpeed 100 decides
        (v215_tripped(miningPaused=True), False),  # the user paused it: not an overheat
        (v215_tripped(autofanspeed=1), False),
        (v215_tripped(actualFrequency=525), False),
        (v215_tripped(expectedHashrate=1071), False),
        (v215_tripped(fanspeed=30), False),
        (body("v2.15.0_gamma-602_BM1370.json"), False),
    ],
)
def test_overheat_detection(info, expected):
    assert parse_info(info, "d", 0).overheat is expected


# --- capabilities ---------------------------------------------------------------------

CAPS = [
    # version, asic, generation, live, actual, statistics, crashes, fan key
    ("v2.0.0", "BM1397", "A", False, False, False, True, "fanspeed"),
    ("v2.0.3", "BM1366", "A", False, False, False, True, "fanspeed"),
    ("v2.0.4", "BM1366", "A", False, False, False, False, "fanspeed"),
    ("v2.1.8", "BM1368", "A", False, False, False, False, "fanspeed"),
    ("v2.1.10", "BM1366", "B", False, False, False, False, "fanspeed"),
    ("v2.2.0", "BM1368", "B", True, False, False, False, "fanspeed"),
    ("v2.4.5", "BM1397", "B", False, False, False, False, "fanspeed"),
    ("v2.3.0", None, "B", False, False, False, False, "fanspeed"),
    ("v2.6.0", "BM1370", "C", True, False, False, False, "fanspeed"),
    ("v2.8.0", "BM1370", "C", True, False, True, False, "fanspeed"),
    ("v2.10.1", "BM1370", "C", True, False, True, False, "fanspeed"),
    ("v2.11.0", "BM1397", "D", False, False, True, False, "manualFanSpeed"),
    ("v2.12.0", "BM1397", "D", True, False, True, False, "manualFanSpeed"),
    ("v2.13.2", "BM1366", "D", True, False, True, False, "manualFanSpeed"),
    ("v2.13.0-12-gabc", "BM1370", "?", True, False, True, False, "manualFanSpeed"),
    ("v2.10.0b1", "BM1370", "?", True, False, True, False, "fanspeed"),
    ("v2.14.0", "BM1370", "E", True, True, True, False, "manualFanSpeed"),
    ("v2.15.0", None, "E", True, True, True, False, "manualFanSpeed"),
    ("2.15.0", "bm1370", "E", True, True, True, False, "manualFanSpeed"),
    ("v3.0.0", "BM1370", "?", True, True, True, False, "manualFanSpeed"),
    ("v1.9.9", "BM1397", "?", False, False, False, True, "fanspeed"),
    ("garbage", "BM1370", "?", False, False, False, True, "manualFanSpeed"),
    ("", "BM1370", "?", False, False, False, True, "manualFanSpeed"),
    (None, None, "?", False, False, False, True, "manualFanSpeed"),
]


FLAGS = ("generation", "live_frequency", "actual_frequency", "statistics",
         "partial_patch_crashes", "fan_key")  # fmt: skip


@pytest.mark.parametrize(("version", "asic", *FLAGS), CAPS)
def test_capabilities(version, asic, generation, live_frequency, actual_frequency, statistics,
                      partial_patch_crashes, fan_key):  # fmt: skip
    caps = capabilities(version, asic)
    assert tuple(getattr(caps, f) for f in FLAGS) == (
        generation, live_frequency, actual_frequency, statistics, partial_patch_crashes, fan_key
    )  # fmt: skip
    assert caps.can_write is not partial_patch_crashes
    assert (caps.why_not is None) is not partial_patch_crashes


# --- URLs ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("given", "expected"),
    [
        ("http://127.0.0.1", "http://127.0.0.1"),
        ("127.0.0.1", "http://127.0.0.1"),
        ("127.0.0.1:8080/", "http://127.0.0.1:8080"),
        ("[::1]:8080", "http://[::1]:8080"),
        ("http://[::1]/", "http://[::1]"),
        ("::1", "http://[::1]"),
        ("localhost", "http://localhost"),
        ("HTTP://Bitaxe.Local/", "http://bitaxe.local"),
        ("bitaxe.local:80", "http://bitaxe.local"),
        ("  203.0.113.7  ", "http://203.0.113.7"),
    ],
)
def test_normalize_url(given, expected):
    assert normalize_url(given) == expected


@pytest.mark.parametrize(
    ("given", "message"),
    [
        ("", "empty"),
        ("   ", "empty"),
        ("https://bitaxe.local", "plain HTTP only"),
        ("ftp://bitaxe.local", "unsupported scheme"),
        ("http://bitaxe.local/api/system/info", "without a path"),
        ("bitaxe.local?x=1", "without a path"),
        ("http://", "no host"),
        ("user@bitaxe.local", "user info"),
        ("bitaxe.local:99999", "bad port"),
        ("bitaxe.local:abc", "bad port"),
        ("bitaxe.local:0", "port 0"),
        ("bad host", "not a valid host"),
        ("[::zz]:80", "not a valid IPv6"),
    ],
)
def test_normalize_url_refuses(given, message):
    with pytest.raises(ValueError, match=message):
        normalize_url(given)


# --- HTTP behaviour ------------------------------------------------------------------


def test_5xx_is_retried_then_succeeds(httpserver):
    httpserver.expect_oneshot_request(INFO).respond_with_data("busy", status=503)
    httpserver.expect_oneshot_request(INFO).respond_with_data("oops", status=500)
    httpserver.expect_request(INFO).respond_with_json({"temp": 61.0})
    with make_client(httpserver, retries=2) as client:
        assert client.read("d", 0).temp == 61.0
    assert len(httpserver.log) == 3


def test_5xx_forever_is_a_bad_response(httpserver):
    httpserver.expect_request(INFO).respond_with_data("boom", status=500)
    with make_client(httpserver, retries=2) as client, pytest.raises(BadResponse) as info:
        client.fetch_info()
    assert info.value.status == 500 and info.value.kind == "bad_response"
    assert "HTTP 500 'boom' (after retries)" in str(info.value)
    assert len(httpserver.log) == 3  # the first try and two retries


def test_404_is_not_retried(httpserver):
    httpserver.expect_request(INFO).respond_with_json({"error": "unknown route"}, status=404)
    with make_client(httpserver) as client, pytest.raises(BadResponse, match="HTTP 404"):
        client.fetch_info()
    assert len(httpserver.log) == 1


def test_401_explains_the_private_network_check(httpserver):
    httpserver.expect_request(INFO).respond_with_data(
        "Unauthorized", status=401, content_type="text/html"
    )
    with make_client(httpserver) as client, pytest.raises(AuthRequired, match="private-range"):
        client.fetch_info()


def test_redirect_is_not_followed(httpserver):
    httpserver.expect_request(INFO).respond_with_data(
        "Redirect to the captive portal", status=302, headers={"Location": "/"}
    )
    httpserver.expect_request("/").respond_with_data("<html></html>", content_type="text/html")
    with make_client(httpserver) as client, pytest.raises(BadResponse, match="redirect") as info:
        client.fetch_info()
    assert info.value.status == 302
    assert [req.path for req, _ in httpserver.log] == [INFO]


@pytest.mark.parametrize(
    ("payload", "message"),
    [
        (b"<!doctype html><html></html>", "not JSON"),
        (b"", "not JSON"),
        (b'{"temp": 61.5, "frequency": 5', "truncated JSON"),
        (b"[1, 2, 3]", "JSON list, expected an object"),
        (b'"temp"', "JSON str, expected an object"),
        (b"\xff\xfe\x00garbage", "not JSON"),
        (b"[" * 50000, "not JSON"),
    ],
)
def test_bad_bodies(httpserver, payload, message):
    httpserver.expect_request(INFO).respond_with_data(payload, content_type="application/json")
    with make_client(httpserver) as client, pytest.raises(BadResponse, match=message):
        client.fetch_info()


def test_body_at_the_cap_is_accepted(httpserver):
    head = b'{"temp": 61.0, "pad": "'
    doc = head + b"x" * (65536 - len(head) - 2) + b'"}'
    assert len(doc) == 65536
    httpserver.expect_request(INFO).respond_with_data(doc, content_type="application/json")
    with make_client(httpserver) as client:
        assert client.fetch_info()["temp"] == 61.0


def test_declared_body_over_the_cap(httpserver):
    httpserver.expect_request(INFO).respond_with_data(b"x" * 65537)
    with make_client(httpserver) as client, pytest.raises(TooLarge) as info:
        client.fetch_info()
    assert info.value.kind == "too_large" and isinstance(info.value, BadResponse)


def test_streamed_body_over_the_cap_stops_reading(httpserver):
    # An endless chunked body: only a client that stops at the cap can return at all, so
    # nothing here depends on how much the kernel's socket buffers let the server push.
    def endless(_request: Request) -> Response:
        def generate():
            while True:
                yield b"x" * 65536

        return Response(generate(), content_type="application/json")  # chunked, no length

    httpserver.expect_request(INFO).respond_with_handler(endless)
    with (
        make_client(httpserver) as client,
        pytest.raises(TooLarge, match="stopped reading") as info,
    ):
        client.fetch_info()
    assert info.value.kind == "too_large"


@pytest.mark.parametrize("retries", [0, 1])
def test_read_timeout(httpserver, retries):
    release = threading.Event()
    calls = []

    def slow(_request: Request) -> Response:
        calls.append(1)
        release.wait(5)
        return Response("{}", content_type="application/json")

    httpserver.expect_request(INFO).respond_with_handler(slow)
    try:
        expected = r"GET http://127\.0\.0\.1:\d+/api/system/info: read timeout after 0\.3 s"
        # A deadline far above the read timeouts, so the retry fits in it.
        with (
            make_client(httpserver, read_timeout=0.3, retries=retries, deadline_s=30) as client,
            pytest.raises(Timeout, match=expected) as info,
        ):
            client.fetch_info()
    finally:
        release.set()
    assert info.value.kind == "timeout"
    assert len(calls) == retries + 1  # a GET read timeout is retried like any read error


def test_connection_refused():
    port = free_port()
    client = Client(f"127.0.0.1:{port}", retries=1, backoff=0)
    with pytest.raises(Unreachable, match="connection refused") as info:
        client.fetch_info()
    assert info.value.kind == "unreachable" and info.value.url.endswith(INFO)


@pytest.mark.skipif(
    sys.platform != "linux", reason="relies on Linux dropping SYNs on a full backlog"
)
def test_connect_timeout():
    with socket.create_server(("127.0.0.1", 0), backlog=0) as listener:
        port = listener.getsockname()[1]
        fillers = []
        for _ in range(3):  # fill the accept queue so the next SYN is dropped
            filler = socket.socket()
            filler.setblocking(False)
            filler.connect_ex(("127.0.0.1", port))
            fillers.append(filler)
        try:
            client = Client(f"127.0.0.1:{port}", connect_timeout=0.2, retries=0)
            with pytest.raises(Timeout, match="connect timeout after 0.2 s"):
                client.fetch_info()
        finally:
            for filler in fillers:
                filler.close()


# --- PATCH -----------------------------------------------------------------------------


def test_patch_sends_only_the_given_keys_as_numbers(httpserver):
    httpserver.expect_request("/api/system", method="PATCH").respond_with_data("", status=200)
    with make_client(httpserver) as client:
        latency = client.set_frequency(490)
        client.set_frequency(487.5, core_voltage=1150)
        client.set_fields({"autofanspeed": True})
        client.set_fields({"manualFanSpeed": 100.0, "overheat_mode": 0})
    assert 0 <= latency < 5
    sent = [(req.data, req.headers["Content-Type"]) for req, _ in httpserver.log]
    assert sent == [
        (b'{"frequency":490}', "application/json"),
        (b'{"frequency":487.5,"coreVoltage":1150}', "application/json"),
        (b'{"autofanspeed":1}', "application/json"),
        (b'{"manualFanSpeed":100,"overheat_mode":0}', "application/json"),
    ]


def test_patch_400_is_rejected_with_the_body(httpserver):
    httpserver.expect_request("/api/system", method="PATCH").respond_with_data(
        "Wrong API input", status=400, content_type="text/html"
    )
    with make_client(httpserver) as client, pytest.raises(Rejected) as info:
        client.set_frequency(70000 - 5000)
    assert (info.value.status, info.value.body, info.value.kind) == (
        400,
        "Wrong API input",
        "rejected",
    )
    assert len(httpserver.log) == 1


def test_patch_5xx_is_retried_then_gives_up(httpserver):
    httpserver.expect_oneshot_request("/api/system", method="PATCH").respond_with_data(
        "", status=503
    )
    httpserver.expect_request("/api/system", method="PATCH").respond_with_data("", status=200)
    with make_client(httpserver, retries=2) as client:
        client.set_frequency(500)
    assert len(httpserver.log) == 2

    httpserver.clear()
    httpserver.expect_request("/api/system", method="PATCH").respond_with_data(
        "content too long", status=500
    )
    with make_client(httpserver, retries=1) as client, pytest.raises(BadResponse) as info:
        client.set_frequency(500)
    assert info.value.status == 500 and not isinstance(info.value, Rejected)
    assert len(httpserver.log) == 2


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda c: c.set_frequency(0), "outside the API range"),
        (lambda c: c.set_frequency(-490), "outside the API range"),
        (lambda c: c.set_frequency(65536), "outside the API range"),
        (lambda c: c.set_frequency(float("nan")), "finite number"),
        (lambda c: c.set_frequency("490"), "finite number"),
        (lambda c: c.set_frequency(490, core_voltage=1150.0), "must be an int"),
        (lambda c: c.set_frequency(490, core_voltage=0), "outside the API range"),
        (lambda c: c.set_fields({}), "nothing to PATCH"),
        (lambda c: c.set_fields({"overheat_mode": 1}), "only be cleared"),
        (lambda c: c.set_fields({"hostname": "x"}), "finite number"),
    ],
)
def test_patch_refuses_bad_values_before_sending(httpserver, call, message):
    with make_client(httpserver) as client, pytest.raises(ValueError, match=message):
        call(client)
    assert httpserver.log == []


# --- restart ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("payload", "content_type"),
    [
        ("System will restart shortly.", "text/html"),  # v2.1.6–v2.11
        ('{"message":"System will restart shortly."}', "application/json"),  # v2.13+
    ],
)
def test_restart_200(httpserver, payload, content_type):
    httpserver.expect_request("/api/system/restart", method="POST").respond_with_data(
        payload, content_type=content_type
    )
    with make_client(httpserver) as client:
        assert 0 <= client.restart() < 5
    assert len(httpserver.log) == 1


def test_restart_is_never_retried(httpserver):
    httpserver.expect_request("/api/system/restart", method="POST").respond_with_data(
        "oops", status=500
    )
    with make_client(httpserver, retries=3) as client, pytest.raises(BadResponse, match="500"):
        client.restart()
    assert len(httpserver.log) == 1


@pytest.mark.parametrize("reset", [False, True], ids=["closed", "reset"])
def test_restart_dropped_connection_counts_as_sent(reset):
    server = HangUpServer(reset=reset)
    try:
        with Client(f"127.0.0.1:{server.port}", retries=3, backoff=0) as client:
            assert 0 <= client.restart() < 5
    finally:
        server.close()
    assert server.request_lines == [b"POST /api/system/restart HTTP/1.1"]


def test_get_is_retried_after_a_dropped_connection():
    server = HangUpServer(reset=False)
    try:
        with (
            Client(f"127.0.0.1:{server.port}", retries=2, backoff=0) as client,
            pytest.raises(Unreachable, match="closed or reset"),
        ):
            client.fetch_info()
    finally:
        server.close()
    assert server.request_lines == [b"GET /api/system/info HTTP/1.1"] * 3


def test_restart_unreachable():
    with (
        Client(f"127.0.0.1:{free_port()}", backoff=0) as client,
        pytest.raises(Unreachable, match="connection refused"),
    ):
        client.restart()


# --- optional endpoints --------------------------------------------------------------


def test_fetch_asic(httpserver):
    asic = {"ASICModel": "BM1370", "frequencyOptions": [400, 490, 525, 550, 600, 625]}
    httpserver.expect_request("/api/system/asic").respond_with_json(asic)
    with make_client(httpserver) as client:
        assert client.fetch_asic() == asic


@pytest.mark.parametrize(
    ("status", "payload", "headers", "content_type"),
    [
        (302, "Redirect to the captive portal", {"Location": "/"}, "text/html"),  # < v2.7
        (404, '{"error":"unknown route"}', {}, "application/json"),  # v2.9+ without the route
        (200, "<!doctype html><title>AxeOS</title>", {}, "text/html"),
    ],
)
def test_fetch_asic_absent(httpserver, status, payload, headers, content_type):
    httpserver.expect_request("/api/system/asic").respond_with_data(
        payload, status=status, headers=headers, content_type=content_type
    )
    with make_client(httpserver) as client:
        assert client.fetch_asic() is None


def test_fetch_asic_server_error_raises(httpserver):
    httpserver.expect_request("/api/system/asic").respond_with_data("x", status=500)
    with make_client(httpserver, retries=0) as client, pytest.raises(BadResponse):
        client.fetch_asic()


def test_fetch_statistics(httpserver):
    stats = {"currentTimestamp": 61000, "labels": ["asicTemp", "timestamp"],
             "statistics": [[60.5, 60000]]}  # fmt: skip
    httpserver.expect_request(
        "/api/system/statistics", query_string={"columns": ",".join(STATS_COLUMNS)}
    ).respond_with_json(stats)
    with make_client(httpserver) as client:
        assert client.fetch_statistics() == stats


@pytest.mark.parametrize(
    ("status", "payload"),
    [
        (404, {"error": "unknown route"}),
        (200, {"currentTimestamp": 5000, "labels": ["timestamp"], "statistics": []}),
        (200, {"currentTimestamp": 5000}),
    ],
)
def test_fetch_statistics_absent_or_empty(httpserver, status, payload):
    httpserver.expect_request("/api/system/statistics").respond_with_json(payload, status=status)
    with make_client(httpserver) as client:
        assert client.fetch_statistics() is None


def test_errors_share_one_base():
    for error in (Unreachable, Timeout, BadResponse, TooLarge, Rejected):
        assert issubclass(error, AxeOSError)
    assert {e.kind for e in (Unreachable, Timeout, BadResponse, TooLarge, Rejected)} == {
        "unreachable", "timeout", "bad_response", "too_large", "rejected",
    }  # fmt: skip


# --- statistics backfill -------------------------------------------------------------

NOW = 1_700_000_000_000

V211_STATS = {
    "currentTimestamp": 600_000,  # ms since boot, same clock as the row timestamps
    "labels": [*STATS_COLUMNS, "timestamp"],
    # hashrate, asicTemp, asicTemp2, vrTemp, asicVoltage, power, fanSpeed, fanRpm, timestamp
    "statistics": [
        [1061.2, 59.875, -1, 55, 1131, 18.4, 47.5, 3850, 540_000],
        [1070.9, 60.25, -1, 56, 1130, 18.6, 48.0, 3861, 570_000],
        [0, -1, -1, 56, 0, 6.1, 70, 5200, 590_000],  # ASIC re-initialising
        [1066.3, 60.125, 61.5, 56, 1132, 18.5, 48.7, 3874, 599_000],
        [1, 2, 3],  # malformed: wrong length
        [1066.3, 60.125, -1, 56, 1132, 18.5, 48.7, 3874, 700_000],  # after "now": dropped
    ],
}


def test_parse_statistics_v211():
    readings = parse_statistics(V211_STATS, "gamma", NOW, 600)
    assert [r.ts_ms for r in readings] == [NOW - 60_000, NOW - 30_000, NOW - 10_000, NOW - 1_000]
    assert [r.uptime_s for r in readings] == [540, 570, 590, 599]
    assert [r.temp for r in readings] == [59.875, 60.25, None, 61.5]  # the hotter sensor
    assert all(r.backfilled and r.device == "gamma" and r.frequency is None for r in readings)
    first = readings[0]
    assert (first.hashrate, first.vr_temp, first.core_voltage_actual) == (1061.2, 55.0, 1131)
    assert (first.power, first.fan_pct, first.fan_rpm) == (18.4, 47.5, 3850)
    assert first.error is None
    assert readings[2].raw_temp == -1.0 and "sensor not ready" in readings[2].error


def test_parse_statistics_v28_labels_and_unlabelled():
    labels = ["hashRate", "temp", "vrTemp", "power", "voltage", "current",
              "coreVoltageActual", "fanspeed", "fanrpm", "wifiRSSI", "freeHeap",
              "timestamp"]  # fmt: skip
    row = [612.4, 58.0, 0, 13.4, 5056.25, 2655, 1161, 63, 4730, -60, 8571204, 100_000]
    labelled = {"currentTimestamp": 130_000, "labels": labels, "statistics": [row]}
    (reading,) = parse_statistics(labelled, "supra", NOW, None)
    assert (reading.ts_ms, reading.temp, reading.vr_temp) == (NOW - 30_000, 58.0, None)
    assert (reading.hashrate, reading.fan_pct, reading.fan_rpm) == (612.4, 63.0, 4730)
    assert reading.core_voltage_actual == 1161 and reading.error is None
    # No labels and no currentTimestamp: the fixed v2.8 columns and uptime_s_now stand in.
    bare = {"statistics": [row]}
    assert parse_statistics(bare, "supra", NOW, 130) == [reading]


@pytest.mark.parametrize(
    "stats",
    [
        {},
        {"currentTimestamp": 5000, "labels": ["timestamp"], "statistics": []},
        {"labels": ["asicTemp", "timestamp"], "statistics": [[60, 1000]]},  # no reference time
        {"currentTimestamp": 5000, "labels": ["asicTemp"], "statistics": [[60]]},
        {"currentTimestamp": "x", "labels": ["timestamp"], "statistics": [[1000]]},
        [],
    ],
)
def test_parse_statistics_gives_nothing_for_unusable_bodies(stats):
    assert parse_statistics(stats, "d", NOW, None) == []


def test_device_package_is_the_only_requests_user():
    root = Path(__file__).resolve().parents[1] / "tempctl"
    users = sorted(
        p.relative_to(root).as_posix()
        for p in root.rglob("*.py")
        if re.search(r"^\s*(import requests|from requests)", p.read_text(), re.MULTILINE)
    )
    assert users and all(u.startswith("device/") for u in users), users


def test_device_package_is_small_modules_behind_one_facade():
    import tempctl.device as facade

    root = Path(facade.__file__).parent
    sizes = {p.name: len(p.read_text().splitlines()) for p in root.glob("*.py")}
    assert all(n < 600 for n in sizes.values()), sizes
    assert not (root / "axeos.py").exists()
    for name in facade.__all__:
        assert getattr(facade, name) is not None
    # what the facade exported before the split still works
    for name in ("AxeOSError", "BadResponse", "Capabilities", "Client", "Rejected", "Timeout",
                 "TooLarge", "Unreachable", "capabilities", "normalize_url", "parse_info",
                 "parse_statistics", "parse_version", "plausible_temp"):  # fmt: skip
        assert name in facade.__all__
