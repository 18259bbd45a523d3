"""The emulator's firmware-master behaviours over real loopback HTTP (axeos-api.md §14).

Port kept across a reboot, PATCH validation as master, BM1372/BM1373, the conditions
that stop mining (pool down, power and hardware faults), the trip aftermath and the
stalled second trip, Basic auth, and the version label. Every AxeOS answer here is
validated against tests/data/esp-miner-openapi.master.yaml (ESP-Miner master's spec),
with the deviations test_emulator.py documents. Time comes from a FakeClock.
"""

from __future__ import annotations

import base64
import json
import socket
from contextlib import contextmanager
from pathlib import Path

import pytest
import requests
from openapi_core import OpenAPI
from openapi_core.contrib.requests import RequestsOpenAPIRequest, RequestsOpenAPIResponse
from openapi_core.validation.response.exceptions import InvalidData, MissingData

from tempctl.core.clock import FakeClock
from tempctl.device import parse_info
from tempctl.sim.emulator import Emulator

HERE = Path(__file__).parent
MASTER = OpenAPI.from_file_path(str(HERE / "data" / "esp-miner-openapi.master.yaml"))
TOLERATED_TYPES = {"stratumTLS", "fallbackStratumTLS"}  # §4.4: the spec says boolean
TIMEOUT = 5


@contextmanager
def emulator(version="v2.15.0", asic="BM1370", **kw):
    clock = FakeClock()
    kw.setdefault("restart_downtime_s", 5.0)
    kw.setdefault("boot_s", 3.0)
    with Emulator("constant", firmware=version, asic=asic, clock=clock.monotonic, **kw) as emu:
        emu.fake_clock = clock
        yield emu


def advance(emu, seconds):
    emu.fake_clock.advance(seconds)
    emu.sync()


def master_errors(resp):
    try:
        MASTER.validate_response(
            RequestsOpenAPIRequest(resp.request), RequestsOpenAPIResponse(resp)
        )
    except InvalidData as exc:
        return [
            (".".join(map(str, e.path)), e.validator, e.message)
            for e in exc.__cause__.schema_errors
            if not (e.validator == "type" and ".".join(map(str, e.path)) in TOLERATED_TYPES)
        ]
    return []


def info(emu, **kw):
    resp = requests.get(emu.urls[0] + "/api/system/info", timeout=TIMEOUT, **kw)
    assert resp.status_code == 200
    assert master_errors(resp) == []
    return resp.json()


def patch(emu, data, **kw):
    body = json.dumps(data).encode()
    return requests.patch(emu.urls[0] + "/api/system", data=body, timeout=TIMEOUT, **kw)


def state(emu):
    return requests.get(emu.urls[0] + "/_emulator/state", timeout=TIMEOUT).json()


def set_faults(emu, spec):
    r = requests.post(emu.urls[0] + "/_emulator/faults", json={"faults": spec}, timeout=TIMEOUT)
    assert r.status_code == 200, r.text


# --- issue 16 item 6: the port survives a reboot ------------------------------------------


def test_a_reboot_refuses_connections_but_keeps_the_port():
    with emulator() as emu:
        port = emu.devices[0].port
        assert requests.post(emu.urls[0] + "/api/system/restart", timeout=TIMEOUT).ok
        advance(emu, 1.5)
        with pytest.raises(requests.ConnectionError, match="(?i)refused"):
            info(emu)
        # another program cannot take the port while the device is down
        for reuse in (False, True):
            other = socket.socket()
            if reuse:
                other.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            with other, pytest.raises(OSError):
                other.bind(("127.0.0.1", port))
        advance(emu, 5.0)
        assert emu.devices[0].port == port
        assert info(emu)["uptimeSeconds"] <= 6
        assert emu.errors == []


def test_a_failed_rebind_is_reported_not_swallowed(caplog):
    with emulator() as emu:
        d = emu.devices[0]
        port = d.port
        emu.firmware().crash()
        emu.sync()
        # simulate losing the port: drop the placeholder and let a stranger bind it
        d.hold.close()
        d.hold = None
        stranger = socket.socket()
        stranger.bind(("127.0.0.1", port))
        stranger.listen(1)
        with stranger:
            advance(emu, 6.0)
            assert d.server is None
            assert len(emu.errors) == 1 and f"port {port}" in emu.errors[0]
            assert any("cannot listen" in r.getMessage() for r in caplog.records)
        advance(emu, 0.1)  # the stranger left: the next tick listens again
        assert d.server is not None and info(emu)["uptimeSeconds"] <= 7


# --- issue 16 item 7: PATCH validation as master ------------------------------------------


@pytest.mark.parametrize(
    "body",
    [
        {"displayOffset": 256},
        {"display": "NO SUCH PANEL"},
        {"pools": [{"id": 0, "stratumURL": "pool.example"}]},  # no port, no user
        {"pools": [{"id": 0.5, "stratumURL": "a", "stratumPort": 3333, "stratumUser": "u"}]},
        {"pools": [{"id": 8, "stratumURL": "a", "stratumPort": 3333, "stratumUser": "u"}]},
        {"pools": [{"id": 1, "stratumURL": "a", "stratumPort": 0, "stratumUser": "u"}]},
        {"pools": {"id": 0}},
        {"frequency": 500, "displayOffset": 300},  # all or nothing
    ],
)
def test_master_rejects_bad_settings_and_stores_nothing(body):
    with emulator() as emu:
        before = info(emu)
        r = patch(emu, body)
        assert (r.status_code, r.text) == (400, "Wrong API input")
        after = info(emu)
        for key in ("frequency", "displayOffset", "display", "pools"):
            assert after.get(key) == before.get(key)


def test_master_accepts_display_offset_255_and_known_display():
    with emulator() as emu:
        assert patch(emu, {"displayOffset": 255, "display": "SSD1309 (128x64)"}).status_code == 200
        assert info(emu)["display"] == "SSD1309 (128x64)"


def test_pool_settings_written_by_patch_show_in_info():
    with emulator() as emu:
        pool = {
            "id": 0.0,  # §14: 0.0 is accepted as slot 0
            "stratumURL": "stratum.example.net",
            "stratumPort": 4444,
            "stratumUser": "bc1qexample.worker",
            "stratumPassword": "secret",
            "stratumExtranonceSubscribe": 1,
        }
        assert patch(emu, {"pools": [pool]}).status_code == 200
        body = info(emu)
        slot = next(p for p in body["pools"] if p["id"] == 0)
        assert (slot["stratumURL"], slot["stratumPort"], slot["stratumUser"]) == (
            "stratum.example.net",
            4444,
            "bc1qexample.worker",
        )
        assert slot["stratumPassword"] == "*****" and slot["stratumExtranonceSubscribe"] is True
        # the legacy mirror follows the primary slot (§4.1)
        assert (body["stratumURL"], body["stratumPort"]) == ("stratum.example.net", 4444)
        assert "secret" not in json.dumps(body)
        # a new slot, then make it the fallback
        new = {"id": 3, "stratumURL": "b.example", "stratumPort": 3333, "stratumUser": "w"}
        assert patch(emu, {"pools": [new], "secondaryPoolIndex": 3}).status_code == 200
        body = info(emu)
        assert body["secondaryPoolIndex"] == 3 and body["fallbackStratumURL"] == "b.example"
        assert [p["id"] for p in body["pools"]] == [0, 1, 3]


def test_legacy_stratum_keys_show_in_info_up_to_v214_and_are_ignored_on_v215():
    with emulator("v2.13.2", asic="hex") as emu:
        assert patch(emu, {"stratumURL": "x.example", "stratumPort": 3334}).status_code == 200
        body = requests.get(emu.urls[0] + "/api/system/info", timeout=TIMEOUT).json()
        assert (body["stratumURL"], body["stratumPort"]) == ("x.example", 3334)
    with emulator() as emu:
        assert patch(emu, {"stratumURL": "x.example"}).status_code == 200
        assert info(emu)["stratumURL"] == "public-pool.io"


def test_hostname_is_stored_without_local_and_the_reply_says_so():
    with emulator() as emu:
        r = patch(emu, {"hostname": "miner7.local"})
        assert r.status_code == 200
        assert r.json()["redirect"] == {
            "url": "http://miner7.local",
            "delay": 2000,
            "message": "Hostname updated. Redirecting to new address...",
        }
        body = info(emu)
        assert (body["hostname"], body["fullHostname"]) == ("miner7", "miner7.local")


# --- issue 16 item 8: what master has -----------------------------------------------------


@pytest.mark.parametrize("asic", ["BM1373", "BM1372"])
def test_bm1373_and_bm1372_boards(asic):
    with emulator(asic=asic) as emu:
        resp = requests.get(emu.urls[0] + "/api/system/info", timeout=TIMEOUT)
        body = resp.json()
        assert body["ASICModel"] == asic and body["hashRate"] > 0
        assert master_errors(resp) == []
        r = requests.get(emu.urls[0] + "/api/system/asic", timeout=TIMEOUT)
        assert r.json()["defaultFrequency"] == 327 and r.json()["defaultVoltage"] == 1000
        # master's spec lists BM1373 in the /asic enum but not BM1372 (§14: "plus BM1373")
        errors = master_errors(r)
        assert (
            errors == [] if asic == "BM1373" else [e[:2] for e in errors] == [("ASICModel", "enum")]
        )


def test_bm1373_needs_v215():
    with pytest.raises(ValueError, match="v2.15.0"):
        Emulator("constant", firmware="v2.14.0", asic="BM1373")


def test_gamma_on_the_v2132_template_mines_as_a_gamma():
    with emulator("v2.13.2", asic="BM1370") as emu:
        body = requests.get(emu.urls[0] + "/api/system/info", timeout=TIMEOUT).json()
        assert body["stratumUser"].endswith(".gamma")
        assert body["fallbackStratumUser"].endswith(".gamma")
        assert ".hex" not in json.dumps(body)


@pytest.mark.parametrize(
    "fault, key",
    [("pool_down", None), ("power_fault", "power_fault"), ("hardware_fault", "hardware_fault")],
)
def test_conditions_stop_mining_without_looking_like_an_overheat(fault, key):
    with emulator(faults=fault) as emu:
        advance(emu, 20)
        body = info(emu)
        assert body["hashRate"] == 0 and body["expectedHashrate"] == 0
        assert body["actualFrequency"] == 50 and body["temp"] == -1
        # no trip signature: settings untouched, no penalty, no sticky manual 100 %
        assert (body["frequency"], body["coreVoltage"], body["manualFanSpeed"]) == (575, 1150, 100)
        assert body["overheat_mode"] == 0 and state(emu)["overheat_trips"] == 0
        if key is not None:
            assert isinstance(body[key], str) and body[key]
        else:
            assert "power_fault" not in body and "hardware_fault" not in body
            assert body["poolConnectionInfo"] == "Not Connected"
            assert body["fanspeed"] == 30  # §14 fan_controller_task.c: 30 % without a pool
        assert state(emu)["stop_reason"] == fault
        set_faults(emu, "")
        advance(emu, 3 + 12)  # re-init, then the ramp from 50 MHz
        body = info(emu)
        assert body["hashRate"] > 0 and body["actualFrequency"] == 575
        assert key is None or key not in body


def test_a_condition_with_a_probability_lasts_then_clears():
    with emulator(faults="pool_down=1e-9") as emu:  # never starts by chance
        assert info(emu)["hashRate"] > 0
        set_faults(emu, "pool_down=0.999999")
        assert info(emu)["hashRate"] == 0  # the info request started it
        set_faults(emu, "pool_down=1e-9")
        advance(emu, 30)
        assert info(emu)["hashRate"] == 0  # still within the 60 s hold
        advance(emu, 45)
        assert state(emu)["stop_reason"] is None


def test_pool_down_stops_mining_only_from_v214():
    with emulator("v2.13.2", asic="hex", faults="pool_down") as emu:
        body = requests.get(emu.urls[0] + "/api/system/info", timeout=TIMEOUT).json()
        assert body["hashRate"] > 0 and body["poolConnectionInfo"] == "Not Connected"


def trip(emu):
    set_faults(emu, "overheat")
    info(emu)
    set_faults(emu, "")
    advance(emu, 60)  # 30 s cool-down (more while the VR is hot), re-init, ramp


def test_each_trip_takes_another_100_and_the_second_on_a_gamma_stalls():
    with emulator() as emu:
        trip(emu)
        body = info(emu)
        assert (body["frequency"], body["coreVoltage"]) == (475, 1050)
        assert (body["autofanspeed"], body["manualFanSpeed"], body["fanspeed"]) == (0, 100, 100)
        assert body["hashRate"] > 0 and body["actualFrequency"] == 475
        trip(emu)
        body = info(emu)
        # 950 mV is below the TPS546's 1.0 V minimum: answers, but no core power (§14)
        assert (body["frequency"], body["coreVoltage"]) == (375, 950)
        assert body["hashRate"] == 0 and body["temp"] == -1
        # not the trip signature (§9.3): the PLL setting is not 50 and hashing is expected
        assert body["actualFrequency"] == 375 and body["expectedHashrate"] == 765
        assert parse_info(body, "d", 0).overheat is False
        st = state(emu)
        assert st["stalled"] and st["phase"] == "mining" and st["overheat_trips"] == 2
        # restoring a valid voltage brings it back
        assert patch(emu, {"coreVoltage": 1150, "autofanspeed": 1}).status_code == 200
        advance(emu, 30)
        body = info(emu)
        assert body["hashRate"] > 0 and body["actualFrequency"] == 375
        assert not state(emu)["stalled"]


def auth(password):
    return {"Authorization": "Basic " + base64.b64encode(f"admin:{password}".encode()).decode()}


def test_basic_auth_behind_a_flag():
    with emulator(password="hunter2") as emu:
        assert info(emu)["hashRate"] > 0  # reads are open unless auth_read_required
        r = patch(emu, {"frequency": 500})
        assert r.status_code == 401 and r.json() == {"authRequired": 1}
        assert r.headers["WWW-Authenticate"] == 'Basic realm="Bitaxe"'
        assert patch(emu, {"frequency": 500}, headers=auth("wrong")).status_code == 401
        assert state(emu)["frequency_mhz"] == 575
        assert patch(emu, {"frequency": 500}, headers=auth("hunter2")).status_code == 200
        assert state(emu)["frequency_mhz"] == 500
    with emulator(password="hunter2", auth_read_required=True) as emu:
        r = requests.get(emu.urls[0] + "/api/system/info", timeout=TIMEOUT)
        assert r.status_code == 401 and r.json() == {"authRequired": 1}
        assert info(emu, headers=auth("hunter2"))["hashRate"] > 0


def test_version_label_reports_odd_versions():
    with emulator(version_label="virtual") as emu:
        body = info(emu)
        assert body["version"] == "virtual"
        assert patch(emu, {"frequency": 500}).status_code == 200  # still a v2.15 inside
        advance(emu, 5)
        assert info(emu)["actualFrequency"] == 500


def test_patch_200_still_empty_on_master():
    with emulator() as emu:
        r = patch(emu, {"frequency": 500})
        assert (r.status_code, r.text) == (200, "")
        with pytest.raises(MissingData):  # §3: the spec promises JSON, the firmware sends none
            MASTER.validate_response(RequestsOpenAPIRequest(r.request), RequestsOpenAPIResponse(r))


# --- /api/ws/live (v2.14+, §3) -------------------------------------------------------------

WS_KEY = base64.b64encode(b"0123456789abcdef").decode()


def ws_connect(emu):
    host, port = emu.urls[0].removeprefix("http://").split(":")
    sock = socket.create_connection((host, int(port)), timeout=TIMEOUT)
    sock.sendall(
        (
            "GET /api/ws/live HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\n"
            f"Connection: Upgrade\r\nSec-WebSocket-Key: {WS_KEY}\r\n"
            "Sec-WebSocket-Version: 13\r\n\r\n"
        ).encode()
    )
    f = sock.makefile("rb")
    status = f.readline()
    headers = {}
    while (line := f.readline()) not in (b"\r\n", b""):
        name, _, value = line.decode().partition(":")
        headers[name.strip().lower()] = value.strip()
    return sock, f, status, headers


def ws_message(f):
    b0, b1 = f.read(2)
    n = b1 & 0x7F
    if n == 126:
        n = int.from_bytes(f.read(2), "big")
    elif n == 127:
        n = int.from_bytes(f.read(8), "big")
    return b0 & 0x0F, f.read(n)


def test_ws_live_sends_the_full_object_then_changes():
    from tempctl.sim.emulator.live import accept_key

    with emulator() as emu:
        sock, f, status, headers = ws_connect(emu)
        with sock:
            assert status.startswith(b"HTTP/1.1 101")
            assert headers["sec-websocket-accept"] == accept_key(WS_KEY)
            opcode, payload = ws_message(f)
            first = json.loads(payload)
            assert opcode == 1 and first["event"] == "update"
            assert first["data"]["version"] == "v2.15.0" and "temp" in first["data"]
            advance(emu, 30)  # time moves: the next update carries only what changed
            opcode, payload = ws_message(f)
            update = json.loads(payload)["data"]
            assert "uptimeSeconds" in update and "version" not in update
            sock.sendall(bytes([0x88, 0x80, 0, 0, 0, 0]))  # masked close
            while (msg := ws_message(f))[0] == 0x1:
                pass  # an update may have been on its way
            assert msg[0] == 0x8


def test_ws_live_only_from_v214_and_only_as_an_upgrade():
    with emulator("v2.13.2", asic="hex") as emu:
        r = requests.get(emu.urls[0] + "/api/ws/live", timeout=TIMEOUT)
        assert r.status_code == 404 and r.json() == {"error": "unknown route"}
    with emulator() as emu:
        assert requests.get(emu.urls[0] + "/api/ws/live", timeout=TIMEOUT).status_code == 400


# --- the command line ------------------------------------------------------------------------


def test_emulate_command_with_the_new_flags(tmp_path):
    import select
    import signal
    import subprocess
    import sys

    secret = tmp_path / "password"
    secret.write_text("hunter2\n")
    cmd = [sys.executable, "-m", "tempctl", "emulate", "--port", "0", "--asic", "BM1373"]
    cmd += ["--version-label", "v2.16.0-dev", "--password-file", str(secret)]
    cmd += ["--faults", "pool_down"]
    proc = subprocess.Popen(
        cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, cwd=HERE.parent, text=True
    )
    try:
        ready, _, _ = select.select([proc.stdout], [], [], 30)
        assert ready, f"no URL within 30 s; stderr: {proc.stderr.read() if proc.poll() else ''}"
        url = proc.stdout.readline().strip()
        body = requests.get(url + "/api/system/info", timeout=TIMEOUT).json()
        assert (body["ASICModel"], body["version"], body["hashRate"]) == (
            "BM1373",
            "v2.16.0-dev",
            0,
        )
        data = json.dumps({"frequency": 400})
        assert requests.patch(url + "/api/system", data=data, timeout=TIMEOUT).status_code == 401
        r = requests.patch(url + "/api/system", data=data, timeout=TIMEOUT, headers=auth("hunter2"))
        assert r.status_code == 200
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=10) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_emulate_help_names_every_fault_knob():
    from click.testing import CliRunner

    from tempctl.cli import cli
    from tempctl.sim.emulator import FAULT_NAMES

    result = CliRunner().invoke(cli, ["emulate", "--help"], terminal_width=200)
    assert result.exit_code == 0
    text = " ".join(result.output.split())
    for name in FAULT_NAMES:
        assert name in text, name
    for flag in ("--version-label", "--password-file", "--auth-read-required", "BM1373"):
        assert flag in text
