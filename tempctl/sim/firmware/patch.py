"""PATCH /api/system: what each firmware generation accepts (axeos-api.md §5, §14).

v2.11+ is table-driven (the settings table in main/nvs_config.c, checks in
main/http_server/http_server.c): every known key is type- and range-checked and one bad
key rejects the whole body. v2.0.4-v2.10 take almost anything. Pure functions: they turn
a request body into the settings to store, or raise ``WrongInput``.
"""

from __future__ import annotations

import json
import math

from tempctl.sim.firmware.versions import Version

__all__ = [
    "DISPLAYS",
    "PATCH_MAX_BYTES",
    "PATCH_TABLE",
    "PATCH_TABLE_LEGACY_STRATUM",
    "PATCH_TABLE_V215",
    "POOL_FIELDS",
    "V200_REQUIRED",
    "WrongInput",
    "legacy_settings",
    "parse_json",
    "strip_local",
    "validated_settings",
]

PATCH_MAX_BYTES = 10240  # §2: a body of >= 10240 bytes gets 500 "content too long"

_NUM, _INT, _BOOL, _STR = "num", "int", "bool", "str"
# key: (type, lo, hi)  for strings lo/hi are lengths
PATCH_TABLE: dict[str, tuple[str, float, float]] = {
    "frequency": (_NUM, 1, 65535),
    "coreVoltage": (_INT, 1, 65535),
    "autofanspeed": (_BOOL, 0, 1),
    "manualFanSpeed": (_INT, 0, 100),
    "minFanSpeed": (_INT, 0, 99),
    "temptarget": (_INT, 35, 66),
    "overheat_mode": (_BOOL, 0, 0),
    "overclockEnabled": (_BOOL, 0, 1),
    "statsFrequency": (_INT, 0, 65535),
    "displayTimeout": (_INT, -1, 65535),
    "rotation": (_INT, 0, 270),
    "invertscreen": (_BOOL, 0, 1),
    "displayOffset": (_INT, 0, 255),  # §14: max 255 (main/nvs_config.c ~l.70)
    "display": (_STR, 0, 32),
    "hostname": (_STR, 1, 32),
    "ssid": (_STR, 1, 32),
    "wifiPass": (_STR, 0, 63),
    "useFallbackStratum": (_BOOL, 0, 1),
}
PATCH_TABLE_LEGACY_STRATUM: dict[str, tuple[str, float, float]] = {  # accepted up to v2.14.x
    "stratumURL": (_STR, 0, 128),
    "stratumUser": (_STR, 0, 128),
    "stratumPassword": (_STR, 0, 64),
    "stratumPort": (_INT, 1, 65535),
    "stratumSuggestedDifficulty": (_INT, 0, 2**32 - 1),
    "stratumExtranonceSubscribe": (_BOOL, 0, 1),
    "stratumTLS": (_INT, 0, 2),
    "stratumCert": (_STR, 0, 8192),
    "stratumDecodeCoinbase": (_BOOL, 0, 1),
    "fallbackStratumURL": (_STR, 0, 128),
    "fallbackStratumUser": (_STR, 0, 128),
    "fallbackStratumPassword": (_STR, 0, 64),
    "fallbackStratumPort": (_INT, 1, 65535),
    "fallbackStratumSuggestedDifficulty": (_INT, 0, 2**32 - 1),
    "fallbackStratumExtranonceSubscribe": (_BOOL, 0, 1),
    "fallbackStratumTLS": (_INT, 0, 2),
    "fallbackStratumCert": (_STR, 0, 8192),
    "fallbackStratumDecodeCoinbase": (_BOOL, 0, 1),
}
PATCH_TABLE_V215: dict[str, tuple[str, float, float]] = {
    "primaryPoolIndex": (_INT, 0, 7),
    "secondaryPoolIndex": (_INT, 0, 7),
    "useCustomWWW": (_BOOL, 0, 1),
}
# v2.0.0-v2.0.3 PATCH reads all of these and crashes on a missing one (§5.2)
V200_REQUIRED = (
    "stratumURL",
    "stratumUser",
    "stratumPort",
    "ssid",
    "wifiPass",
    "coreVoltage",
    "frequency",
    "flipscreen",
    "invertscreen",
)


# (estimate) §14: an unknown ``display`` is 400 (http_server.c ~l.914). The reference names
# only the examples' "SSD1306 (128x32)"; the others are the display drivers of ESP-Miner
# master's UI list as we know it. Checked from v2.15 (the reference read HEAD only).
DISPLAYS = (
    "NONE",
    "SSD1306 (128x32)",
    "SSD1309 (128x64)",
    "SH1107 (64x128)",
    "SH1107 (128x128)",
)
# v2.15 pool slot fields (esp-miner-openapi.master.yaml "Pool"); the first three are required
# (§14: a pools entry without them is 400, http_server.c ~l.728).
POOL_FIELDS: dict[str, tuple[str, float, float]] = {
    "stratumURL": (_STR, 1, 128),
    "stratumPort": (_INT, 1, 65535),
    "stratumUser": (_STR, 1, 128),
    "stratumPassword": (_STR, 0, 64),
    "stratumSuggestedDifficulty": (_INT, 0, 2**32 - 1),
    "stratumExtranonceSubscribe": (_BOOL, 0, 1),
    "stratumTLS": (_INT, 0, 2),
    "stratumCert": (_STR, 0, 8192),
    "stratumDecodeCoinbase": (_BOOL, 0, 1),
    "stratumV2RequireAuth": (_BOOL, 0, 1),
    "stratumV2AuthorityPubkey": (_STR, 0, 64),
}
POOL_REQUIRED = ("stratumURL", "stratumPort", "stratumUser")
POOL_ENUMS = {"stratumProtocol": ("SV1", "SV2"), "stratumV2ChannelType": ("standard", "extended")}


class WrongInput(Exception):
    """The firmware answers 400 "Wrong API input" and stores nothing."""


def _check_value(kind: str, lo: float, hi: float, value: object) -> object:
    if kind == _STR:
        if not isinstance(value, str) or not lo <= len(value) <= hi:
            raise WrongInput
        return value
    if kind == _BOOL and isinstance(value, bool):
        number: float = int(value)
    elif isinstance(value, bool) or not isinstance(value, (int, float)):
        raise WrongInput  # numbers inside strings ("500") are rejected too
    else:
        number = value
    if not math.isfinite(number) or not lo <= number <= hi:
        raise WrongInput
    if kind == _NUM:
        return float(number)
    return int(number)


def parse_json(raw: bytes) -> object:
    """The body as cJSON reads it: ValueError for bad JSON (cJSON has no NaN/Infinity)."""

    def no_constants(name: str) -> float:
        raise ValueError(name)

    return json.loads(raw.decode("utf-8"), parse_constant=no_constants)


def strip_local(hostname: str) -> str:
    """§14: v2.15 stores the hostname without a ".local" suffix (http_server.c ~l.842, l.971)."""
    return hostname[: -len(".local")] if hostname.lower().endswith(".local") else hostname


def _pool(entry: object) -> dict[str, object]:
    if not isinstance(entry, dict):
        raise WrongInput
    slot = entry.get("id")
    # §14: an id of 0.0 is accepted as 0 (http_server.c ~l.935); it must name a slot 0-7
    if isinstance(slot, bool) or not isinstance(slot, (int, float)) or not math.isfinite(slot):
        raise WrongInput
    if slot != int(slot) or not 0 <= slot <= 7:
        raise WrongInput
    if any(key not in entry for key in POOL_REQUIRED):
        raise WrongInput
    clean: dict[str, object] = {"id": int(slot)}
    for key, value in entry.items():
        if key in POOL_FIELDS:
            clean[key] = _check_value(*POOL_FIELDS[key], value)
        elif key in POOL_ENUMS:
            if value not in POOL_ENUMS[key]:
                raise WrongInput
            clean[key] = value
    return clean


def _table(v: Version) -> dict[str, tuple[str, float, float]]:
    table = dict(PATCH_TABLE)
    table.update(PATCH_TABLE_LEGACY_STRATUM if v < (2, 15, 0) else PATCH_TABLE_V215)
    return table


def validated_settings(v: Version, data: dict) -> dict[str, object]:
    """v2.11+: the settings to store, or WrongInput; unknown keys are ignored (§5.2)."""
    table = _table(v)
    clean: dict[str, object] = {}
    for key, value in data.items():
        if key == "pools" and v >= (2, 15, 0):
            if not isinstance(value, list):
                raise WrongInput
            clean["pools"] = [_pool(p) for p in value]
            continue
        if key not in table:
            continue
        clean[key] = _check_value(*table[key], value)
        if key == "rotation" and clean[key] not in (0, 90, 180, 270):
            raise WrongInput
        if key == "display" and v >= (2, 15, 0) and clean[key] not in DISPLAYS:
            raise WrongInput
    if v >= (2, 15, 0) and "hostname" in clean:
        clean["hostname"] = strip_local(str(clean["hostname"]))
        if not clean["hostname"]:
            raise WrongInput
    return clean


def legacy_settings(v: Version, data: dict) -> dict[str, object]:
    """v2.0.4-v2.10: no type or range checks; cJSON valueint of a non-number is 0 (§5.2)."""

    def as_int(value: object) -> int:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            return 0
        return int(max(-(2**31), min(2**31 - 1, value)))

    clean: dict[str, object] = {}
    for key in ("frequency", "coreVoltage"):
        if key in data:
            value = data[key]
            if key == "frequency" and v >= (2, 10, 0):
                number: float = (
                    value
                    if isinstance(value, (int, float)) and not isinstance(value, bool)
                    else 0.0
                )
            else:
                number = as_int(value) % 65536  # u16 NVS entry wraps
            if v >= (2, 3, 0) and number <= 0:
                continue  # §5.2: from v2.3.0 values <= 0 are ignored
            clean[key] = number
    for key in ("autofanspeed", "fanspeed", "temptarget", "minFanSpeed", "statsFrequency"):
        if key in data:
            clean[key] = as_int(data[key])
    if "overheat_mode" in data:
        clean["overheat_mode"] = 0  # §5.2: any value clears the flag
    if isinstance(data.get("hostname"), str):
        clean["hostname"] = data["hostname"]
    for key in ("stratumURL", "stratumUser", "fallbackStratumURL", "fallbackStratumUser"):
        if isinstance(data.get(key), str):
            clean[key] = data[key]
    for key in ("stratumPort", "fallbackStratumPort"):
        if key in data:
            clean[key] = as_int(data[key]) % 65536
    return clean
