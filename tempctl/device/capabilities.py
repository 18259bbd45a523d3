"""What a device's firmware can do, and whether tempctl may write to it at all.

Decided from the version string when it is a release number (``v2.13.0``, ``2.15.0``,
git describe ``v2.13.0-12-gabc``, ``v2.16.0-dev``), else from what the device shows: the
info keys present (each key's "since" release, axeos-api.md §4.1/§4.2) and
``actualFrequency`` (v2.14+). A device that shows neither gets the cautious answer:
no writes, because v2.0.0-v2.0.3 crash on a partial PATCH (§5.2), with the reason in
``Capabilities.why_not`` so the daemon can raise an alarm and an alert at once.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from collections.abc import Set as AbstractSet
from dataclasses import dataclass

__all__ = [
    "Capabilities",
    "DeviceCapabilities",
    "Version",
    "capabilities",
    "capabilities_of",
    "format_version",
    "key_floor",
    "parse_version",
    "reading_capabilities",
]

Version = tuple[int, int, int]

_VERSION = re.compile(r"^\s*v?(\d{1,4})\.(\d{1,4})(?:\.(\d{1,4}))?(.*)$", re.IGNORECASE)
# §1 generation table, as (first release, letter); the end bound is the next row.
_GENERATIONS = (
    ((2, 0, 0), "A"),
    ((2, 1, 9), "B"),
    ((2, 6, 0), "C"),
    ((2, 11, 0), "D"),
    ((2, 14, 0), "E"),
    ((2, 16, 0), "?"),  # newer than the reference: flags still follow the version
)
FIRST_SAFE_PATCH: Version = (2, 0, 4)  # §5.2: before this a partial PATCH crashes the device

# Info keys and the first release that has them (axeos-api.md §4.1 "Since", §4.2).
# Only keys that no later release dropped, so "present" means "at least this release".
KEY_SINCE: dict[str, Version] = {
    "boardVersion": (2, 0, 7),
    "fanSpeedRpm": (2, 1, 4),
    "bestSessionDiff": (2, 1, 5),
    "hostname": (2, 1, 5),
    "fanrpm": (2, 1, 9),
    "vrTemp": (2, 1, 9),
    "smallCoreCount": (2, 1, 9),
    "overheat_mode": (2, 1, 10),
    "macAddr": (2, 3, 0),
    "idfVersion": (2, 4, 3),
    "wifiRSSI": (2, 6, 0),
    "maxPower": (2, 6, 0),
    "nominalVoltage": (2, 6, 0),
    "sharesRejectedReasons": (2, 6, 0),
    "temptarget": (2, 7, 0),
    "expectedHashrate": (2, 8, 0),
    "poolDifficulty": (2, 9, 0),
    "responseTime": (2, 9, 0),
    "axeOSVersion": (2, 9, 0),
    "statsFrequency": (2, 9, 0),
    "minFanSpeed": (2, 10, 0),
    "temp2": (2, 10, 0),
    "manualFanSpeed": (2, 11, 0),
    "errorPercentage": (2, 11, 0),
    "fan2rpm": (2, 11, 0),
    "freeHeapInternal": (2, 11, 0),
    "hashRate_1m": (2, 12, 0),
    "resetReason": (2, 12, 0),
    "actualFrequency": (2, 14, 0),
    "miningPaused": (2, 14, 0),
    "cpuUsage": (2, 14, 0),
    "hardware_fault": (2, 14, 0),
    "pools": (2, 15, 0),
    "totalUptimeSeconds": (2, 15, 0),
}
_NEWEST_FIRST = sorted(KEY_SINCE.items(), key=lambda item: item[1], reverse=True)


@dataclass(frozen=True)
class Capabilities:
    generation: str  # 'A'..'E' per §1, '?' for dev/beta builds, unknown or unparseable
    live_frequency: bool  # §5.3: a PATCHed frequency is applied without a restart
    actual_frequency: bool  # §4.1: info carries actualFrequency (v2.14+)
    statistics: bool  # §8: /api/system/statistics exists (v2.8+)
    partial_patch_crashes: bool  # §5.2: v2.0.0–v2.0.3 crash on a partial PATCH: never write
    fan_key: str  # PATCH key for the manual fan duty (§5.1)
    basis: str = "version"  # what decided: "version", "keys" (what the device shows), "none"
    why_not: str | None = None  # set when tempctl must not write: the reason, for alarm/alert
    base: Version | None = None  # the release whose behaviour the flags follow

    @property
    def trip_latches(self) -> bool:
        """v2.1.9-v2.10 latch the overheat trip at 50 MHz until someone writes (§9.2)."""
        return self.base is not None and (2, 1, 9) <= self.base < (2, 11, 0)

    @property
    def can_write(self) -> bool:
        return self.why_not is None


def parse_version(version: str | None) -> tuple[Version | None, bool]:
    """``"v2.13.0-12-gabc"`` → ``((2, 13, 0), False)``; the flag says "exact release tag".

    Accepts ``2.15.0``, ``v2.16.0-dev``, ``v2.10.0b1`` and ``v2.15`` (patch 0, not exact).
    The project's single version parser (the firmware model uses it too).
    """
    if not isinstance(version, str):
        return None, False
    match = _VERSION.match(version)
    if not match:
        return None, False
    major, minor, patch, suffix = match.groups()
    parsed = (int(major), int(minor), int(patch or 0))
    return parsed, patch is not None and suffix.strip() == ""


def format_version(version: Version) -> str:
    return "v{}.{}.{}".format(*version)


def key_floor(keys: Iterable[str]) -> Version | None:
    """The newest release whose keys the info body shows: the firmware is at least that."""
    if not isinstance(keys, (Mapping, AbstractSet)):
        keys = set(keys)
    # Newest first, so the first key present is the answer: a recent body (the usual case)
    # stops at once instead of walking its hundred keys.
    for key, since in _NEWEST_FIRST:
        if key in keys:
            return since
    return None


def capabilities(
    version: str | None,
    asic_model: str | None,
    *,
    floor: str | Version | None = None,
    actual_frequency: float | None = None,
) -> Capabilities:
    """What the firmware can do, from ``version`` and ``ASICModel`` of the info body.

    A dev build (git describe, ``-dev``) or a beta gets generation '?' but the flags of its
    base release. When the version is not a release number (``"virtual"``, a git hash),
    the evidence decides: ``floor`` (``key_floor`` of the info keys, as kept in
    ``Reading.firmware_floor``) and an ``actualFrequency`` in the reading (v2.14+). With
    no evidence newer than v2.0.3 the answer is "do not write", with the reason.
    """
    parsed, release = parse_version(version)
    basis = "version"
    if parsed is None:
        evidence = [v for v in (_as_version(floor),) if v is not None]
        if actual_frequency is not None:
            evidence.append(KEY_SINCE["actualFrequency"])
        best = max(evidence) if evidence else None
        if best is None or best < FIRST_SAFE_PATCH:
            return Capabilities(
                "?",
                False,
                False,
                False,
                True,
                "manualFanSpeed",
                basis="none",
                why_not=(
                    f"firmware version {version!r} is not a release number and the device "
                    "shows nothing newer than v2.0.3 (v2.0.0-v2.0.3 crash on a partial PATCH, "
                    "axeos-api.md §5.2)"
                ),
            )
        parsed, release, basis = best, False, "keys"
    generation = "?"
    for first, letter in _GENERATIONS:
        if parsed >= first:
            generation = letter
    if not release:
        generation = "?"
    chip = (asic_model or "").strip().upper()
    if parsed >= (2, 12, 0):
        live = True  # every chip, BM1397 included, ramps live from v2.12.0
    else:
        # v2.2–v2.11: live for BM1366/68/70 only; BM1397 and unknown chips need a restart.
        live = parsed >= (2, 2, 0) and chip not in ("", "BM1397")
    crashes = parsed < FIRST_SAFE_PATCH
    return Capabilities(
        generation=generation,
        live_frequency=live,
        actual_frequency=parsed >= (2, 14, 0),
        statistics=parsed >= (2, 8, 0),
        partial_patch_crashes=crashes,
        fan_key="manualFanSpeed" if parsed >= (2, 11, 0) else "fanspeed",
        basis=basis,
        base=parsed,
        why_not=(
            f"firmware {version!r} is v2.0.0-v2.0.3, which crashes on a partial PATCH "
            "(axeos-api.md §5.2)"
            if crashes
            else None
        ),
    )


def capabilities_of(reading) -> Capabilities:
    """``capabilities`` from everything a ``Reading`` carries (version, chip, evidence).

    ``firmware_floor`` is not in the log, so a replay of an odd-version device decides
    from ``actual_frequency`` alone; a live reading may know more (its info keys).
    """
    return capabilities(
        reading.version,
        reading.asic_model,
        floor=getattr(reading, "firmware_floor", None),
        actual_frequency=reading.actual_frequency,
    )


@dataclass(frozen=True, slots=True)
class DeviceCapabilities:
    """What the per-poll driver needs to know (core.driver.Capabilities), from one reading."""

    live_frequency: bool
    trip_latches: bool
    write_refused: str | None


def reading_capabilities(reading) -> DeviceCapabilities:
    """The driver's view of ``capabilities_of(reading)``."""
    caps = capabilities_of(reading)
    return DeviceCapabilities(caps.live_frequency, caps.trip_latches, caps.why_not)


def _as_version(value: str | Version | None) -> Version | None:
    if value is None:
        return None
    if isinstance(value, tuple):
        return value
    return parse_version(value)[0]
