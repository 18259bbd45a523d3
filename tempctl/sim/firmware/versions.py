"""Firmware versions: parsing, generation templates and which keys each release has.

Version numbers come from ``tempctl.device.parse_version`` (the one parser); the
tables are axeos-api.md §1 (generations) and §4.1/§4.2 (first release with a key).
"""

from __future__ import annotations

from tempctl.device import parse_version

__all__ = [
    "GEN_START",
    "KEY_SINCE",
    "KEY_UNTIL",
    "TEMPLATES",
    "Version",
    "loop_period_s",
    "version_of",
]

Version = tuple[int, int, int]


def version_of(text: str) -> Version:
    """``"v2.13.0-12-gabc"`` -> (2, 13, 0). ValueError for anything without a release number."""
    parsed, _ = parse_version(text)
    if parsed is None:
        raise ValueError(f"not a firmware version: {text!r} (expected e.g. v2.15.0)")
    return parsed


def loop_period_s(v: Version) -> float:
    """§4.3: power-management loop period."""
    if v >= (2, 14, 0):
        return 0.1
    if v >= (2, 7, 0):
        return 1.8
    if v >= (2, 1, 0):
        return 2.0
    return 5.0


# Template per generation (§1); a version uses the newest template not newer than itself.
TEMPLATES: list[tuple[Version, str]] = [
    ((2, 1, 10), "v2.1.10_ultra-204_BM1366.json"),
    ((2, 4, 5), "v2.4.5_supra-401_BM1368.json"),
    ((2, 10, 1), "v2.10.1_gamma-601_BM1370.json"),
    ((2, 13, 2), "v2.13.2_hex-302_6xBM1366.json"),
    ((2, 15, 0), "v2.15.0_gamma-602_BM1370.json"),
]
GEN_START = [(0, 0, 0), (2, 4, 0), (2, 6, 0), (2, 11, 0), (2, 14, 0)]  # §1 generation boundaries

# First release with a key (§4.1/§4.2); the template of the generation is trimmed to the version.
KEY_SINCE: dict[str, Version] = {
    "vrTemp": (2, 1, 9),
    "fanrpm": (2, 1, 9),
    "asicCount": (2, 1, 9),
    "smallCoreCount": (2, 1, 9),
    "overheat_mode": (2, 1, 10),
    "macAddr": (2, 3, 0),
    "stratumDiff": (2, 4, 1),
    "idfVersion": (2, 4, 3),
    "wifiRSSI": (2, 6, 0),
    "maxPower": (2, 6, 0),
    "nominalVoltage": (2, 6, 0),
    "sharesRejectedReasons": (2, 6, 0),
    "temptarget": (2, 7, 0),
    "displayTimeout": (2, 7, 0),
    "expectedHashrate": (2, 8, 0),
    "display": (2, 8, 0),
    "poolDifficulty": (2, 9, 0),
    "responseTime": (2, 9, 0),
    "axeOSVersion": (2, 9, 0),
    "statsFrequency": (2, 9, 0),
    "rotation": (2, 9, 0),
    "temp2": (2, 10, 0),
    "minFanSpeed": (2, 10, 0),
    "hashRate_1m": (2, 12, 0),
    "hashRate_10m": (2, 12, 0),
    "hashRate_1h": (2, 12, 0),
    "resetReason": (2, 12, 0),
    "poolConnectionInfo": (2, 13, 0),
    "showNewBlock": (2, 13, 0),
    "coinbaseOutputs": (2, 13, 0),
    "coinbaseValueTotalSatoshis": (2, 13, 0),
    "coinbaseValueUserSatoshis": (2, 13, 0),
    "sharesPending": (2, 15, 0),
    "workReceived": (2, 15, 0),
    "minFreeHeap": (2, 15, 0),
    "maxAllocHeap": (2, 15, 0),
    "totalUptimeSeconds": (2, 15, 0),
    "totalHashes": (2, 15, 0),
    "totalLog2Work": (2, 15, 0),
    "pools": (2, 15, 0),
    "primaryPoolIndex": (2, 15, 0),
    "secondaryPoolIndex": (2, 15, 0),
    "partitions": (2, 15, 0),
    "fullHostname": (2, 15, 0),
    "mdnsHostname": (2, 15, 0),
}
KEY_UNTIL: dict[str, Version] = {  # first release WITHOUT the key
    "asicCount": (2, 9, 0),
    "stratumDiff": (2, 9, 0),
    "flipscreen": (2, 9, 0),
    "invertfanpolarity": (2, 7, 0),
}
