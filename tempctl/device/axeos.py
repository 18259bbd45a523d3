"""Talk to one Bitaxe over the AxeOS HTTP API, and turn its JSON into a ``Reading``.

This is the only module that imports ``requests``. Section numbers (§) refer to
shared/reference/axeos-api.md, which was read out of bitaxeorg/ESP-Miner v2.0.0 … v2.15.0.

Two halves:

* pure helpers (``normalize_url``, ``plausible_temp``, ``parse_info``, ``capabilities``,
  ``parse_statistics``) that need no network, and
* ``Client``: explicit timeouts on every request, a capped streamed body, urllib3 retries
  for GET/PATCH only, never a retried POST, and one ``AxeOSError`` family for every way
  a request can fail.
"""

from __future__ import annotations

import http.client
import ipaddress
import json
import math
import re
import socket
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any, Self
from urllib.parse import urlsplit

import requests
from requests.adapters import HTTPAdapter
from urllib3.exceptions import (
    ConnectTimeoutError,
    NameResolutionError,
    NewConnectionError,
    ProtocolError,
    ReadTimeoutError,
)
from urllib3.util.retry import Retry

from tempctl import __version__
from tempctl.core.reading import Reading

INFO_PATH = "/api/system/info"
SYSTEM_PATH = "/api/system"
RESTART_PATH = "/api/system/restart"
ASIC_PATH = "/api/system/asic"
STATISTICS_PATH = "/api/system/statistics"

MAX_BODY = 64 * 1024  # a v2.15 info body is ~4.3 KB; anything near 64 KiB is not AxeOS
# 720 points (§8) × the backfill columns stay under ~60 KB, but v2.8–v2.10 ignore
# ?columns= and send 12 columns for every point, so statistics get a larger (still fixed) cap.
STATS_MAX_BODY = 256 * 1024
PATCH_BODY_LIMIT = 10240  # §2: the firmware answers 500 "content too long" at >= 10240 bytes
RETRY_STATUSES = (500, 502, 503, 504)
# §6: HTTP answers 5-10 s after a reboot and the ASIC is up 15-40 s after it; a trip needs
# a die above 75 °C (§9.1), which takes minutes from a cold boot.
BOOT_GRACE_S = 60

# §5.1: the API accepts 1 … 65535 for frequency (MHz) and coreVoltage (mV).
API_MIN, API_MAX = 1, 65535


# --- errors ------------------------------------------------------------------


class AxeOSError(Exception):
    """Any failed exchange with the device. ``kind`` is a stable string for logs and metrics."""

    kind = "error"

    def __init__(self, message: str, *, url: str, status: int | None = None) -> None:
        super().__init__(message)
        self.url = url
        self.status = status


class Unreachable(AxeOSError):
    """Connection refused, name resolution failed, or the connection was reset."""

    kind = "unreachable"


class Timeout(AxeOSError):
    """Connect or read timeout."""

    kind = "timeout"


class BadResponse(AxeOSError):
    """Non-200 on GET, a redirect, non-JSON, truncated JSON, not an object, 5xx after retries."""

    kind = "bad_response"


class TooLarge(BadResponse):
    """The body went over the cap; detected while streaming, the rest is never read."""

    kind = "too_large"


class Rejected(AxeOSError):
    """A write was answered 4xx, e.g. 400 "Wrong API input" (nothing was applied, §5.2)."""

    kind = "rejected"

    def __init__(self, message: str, *, url: str, status: int, body: str) -> None:
        super().__init__(message, url=url, status=status)
        self.body = body


# --- URLs ----------------------------------------------------------------------

_HOSTNAME = re.compile(r"^[a-z0-9_]([a-z0-9_.-]{0,251}[a-z0-9_])?\.?$")


def normalize_url(value: str) -> str:
    """Return ``http://host[:port]`` for a device address as a user would type it.

    Accepts ``http://bitaxe.local``, ``bitaxe.local``, ``host:port``, ``[::1]:8080``,
    ``::1`` and ``localhost``; strips a trailing ``/`` and a redundant ``:80``.
    Refuses empty values, paths, queries, user info and any scheme but http.
    """
    if not isinstance(value, str) or not value.strip():
        raise ValueError("device address is empty")
    text = value.strip()
    scheme, sep, rest = text.partition("://")
    if sep:
        scheme = scheme.lower()
        if scheme == "https":
            raise ValueError(
                f"{value!r}: AxeOS serves plain HTTP only (there is no TLS on the device); "
                "use http://host[:port]"
            )
        if scheme != "http":
            raise ValueError(f"{value!r}: unsupported scheme {scheme!r}; use http://host[:port]")
    else:
        rest = text
    rest = rest.rstrip("/")
    if not rest:
        raise ValueError(f"{value!r}: no host")
    if any(c in rest for c in "/?#"):
        raise ValueError(f"{value!r}: give only host[:port], without a path or query")
    if "@" in rest:
        raise ValueError(f"{value!r}: user info is not supported (AxeOS has no authentication)")

    port: int | None = None
    if rest.count(":") >= 2 and not rest.startswith("["):
        host = _ipv6(rest, value)  # a bare IPv6 address cannot carry a port
    else:
        if rest.startswith("["):
            _ipv6(rest.partition("]")[0] + "]", value)  # urlsplit's own message is vaguer
        parts = urlsplit("http://" + rest)
        try:
            port = parts.port
        except ValueError as exc:
            raise ValueError(f"{value!r}: bad port ({exc})") from None
        raw_host = parts.hostname or ""
        if rest.startswith("["):
            host = _ipv6(raw_host, value)
        elif _is_ipv4(raw_host) or _HOSTNAME.match(raw_host):
            host = raw_host
        else:
            raise ValueError(f"{value!r}: {raw_host!r} is not a valid host name or address")
    if port == 0:
        raise ValueError(f"{value!r}: port 0 is not a usable port")
    suffix = f":{port}" if port not in (None, 80) else ""
    return f"http://{host}{suffix}"


def _ipv6(text: str, original: str) -> str:
    try:
        return f"[{ipaddress.IPv6Address(text.strip('[]'))}]"
    except ValueError:
        raise ValueError(f"{original!r}: {text!r} is not a valid IPv6 address") from None


def _is_ipv4(text: str) -> bool:
    try:
        ipaddress.IPv4Address(text)
    except ValueError:
        return False
    return True


# --- plausibility ---------------------------------------------------------------

# §10 "Temperature sensor behaviour". The firmware trips at 75 °C ASIC / 105 °C VR (§9.1),
# so a live reading above 150 °C is a broken sensor or a broken body, not a hot chip.
ABSURD_TEMP = 150.0
# EMC2101 diode open circuit reads ≈127.0 °C, short ≈127.9 °C (0.125 °C steps).
DIODE_FAULT_BAND = (126.5, 128.5)
# EMC2103 (GammaTurbo) diode fault reads about −128 °C.
EMC2103_FAULT_BAND = (-129.0, -127.0)
_ASIC_FIELDS = frozenset({"temp", "temp2", "asicTemp", "asicTemp2"})


def _fmt(value: Any) -> str:
    if isinstance(value, float) and math.isfinite(value):
        return f"{value:g}"
    return repr(value)


def plausible_temp(value: Any, *, field: str = "temp") -> tuple[float | None, str | None]:
    """Return ``(°C, None)`` for a believable temperature, else ``(None, reason)``.

    ``reason`` reads like ``"temp=-1: sensor not ready"``. Rules from §10: −1 means no
    reading; any value ≤ 0 is "no reading", never "cold" (old firmware reported an I2C
    error as 0); ≈127 °C is an EMC2101 diode fault; ≈−128 °C an EMC2103 diode fault.
    For ``vrTemp`` a 0 means the board has no TPS546: ``(None, None)``, not an error.
    """
    label = f"{field}={_fmt(value)}"
    if value is None:
        return None, f"{field} missing"
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None, f"{label}: not a number"
    temp = float(value)
    if not math.isfinite(temp):
        return None, f"{label}: not a finite number"
    if field == "vrTemp" and temp == 0:
        return None, None  # §10: vrTemp is 0 on boards without a TPS546
    if temp == -1:
        return None, f"{label}: sensor not ready (ASIC not initialised, paused or I2C error)"
    if EMC2103_FAULT_BAND[0] <= temp <= EMC2103_FAULT_BAND[1]:
        return None, f"{label}: EMC2103 diode fault"
    if temp == 0:
        return None, f"{label}: no reading (I2C read error on firmware before v2.11)"
    if temp < 0:
        return None, f"{label}: below zero, treated as no reading"
    if field in _ASIC_FIELDS and DIODE_FAULT_BAND[0] <= temp <= DIODE_FAULT_BAND[1]:
        return None, f"{label}: EMC2101 diode open/short fault (reads ~127 °C)"
    if temp > ABSURD_TEMP:
        return None, f"{label}: above {ABSURD_TEMP:g} °C, not a real reading"
    return temp, None


def _number(
    body: Mapping[str, Any],
    key: str,
    notes: list[str],
    *,
    low: float,
    high: float,
    integer: bool = False,
) -> float | int | None:
    """A JSON number within [low, high], else None plus a note. Absent keys are no error:
    older firmware simply lacks them (§4.2)."""
    if key not in body:
        return None
    value = body[key]
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        notes.append(f"{key}={_fmt(value)}: not a number")
        return None
    if not (math.isfinite(value) and low <= value <= high):
        notes.append(f"{key}={_fmt(value)}: outside {low:g}..{high:g}")
        return None
    return round(value) if integer else float(value)


def _flag(body: Mapping[str, Any], key: str, notes: list[str]) -> bool | None:
    """AxeOS flags are 0/1 numbers, or JSON booleans on newer firmware."""
    if key not in body:
        return None
    value = body[key]
    if isinstance(value, bool):
        return value
    if isinstance(value, (int, float)) and value in (0, 1):
        return value == 1
    notes.append(f"{key}={_fmt(value)}: not 0/1")
    return None


def _text(body: Mapping[str, Any], key: str) -> str | None:
    value = body.get(key)
    return value if isinstance(value, str) and value else None


def _hottest(
    temp: Any, temp2: Any, notes: list[str], *, names: tuple[str, str] = ("temp", "temp2")
) -> float | None:
    """The ASIC temperature to control on: ``temp``, or the hotter of ``temp``/``temp2``.

    The firmware trips when either sensor passes 75 °C (§9.1), so the hotter one counts.
    ``temp2`` ≤ 0 just means "no second sensor" (−1 on v2.11+, 0 on v2.10, §10). A
    failed primary sensor makes the reading invalid even when ``temp2`` looks fine.
    """
    value, reason = plausible_temp(temp, field=names[0])
    if reason:
        notes.append(reason)
    if isinstance(temp2, (int, float)) and not isinstance(temp2, bool) and temp2 in (0, -1):
        return value
    second, reason2 = plausible_temp(temp2, field=names[1])
    if reason2 and temp2 is not None:
        notes.append(reason2)
    if value is None or second is None:
        return value
    return max(value, second)


# --- parsing /api/system/info -------------------------------------------------------


def parse_info(body: Mapping[str, Any], device: str, ts_ms: int) -> Reading:
    """Turn a ``GET /api/system/info`` body from any firmware generation into a Reading.

    Every field used is type- and range-checked: a wrong type, NaN, 1e308 or a negative
    frequency becomes None with a note in ``error``; a missing key is just None.
    ``temp`` is None (the reading is invalid) whenever the ASIC temperature is not
    plausible (see ``plausible_temp``); ``raw_temp`` keeps what the device sent.
    """
    notes: list[str] = []
    if not isinstance(body, Mapping):
        notes.append(f"body is {type(body).__name__}, not a JSON object")
        body = {}

    raw = body.get("temp")
    raw_temp = (
        float(raw)
        if isinstance(raw, (int, float)) and not isinstance(raw, bool) and math.isfinite(raw)
        else None
    )
    temp = _hottest(raw, body.get("temp2"), notes)
    vr_temp, vr_reason = plausible_temp(body.get("vrTemp", 0), field="vrTemp")
    if vr_reason:
        notes.append(vr_reason)

    fan_pct, fan_rpm = _fan(body, notes)
    autofan = _flag(body, "autofanspeed", notes)
    actual = _number(body, "actualFrequency", notes, low=0, high=API_MAX)
    return Reading(
        device=device,
        ts_ms=ts_ms,
        temp=temp,
        vr_temp=vr_temp,
        frequency=_number(body, "frequency", notes, low=API_MIN, high=API_MAX),
        actual_frequency=actual,
        core_voltage=_number(body, "coreVoltage", notes, low=API_MIN, high=API_MAX, integer=True),
        core_voltage_actual=_number(
            body, "coreVoltageActual", notes, low=0, high=API_MAX, integer=True
        ),
        # 1e5 GH/s is ~27x a SupraHex at its defaults (§10), far above any Bitaxe.
        hashrate=_number(body, "hashRate", notes, low=0, high=1e5),
        power=_number(body, "power", notes, low=0, high=1000),
        fan_pct=fan_pct,
        fan_rpm=fan_rpm,
        autofan=autofan,
        uptime_s=_number(body, "uptimeSeconds", notes, low=0, high=2**32, integer=True),
        version=_text(body, "version"),
        asic_model=_text(body, "ASICModel"),
        hostname=_text(body, "hostname"),
        mac=_text(body, "macAddr"),
        overheat=_overheat(
            body,
            actual,
            autofan,
            fan_pct,
            notes,
            _number(body, "uptimeSeconds", [], low=0, high=2**32),
        ),
        raw_temp=raw_temp,
        error="; ".join(notes) or None,
    )


def _fan(body: Mapping[str, Any], notes: list[str]) -> tuple[float | None, int | None]:
    """Applied fan duty % and fan-1 rpm across the renames of §4.2.

    From v2.1.9 (when ``fanrpm`` appeared) ``fanspeed`` is the duty actually applied.
    Before that ``fanspeed`` was the manual *setting* and ``fanSpeed``/``fanSpeedRpm``
    the rpm, so the duty is only known when the fan is in manual mode.
    """
    rpm_key = next((k for k in ("fanrpm", "fanSpeedRpm", "fanSpeed") if k in body), None)
    rpm = _number(body, rpm_key, notes, low=0, high=30000, integer=True) if rpm_key else None
    duty = _number(body, "fanspeed", notes, low=0, high=100)
    if "fanrpm" not in body and _flag(body, "autofanspeed", []) is not False:
        duty = None  # pre-v2.1.9 with autofan: fanspeed is a setting, not the duty
    return duty, rpm


def _overheat(
    body: Mapping[str, Any],
    actual: float | None,
    autofan: bool | None,
    fan_pct: float | None,
    notes: list[str],
    uptime: float | None = None,
) -> bool:
    """The firmware's own overheat handling is showing (§9.2, §9.3).

    ``overheat_mode`` (``overheat`` on v2.1.9) is reliable up to v2.13. On v2.14+ it is
    read from a RAM copy that a poller will practically never see set, so there the
    signature is: PLL at 50 MHz, expectedHashrate 0, not paused by the user, autofan
    off and the fan forced to 100 %. A device that is still booting looks the same
    when its fan is fixed at 100 % (§6: the ramp starts at 50 MHz, no hashrate yet), so
    the signature does not count within BOOT_GRACE_S of a boot.
    """
    for key in ("overheat_mode", "overheat"):
        if _flag(body, key, notes):
            return True
    if actual is None or abs(actual - 50) > 0.5:
        return False
    if uptime is not None and uptime < BOOT_GRACE_S:
        return False
    expected = _number(body, "expectedHashrate", notes, low=0, high=1e5)
    paused = _flag(body, "miningPaused", notes)
    manual = _number(body, "manualFanSpeed", notes, low=0, high=100)
    fan_full = (fan_pct is not None and fan_pct >= 99.5) or (fan_pct is None and manual == 100)
    return expected == 0 and paused is False and autofan is False and fan_full


# --- capabilities -------------------------------------------------------------------

_VERSION = re.compile(r"^v?(\d+)\.(\d+)\.(\d+)(.*)$")
# §1 generation table, as (first release, letter); the end bound is the next row.
_GENERATIONS = (
    ((2, 0, 0), "A"),
    ((2, 1, 9), "B"),
    ((2, 6, 0), "C"),
    ((2, 11, 0), "D"),
    ((2, 14, 0), "E"),
    ((2, 16, 0), "?"),  # newer than the reference: flags still follow the version
)


@dataclass(frozen=True)
class Capabilities:
    generation: str  # 'A'..'E' per §1, '?' for dev/beta builds, unknown or unparseable
    live_frequency: bool  # §5.3: a PATCHed frequency is applied without a restart
    actual_frequency: bool  # §4.1: info carries actualFrequency (v2.14+)
    statistics: bool  # §8: /api/system/statistics exists (v2.8+)
    partial_patch_crashes: bool  # §5.2: v2.0.0–v2.0.3 crash on a partial PATCH: never write
    fan_key: str  # PATCH key for the manual fan duty (§5.1)


def parse_version(version: str | None) -> tuple[tuple[int, int, int] | None, bool]:
    """``"v2.13.0-12-gabc"`` → ``((2, 13, 0), False)``; the flag says "exact release tag"."""
    if not isinstance(version, str):
        return None, False
    match = _VERSION.match(version.strip())
    if not match:
        return None, False
    major, minor, patch, suffix = match.groups()
    return (int(major), int(minor), int(patch)), suffix == ""


def capabilities(version: str | None, asic_model: str | None) -> Capabilities:
    """What the firmware can do, from ``version`` and ``ASICModel`` of the info body.

    A dev build (git describe, e.g. ``v2.13.0-12-gabc``) or a beta gets generation '?'
    but the flags of its base release. An unparseable version gets the cautious answer:
    no live frequency, and ``partial_patch_crashes`` so that tempctl does not write.
    """
    parsed, release = parse_version(version)
    if parsed is None:
        return Capabilities("?", False, False, False, True, "manualFanSpeed")
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
    return Capabilities(
        generation=generation,
        live_frequency=live,
        actual_frequency=parsed >= (2, 14, 0),
        statistics=parsed >= (2, 8, 0),
        partial_patch_crashes=parsed < (2, 0, 4),
        fan_key="manualFanSpeed" if parsed >= (2, 11, 0) else "fanspeed",
    )


# --- parsing /api/system/statistics ---------------------------------------------------

# §8 / ESP-Miner http_server.c: v2.8–v2.10 send these 12 labels in this order.
STATS_LABELS_V28 = (
    "hashRate", "temp", "vrTemp", "power", "voltage", "current",
    "coreVoltageActual", "fanspeed", "fanrpm", "wifiRSSI", "freeHeap", "timestamp",
)  # fmt: skip
# The columns backfill needs, requested with ?columns= on v2.11+ (older firmware ignores it).
STATS_COLUMNS = (
    "hashrate", "asicTemp", "asicTemp2", "vrTemp", "asicVoltage", "power", "fanSpeed", "fanRpm",
)  # fmt: skip
# Reading field ← (v2.11+ label, v2.8–v2.10 label)
_STATS_FIELDS = {
    "hashrate": ("hashrate", "hashRate"),
    "temp": ("asicTemp", "temp"),
    "temp2": ("asicTemp2", None),
    "vr_temp": ("vrTemp", "vrTemp"),
    "core_voltage_actual": ("asicVoltage", "coreVoltageActual"),
    "power": ("power", "power"),
    "fan_pct": ("fanSpeed", "fanspeed"),
    "fan_rpm": ("fanRpm", "fanrpm"),
}


def parse_statistics(
    body: Mapping[str, Any], device: str, now_ts_ms: int, uptime_s_now: int | None
) -> list[Reading]:
    """Readings (``backfilled=True``) from a ``GET /api/system/statistics`` body.

    Row timestamps are ms since boot; they become wall time through ``currentTimestamp``
    (same clock), taken at ``now_ts_ms``. Without ``currentTimestamp``, ``uptime_s_now``
    stands in. The buffer has no frequency column, so ``frequency`` stays None. Rows that
    are malformed or lie in the future are skipped.
    """
    if not isinstance(body, Mapping):
        return []
    rows = body.get("statistics")
    if not isinstance(rows, list) or not rows:
        return []
    labels = body.get("labels")
    if not (isinstance(labels, list) and all(isinstance(x, str) for x in labels)):
        labels = list(STATS_LABELS_V28)
    if "timestamp" not in labels:
        return []
    boot_ms = body.get("currentTimestamp")
    if isinstance(boot_ms, bool) or not isinstance(boot_ms, (int, float)):
        boot_ms = None if uptime_s_now is None else uptime_s_now * 1000
    if boot_ms is None or not math.isfinite(boot_ms) or boot_ms < 0:
        return []

    readings = []
    for row in rows:
        if not isinstance(row, list) or len(row) != len(labels):
            continue
        values = dict(zip(labels, row, strict=True))
        stamp = values["timestamp"]
        if isinstance(stamp, bool) or not isinstance(stamp, (int, float)):
            continue
        if not (math.isfinite(stamp) and 0 <= stamp <= boot_ms):
            continue
        readings.append(_stats_reading(values, device, now_ts_ms - int(boot_ms - stamp), stamp))
    return readings


def _stats_reading(values: dict[str, Any], device: str, ts_ms: int, stamp: float) -> Reading:
    notes: list[str] = []

    def pick(field: str) -> tuple[str | None, Any]:
        for label in _STATS_FIELDS[field]:
            if label is not None and label in values:
                return label, values[label]
        return None, None

    (temp_label, temp_value), (temp2_label, temp2_value) = pick("temp"), pick("temp2")
    temp = _hottest(
        temp_value, temp2_value, notes, names=(temp_label or "asicTemp", temp2_label or "temp2")
    )
    _, vr_value = pick("vr_temp")
    vr_temp, vr_reason = plausible_temp(0 if vr_value is None else vr_value, field="vrTemp")
    if vr_reason:
        notes.append(vr_reason)

    def num(field: str, high: float, integer: bool = False) -> float | int | None:
        label, _ = pick(field)
        if label is None:
            return None
        return _number(values, label, notes, low=0, high=high, integer=integer)

    raw = values.get(temp_label) if temp_label else None
    return Reading(
        device=device,
        ts_ms=ts_ms,
        temp=temp,
        vr_temp=vr_temp,
        core_voltage_actual=num("core_voltage_actual", API_MAX, integer=True),
        hashrate=num("hashrate", 1e5),
        power=num("power", 1000),
        fan_pct=num("fan_pct", 100),
        fan_rpm=num("fan_rpm", 30000, integer=True),
        uptime_s=int(stamp // 1000),
        raw_temp=float(raw)
        if isinstance(raw, (int, float)) and not isinstance(raw, bool) and math.isfinite(raw)
        else None,
        error="; ".join(notes) or None,
        backfilled=True,
    )


# --- transport ------------------------------------------------------------------------


def _chain(exc: BaseException) -> Iterator[BaseException]:
    """Every exception wrapped inside ``exc``: requests wraps urllib3, which wraps socket
    errors in ``args``, ``reason`` (MaxRetryError) and ``__cause__``."""
    seen: set[int] = set()
    stack: list[Any] = [exc]
    while stack:
        item = stack.pop()
        if not isinstance(item, BaseException) or id(item) in seen:
            continue
        seen.add(id(item))
        yield item
        stack.extend(item.args)
        stack.extend((getattr(item, "reason", None), item.__cause__, item.__context__))


def _transport_error(
    what: str, url: str, exc: BaseException, connect_timeout: float, read_timeout: float
) -> tuple[AxeOSError, bool]:
    """Map a requests/urllib3 failure to our error, plus "the request may have been sent"."""
    chain = list(_chain(exc))

    def has(*types: type[BaseException]) -> bool:
        return any(isinstance(e, types) for e in chain)

    # NewConnectionError subclasses ConnectTimeoutError in urllib3 2, so test it first.
    if has(NameResolutionError, socket.gaierror):
        return Unreachable(f"{what}: cannot resolve host name", url=url), False
    if has(ConnectionRefusedError):
        return Unreachable(f"{what}: connection refused", url=url), False
    if has(NewConnectionError):
        cause = next((e for e in chain if isinstance(e, OSError)), None)
        return Unreachable(f"{what}: cannot connect ({cause or 'no route'})", url=url), False
    if has(ConnectTimeoutError, requests.ConnectTimeout):
        return Timeout(f"{what}: connect timeout after {connect_timeout:g} s", url=url), False
    if has(ReadTimeoutError, requests.ReadTimeout, TimeoutError):
        return Timeout(f"{what}: read timeout after {read_timeout:g} s", url=url), True
    if has(ProtocolError, http.client.HTTPException, ConnectionError):
        return Unreachable(f"{what}: connection closed or reset by the device", url=url), True
    return Unreachable(f"{what}: {exc}", url=url), True


def _retry(total: int, backoff: float, methods: frozenset[str]) -> Retry:
    return Retry(
        total=total,
        other=0,
        allowed_methods=methods,
        status_forcelist=RETRY_STATUSES,
        backoff_factor=backoff,
        raise_on_status=False,  # hand back the last 5xx so we can say what it was
        respect_retry_after_header=False,  # keep the worst-case delay bounded by backoff
    )


@dataclass(frozen=True)
class _Answer:
    status: int
    body: bytes
    content_type: str
    location: str | None
    latency_s: float


class Client:
    """One AxeOS device. Not thread-safe: use one Client per device and thread.

    Example:
        client = Client("http://bitaxe.local")
        reading = client.read("gamma", ts_ms)
        client.set_frequency(490)
    """

    def __init__(
        self,
        base_url: str,
        *,
        connect_timeout: float = 3.05,
        read_timeout: float = 5.0,  # §11.5: the single-threaded server can be busy for seconds
        retries: int = 2,
        backoff: float = 0.25,
        max_body: int = MAX_BODY,
        session: requests.Session | None = None,
    ) -> None:
        self.base_url = normalize_url(base_url)
        self.connect_timeout = connect_timeout
        self.read_timeout = read_timeout
        self.max_body = max_body
        self._session = session or requests.Session()
        if session is None:
            # A LAN device must not go through a proxy from the environment, nor pick up .netrc.
            self._session.trust_env = False
        self._session.headers.update({"User-Agent": f"tempctl/{__version__}"})
        # GET and PATCH /api/system are idempotent, so urllib3 may retry them.
        retrying = HTTPAdapter(max_retries=_retry(retries, backoff, frozenset({"GET", "PATCH"})))
        self._session.mount(self.base_url + "/", retrying)
        # POST (restart) must go out at most once: its own adapter with no retries at all
        # (requests picks the longest matching mount prefix), and its own connection pool,
        # so it never rides a keep-alive socket the device may already have closed.
        self._session.mount(self.base_url + RESTART_PATH, HTTPAdapter(max_retries=Retry(0)))

    # -- reading -----------------------------------------------------------------------

    def fetch_info(self) -> dict[str, Any]:
        """``GET /api/system/info`` as the JSON object the device sent."""
        answer = self._exchange("GET", INFO_PATH)
        self._expect_200("GET", INFO_PATH, answer)
        return self._json_object("GET", INFO_PATH, answer)

    def read(self, device: str, ts_ms: int) -> Reading:
        """Fetch and parse one reading; ``ts_ms`` is the caller's wall clock."""
        return parse_info(self.fetch_info(), device, ts_ms)

    def fetch_asic(self) -> dict[str, Any] | None:
        """``GET /api/system/asic`` (v2.7+, §7), or None on firmware that lacks it."""
        answer = self._exchange("GET", ASIC_PATH)
        if answer.status in (302, 404) or self._is_html(answer):
            return None  # before v2.7 an unknown GET is a 302 to the web UI (§2)
        self._expect_200("GET", ASIC_PATH, answer)
        return self._json_object("GET", ASIC_PATH, answer)

    def fetch_statistics(self, columns: tuple[str, ...] = STATS_COLUMNS) -> dict[str, Any] | None:
        """``GET /api/system/statistics`` (v2.8+, §8), or None when absent or empty.

        The buffer is empty unless ``statsFrequency`` > 0 on the device.
        """
        path = STATISTICS_PATH + ("?columns=" + ",".join(columns) if columns else "")
        answer = self._exchange("GET", path, max_body=max(self.max_body, STATS_MAX_BODY))
        if answer.status in (302, 404) or self._is_html(answer):
            return None
        self._expect_200("GET", path, answer)
        body = self._json_object("GET", path, answer)
        rows = body.get("statistics")
        return body if isinstance(rows, list) and rows else None

    # -- writing -----------------------------------------------------------------------

    def set_frequency(self, mhz: float, core_voltage: int | None = None) -> float:
        """PATCH the frequency (MHz), and the core voltage (mV) if given. Returns seconds.

        The firmware applies a voltage change before it ramps the frequency (§5.3), so to
        lower both, lower the frequency first and the voltage in a later call.
        """
        fields: dict[str, Any] = {"frequency": mhz}
        if core_voltage is not None:
            if isinstance(core_voltage, bool) or not isinstance(core_voltage, int):
                raise ValueError(f"core_voltage={core_voltage!r}: must be an int (mV)")
            fields["coreVoltage"] = core_voltage
        for key, value in fields.items():
            number = _finite(key, value)
            if not API_MIN <= number <= API_MAX:
                raise ValueError(f"{key}={value!r}: outside the API range {API_MIN}..{API_MAX}")
        return self.set_fields(fields)

    def set_fields(self, fields: Mapping[str, Any]) -> float:
        """PATCH ``/api/system`` with exactly these keys, as JSON numbers. Returns seconds.

        200 is success. 4xx raises Rejected (on v2.11+ nothing was applied), 5xx after
        retries raises BadResponse. On v2.11+ an unknown key is silently ignored, so read
        the value back to confirm (§11.3).
        """
        if not fields:
            raise ValueError("nothing to PATCH")
        payload: dict[str, int | float] = {}
        for key, value in fields.items():
            if key == "overheat_mode" and value not in (0, False):
                raise ValueError("overheat_mode can only be cleared (0); §5.1 rejects 1")
            number = int(value) if isinstance(value, bool) else _finite(key, value)
            payload[key] = int(number) if float(number).is_integer() else number
        data = json.dumps(payload, separators=(",", ":"), allow_nan=False).encode()
        if len(data) >= PATCH_BODY_LIMIT:
            raise ValueError(f"PATCH body of {len(data)} bytes is over the device limit")
        answer = self._exchange(
            "PATCH", SYSTEM_PATH, data=data, headers={"Content-Type": "application/json"}
        )
        if answer.status == 200:
            return answer.latency_s
        if 400 <= answer.status < 500:
            text = _snippet(answer.body)
            raise Rejected(
                f"PATCH {self._url(SYSTEM_PATH)}: HTTP {answer.status} {text!r}"
                + _hint(answer.status),
                url=self._url(SYSTEM_PATH),
                status=answer.status,
                body=text,
            )
        raise self._status_error("PATCH", SYSTEM_PATH, answer)

    def restart(self) -> float:
        """POST ``/api/system/restart`` exactly once. Returns seconds until the answer.

        Counts as sent: any 200 (text or JSON body by version, §6), and a connection that
        drops after the request went out (≤ v2.1.5 sends nothing; the device resets the
        socket when it reboots). Raises Unreachable when it could not connect at all.
        """
        url = self._url(RESTART_PATH)
        what = f"POST {url}"
        started = time.perf_counter()
        try:
            response = self._session.post(
                url,
                headers={"Connection": "close"},
                timeout=(self.connect_timeout, self.read_timeout),
                stream=True,
                allow_redirects=False,
            )
        except requests.RequestException as exc:
            error, sent = _transport_error(what, url, exc, self.connect_timeout, self.read_timeout)
            if not sent:
                raise error from exc
            if isinstance(error, Timeout):
                raise Timeout(f"{error} (the restart may still happen)", url=url) from exc
            return time.perf_counter() - started  # dropped after it went out: sent
        latency = time.perf_counter() - started
        try:
            body = self._read_body(response, what, self.max_body)
        except AxeOSError:
            body = b""  # the device may reset the socket while it reboots; the 200 counted
        finally:
            response.close()
        if response.status_code == 200:
            return latency
        answer = _Answer(response.status_code, body, "", None, latency)
        if 400 <= response.status_code < 500:
            raise Rejected(
                f"{what}: HTTP {response.status_code} {_snippet(body)!r}"
                + _hint(response.status_code),
                url=url,
                status=response.status_code,
                body=_snippet(body),
            )
        raise self._status_error("POST", RESTART_PATH, answer)

    def close(self) -> None:
        self._session.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- plumbing ----------------------------------------------------------------------

    def _url(self, path: str) -> str:
        return self.base_url + path

    def _exchange(
        self,
        method: str,
        path: str,
        *,
        data: bytes | None = None,
        headers: dict[str, str] | None = None,
        max_body: int | None = None,
    ) -> _Answer:
        url = self._url(path)
        what = f"{method} {url}"
        started = time.perf_counter()
        try:
            response = self._session.request(
                method,
                url,
                data=data,
                headers=headers,
                timeout=(self.connect_timeout, self.read_timeout),
                stream=True,  # so the body cap holds: never read more than the cap + 1 chunk
                allow_redirects=False,  # pre-v2.9 answers unknown GETs with 302 → "/" (§2)
            )
        except requests.RequestException as exc:
            error, _ = _transport_error(what, url, exc, self.connect_timeout, self.read_timeout)
            raise error from exc
        try:
            body = self._read_body(response, what, max_body or self.max_body)
        finally:
            response.close()
        return _Answer(
            status=response.status_code,
            body=body,
            content_type=response.headers.get("Content-Type", ""),
            location=response.headers.get("Location"),
            latency_s=time.perf_counter() - started,
        )

    def _read_body(self, response: requests.Response, what: str, cap: int) -> bytes:
        url = response.url
        declared = response.headers.get("Content-Length", "")
        if declared.isdigit() and int(declared) > cap:
            raise TooLarge(
                f"{what}: body of {declared} bytes is over the {cap}-byte cap",
                url=url,
                status=response.status_code,
            )
        chunks: list[bytes] = []
        size = 0
        try:
            for chunk in response.iter_content(chunk_size=16384):
                size += len(chunk)
                if size > cap:
                    raise TooLarge(
                        f"{what}: body is over the {cap}-byte cap (stopped reading)",
                        url=url,
                        status=response.status_code,
                    )
                chunks.append(chunk)
        except requests.RequestException as exc:
            error, _ = _transport_error(what, url, exc, self.connect_timeout, self.read_timeout)
            if isinstance(error, Timeout):
                raise Timeout(f"{error} (while reading the body)", url=url) from exc
            raise BadResponse(
                f"{what}: body truncated (connection broke after {size} bytes)",
                url=url,
                status=response.status_code,
            ) from exc
        return b"".join(chunks)

    def _expect_200(self, method: str, path: str, answer: _Answer) -> None:
        if answer.status != 200:
            raise self._status_error(method, path, answer)

    def _status_error(self, method: str, path: str, answer: _Answer) -> BadResponse:
        url = self._url(path)
        if 300 <= answer.status < 400:
            detail = (
                f"HTTP {answer.status} redirect to {answer.location!r}, not followed "
                "(firmware before v2.9 redirects unknown routes to the web UI)"
            )
        else:
            detail = f"HTTP {answer.status} {_snippet(answer.body)!r}" + _hint(answer.status)
            if answer.status in RETRY_STATUSES:
                detail += " (after retries)"
        return BadResponse(f"{method} {url}: {detail}", url=url, status=answer.status)

    def _json_object(self, method: str, path: str, answer: _Answer) -> dict[str, Any]:
        url = self._url(path)
        what = f"{method} {url}"
        try:
            value = json.loads(answer.body)
        except json.JSONDecodeError as exc:
            truncated = exc.pos >= len(exc.doc.rstrip())
            reason = "truncated JSON" if truncated and answer.body.strip() else "not JSON"
            raise BadResponse(
                f"{what}: {reason} ({exc.msg} at byte {exc.pos}): {_snippet(answer.body)!r}",
                url=url,
                status=answer.status,
            ) from None
        except (UnicodeDecodeError, RecursionError) as exc:
            raise BadResponse(
                f"{what}: not JSON ({type(exc).__name__})", url=url, status=answer.status
            ) from None
        if not isinstance(value, dict):
            raise BadResponse(
                f"{what}: JSON {type(value).__name__}, expected an object",
                url=url,
                status=answer.status,
            )
        return value

    @staticmethod
    def _is_html(answer: _Answer) -> bool:
        return answer.status == 200 and (
            "html" in answer.content_type.lower() or answer.body.lstrip()[:1] == b"<"
        )


def _finite(key: str, value: Any) -> float | int:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise ValueError(f"{key}={value!r}: must be a finite number")
    return value


def _snippet(body: bytes, limit: int = 200) -> str:
    text = body.decode("utf-8", errors="replace").strip()
    return text if len(text) <= limit else text[:limit] + "…"


def _hint(status: int) -> str:
    if status == 401:
        # §2: v2.5+ only answers clients in 10/8, 172.16/12 or 192.168/16.
        return " (AxeOS v2.5+ only accepts clients with a private-range IPv4 address)"
    return ""
