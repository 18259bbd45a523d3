"""Fault injection: the real daemon (`tempctl run` subprocess) against a misbehaving device.

Each test states its expected outcome in its ``fault(...)`` row and asserts it from the
SQLite log and the process' exit status. Every run also passes ``check_log``: ids without
holes, transitions chained, no unsafe frequency, no law step on an invalid reading, one
outcome per command. The rows feed the published table (tests/fault_report.py ->
docs/faults.md).

Devices: the emulator (`tempctl emulate` subprocess with its fault knobs, or in-process
where a one-shot event is needed: a reboot, an overheat trip) and, for what the emulator
never sends (NaN, 1e308, 404, a blocking handler), ``procs.FakeAxeOS`` on pytest-httpserver.
Time is compressed (procs.FAST: 0.25 s polls, 2 s settle, 7.2 s stable window).

Scenario for the transport faults: heatwave at hour 5 (ambient ~35 °C, die ~68.6 °C at
575 MHz), so the daemon throttles at once and would step again after settling: a fault
window with no transition proves that invalid readings never move the law.
"""

from __future__ import annotations

import json
import re
import socket
import threading
import time
from collections import Counter
from contextlib import contextmanager
from dataclasses import dataclass

import procs
import pytest
from procs import (
    LogView,
    assert_clean_exit,
    check_log,
    fake_device,
    free_port,
    limits_for,
    start_daemon,
    start_emulator,
    wait_for,
)
from werkzeug import Response

from tempctl.core.controller import Controller, Limits
from tempctl.core.observe import VERIFY_RETRIES
from tempctl.core.reading import Reading
from tempctl.device import parse_info
from tempctl.sim.emulator import Emulator

fault = procs.fault_recorder()
slow = pytest.mark.slow  # every test that starts the daemon

HOT_HOURS = 5.0  # heatwave: ~35.5 °C ambient, die ~68.6 °C at 575 MHz (hot, not critical)
CRITICAL_HOURS = 8.0  # heatwave: 38 °C ambient, die ~71.5 °C at 575 MHz (>= 70: critical)


def now_ms() -> int:
    return int(time.time() * 1000)


def short(error: str | None) -> str:
    """An error without the URL, cut to a table-friendly length."""
    text = re.sub(r"(GET|PATCH|POST) http://[^ ]+: ", "", error or "")
    text = re.sub(r": '.*", "", text)  # drop the body snippet
    return text if len(text) <= 70 else text[:67] + "…"


@dataclass
class Window:
    """What the daemon logged while a fault was on, and how it came back."""

    db: object
    first: int  # reading ids (first, last] were polled under the fault
    last: int
    recovered_s: float | None = None
    stop_s: float | None = None

    @property
    def view(self) -> LogView:
        return LogView(self.db)

    @property
    def readings(self) -> list[dict]:
        return self.view.readings("id > ? AND id <= ?", self.first, self.last)

    @property
    def invalid(self) -> list[dict]:
        return [r for r in self.readings if not r["valid"]]

    def errors(self) -> Counter:
        return Counter(short(r["error"]) for r in self.invalid)

    def ts_range(self) -> tuple[int, int]:
        rows = self.readings
        return rows[0]["ts_ms"], rows[-1]["ts_ms"]

    def transitions(self) -> list[dict]:
        lo, hi = self.ts_range()
        return [t for t in self.view.transitions() if lo <= t["ts_ms"] <= hi]

    def commands(self) -> list[dict]:
        lo, hi = self.ts_range()
        return [c for c in self.view.commands() if lo <= c["ts_ms"] <= hi]

    def describe(self) -> str:
        rs, bad = self.readings, self.invalid
        top = "; ".join(f"'{e}' ×{n}" for e, n in self.errors().most_common(2))
        text = (
            f"{len(bad)}/{len(rs)} polls invalid ({top}); {len(self.transitions())} "
            f"transitions, {len(self.commands())} commands meanwhile"
        )
        if self.recovered_s is not None:
            text += f"; valid again {self.recovered_s:.1f} s after the fault cleared"
        if self.stop_s is not None:
            text += f"; SIGTERM: exit 0 in {self.stop_s:.1f} s"
        return text


def max_reading_id(db) -> int:
    return LogView(db).value("SELECT coalesce(max(id), 0) FROM readings") or 0


def run_window(
    tmp_path,
    address: str,
    *,
    inject,
    clear,
    polls: int = 8,
    warmup_valid: int = 4,
    settings: dict | None = None,
    invalid_expected: bool = True,
) -> Window:
    """Start the daemon, let it poll a healthy device, inject, wait ``polls`` (invalid) polls,
    clear, wait for a valid reading, stop it with SIGTERM and check the log."""
    db = tmp_path / "tempctl.db"
    d = start_daemon(address, db, tmp_path, **(settings or {}))
    v = LogView(db)
    try:
        wait_for(
            lambda: v.count("readings", "valid = 1") >= warmup_valid,
            20,
            f"{warmup_valid} valid readings",
            d,
        )
        inject()
        first = max_reading_id(db)
        cond = "valid = 0 AND id > ?" if invalid_expected else "id > ?"
        wait_for(
            lambda: v.count("readings", cond, first) >= polls,
            40,
            f"{polls} polls under the fault",
            d,
        )
        clear()
        cleared = now_ms()
        last = max_reading_id(db)
        ts = wait_for(
            lambda: v.value("SELECT min(ts_ms) FROM readings WHERE id > ? AND valid = 1", last),
            30,
            "a valid reading after the fault",
            d,
        )
        w = Window(db, first, last, recovered_s=max(0.0, (ts - cleared) / 1000))
        w.stop_s = assert_clean_exit(d)
    finally:
        d.stop()
    problems = check_log(db, limits_for(**(settings or {})))
    assert problems == [], problems
    return w


# --- transport and body faults from the emulator -------------------------------------------------

EMULATOR_FAULTS = [
    # (emulator fault, table name, what the daemon must log for each poll)
    ("5xx", "5xx", r"bad_response: HTTP 500 .*after retries"),
    ("truncated", "truncated JSON", r"bad_response: (truncated JSON|not JSON)"),
    ("malformed", "non-JSON", r"bad_response: not JSON"),
    ("huge", "body over 64 KiB", r"too_large: body of \d+ bytes is over the 65536-byte cap"),
    ("missing", "missing fields", r"temp missing"),
    (
        "wrong_types",
        "wrong types (emulator: strings, null, false, objects)",
        r"temp(=.*: not a number| missing)",
    ),
    ("sensor_m1", "sensor -1", r"temp=-1: sensor not ready"),
    ("sensor_0", "sensor 0", r"temp=0: no reading"),
]


@slow
@pytest.mark.parametrize("spec,name,pattern", EMULATOR_FAULTS, ids=[f[0] for f in EMULATOR_FAULTS])
def test_emulator_fault_invalidates_polls_and_never_moves_the_law(
    tmp_path, fault, spec, name, pattern
):
    row = fault(
        name,
        "no crash; every poll logged invalid with the reason; no transition or "
        "command on an invalid reading; valid again once the fault clears; "
        "SIGTERM exits 0",
    )
    emu = start_emulator(tmp_path, start_hours=HOT_HOURS, seed=11)
    try:
        w = run_window(
            tmp_path,
            emu.address,
            inject=lambda: emu.set_faults(spec),
            clear=lambda: emu.set_faults(""),
        )
    finally:
        emu.stop()
    row.observed = w.describe()
    assert len(w.invalid) >= 8
    for r in w.invalid:
        assert re.search(pattern, short(r["error"]) + " " + (r["error"] or "")), r["error"]
    # The first poll may have been in flight when the fault was switched on.
    assert all(not r["valid"] for r in w.readings[1:]), "a faulted poll was taken as valid"
    assert w.transitions() == [] and w.commands() == []


# --- connection-level faults -------------------------------------------------------------------


@slow
def test_connection_refused_then_device_appears(tmp_path, fault):
    row = fault(
        "connection refused",
        "no crash; each poll logged 'unreachable: connection "
        "refused'; no transition or command; control starts once the device listens",
    )
    port = free_port()
    db = tmp_path / "tempctl.db"
    v = LogView(db)
    d = start_daemon(f"127.0.0.1:{port}", db, tmp_path)
    emu = None
    try:
        wait_for(lambda: v.count("readings", "valid = 0") >= 8, 20, "8 refused polls", d)
        emu = start_emulator(tmp_path, port=port, start_hours=HOT_HOURS)
        appeared = now_ms()
        ts = wait_for(
            lambda: v.value("SELECT min(ts_ms) FROM readings WHERE valid = 1"),
            20,
            "a valid reading",
            d,
        )
        wait_for(lambda: v.count("transitions") >= 1, 20, "the first transition", d)
        stop_s = assert_clean_exit(d)
    finally:
        d.stop()
        if emu:
            emu.stop()
    bad = v.readings("valid = 0")
    w = Window(db, 0, bad[-1]["id"], recovered_s=(ts - appeared) / 1000, stop_s=stop_s)
    row.observed = w.describe() + "; then throttled the hot device"
    assert all(short(r["error"]) == "unreachable: connection refused" for r in bad), {
        r["error"] for r in bad
    }
    first_valid = v.value("SELECT min(ts_ms) FROM readings WHERE valid = 1")
    assert all(t["ts_ms"] >= first_valid for t in v.transitions())
    assert check_log(db, limits_for()) == []


@contextmanager
def blackhole() -> socket.socket:
    """A listening socket whose accept queue is full: SYNs are dropped -> connect timeout."""
    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen(0)
    port = srv.getsockname()[1]
    fillers = []
    for _ in range(3):
        c = socket.socket()
        c.setblocking(False)
        try:
            c.connect(("127.0.0.1", port))
        except BlockingIOError:
            pass
        fillers.append(c)
    try:
        yield srv
    finally:
        for c in fillers:
            c.close()
        srv.close()


@slow
def test_connect_timeout(tmp_path, fault):
    row = fault(
        "connect timeout",
        "no crash; each poll logged 'timeout: connect timeout'; "
        "ticks that come while a poll hangs are skipped, not queued (no burst after "
        "it); no transition or command; SIGTERM exits 0 promptly",
    )
    db = tmp_path / "tempctl.db"
    v = LogView(db)
    with blackhole() as srv:
        port = srv.getsockname()[1]
        d = start_daemon(f"127.0.0.1:{port}", db, tmp_path)
        try:
            wait_for(lambda: v.count("readings") >= 2, 30, "two timed-out polls", d)
            stop_s = assert_clean_exit(d, timeout=15)
        finally:
            d.stop()
    rows = v.readings()
    spacing = (rows[1]["ts_ms"] - rows[0]["ts_ms"]) / 1000
    row.observed = (
        f"{len(rows)} polls, all invalid ('{short(rows[0]['error'])}'), "
        f"{spacing:.1f} s apart (polls every 0.25 s; the ticks in between were "
        f"skipped); 0 transitions, 0 commands; SIGTERM: exit 0 in {stop_s:.1f} s"
    )
    assert all(short(r["error"]).startswith("timeout: connect timeout") for r in rows)
    assert spacing > 3.0, "polls queued up behind the hanging one"
    assert v.count("transitions") == 0 and v.count("commands") == 0
    assert stop_s < 6.0
    assert check_log(db, limits_for()) == []


@slow
def test_read_timeout(tmp_path, fault):
    row = fault(
        "read timeout",
        "no crash; each poll logged 'timeout: read timeout'; no "
        "transition or command; valid again once the device answers",
    )
    release = threading.Event()
    with fake_device() as dev:
        dev.info["temp"] = 58.0
        hang = {"on": False}
        original = dev._info

        def slow_info(request):
            if hang["on"]:
                release.wait(4)  # longer than the daemon's read timeout (1 s at 0.25 s polls)
            return original(request)

        dev.server.clear_all_handlers()
        dev.server.expect_request("/api/system/info").respond_with_handler(slow_info)
        w = run_window(
            tmp_path,
            dev.address,
            polls=3,
            inject=lambda: hang.update(on=True),
            clear=lambda: (hang.update(on=False), release.set()),
        )
        release.set()
    row.observed = w.describe()
    assert all(short(r["error"]).startswith("timeout: read timeout") for r in w.invalid)
    assert w.transitions() == [] and w.commands() == []


# --- bodies the emulator never sends -----------------------------------------------------------


@slow
def test_404(tmp_path, fault):
    row = fault(
        "404",
        "no crash; each poll logged 'bad_response: HTTP 404'; no transition or "
        "command; valid again once the route answers",
    )
    with fake_device() as dev:
        w = run_window(
            tmp_path,
            dev.address,
            inject=lambda: setattr(dev, "info_status", 404),
            clear=lambda: setattr(dev, "info_status", 200),
        )
    row.observed = w.describe()
    assert all("HTTP 404" in r["error"] for r in w.invalid)
    assert w.transitions() == [] and w.commands() == []


@slow
def test_streamed_body_over_the_cap_is_not_read(tmp_path, fault):
    row = fault(
        "body over 64 KiB, streamed without Content-Length",
        "no crash; reading stops at the cap (the rest is never read); poll logged "
        "'too_large'; valid again afterwards",
    )
    sent = Counter()
    with fake_device() as dev:
        original = dev._info
        big = {"on": False}

        def streamed(request):
            if not big["on"]:
                return original(request)

            def body():
                yield b'{"temp": 58, "_padding": "'
                for _ in range(1024):  # 1 MiB if anyone read it all
                    sent["chunks"] += 1
                    yield b"x" * 1024
                yield b'"}'

            return Response(body(), content_type="application/json")  # chunked

        dev.server.clear_all_handlers()
        dev.server.expect_request("/api/system/info").respond_with_handler(streamed)
        w = run_window(
            tmp_path,
            dev.address,
            polls=4,
            inject=lambda: big.update(on=True),
            clear=lambda: big.update(on=False),
        )
    per_poll_kib = sent["chunks"] / max(1, len(w.invalid))
    row.observed = w.describe() + f"; ~{per_poll_kib:.0f} KiB sent per poll of a 1 MiB body"
    assert all("too_large" in r["error"] and "stopped reading" in r["error"] for r in w.invalid)
    # the server may run ahead of the reader by socket buffers, not by the whole body
    assert per_poll_kib < 512


WRONG = [
    ('temp "hot"', {"temp": "hot"}, "temp='hot': not a number"),
    ("temp null", {"temp": None}, "temp missing"),
    ("temp NaN", {"temp": float("nan")}, "temp=nan: not a finite number"),
    ("temp 1e308", {"temp": 1e308}, "temp=1e+308: above 150 °C"),
    ("temp -1e308", {"temp": -1e308}, "below zero"),
    ("frequency -490", {"frequency": -490}, "frequency=-490: outside 1..65535"),
    ('frequency "490"', {"frequency": "490"}, "frequency='490': not a number"),
    ("body is a list", [1, 2], "expected an object"),
]


@slow
def test_wrong_types_and_absurd_values(tmp_path, fault):
    row = fault(
        'wrong types (temp "hot", null, NaN, 1e308, negative frequency)',
        "no crash; each value refused with a note, the reading invalid when temp is "
        "refused; no transition or command from any of them (a 1e308 °C reading must "
        "not throttle)",
    )
    seen = {}
    with fake_device() as dev:
        dev.info["temp"] = 58.0  # cool: only a misread value could cause a step
        db = tmp_path / "tempctl.db"
        v = LogView(db)
        d = start_daemon(dev.address, db, tmp_path)
        try:
            wait_for(lambda: v.count("readings", "valid = 1") >= 3, 20, "3 valid readings", d)
            for label, change, _ in WRONG:
                first = max_reading_id(db)
                if isinstance(change, list):
                    dev.info_raw = json.dumps(change).encode()
                else:
                    body = dict(procs.template_body(), temp=58.0)
                    body.update(change)
                    dev.info_raw = json.dumps(body).encode()  # NaN is written as NaN
                wait_for(
                    lambda first=first: v.count("readings", "id > ?", first + 1) >= 3,
                    20,
                    f"3 polls of {label}",
                    d,
                )
                seen[label] = v.readings("id > ?", first + 1)
            dev.info_raw = None
            last = max_reading_id(db)
            wait_for(
                lambda: v.count("readings", "id > ? AND valid = 1", last) >= 1,
                20,
                "a valid reading again",
                d,
            )
            stop_s = assert_clean_exit(d)
        finally:
            d.stop()
    notes = []
    for label, change, note in WRONG:
        rows = seen[label]
        notes.append(f"{label}: '{short(rows[-1]['error'])}'")
        assert all(note in (r["error"] or "") for r in rows), (label, rows[-1]["error"])
        if "temp" in (change if isinstance(change, dict) else {"temp": 0}):
            assert all(not r["valid"] for r in rows), label
        else:
            assert all(r["frequency"] is None for r in rows), label
    row.observed = (
        "; ".join(notes) + f"; 0 transitions after start, "
        f"{v.count('commands')} commands; SIGTERM: exit 0 in {stop_s:.1f} s"
    )
    start = "start: no history, device at or above MAX_FREQUENCY"
    assert [t["reason"] for t in v.transitions()] in ([], [start])
    assert v.count("commands") == 0
    assert check_log(db, limits_for()) == []


# --- the device's own behaviour: sensor fault, reboot, overheat --------------------------------


@slow
def test_sensor_127_is_invalid_and_the_firmware_trip_is_followed(tmp_path, fault):
    row = fault(
        "sensor 127",
        "the 127 °C reading is invalid (EMC2101 diode fault) and never "
        "counts as hot; the firmware trusts it and trips: that trip (overheat flag) "
        "is followed: THROTTLED_2 + alarm; no unsafe command",
    )
    emu = start_emulator(tmp_path, start_hours=0.0, scenario="constant", seed=5)
    try:
        w = run_window(
            tmp_path,
            emu.address,
            polls=3,
            inject=lambda: emu.set_faults("sensor_127"),
            clear=lambda: emu.set_faults(""),
        )
        trips = emu.state()["overheat_trips"]
    finally:
        emu.stop()
    v = w.view
    raw = [r for r in w.readings if r["raw_temp"] == 127]
    alarms = [e["message"] for e in v.events("alarm")]
    row.observed = (
        f"{len(raw)} readings of 127 °C, all invalid ('{short(raw[0]['error'])}'); "
        f"the emulated firmware tripped {trips}×; transitions: "
        f"{', '.join(t['to_state'] + ' (' + t['reason'] + ')' for t in v.transitions())}"
        f"; alarms: {alarms[:1]}"
    )
    assert raw and all(not r["valid"] and "EMC2101" in r["error"] for r in raw)
    # steps taken in the window came from the trip (overheat rows), never from 127 itself
    for t in w.transitions():
        r = v.readings("ts_ms = ?", t["ts_ms"])[0]
        assert r["overheat"] == 1, (t, r)
    if trips:
        assert any("firmware overheat trip" in a for a in alarms)


def in_process_emulator(**kw) -> Emulator:
    kw.setdefault("scale", 60.0)
    emu = Emulator(kw.pop("scenario", "heatwave"), host="127.0.0.1", port=0, **kw)
    emu.start()
    return emu


def on_device(emu: Emulator, fn) -> None:
    d = emu.devices[0]
    with d.lock:
        d.firmware.advance(emu.device_time())
        fn(d.firmware)
    emu.sync()


@slow
def test_spontaneous_reboot(tmp_path, fault):
    row = fault(
        "spontaneous device reboot",
        "no crash; refused polls while down, booting "
        "readings (temp -1, hashrate 0) invalid and ignored; a 'reboot' event with "
        "origin device; the device comes back at its saved frequency and the state "
        "is kept (no command needed); booting with a fixed 100 % fan is not taken for "
        "an overheat trip",
    )
    # 20 plant-seconds down and 25 booting at scale 20: about a second each
    emu = in_process_emulator(
        start_hours=HOT_HOURS, scale=20, restart_downtime_s=20, boot_s=25, seed=3
    )
    db = tmp_path / "tempctl.db"
    v = LogView(db)
    d = start_daemon(emu.urls[0].split("://")[1], db, tmp_path)
    try:
        wait_for(
            lambda: (
                v.count("commands") >= 1
                and v.count(
                    "readings",
                    "valid = 1 AND id > (SELECT max(id) FROM readings WHERE frequency = 575)",
                )
                >= 2
            ),
            20,
            "a throttle applied",
            d,
        )
        on_device(emu, lambda fw: fw.crash())
        first = max_reading_id(db)
        wait_for(lambda: v.events("reboot"), 20, "the reboot event", d)
        wait_for(
            lambda: v.count("readings", "id > ? AND valid = 1", first) >= 4,
            20,
            "valid readings after the reboot",
            d,
        )
        last = max_reading_id(db)
        stop_s = assert_clean_exit(d)
    finally:
        d.stop()
        emu.stop()
    w = Window(db, first, last, stop_s=stop_s)
    reboot = v.events("reboot")[0]
    errors = w.errors()
    after = v.readings("id > ? AND valid = 1", first)
    cmds_after = [c for c in v.commands() if c["ts_ms"] >= w.ts_range()[0]]
    row.observed = (
        f"{len(w.invalid)} invalid polls ({'; '.join(errors)}); event: "
        f"'{reboot['message']}' (origin {reboot['origin']}); back at "
        f"{after[0]['frequency']:g} MHz = the saved setting; "
        f"{len(cmds_after)} commands after the reboot; "
        f"SIGTERM: exit 0 in {stop_s:.1f} s"
    )
    assert reboot["origin"] == "device"
    assert any("connection refused" in e or "closed or reset" in e for e in errors)
    assert any("temp=-1" in e for e in errors), errors  # booting: the ASIC is not initialised
    before = v.readings("id <= ? AND valid = 1", first)[-1]
    assert after[0]["frequency"] == pytest.approx(before["frequency"])
    booting = [r for r in w.invalid if "temp=-1" in (r["error"] or "")]
    assert booting and not any(r["overheat"] for r in booting), "boot taken for a trip"
    assert not [e for e in v.events("alarm") if e["ts_ms"] >= w.ts_range()[0]]
    for t in v.transitions():
        r = v.readings("ts_ms = ? AND device = ?", t["ts_ms"], t["device"])
        assert r and (r[0]["valid"] or r[0]["overheat"]), t
    assert check_log(db, limits_for()) == []


@slow
def test_firmware_overheat_trip(tmp_path, fault):
    row = fault(
        "firmware overheat trip",
        "no crash; the trip is seen (overheat flag): "
        "THROTTLED_2 and an alarm; the firmware's −100 MHz penalty is logged as a "
        "firmware change and adopted, not fought; no unsafe command",
    )
    emu = in_process_emulator(start_hours=0.0, scenario="constant", seed=4)
    db = tmp_path / "tempctl.db"
    v = LogView(db)
    d = start_daemon(emu.urls[0].split("://")[1], db, tmp_path)
    try:
        wait_for(lambda: v.count("readings", "valid = 1") >= 4, 20, "4 valid readings", d)
        on_device(emu, lambda fw: fw.force_overheat())
        # the v2.15 cool-down is >= 30 plant-s (0.5 s here), then F - 100 is written
        wait_for(
            lambda: v.count("readings", "valid = 1 AND frequency = 475") >= 4,
            20,
            "the firmware's penalty (575 - 100 MHz)",
            d,
        )
        stop_s = assert_clean_exit(d)
    finally:
        d.stop()
        emu.stop()
    trans = v.transitions()
    changes = [(e["origin"], e["message"]) for e in v.events("frequency_change")]
    alarms = [e["message"] for e in v.events("alarm")]
    row.observed = (
        f"transitions: {', '.join(t['to_state'] + ' (' + t['reason'] + ')' for t in trans)}"
        f"; alarm: {alarms[:1]}; frequency changes: {changes}; commands: "
        f"{[(c['frequency'], c['outcome']) for c in v.commands()]}; "
        f"SIGTERM: exit 0 in {stop_s:.1f} s"
    )
    assert any(t["to_state"] == "THROTTLED_2" and t["reason"] == "critical" for t in trans)
    assert any("firmware overheat trip" in a for a in alarms)
    assert changes and all(origin == "firmware" for origin, _ in changes), changes
    assert check_log(db, limits_for()) == []


# --- writes the device refuses or ignores --------------------------------------------------------


def run_critical(tmp_path, faults: str, seconds: float = 6.0):
    """The device at 71.5 °C (critical) from the start, the given PATCH fault always on."""
    emu = start_emulator(tmp_path, start_hours=CRITICAL_HOURS, faults=faults, seed=2)
    db = tmp_path / "tempctl.db"
    v = LogView(db)
    d = start_daemon(emu.address, db, tmp_path)
    try:
        wait_for(lambda: v.count("commands") >= 1, 20, "the first command", d)
        end = time.monotonic() + seconds  # a window long enough for many re-sends
        wait_for(lambda: time.monotonic() >= end, seconds + 5, "the run", d)
        state = emu.state()
        stop_s = assert_clean_exit(d)
    finally:
        d.stop()
        emu.stop()
    return v, state, stop_s


@slow
def test_patch_answered_400_is_not_retried_in_a_loop(tmp_path, fault):
    row = fault(
        "PATCH answered 400",
        "no crash; outcome 'failed' (HTTP 400) logged with a "
        "warning; re-sent at most twice, then one alarm; never a loop, and never "
        "logged as someone else's change",
    )
    v, state, stop_s = run_critical(tmp_path, "patch_400")
    cmds = v.commands()
    users = [e["message"] for e in v.events("frequency_change")]
    alarms = [e["message"] for e in v.events("alarm") if "not applied" in e["message"]]
    row.observed = (
        f"{len(cmds)} set_frequency commands in 6 s of critical temperature "
        f"(attempts {[c['attempt'] for c in cmds]}, outcomes "
        f"{sorted({(c['outcome'], c['status']) for c in cmds})}); the device "
        f"received {state['patches']} PATCHes; alarms: {alarms}; "
        f"other-origin changes logged: {len(users)}; SIGTERM: exit 0 in {stop_s:.1f} s"
    )
    assert cmds and all(c["outcome"] == "failed" and c["status"] == 400 for c in cmds)
    assert len(cmds) <= 1 + VERIFY_RETRIES, "re-sent in a loop"
    assert state["patches"] == len(cmds)  # a 4xx is never retried by the HTTP layer
    assert len(alarms) == 1
    assert users == [], "our own refused change was logged as a user's"
    assert check_log(v.path, limits_for()) == []


@slow
def test_patch_not_applied_is_bounded_then_alarms(tmp_path, fault):
    row = fault(
        "PATCH 200 but not applied",
        "read-back mismatch: re-sent at most twice (attempts 2, 3), then one alarm; never a loop",
    )
    v, state, stop_s = run_critical(tmp_path, "patch_ignored")
    cmds = v.commands()
    alarms = [e["message"] for e in v.events("alarm") if "not applied" in e["message"]]
    verify = v.events("verify")
    row.observed = (
        f"{len(cmds)} set_frequency commands in 6 s of critical temperature "
        f"(attempts {[c['attempt'] for c in cmds]}), {len(verify)} read-back "
        f"warnings, alarms: {alarms}; the device received {state['patches']} "
        f"PATCHes; SIGTERM: exit 0 in {stop_s:.1f} s"
    )
    assert [c["attempt"] for c in cmds] == list(range(1, VERIFY_RETRIES + 2)), "not bounded"
    assert len(alarms) == 1
    assert state["patches"] == len(cmds)
    assert check_log(v.path, limits_for()) == []


@slow
@pytest.mark.parametrize("how", ["500", "hang"])
def test_restart_request_failing_is_not_retried(tmp_path, fault, how):
    row = fault(
        f"restart request {'failing (500)' if how == '500' else 'timing out'}",
        "exactly one POST per restart command (no blind retry); outcome 'failed' "
        "with a warning event '(not retried)'; at most TEMPCTL_MAX_RESTARTS_PER_HOUR",
    )
    release = threading.Event()
    with fake_device() as dev:
        dev.info["temp"] = 66.0  # hot, not critical: THROTTLED_1, then _2 after settling

        def failing(request):
            if how == "hang":
                release.wait(4)  # longer than the daemon's read timeout
                return Response("", status=200)
            return Response("Internal Server Error", status=500, content_type="text/html")

        dev.on_restart = failing
        db = tmp_path / "tempctl.db"
        v = LogView(db)
        d = start_daemon(dev.address, db, tmp_path, apply="restart", max_restarts_per_hour=2)
        try:
            wait_for(
                lambda: (
                    v.count("commands", "kind = 'restart'") >= 2
                    and v.count("command_log", "kind = 'restart' AND outcome IS NOT NULL") >= 2
                ),
                30,
                "two restart outcomes",
                d,
            )
            wait_for(
                lambda: v.count("transitions") >= 3 or v.events("restart"),
                10,
                "the next step (restart budget used up)",
                d,
            )
            stop_s = assert_clean_exit(d)
        finally:
            release.set()
            d.stop()
        posts = dev.hits["POST /api/system/restart"]
    restarts = [c for c in v.commands() if c["kind"] == "restart"]
    warn = [e["message"] for e in v.events("restart")]
    row.observed = (
        f"{len(restarts)} restart commands, {posts} POSTs received, outcomes "
        f"{sorted({short(c['error']) for c in restarts})}; events: "
        f"{[short(m) + ' … (not retried)' for m in warn[:1]]}; "
        f"SIGTERM: exit 0 in {stop_s:.1f} s"
    )
    assert posts == len(restarts)
    assert all(c["outcome"] == "failed" for c in restarts)
    assert sum("(not retried)" in m for m in warn) == len(restarts)
    assert len(restarts) <= 2
    assert check_log(db, limits_for(apply="restart", max_restarts_per_hour=2)) == []


@slow
def test_a_different_device_answers(tmp_path, fault):
    row = fault(
        "different device at the same address",
        "an 'identity' alarm naming the old and new hostname/MAC; no crash; no unsafe command",
    )
    emu = start_emulator(tmp_path, start_hours=HOT_HOURS, seed=8)
    try:
        w = run_window(
            tmp_path,
            emu.address,
            polls=4,
            invalid_expected=False,
            inject=lambda: emu.set_faults("mac_change"),
            clear=lambda: emu.set_faults(""),
        )
    finally:
        emu.stop()
    ids = w.view.events("identity")
    row.observed = (
        f"{len(ids)} identity alarms, first: '{ids[0]['message']}'; "
        f"SIGTERM: exit 0 in {w.stop_s:.1f} s"
    )
    assert ids and all(e["level"] == "alarm" for e in ids)
    assert "bitaxe-other" in ids[0]["message"]


# --- the same regressions at the unit level (fast: no process, no network) ---------------------

UNIT = Limits(check_interval=1.0, settle=10.0, stable_timeframe=60 / 3600, law="levels")


def drive(
    ctl: Controller, polls: int, *, temp: float, device_mhz, ok: bool, overheat=lambda t: False
) -> list:
    """Poll a controller once a second; every command gets outcome ``ok``; the device's
    frequency is ``device_mhz(t)`` whatever was commanded. Returns (t, decision) pairs."""
    out = []
    for t in range(polls):
        now = t * 1000
        r = Reading("d", now, temp=temp, frequency=device_mhz(t), overheat=overheat(t))
        d = ctl.step(r, now)
        out.append((t, d))
        for c in d.commands:
            out.append((t, ctl.command_result(c, ok, now, None if ok else "rejected: HTTP 400")))
    return out


@pytest.mark.parametrize("ok", [False, True], ids=["answered-400", "200-not-applied"])
def test_unit_a_refused_change_is_sent_three_times_then_alarmed_once(ok):
    ctl = Controller(UNIT, "d")
    steps = drive(ctl, 60, temp=72.0, device_mhz=lambda t: 575.0, ok=ok)  # critical all along
    cmds = [c for _, d in steps for c in d.commands]
    events = [e for _, d in steps for e in d.events]
    assert [c.attempt for c in cmds] == [1, 2, 3]
    assert sum("not applied after 3 attempts" in e.message for e in events) == 1
    assert not [e for e in events if e.kind == "frequency_change"]


def test_unit_the_firmware_penalty_after_a_trip_is_the_firmwares_and_not_fought():
    # v2.11+ (axeos-api.md §9.2): tripped at 575, a PATCH to 400 during the cool-down is
    # overwritten by 575 - 100 = 475 when it recovers.
    ctl = Controller(UNIT, "d")

    def device(t):
        return 575.0 if t < 3 else 400.0 if t < 6 else 475.0

    steps = drive(ctl, 12, temp=60.0, device_mhz=device, ok=True, overheat=lambda t: 1 <= t < 6)
    changes = [e for _, d in steps for e in d.events if e.kind == "frequency_change"]
    cmds = [c for _, d in steps for c in d.commands]
    assert [(e.origin, e.frequency_to) for e in changes] == [("firmware", 475.0)]
    assert [c.frequency for c in cmds] == [400.0]  # no re-send of 400 over the penalty


@pytest.mark.parametrize("uptime,expected", [(20, False), (59, False), (600, True)])
def test_unit_a_booting_device_with_a_fixed_fan_is_not_an_overheat_trip(uptime, expected):
    body = procs.template_body() | {
        "actualFrequency": 50,
        "expectedHashrate": 0,
        "hashRate": 0,
        "miningPaused": False,
        "autofanspeed": 0,
        "manualFanSpeed": 100,
        "fanspeed": 100,
        "temp": -1,
        "uptimeSeconds": uptime,
    }
    assert parse_info(body, "d", 0).overheat is expected
