"""Faults that stop mining and are not an overheat (issue 16 item 2), and their column.

``power_fault`` / ``hardware_fault``: main/http_server/system_api_json.c adds these string
keys only while the fault lasts. ``pool_down``: v2.14+ stops the ASIC when no pool is
reachable and the fan task forces 30 % (power_management_task.c ≈ l.144,
fan_controller_task.c ≈ l.75-76; axeos-api.md §14). None may look like the overheat
trip signature of v2.14+ (50 MHz, expectedHashrate 0, autofan off, fan 100 %, §9.3).
"""

from __future__ import annotations

import json
import sqlite3

import pytest

from tempctl.device import FAULTS, parse_info
from tempctl.resources import PACKAGE_DIR
from tempctl.store.eventlog import Log

V215 = json.loads((PACKAGE_DIR / "data" / "bodies" / "v2.15.0_gamma-602_BM1370.json").read_text())


def v215(**changes) -> dict:
    info = V215 | changes
    return {k: v for k, v in info.items() if v is not None}  # None drops a key


# Mining stopped by the firmware (§9.3): PLL at 50 MHz, nothing expected, not paused.
STOPPED = {"actualFrequency": 50, "expectedHashrate": 0, "hashRate": 0, "miningPaused": False}
# ... and what the trip adds on v2.14+: autofan off, manual fan 100 %.
TRIP_FAN = {"autofanspeed": 0, "manualFanSpeed": 100, "fanspeed": 100}


@pytest.mark.parametrize(
    ("info", "fault"),
    [
        (v215(), None),
        (v215(power_fault="VOUT_UV_FAULT"), "power_fault"),
        (v215(hardware_fault="ASIC init failed"), "hardware_fault"),
        (v215(**STOPPED, power_fault="IOUT_OC"), "power_fault"),
        (v215(**STOPPED, hardware_fault="fan driver", temp=-1), "hardware_fault"),
        (v215(**STOPPED, temp=-1, fanspeed=30, poolConnectionInfo="Not Connected"), "pool_down"),
        (v215(**STOPPED, temp=-1, fanspeed=30), "pool_down"),  # fan forced to 30 % alone
        (v215(**STOPPED, poolConnectionInfo="SV2: Pool unreachable", fanspeed=41), "pool_down"),
        # within the boot grace the pool is not connected yet either: no fault
        (v215(**STOPPED, fanspeed=30, poolConnectionInfo="Not Connected", uptimeSeconds=12), None),
        (v215(**(STOPPED | {"fanspeed": 30, "miningPaused": True})), None),  # user paused it
        (v215(poolConnectionInfo="Not Connected"), None),  # still hashing: not stopped
        (v215(**STOPPED, **TRIP_FAN), None),  # the overheat trip itself is no fault
    ],
)
def test_faults_are_recognised(info, fault):
    reading = parse_info(info, "d", 0)
    assert reading.fault == fault
    if fault:
        assert fault in FAULTS and "not an overheat" in reading.error


@pytest.mark.parametrize(
    "extra",
    [
        {"power_fault": "VIN_UV_FAULT"},
        {"hardware_fault": "EMC2101 not found"},
        {"poolConnectionInfo": "Not Connected"},
    ],
)
def test_no_fault_looks_like_the_trip_signature(extra):
    # Trip signature plus a fault: a user with a manual fan at 100 % whose device stops for
    # another reason must not be read as tripped (tempctl never commands on an overheat
    # it did not see).
    tripped = parse_info(v215(**STOPPED, **TRIP_FAN), "d", 0)
    assert tripped.overheat and tripped.fault is None
    faulted = parse_info(v215(**STOPPED, **TRIP_FAN, **extra), "d", 0)
    assert faulted.fault is not None and not faulted.overheat


def test_the_firmware_flag_still_counts_with_a_fault():
    # overheat_mode = 1 is the firmware saying so (v2.11-v2.13, §9.3): believed as before.
    reading = parse_info(v215(overheat_mode=1, power_fault="VOUT_OV"), "d", 0)
    assert reading.overheat and reading.fault == "power_fault"


def test_fault_is_persisted(tmp_path):
    log = Log(tmp_path / "log.db")
    log.start_run({}, {}, ts_ms=1)
    for info in (v215(), v215(power_fault="VOUT_UV_FAULT"), v215(**STOPPED, fanspeed=30)):
        log.save_reading(parse_info(info, "gamma", 2))
    log.close()
    with sqlite3.connect(tmp_path / "log.db") as conn:
        rows = conn.execute("SELECT fault FROM readings ORDER BY id").fetchall()
        columns = [r[1] for r in conn.execute("PRAGMA table_info(readings)")]
    assert rows == [(None,), ("power_fault",), ("pool_down",)]
    assert "fault" in columns


V1_READINGS = """
CREATE TABLE readings (
    id INTEGER PRIMARY KEY, run_id INTEGER REFERENCES runs(id), device TEXT NOT NULL,
    ts_ms INTEGER NOT NULL, valid INTEGER NOT NULL CHECK (valid IN (0, 1)), temp REAL,
    vr_temp REAL, frequency REAL, actual_frequency REAL, core_voltage INTEGER,
    core_voltage_actual INTEGER, hashrate REAL, power REAL, fan REAL, fan_rpm INTEGER,
    uptime_s INTEGER, raw_temp REAL, firmware TEXT, asic TEXT,
    overheat INTEGER NOT NULL DEFAULT 0 CHECK (overheat IN (0, 1)),
    backfilled INTEGER NOT NULL DEFAULT 0 CHECK (backfilled IN (0, 1)), error TEXT
) STRICT;
CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL) STRICT;
INSERT INTO meta VALUES ('app', 'tempctl');
INSERT INTO readings (device, ts_ms, valid, temp) VALUES ('gamma', 1, 1, 60.0);
PRAGMA user_version = 1;
"""


def test_a_log_from_before_the_fault_column_is_migrated(tmp_path):
    path = tmp_path / "old.db"
    with sqlite3.connect(path) as conn:
        conn.executescript(V1_READINGS)
    log = Log(path)
    log.start_run({}, {}, ts_ms=2)
    log.save_reading(parse_info(v215(hardware_fault="x"), "gamma", 3))
    log.close()
    with sqlite3.connect(path) as conn:
        rows = conn.execute("SELECT device, temp, fault FROM readings ORDER BY id").fetchall()
        assert conn.execute("PRAGMA user_version").fetchone()[0] >= 2
    assert rows == [("gamma", 60.0, None), ("gamma", 60.125, "hardware_fault")]
