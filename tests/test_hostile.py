"""Hostile answers (issue 13 item 2): any exception while parsing one device's answer is an
invalid reading of that device, never a crash.

Each body is served by a real loopback HTTP server (pytest-httpserver) and read with the
real Client. The contract the daemon relies on (daemon/loop.py ``_poll``): ``Client.read``
returns a Reading or raises an ``AxeOSError``; nothing else ever leaves it.
"""

from __future__ import annotations

import gzip
import json
import sqlite3

import pytest
from pytest_httpserver import HTTPServer

from tempctl.core.reading import Reading
from tempctl.device import (
    AxeOSError,
    BadResponse,
    Client,
    TooLarge,
    parse_info,
    parse_statistics,
)
from tempctl.resources import PACKAGE_DIR
from tempctl.store.eventlog import Log

INFO = "/api/system/info"
GAMMA = json.loads((PACKAGE_DIR / "data" / "bodies" / "v2.15.0_gamma-602_BM1370.json").read_text())
BIG = "9" * 400  # a 400-digit integer: float() and math.isfinite raise OverflowError on it
HUGE = "9" * 5000  # over Python's 4,300-digit limit: json.loads raises ValueError


@pytest.fixture(scope="module")
def server():
    srv = HTTPServer(host="127.0.0.1", port=0, threaded=True)
    srv.start()
    yield srv
    srv.clear()
    srv.stop()


@pytest.fixture
def httpserver(server):
    server.clear()
    yield server
    server.clear()


def poll(server: HTTPServer, payload: bytes, **headers) -> Reading:
    """What the daemon's poll gets: a Reading, or an AxeOSError turned into one."""
    server.expect_request(INFO).respond_with_data(
        payload, content_type="application/json", headers=headers
    )
    with Client(f"http://127.0.0.1:{server.port}", backoff=0, retries=0) as client:
        try:
            return client.read("hostile", 1_700_000_000_000)
        except AxeOSError as exc:
            return Reading("hostile", 1_700_000_000_000, error=f"{exc.kind}: {exc}")


def gamma_with(raw_fields: dict[str, str]) -> bytes:
    """The v2.15 Gamma body with some fields replaced by raw JSON text."""
    text = json.dumps({k: v for k, v in GAMMA.items() if k not in raw_fields})
    extra = ", ".join(f'"{k}": {v}' for k, v in raw_fields.items())
    return (text[:-1] + ", " + extra + "}").encode()


CASES = [
    # name, raw fields, what the reading must say
    ("temp 400 digits", {"temp": BIG}, "temp=<an integer too large for a double>"),
    ("temp -400 digits", {"temp": "-" + BIG}, "not a finite number"),
    ("temp 1e999", {"temp": "1e999"}, "temp=inf: not a finite number"),
    ("temp -1e999", {"temp": "-1e999"}, "not a finite number"),
    ("temp NaN literal", {"temp": "NaN"}, "temp=nan: not a finite number"),
    ("temp true", {"temp": "true"}, "temp=True: not a number"),
    ("temp nested", {"temp": "[" * 500 + "]" * 500}, "temp=<a JSON array>: not a number"),
    ("temp object", {"temp": '{"v": 60}'}, "temp=<a JSON object>: not a number"),
    ("temp2 400 digits", {"temp2": BIG}, "temp2=<an integer too large"),
    ("vrTemp 400 digits", {"vrTemp": BIG}, "vrTemp=<an integer too large"),
]


@pytest.mark.parametrize(("name", "raw", "says"), CASES, ids=[c[0] for c in CASES])
def test_hostile_temperature_is_an_invalid_reading(httpserver, name, raw, says):
    reading = poll(httpserver, gamma_with(raw))
    assert reading.error and says in reading.error
    if "temp" in raw:
        assert not reading.valid and reading.raw_temp is None
    assert len(reading.error) < 500  # a bad value is quoted short, never in full


NUMBERS = [
    # field, raw JSON, Reading attribute that must be None
    ("frequency", BIG, "frequency"),
    ("frequency", "1e999", "frequency"),
    ("frequency", "1e300", "frequency"),
    ("frequency", "-525", "frequency"),
    ("frequency", "true", "frequency"),
    ("actualFrequency", BIG, "actual_frequency"),
    ("actualFrequency", "1e999", "actual_frequency"),
    ("actualFrequency", "-6.25", "actual_frequency"),
    ("actualFrequency", '"525"', "actual_frequency"),
    ("actualFrequency", "false", "actual_frequency"),
    ("uptimeSeconds", BIG, "uptime_s"),
    ("uptimeSeconds", "1e300", "uptime_s"),
    ("uptimeSeconds", str(2**40), "uptime_s"),
    ("uptimeSeconds", "-1", "uptime_s"),
    ("uptimeSeconds", "true", "uptime_s"),
    ("coreVoltage", BIG, "core_voltage"),
    ("hashRate", "1e999", "hashrate"),
    ("fanspeed", BIG, "fan_pct"),
    ("fanrpm", "1e999", "fan_rpm"),
    ("power", "true", "power"),
    ("autofanspeed", BIG, "autofan"),
    ("expectedHashrate", BIG, "overheat"),
]


@pytest.mark.parametrize(("key", "raw", "attr"), NUMBERS)
def test_absurd_numbers_become_none_with_a_note(httpserver, key, raw, attr):
    reading = poll(httpserver, gamma_with({key: raw}))
    assert getattr(reading, attr) in (None, False)
    assert reading.valid  # the temperature itself is fine: only that field is dropped
    if key != "expectedHashrate":  # only read when the PLL sits at 50 MHz
        assert key in (reading.error or "")


def test_actual_frequency_is_parsed_when_sane(httpserver):
    # axeos-api.md §4.1: actualFrequency (v2.14+) is the live PLL value and may differ a
    # little from the setting; a float with a rounding tail is normal.
    reading = poll(httpserver, gamma_with({"actualFrequency": "518.75", "frequency": "525"}))
    assert (reading.actual_frequency, reading.frequency, reading.error) == (518.75, 525.0, None)


@pytest.mark.parametrize(
    ("name", "payload", "says"),
    [
        ("int over 4300 digits", gamma_with({"bestDiff": HUGE}), "not JSON (ValueError"),
        ("deep nesting", b'{"temp": 60, "x": ' + b"[" * 60000 + b"]" * 3000, "not JSON"),
        ("UTF-16", json.dumps(GAMMA).encode("utf-16"), "not UTF-8"),
        ("UTF-16-LE, no BOM", json.dumps({"temp": 60}).encode("utf-16-le"), "not JSON"),
        ("latin-1 bytes", b'{"temp": 60, "hostname": "caf\xe9"}', "not UTF-8"),
    ],
)
def test_undecodable_bodies_are_bad_responses(httpserver, name, payload, says):
    reading = poll(httpserver, payload)
    assert (
        not reading.valid and reading.error.startswith("bad_response: ") and says in reading.error
    )


def test_gzip_bomb_is_capped_after_decompression(httpserver):
    # 20 MB of JSON that gzips to ~20 KB: under the 64 KiB transfer cap, far over it inflated.
    inflated = b'{"temp": 60, "pad": "' + b"0" * 20_000_000 + b'"}'
    bomb = gzip.compress(inflated, compresslevel=9)
    assert len(bomb) < 64 * 1024 < len(inflated)
    httpserver.expect_request(INFO).respond_with_data(
        bomb, content_type="application/json", headers={"Content-Encoding": "gzip"}
    )
    with Client(f"http://127.0.0.1:{httpserver.port}", retries=0) as client:
        with pytest.raises(TooLarge, match="once decompressed") as info:
            client.fetch_info()
    assert isinstance(info.value, BadResponse)


def test_small_gzip_body_still_reads(httpserver):
    body = gzip.compress(json.dumps(GAMMA).encode())
    reading = poll(httpserver, body, **{"Content-Encoding": "gzip"})
    assert reading.valid and reading.temp == GAMMA["temp"]


def test_long_strings_are_cut(httpserver):
    reading = poll(httpserver, gamma_with({"version": json.dumps("v" + "x" * 50_000)}))
    assert reading.valid and len(reading.version) <= 64


def test_any_exception_while_parsing_is_an_invalid_reading(httpserver, monkeypatch):
    # Whatever the parser trips over in the future, read() hands back an invalid reading.
    import tempctl.device.client as client_module

    def broken(*_args, **_kwargs):
        raise ZeroDivisionError("a parser bug")

    monkeypatch.setattr(client_module, "parse_info", broken)
    reading = poll(httpserver, json.dumps(GAMMA).encode())
    assert not reading.valid
    assert reading.error == (
        "bad_response: cannot parse the answer (ZeroDivisionError: a parser bug)"
    )


def test_parse_info_never_raises_on_hostile_values():
    hostile = [10**400, -(10**400), float("inf"), float("nan"), True, None, "x" * 10**5, [], {}]
    hostile.append(json.loads("[" * 900 + "]" * 900))
    keys = ["temp", "temp2", "vrTemp", "frequency", "actualFrequency", "uptimeSeconds",
            "fanspeed", "fanrpm", "autofanspeed", "overheat_mode", "expectedHashrate",
            "miningPaused", "manualFanSpeed", "coreVoltage", "hashRate", "power",
            "poolConnectionInfo", "version", "ASICModel"]  # fmt: skip
    for key in keys:
        for value in hostile:
            reading = parse_info({**GAMMA, key: value}, "d", 0)
            assert isinstance(reading, Reading)


# --- statistics timestamps -------------------------------------------------------------

NOW = 1_700_000_000_000
ROW = [1061.2, 59.875, -1, 55, 1131, 18.4, 47.5, 3850]
LABELS = ["hashrate", "asicTemp", "asicTemp2", "vrTemp", "asicVoltage", "power", "fanSpeed",
          "fanRpm", "timestamp"]  # fmt: skip


@pytest.mark.parametrize(
    ("current", "stamps"),
    [
        (2**80, [2**80 - 1000, 2**80]),  # a currentTimestamp of 2**80 overflowed SQLite
        (10**400, [1000]),
        (float("inf"), [1000]),
        (5_000_000, [1e999, -5, float("nan"), 10**400]),  # absurd row stamps
        (2**62, [0, 2**62]),
        (5_000_000_000_000, [0]),  # 158 years since boot; uptimeSeconds is a u32
    ],
)
def test_absurd_statistics_timestamps_never_reach_sqlite(tmp_path, current, stamps):
    body = {
        "currentTimestamp": current,
        "labels": LABELS,
        "statistics": [ROW + [s] for s in stamps],
    }
    readings = parse_statistics(body, "gamma", NOW, None)
    log = Log(tmp_path / "log.db")
    log.start_run({}, {}, ts_ms=NOW)
    for r in readings:  # every row that survives is storable and near now
        assert abs(r.ts_ms - NOW) <= 720 * 65535 * 1000
        log.save_reading(r)
    log.close()
    assert readings == []


def test_a_sane_ring_still_backfills_next_to_an_absurd_row(tmp_path):
    body = {
        "currentTimestamp": 600_000,
        "labels": LABELS,
        "statistics": [ROW + [540_000], ROW + [10**400], ROW + ["x"], ROW + [599_000]],
    }
    readings = parse_statistics(body, "gamma", NOW, None)
    assert [r.ts_ms for r in readings] == [NOW - 60_000, NOW - 1_000]
    log = Log(tmp_path / "log.db")
    log.start_run({}, {}, ts_ms=NOW)
    for r in readings:
        log.save_reading(r)
    log.close()
    with sqlite3.connect(tmp_path / "log.db") as conn:
        assert conn.execute("SELECT count(*) FROM readings WHERE backfilled = 1").fetchone() == (2,)


def test_statistics_over_http_with_a_huge_clock(httpserver):
    stats = {"currentTimestamp": 2**80, "labels": LABELS, "statistics": [ROW + [2**80]]}
    httpserver.expect_request("/api/system/statistics").respond_with_json(stats)
    with Client(f"http://127.0.0.1:{httpserver.port}", retries=0) as client:
        body = client.fetch_statistics()
    assert body is not None and parse_statistics(body, "gamma", NOW, None) == []


# --- the real daemon ---------------------------------------------------------------------


@pytest.mark.slow
def test_a_hostile_device_never_stops_the_daemon_nor_the_others(tmp_path):
    """`tempctl run` with two devices: one sends hostile numbers, one runs hot. The daemon
    keeps running, logs the hostile one's polls as invalid, and still throttles the other."""
    import procs

    hostile_bodies = [
        gamma_with({"temp": BIG}),  # OverflowError in math.isfinite before the fix
        gamma_with({"bestDiff": HUGE}),  # ValueError in json.loads before the fix
        gamma_with({"uptimeSeconds": BIG, "frequency": BIG}),
    ]
    with procs.fake_device() as bad, procs.fake_device() as hot:
        bad.info_raw = hostile_bodies[0]
        hot.info["temp"] = 68.0  # above TEMP_THRESHOLD (63), below CRITICAL (70)
        db = tmp_path / "tempctl.db"
        d = procs.start_daemon([bad.address, hot.address], db, tmp_path, law="levels")
        v = procs.LogView(db)
        try:
            for i, raw in enumerate(hostile_bodies):
                bad.info_raw = raw
                seen = v.count("readings", "device = ?", bad.address)
                procs.wait_for(
                    lambda n=seen: v.count("readings", "device = ?", bad.address) >= n + 3,
                    30,
                    f"polls of hostile body {i} logged",
                    d,
                )
            procs.wait_for(
                lambda: v.count("commands", "device = ?", hot.address) >= 1,
                30,
                "the hot device throttled",
                d,
            )
            procs.assert_clean_exit(d)
        finally:
            d.stop()
    bad_rows = v.readings("device = ?", bad.address)
    assert bad_rows and all(r["error"] for r in bad_rows)  # each says what was wrong
    assert any("too large" in r["error"] for r in bad_rows)
    assert any("not JSON (ValueError" in r["error"] for r in bad_rows)
    assert v.count("commands", "device = ?", bad.address) == 0, [
        (c["kind"], c["frequency"], c["reason"]) for c in v.commands()
    ]
    assert v.count("transitions", "device = ?", hot.address) >= 1
