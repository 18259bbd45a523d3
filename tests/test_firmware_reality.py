"""Issue 16 end to end: the real `tempctl run` against the project's emulator (in process,
loopback) on devices as they really are: odd version strings, mining stops that are not
overheats, the leftovers of a firmware trip, and the stalled second trip of a Gamma.
"""

from __future__ import annotations

import json

import pytest
from procs import LogView, assert_clean_exit, start_daemon, wait_for

from tempctl.sim.emulator import Emulator, parse_faults

pytestmark = pytest.mark.slow


def emulator(**kw) -> Emulator:
    kw.setdefault("scale", 60.0)
    emu = Emulator(kw.pop("scenario", "heatwave"), host="127.0.0.1", port=0, **kw)
    emu.start()
    return emu


def on_device(emu: Emulator, fn):
    d = emu.devices[0]
    with d.lock:
        d.firmware.advance(emu.device_time())
        out = fn(d.firmware)
    emu.sync()
    return out


def address(emu: Emulator) -> str:
    return emu.urls[0].split("://")[1]


def test_an_odd_version_string_overheating_is_throttled(tmp_path):
    # `version: "virtual"` (a mock, or a self-built firmware): judged by what it shows
    emu = emulator(start_hours=7.0, version_label="virtual", seed=2)  # the heat wave's peak
    db = tmp_path / "tempctl.db"
    v = LogView(db)
    d = start_daemon(address(emu), db, tmp_path, law="model")
    try:
        wait_for(lambda: v.count("commands", "kind = 'set_frequency'") >= 1, 30, "a throttle", d)
        wait_for(lambda: v.count("command_results", "outcome = 'ok'") >= 1, 30, "applied", d)
        assert_clean_exit(d)
    finally:
        d.stop()
        emu.stop()
    assert {r["firmware"] for r in v.readings()} == {"virtual"}
    assert not [e for e in v.events("alarm") if "not writing" in e["message"]]
    cmds = v.commands()
    assert cmds[0]["frequency"] < 575 and cmds[0]["outcome"] == "ok"


@pytest.mark.parametrize("fault", ["power_fault", "hardware_fault", "pool_down"])
def test_a_mining_stop_is_recognised_and_never_acted_on(tmp_path, fault):
    emu = emulator(start_hours=0.0, scenario="constant", seed=3)
    db = tmp_path / "tempctl.db"
    v = LogView(db)
    d = start_daemon(address(emu), db, tmp_path, law="model")
    try:
        wait_for(lambda: v.count("readings", "valid = 1") >= 4, 20, "4 valid readings", d)
        emu.devices[0].faults = parse_faults(fault)  # lasts while named (the knob's rule)
        wait_for(lambda: v.count("readings", "fault = ?", fault) >= 6, 30, f"{fault} seen", d)
        assert_clean_exit(d)
    finally:
        d.stop()
        emu.stop()
    first = v.value("SELECT min(id) FROM readings WHERE fault = ?", fault)
    assert v.count("commands", "id > 0") == 0  # at 575 in a 28 °C room: nothing to do anyway
    assert v.count("readings", "overheat = 1") == 0  # never taken for the trip signature
    events = [e for e in v.events("fault")]
    assert len(events) == 1 and fault in events[0]["message"], events
    assert events[0]["level"] == "warning"
    assert first is not None


def test_the_trip_leftovers_are_restored_once_cool(tmp_path):
    # v2.15 on autofan: a trip leaves F-100, V-100, autofan off, fan 100 % for good (§9.2).
    emu = emulator(start_hours=0.0, scenario="autofan", seed=4)
    db = tmp_path / "tempctl.db"
    v = LogView(db)
    d = start_daemon(address(emu), db, tmp_path, law="model", stable_timeframe=0.002)
    try:
        wait_for(
            lambda: v.count("readings", "valid = 1 AND uptime_s >= 300") >= 4,
            30,
            "representative readings",
            d,
        )
        before_mv = v.value("SELECT core_voltage FROM readings WHERE valid = 1 ORDER BY id DESC")
        on_device(emu, lambda fw: fw.force_overheat())
        wait_for(lambda: v.count("events", "kind = 'trip'") >= 1, 30, "the trip remembered", d)
        wait_for(
            lambda: v.count("commands", "kind = 'set_fields'") >= 1, 60, "the settings restored", d
        )
        wait_for(
            lambda: v.count("events", "kind = 'trip' AND message LIKE '%are back%'") >= 1,
            60,
            "autofan and the core voltage back",
            d,
        )
        assert_clean_exit(d)
    finally:
        d.stop()
        emu.stop()
    last = v.rows(
        "SELECT autofan, core_voltage FROM readings WHERE valid = 1 ORDER BY id DESC LIMIT 1"
    )[0]
    assert tuple(last) == (1, before_mv)
    fields = [
        json.loads(p)
        for (p,) in v.rows("SELECT payload FROM commands WHERE kind = 'set_fields' ORDER BY id")
    ]
    assert fields[0] == {"autofanspeed": 1, "coreVoltage": before_mv}, fields
    trips = [e["message"] for e in v.events("trip")]
    assert trips[0].startswith("before trip ") and f'"core_voltage": {before_mv}' in trips[0]
    assert any("are back" in m for m in trips), trips
    # the frequency is the law's to climb back, never restored by hand
    assert all(c["kind"] != "set_frequency" or c["frequency"] <= 575 for c in v.commands())


def test_the_stalled_second_trip_gets_a_valid_voltage(tmp_path):
    # At 1050 mV, one more trip asks the TPS546 for 950 mV, below its 1.0 V minimum: the core
    # stays unpowered, 0 hashrate, HTTP still answering (axeos-api §14; vcore.c).
    emu = emulator(start_hours=0.0, scenario="constant", seed=5)
    db = tmp_path / "tempctl.db"
    v = LogView(db)
    on_device(emu, lambda fw: fw.patch(b'{"coreVoltage":1050}'))
    d = start_daemon(address(emu), db, tmp_path, law="model")
    try:
        wait_for(
            lambda: (
                v.count("readings", "valid = 1 AND core_voltage = 1050 AND uptime_s >= 300") >= 3
            ),
            30,
            "running at 1050 mV",
            d,
        )
        on_device(emu, lambda fw: fw.force_overheat())
        wait_for(
            lambda: (
                on_device(emu, lambda fw: fw.state().get("stalled"))
                or v.count("commands", "kind = 'set_fields'") >= 1
            ),
            60,
            "the stall",
            d,
        )
        wait_for(
            lambda: v.count("commands", "kind = 'set_fields' AND reason LIKE 'stalled%'") >= 1,
            60,
            "a valid voltage sent",
            d,
        )
        wait_for(
            lambda: not on_device(emu, lambda fw: fw.state().get("stalled")), 60, "hashing again", d
        )
        assert_clean_exit(d)
    finally:
        d.stop()
        emu.stop()
    sent = [
        json.loads(p)
        for (p,) in v.rows("SELECT payload FROM commands WHERE kind = 'set_fields' ORDER BY id")
    ]
    assert sent and all(s.get("coreVoltage", 1000) >= 1000 for s in sent), sent
