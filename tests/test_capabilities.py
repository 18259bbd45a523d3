"""Capabilities from what the device shows, not only its version string (issue 16 item 1).

``version: "virtual"`` (a third-party AxeOS mock), a git hash from a self-built firmware, or
``v2.16.0-dev`` must not be treated like v2.0.0-v2.0.3 (never written to) when the device
plainly runs a modern firmware; devices that really are v2.0.0-v2.0.3 stay protected, and
"cannot write" always comes with the reason (``why_not``) for the alarm and the alert.
"""

from __future__ import annotations

import json

import pytest

from tempctl.device import (
    capabilities,
    capabilities_of,
    key_floor,
    parse_info,
    parse_version,
    reading_capabilities,
)
from tempctl.resources import PACKAGE_DIR

BODIES = PACKAGE_DIR / "data" / "bodies"


def body(name: str, **changes) -> dict:
    return json.loads((BODIES / name).read_bytes()) | changes


@pytest.mark.parametrize(
    ("text", "parsed"),
    [
        ("v2.15.0", ((2, 15, 0), True)),
        ("2.15.0", ((2, 15, 0), True)),
        (" v2.15.0 ", ((2, 15, 0), True)),
        ("v2.16.0-dev", ((2, 16, 0), False)),
        ("v2.13.0-12-gabc1234", ((2, 13, 0), False)),
        ("v2.10.0b1", ((2, 10, 0), False)),
        ("V2.15", ((2, 15, 0), False)),
        ("virtual", (None, False)),
        ("a1b2c3d", (None, False)),
        ("", (None, False)),
        (None, (None, False)),
        (2.15, (None, False)),
    ],
)
def test_parse_version(text, parsed):
    assert parse_version(text) == parsed


@pytest.mark.parametrize(
    ("name", "floor"),
    [
        ("v2.1.10_ultra-204_BM1366.json", (2, 1, 10)),
        ("v2.4.5_supra-401_BM1368.json", (2, 4, 3)),
        ("v2.10.1_gamma-601_BM1370.json", (2, 10, 0)),
        ("v2.13.2_hex-302_6xBM1366.json", (2, 12, 0)),
        ("v2.15.0_gamma-602_BM1370.json", (2, 15, 0)),
    ],
)
def test_key_floor_never_claims_more_than_the_release(name, floor):
    info = body(name)
    assert key_floor(info) == floor
    assert floor <= parse_version(info["version"])[0]


@pytest.mark.parametrize(
    ("name", "live", "fan_key"),
    [
        ("v2.15.0_gamma-602_BM1370.json", True, "manualFanSpeed"),
        ("v2.13.2_hex-302_6xBM1366.json", True, "manualFanSpeed"),
        ("v2.10.1_gamma-601_BM1370.json", True, "fanspeed"),
        ("v2.4.5_supra-401_BM1368.json", True, "fanspeed"),
        ("v2.1.10_ultra-204_BM1366.json", False, "fanspeed"),  # restart-only, but writable
    ],
)
@pytest.mark.parametrize("version", ["virtual", "a1b2c3d", "unknown", ""])
def test_an_odd_version_is_judged_by_the_keys(name, live, fan_key, version):
    reading = parse_info(body(name, version=version), "d", 0)
    caps = capabilities_of(reading)
    assert caps.can_write and caps.why_not is None and not caps.partial_patch_crashes
    assert (caps.live_frequency, caps.fan_key, caps.basis, caps.generation) == (
        live,
        fan_key,
        "keys",
        "?",
    )


def test_actual_frequency_alone_shows_v214():
    # What the log keeps (firmware, asic, actual_frequency) is enough for replay to agree.
    caps = capabilities("virtual", "BM1370", actual_frequency=525.0)
    assert caps.can_write and caps.live_frequency and caps.actual_frequency
    assert caps.fan_key == "manualFanSpeed" and caps.basis == "keys"
    assert not capabilities("virtual", "BM1370").can_write


def test_a_dev_build_writes_like_its_release():
    caps = capabilities("v2.16.0-dev", "BM1370")
    assert caps.can_write and caps.live_frequency and caps.actual_frequency
    assert (caps.generation, caps.basis) == ("?", "version")


@pytest.mark.parametrize("version", ["v2.0.0", "v2.0.2", "v2.0.3"])
def test_real_v200_to_v203_are_never_written(version):
    # Even a body with modern keys does not overrule a real release number (§5.2).
    info = body("v2.15.0_gamma-602_BM1370.json", version=version)
    caps = capabilities_of(parse_info(info, "d", 0))
    assert not caps.can_write and caps.partial_patch_crashes
    assert "crashes on a partial PATCH" in caps.why_not and version in caps.why_not


def test_no_evidence_means_no_writes_with_the_reason():
    # A v2.0.x-sized body (25 keys, none newer than v2.0.4) with a version we cannot read.
    info = {"temp": 55.0, "frequency": 485, "coreVoltage": 1200, "hashRate": 410.2,
            "power": 11.8, "version": "virtual", "ASICModel": "BM1366", "autofanspeed": 1,
            "fanspeed": 60, "fanSpeed": 4200, "uptimeSeconds": 999}  # fmt: skip
    reading = parse_info(info, "d", 0)
    assert reading.firmware_floor is None
    caps = capabilities_of(reading)
    assert not caps.can_write and caps.basis == "none" and caps.partial_patch_crashes
    assert "'virtual' is not a release number" in caps.why_not
    assert "v2.0.0-v2.0.3 crash on a partial PATCH" in caps.why_not


@pytest.mark.parametrize(
    ("name", "version", "latches", "live"),
    [
        ("v2.10.1_gamma-601_BM1370.json", None, True, True),
        ("v2.10.1_gamma-601_BM1370.json", "virtual", True, True),  # the keys say v2.10
        ("v2.13.2_hex-302_6xBM1366.json", None, False, True),
        ("v2.15.0_gamma-602_BM1370.json", "a1b2c3d", False, True),
        ("v2.1.10_ultra-204_BM1366.json", None, True, False),
    ],
)
def test_reading_capabilities_for_the_driver(name, version, latches, live):
    info = body(name) if version is None else body(name, version=version)
    caps = reading_capabilities(parse_info(info, "d", 0))
    assert (caps.trip_latches, caps.live_frequency, caps.write_refused) == (latches, live, None)


def test_reading_capabilities_refuses_with_the_reason():
    info = body("v2.15.0_gamma-602_BM1370.json", version="v2.0.3")
    caps = reading_capabilities(parse_info(info, "d", 0))
    assert caps.write_refused and "v2.0.0-v2.0.3" in caps.write_refused
