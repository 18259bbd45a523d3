"""The emulator over real loopback HTTP, checked against the firmware's own OpenAPI spec.

Every answer is validated with openapi-core against tests/data/esp-miner-openapi.yaml, a
verbatim copy of ESP-Miner's main/http_server/openapi.yaml at v2.15.0. That file is known to
be wrong or incomplete in places (axeos-api.md §4.4), and it describes v2.15 only. The
deviations tolerated below, and nothing else:

* ``stratumTLS`` / ``fallbackStratumTLS``: typed boolean, the firmware sends a number (§4.4).
* ``stratumExtranonceSubscribe`` / ``stratumDecodeCoinbase`` (+ ``fallback`` twins): boolean in
  the spec, 0/1 numbers before v2.15 (§4.1 "bool in v2.15, 0/1 numbers before").
* ``bestDiff`` / ``bestSessionDiff``: numbers in the spec, strings up to v2.10 (§4.1).
* ``required`` lists the v2.15 key set: an older generation may lack a key, but only one its
  reference example body (tempctl/data/bodies) lacks too.
* PATCH 200: the spec promises JSON (UpdateSettingsResponse); the firmware sends an empty
  text/html body (§3, §5.2), so openapi-core reports MissingData.
* POST restart before v2.13 answers text/html or text/plain; the spec lists only JSON (§6).
* Unknown routes: the spec documents no 404 (or 302) anywhere, so nothing can match (§2).

Time comes from a FakeClock; ``emu.sync()`` applies a clock move at once (no sleeping).
"""

from __future__ import annotations

import json
import os
import select
import signal
import subprocess
import sys
from contextlib import contextmanager
from pathlib import Path

import pytest
import requests
from openapi_core import OpenAPI
from openapi_core.contrib.requests import RequestsOpenAPIRequest, RequestsOpenAPIResponse
from openapi_core.validation.response.exceptions import InvalidData, MissingData

from tempctl.core.clock import FakeClock
from tempctl.sim.emulator import FAULT_NAMES, Emulator, parse_faults
from tempctl.sim.firmware import BODIES_DIR, TEMPLATES

HERE = Path(__file__).parent
API = OpenAPI.from_file_path(str(HERE / "data" / "esp-miner-openapi.yaml"))
TOLERATED_TYPES = {
    "stratumTLS",
    "fallbackStratumTLS",
    "stratumExtranonceSubscribe",
    "fallbackStratumExtranonceSubscribe",
    "stratumDecodeCoinbase",
    "fallbackStratumDecodeCoinbase",
    "bestDiff",
    "bestSessionDiff",
}
PROFILES = {  # version -> (asic, reference body)
    "v2.1.10": ("BM1366", TEMPLATES[0][1]),
    "v2.4.5": ("BM1368", TEMPLATES[1][1]),
    "v2.10.1": ("BM1370", TEMPLATES[2][1]),
    "v2.13.2": ("hex", TEMPLATES[3][1]),
    "v2.15.0": ("BM1370", TEMPLATES[4][1]),
}
TIMEOUT = 5


@contextmanager
def emulator(version="v2.15.0", asic=None, **kw):
    clock = FakeClock()
    kw.setdefault("restart_downtime_s", 5.0)
    kw.setdefault("boot_s", 3.0)
    asic = asic or PROFILES.get(version, ("BM1370",))[0]
    with Emulator("constant", firmware=version, asic=asic, clock=clock.monotonic, **kw) as emu:
        emu.fake_clock = clock
        yield emu


def advance(emu, seconds):
    emu.fake_clock.advance(seconds)
    emu.sync()


def spec_errors(resp):
    """Schema errors openapi-core finds in a response; other failures raise."""
    try:
        API.validate_response(RequestsOpenAPIRequest(resp.request), RequestsOpenAPIResponse(resp))
    except InvalidData as exc:
        return [
            (".".join(map(str, e.path)), e.validator, e.message)
            for e in exc.__cause__.schema_errors
        ]
    return []


def assert_info_valid(resp, version):
    ref = json.loads((BODIES_DIR / PROFILES[version][1]).read_text())
    for path, validator, message in spec_errors(resp):
        if validator == "required":
            key = message.split("'")[1]
            assert key not in ref, f"{version}: emulator drops {key!r}, which the example has"
        else:
            assert validator == "type" and path in TOLERATED_TYPES, (version, path, message)


def get(emu, path, i=0, **kw):
    return requests.get(emu.urls[i] + path, timeout=TIMEOUT, allow_redirects=False, **kw)


def patch(emu, data, i=0):
    body = data if isinstance(data, bytes) else json.dumps(data).encode()
    return requests.patch(emu.urls[i] + "/api/system", data=body, timeout=TIMEOUT)


def state(emu, i=0):
    return get(emu, "/_emulator/state", i).json()


# --- every response against the spec --------------------------------------------------------------


@pytest.mark.parametrize("version", list(PROFILES))
def test_info_of_each_firmware_profile_validates(version):
    with emulator(version) as emu:
        r = get(emu, "/api/system/info")
        assert r.status_code == 200 and r.headers["Content-Type"] == "application/json"
        assert_info_valid(r, version)
        assert r.json()["version"] == version
        # the layout of the generation: TAB pretty-print <= v2.13, compact after (§2)
        compact = version == "v2.15.0"
        assert r.text.startswith('{"power":' if compact else '{\n\t"power":\t')
        # and while booting after a restart (temp -1, hashrateMonitor omitted on v2.14+)
        requests.post(emu.urls[0] + "/api/system/restart", timeout=TIMEOUT)
        advance(emu, 1 + 5 + 0.5)
        booting = get(emu, "/api/system/info")
        assert booting.json()["temp"] == -1
        assert_info_valid(booting, version)


def test_asic_statistics_restart_and_404_validate_on_v215():
    with emulator("v2.15.0") as emu:
        assert spec_errors(get(emu, "/api/system/asic")) == []
        assert patch(emu, {"statsFrequency": 2}).status_code == 200
        advance(emu, 30)
        stats = get(emu, "/api/system/statistics", params={"columns": "asicTemp,vrTemp"})
        assert spec_errors(stats) == [] and len(stats.json()["statistics"]) >= 10
        assert stats.json()["labels"] == ["asicTemp", "vrTemp", "timestamp"]
        r = requests.post(emu.urls[0] + "/api/system/restart", timeout=TIMEOUT)
        assert spec_errors(r) == [] and r.json() == {"message": "System will restart shortly."}
        advance(emu, 10)
        missing = get(emu, "/api/system/nope")  # not in the spec (no 404 documented)
        assert missing.status_code == 404
        assert missing.json() == {"error": "unknown route"}
        assert get(emu, "/api/system").status_code == 404  # GET on a PATCH-only route (§2)


def test_asic_and_statistics_validate_on_v210():
    with emulator("v2.10.1") as emu:
        asic = get(emu, "/api/system/asic")
        assert spec_errors(asic) == [] and "hashDomains" not in asic.json()
        stats = get(emu, "/api/system/statistics")
        assert spec_errors(stats) == [] and len(stats.json()["labels"]) == 12


def test_unknown_routes_before_v29_redirect_to_the_captive_portal():
    with emulator("v2.4.5") as emu:
        for path in ("/api/system/asic", "/api/system/statistics", "/api/nope"):
            r = get(emu, path)
            assert (r.status_code, r.headers["Location"]) == (302, "/")
            assert r.text == "Redirect to the captive portal"
        followed = requests.get(emu.urls[0] + "/api/system/asic", timeout=TIMEOUT)
        assert followed.status_code == 200 and "text/html" in followed.headers["Content-Type"]


def test_headers_like_the_esp_server():
    with emulator("v2.15.0") as emu:
        r = get(emu, "/api/system/info")
        assert r.headers["Access-Control-Allow-Origin"] == "*"
        assert "PATCH" in r.headers["Access-Control-Allow-Methods"]
        assert "Server" not in r.headers and "Date" not in r.headers  # §2
        options = requests.options(emu.urls[0] + "/api/system/info", timeout=TIMEOUT)
        assert (options.status_code, options.content) == (200, b"")  # v2.13+


# --- PATCH /api/system ---------------------------------------------------------------------------

V211_TABLE = [  # (body, status, reply, expected frequency / field after, note)
    ({"frequency": 500}, 200, b"", ("frequency", 500)),
    ({"frequency": 512.5}, 200, b"", ("frequency", 512.5)),
    ({"frequency": 0}, 400, b"Wrong API input", ("frequency", 575)),
    ({"frequency": -5}, 400, b"Wrong API input", ("frequency", 575)),
    ({"frequency": 70000}, 400, b"Wrong API input", ("frequency", 575)),
    ({"frequency": "500"}, 400, b"Wrong API input", ("frequency", 575)),
    ({"frequency": True}, 400, b"Wrong API input", ("frequency", 575)),
    ({"frequency": 500, "temptarget": 99}, 400, b"Wrong API input", ("frequency", 575)),
    ({"temptarget": 66}, 200, b"", ("temptarget", 66)),
    ({"temptarget": 34}, 400, b"Wrong API input", ("temptarget", 60)),
    ({"overheat_mode": 1}, 400, b"Wrong API input", ("overheat_mode", 0)),
    ({"overheat_mode": 0}, 200, b"", ("overheat_mode", 0)),
    ({"autofanspeed": True}, 200, b"", ("autofanspeed", 1)),
    ({"autofanspeed": 2}, 400, b"Wrong API input", ("autofanspeed", 0)),
    ({"manualFanSpeed": 101}, 400, b"Wrong API input", ("manualFanSpeed", 100)),
    ({"manualFanSpeed": 80}, 200, b"", ("manualFanSpeed", 80)),
    ({"fanspeed": 50}, 200, b"", ("manualFanSpeed", 100)),  # old key: unknown, ignored
    ({"bogus": 1, "frequency": 490}, 200, b"", ("frequency", 490)),  # unknown keys ignored
    ({"rotation": 45}, 400, b"Wrong API input", ("rotation", 0)),
    ({"hostname": ""}, 400, b"Wrong API input", ("hostname", "bitaxe")),
    (b"", 400, b"Invalid JSON", ("frequency", 575)),
    (b"{not json", 400, b"Invalid JSON", ("frequency", 575)),
    (b"[]", 200, b"", ("frequency", 575)),  # a non-object is a no-op
    (b'{"frequency": NaN}', 400, b"Invalid JSON", ("frequency", 575)),
    (b"{" + b" " * 10240 + b"}", 500, b"content too long", ("frequency", 575)),
]


@pytest.mark.parametrize(("body", "status", "reply", "after"), V211_TABLE)
def test_patch_validation_v211_plus(body, status, reply, after):
    with emulator("v2.13.2", asic="BM1370") as emu:
        r = patch(emu, body)
        assert (r.status_code, r.content) == (status, reply)
        assert r.headers["Content-Type"] == "text/html"
        if status == 200:
            with pytest.raises(MissingData):  # spec says JSON; the firmware sends nothing
                spec_errors(r)
        elif status == 400:
            assert spec_errors(r) == []
        key, value = after
        assert get(emu, "/api/system/info").json()[key] == value


def test_patch_hostname_on_v215_answers_json():
    with emulator("v2.15.0") as emu:
        r = patch(emu, {"hostname": "miner7"})
        assert r.status_code == 200 and spec_errors(r) == []
        assert r.json()["redirect"]["url"] == "http://miner7.local"
        assert patch(emu, {"stratumURL": 5}).status_code == 200  # legacy keys ignored in v2.15
        assert patch(emu, {"stratumURL": 5}).status_code == 200


OLD_TABLE = [  # v2.10.1: no type or range checks (§5.2)
    ({"frequency": "500"}, 200, ("frequency", 575)),  # a string reads as 0, and <= 0 is ignored
    ({"frequency": 0}, 200, ("frequency", 575)),
    ({"frequency": 512.5}, 200, ("frequency", 512.5)),  # float since v2.10
    ({"temptarget": 99}, 200, ("temptarget", 99)),  # no range check
    ({"fanspeed": "abc"}, 200, ("fanspeed", 0)),  # wrong type stored as 0: fan stops!
    ({"overheat_mode": 1}, 200, ("overheat_mode", 0)),  # any value clears the flag
    ({"manualFanSpeed": 50}, 200, ("fanspeed", 100)),  # the v2.11 key does not exist yet
    (b"{bad", 400, ("frequency", 575)),  # Invalid JSON from v2.4.0
]


@pytest.mark.parametrize(("body", "status", "after"), OLD_TABLE)
def test_patch_without_validation_v210(body, status, after):
    with emulator("v2.10.1") as emu:
        r = patch(emu, body)
        assert r.status_code == status
        advance(emu, 0.5)  # (a fan at 0 % trips within seconds: do not wait long)
        key, value = after
        assert get(emu, "/api/system/info").json()[key] == value


@pytest.mark.parametrize(
    ("version", "body", "status", "frequency"),
    [
        ("v2.4.5", {"frequency": 70000}, 200, 4464),  # <= v2.9: u16, wraps at 65536
        ("v2.4.5", {"frequency": 512.7}, 200, 512),  # <= v2.9: truncated to an integer
        ("v2.1.10", b"{bad", 200, 575),  # before v2.4.0 bad JSON is a silent 200
    ],
)
def test_patch_older_generations(version, body, status, frequency):
    with emulator(version) as emu:
        assert patch(emu, body).status_code == status
        assert get(emu, "/api/system/info").json()["frequency"] == frequency


# --- restart ---------------------------------------------------------------------------------


def test_restart_refuses_connections_then_boots():
    with emulator("v2.15.0") as emu:
        before = get(emu, "/api/system/info").json()["uptimeSeconds"]
        assert requests.post(emu.urls[0] + "/api/system/restart", timeout=TIMEOUT).ok
        advance(emu, 0.5)
        assert get(emu, "/api/system/info").ok  # the handler waits 1 s before esp_restart
        advance(emu, 1.0)
        with pytest.raises(requests.ConnectionError, match="(?i)refused"):
            get(emu, "/api/system/info")
        advance(emu, 5.0)  # down from 1 s to 6 s after the request
        info = get(emu, "/api/system/info").json()
        assert info["uptimeSeconds"] <= 6 < before
        assert (info["temp"], info["hashRate"], info["actualFrequency"]) == (-1, 0, 50)
        assert info["resetReason"] == "Software reset via esp_restart"
        advance(emu, 3 + 9)  # boot phase, then the ramp from 50 MHz
        info = get(emu, "/api/system/info").json()
        assert info["temp"] > 0 and info["hashRate"] > 0 and info["actualFrequency"] == 575
        assert state(emu)["restarts"] == 1


def test_a_reboot_resets_keep_alive_connections():
    with emulator("v2.15.0") as emu, requests.Session() as session:
        url = emu.urls[0] + "/api/system/info"
        assert session.get(url, timeout=TIMEOUT).ok  # the session keeps this connection open
        emu.firmware().crash()
        emu.sync()
        with pytest.raises(requests.ConnectionError):
            session.get(url, timeout=TIMEOUT)
        advance(emu, 5.5)
        assert session.get(url, timeout=TIMEOUT).json()["uptimeSeconds"] <= 6


def test_restart_on_old_firmware_answers_text():
    with emulator("v2.10.1") as emu:
        r = requests.post(emu.urls[0] + "/api/system/restart", timeout=TIMEOUT)
        assert (r.status_code, r.text) == (200, "System will restart shortly.")
        assert "text/html" in r.headers["Content-Type"]


# --- faults ----------------------------------------------------------------------------------


def _number(x):
    return isinstance(x, (int, float)) and not isinstance(x, bool)


def check_info_fault(emu, fault):
    url = emu.urls[0] + "/api/system/info"
    if fault == "timeout":
        with pytest.raises(requests.ReadTimeout):
            requests.get(url, timeout=(1, 0.2))
        return
    if fault == "reboot":
        with pytest.raises(requests.ConnectionError):
            requests.get(url, timeout=TIMEOUT)
        emu.set_faults(None)
        emu.sync()
        with pytest.raises(requests.ConnectionError, match="(?i)refused"):
            requests.get(url, timeout=TIMEOUT)
        assert emu.firmware().restarts == 1
        return
    r = requests.get(url, timeout=TIMEOUT)
    if fault == "5xx":
        assert r.status_code >= 500
        return
    assert r.status_code == 200
    if fault in ("malformed", "truncated"):
        with pytest.raises(ValueError):
            r.json()
        if fault == "truncated":
            assert r.text.startswith("{") and len(r.content) < 4000
        return
    body = r.json()
    if fault == "huge":
        assert len(r.content) > 65536 and _number(body["temp"])
    elif fault == "wrong_types":
        assert not _number(body["temp"])
    elif fault == "missing":
        assert "temp" not in body
    elif fault == "sensor_m1":
        assert body["temp"] == -1
    elif fault == "sensor_0":
        assert body["temp"] == 0
    elif fault == "sensor_127":
        assert body["temp"] == 127
        assert emu.firmware().overheat_trips == 1  # the firmware believed it (§10)
    elif fault == "mac_change":
        assert body["macAddr"] != emu.firmware().template["macAddr"]
        assert body["hostname"] != "bitaxe"
    elif fault == "overheat":
        assert state(emu)["overheat_trips"] == 1 and state(emu)["phase"] == "cooldown"
        assert body["autofanspeed"] == 0 and body["manualFanSpeed"] == 100
    else:
        raise AssertionError(fault)


@pytest.mark.parametrize(
    "fault",
    [
        "timeout",
        "5xx",
        "malformed",
        "truncated",
        "huge",
        "wrong_types",
        "missing",
        "sensor_m1",
        "sensor_0",
        "sensor_127",
        "reboot",
        "mac_change",
        "overheat",
    ],
)
def test_info_faults_seen_by_a_raw_client(fault):
    with emulator("v2.15.0", faults=fault, hang_s=0.6) as emu:
        check_info_fault(emu, fault)


def test_patch_and_restart_faults():
    with emulator("v2.15.0", faults="patch_ignored", hang_s=0.3) as emu:
        r = patch(emu, {"frequency": 500})
        assert (r.status_code, r.content) == (200, b"")
        assert get(emu, "/api/system/info").json()["frequency"] == 575  # not applied
        assert state(emu)["patches"] == 1
        emu.set_faults("patch_400")
        r = patch(emu, {"frequency": 500})
        assert (r.status_code, r.text) == (400, "Wrong API input")
        emu.set_faults("restart_fail")
        outcomes = set()
        for _ in range(6):
            try:
                r = requests.post(emu.urls[0] + "/api/system/restart", timeout=(1, 0.2))
                outcomes.add(r.status_code)
            except requests.ReadTimeout:
                outcomes.add("hang")
        assert outcomes <= {500, "hang"} and outcomes
        advance(emu, 30)
        assert state(emu)["restarts"] == 0


def _signature(emu, n):
    out = []
    for _ in range(n):
        r = get(emu, "/api/system/info")
        try:
            r.json()
            kind = "json"
        except ValueError:
            kind = "bad"
        out.append((r.status_code, kind, len(r.content)))
    return out


def test_faults_reproduce_with_the_seed():
    spec = "5xx=0.3,malformed=0.3,truncated=0.2"
    with (
        emulator("v2.15.0", faults=spec, seed=7) as a,
        emulator("v2.15.0", faults=spec, seed=7) as b,
    ):
        first, second = _signature(a, 30), _signature(b, 30)
    assert first == second
    assert {s for s, _, _ in first} == {200, 500}
    with emulator("v2.15.0", faults=spec, seed=8) as c:
        assert _signature(c, 30) != first


def test_parse_faults():
    spec = parse_faults(" timeout=0.1, 5xx ,malformed=0.5")
    assert (spec.p("timeout"), spec.p("5xx"), spec.p("malformed"), spec.p("huge")) == (
        0.1,
        1.0,
        0.5,
        0.0,
    )
    assert str(spec) == "timeout=0.1,5xx,malformed=0.5"
    assert not parse_faults("") and not parse_faults(None)
    assert set(FAULT_NAMES) >= {"timeout", "restart_fail", "mac_change", "overheat"}
    with pytest.raises(ValueError, match="unknown fault 'slow'"):
        parse_faults("5xx,slow=0.1")
    with pytest.raises(ValueError, match="'5xx=lots'.*not a number"):
        parse_faults("5xx=lots")
    with pytest.raises(ValueError, match="'timeout=1.5'.*within 0..1"):
        parse_faults("timeout=1.5")


# --- control API, access check, many devices, scale ------------------------------------------


def test_control_api():
    with emulator("v2.15.0") as emu:
        url = emu.urls[0]
        s = state(emu)
        assert {
            "die_c",
            "vr_c",
            "ambient_c",
            "plant_time_s",
            "frequency_mhz",
            "actual_mhz",
            "fan_pct",
            "running",
            "restarts",
            "patches",
            "overheat_trips",
        } <= set(s)
        r = requests.post(url + "/_emulator/faults", json={"faults": "5xx"}, timeout=TIMEOUT)
        assert r.json() == {"faults": "5xx"}
        assert get(emu, "/api/system/info").status_code == 500
        bad = requests.post(url + "/_emulator/faults", data=b"nonsense=2", timeout=TIMEOUT)
        assert bad.status_code == 400 and "nonsense" in bad.json()["error"]
        requests.post(url + "/_emulator/faults", data=b"", timeout=TIMEOUT)  # clears
        assert get(emu, "/api/system/info").ok
        r = requests.post(url + "/_emulator/ambient", json={"offset_c": 10}, timeout=TIMEOUT)
        assert r.json()["ambient_c"] == pytest.approx(s["ambient_c"] + 10)
        advance(emu, 600)
        assert state(emu)["die_c"] > s["die_c"] + 5


def test_private_ip_check_rejects_loopback_like_the_firmware():
    with emulator("v2.15.0", private_ip_check=True) as emu:
        r = get(emu, "/api/system/info")
        assert (r.status_code, r.text, r.headers["Content-Type"]) == (
            401,
            "Unauthorized",
            "text/html",
        )
        assert "Access-Control-Allow-Origin" not in r.headers
        assert spec_errors(r) == []
        assert state(emu)["reachable"]  # the control API is never checked


def test_many_devices_and_scale():
    with emulator("v2.15.0", devices=3, scale=60.0, seed=10) as emu:
        assert len(set(emu.urls)) == 3
        infos = [get(emu, "/api/system/info", i).json() for i in range(3)]
        assert len({i["macAddr"] for i in infos}) == 3
        assert [i["hostname"] for i in infos] == ["bitaxe-1", "bitaxe-2", "bitaxe-3"]
        ambients = [state(emu, i)["ambient_c"] for i in range(3)]
        assert ambients == pytest.approx([27.0, 28.0, 29.0])  # spread 2 °C
        advance(emu, 2.0)
        assert emu.device_time() == pytest.approx(120.0)
        assert state(emu, 2)["plant_time_s"] == pytest.approx(120.0)


# --- the CLI as a real process ----------------------------------------------------------------


@pytest.mark.slow
def test_emulate_command_serves_until_sigterm():
    env = dict(os.environ, PYTHONPATH=str(HERE.parent))
    proc = subprocess.Popen(
        [sys.executable, "-m", "tempctl", "emulate", "--port", "0", "--seed", "3"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=env,
        cwd=HERE.parent,
        text=True,
    )
    try:
        ready, _, _ = select.select([proc.stdout], [], [], 15)
        assert ready, f"no URL within 15 s; stderr: {proc.stderr.read() if proc.poll() else ''}"
        url = proc.stdout.readline().strip()
        assert url.startswith("http://127.0.0.1:")
        info = requests.get(url + "/api/system/info", timeout=TIMEOUT).json()
        assert info["version"] == "v2.15.0" and info["ASICModel"] == "BM1370"
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=10) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_emulate_refuses_non_loopback_and_bad_faults():
    from click.testing import CliRunner

    from tempctl.cli import cli

    r = CliRunner().invoke(cli, ["emulate", "--host", "0.0.0.0"])
    assert r.exit_code == 2 and "not a loopback address; add --allow-remote" in r.output
    r = CliRunner().invoke(cli, ["emulate", "--faults", "5xx=2"])
    assert r.exit_code == 2 and "'5xx=2'" in r.output


def test_pace_holds_plant_time_within_reach_of_the_latest_poll():
    """--pace: a late poll (a busy machine) stalls the plant instead of leaving it unwatched."""
    with emulator(scale=120.0, pace_s=45.0) as emu:
        url = emu.urls[0]
        start = emu.device_time()
        advance(emu, 0.25)  # on time: 30 s of plant time
        assert emu.device_time() == pytest.approx(start + 30.0)
        requests.get(url + "/api/system/info", timeout=TIMEOUT).raise_for_status()
        polled = emu.device_time()
        advance(emu, 2.0)  # 240 s of wall-scaled time without a poll: the plant runs 45 s
        assert emu.device_time() == pytest.approx(polled + 45.0)
        state = requests.get(url + "/_emulator/state", timeout=TIMEOUT).json()
        assert state["plant_time_s"] == pytest.approx(polled + 45.0, abs=0.01)
        requests.get(url + "/api/system/info", timeout=TIMEOUT).raise_for_status()
        assert emu.held_s == pytest.approx(240.0 - 45.0)
        advance(emu, 0.25)  # polls on time again: plant time runs at the scale
        assert emu.device_time() == pytest.approx(polled + 45.0 + 30.0)
        # writes and the state endpoint do not feed the pace; only a poll does
        requests.get(url + "/_emulator/state", timeout=TIMEOUT)
        advance(emu, 1.0)
        assert emu.device_time() == pytest.approx(polled + 45.0 + 45.0)


def test_without_pace_plant_time_follows_the_clock():
    with emulator(scale=120.0) as emu:
        start = emu.device_time()
        requests.get(emu.urls[0] + "/api/system/info", timeout=TIMEOUT).raise_for_status()
        advance(emu, 2.0)
        assert emu.device_time() == pytest.approx(start + 240.0)
