"""``GET /api/system/info`` of any firmware generation → a ``Reading``.

Section numbers (§) refer to shared/reference/axeos-api.md, read out of
bitaxeorg/ESP-Miner v2.0.0 … v2.15.0 and master.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from tempctl.core.reading import Reading
from tempctl.device.capabilities import format_version, key_floor
from tempctl.device.values import finite, flag, hottest, number, plausible_temp, show, text

__all__ = ["API_MAX", "API_MIN", "BOOT_GRACE_S", "FAULTS", "parse_info"]

# §5.1: the API accepts 1 … 65535 for frequency (MHz) and coreVoltage (mV).
API_MIN, API_MAX = 1, 65535
# §6: HTTP answers 5-10 s after a reboot and the ASIC is up 15-40 s after it; a trip needs
# a die above 75 °C (§9.1), which takes minutes from a cold boot.
BOOT_GRACE_S = 60
STOPPED_MHZ = 50  # §4.1: actualFrequency is 50 while paused or stopped (v2.14+)
POOL_DOWN_FAN = 30  # §9.4: fan_controller_task.c forces 30 % when no pool is reachable
FAULTS = ("hardware_fault", "power_fault", "pool_down")


def parse_info(body: Mapping[str, Any], device: str, ts_ms: int) -> Reading:
    """Turn a ``GET /api/system/info`` body from any firmware generation into a Reading.

    Every field used is type- and range-checked: a wrong type, NaN, 1e308, a 400-digit
    integer or a negative frequency becomes None with a note in ``error``; a missing key
    is just None. ``temp`` is None (the reading is invalid) whenever the ASIC temperature
    is not plausible (see ``plausible_temp``); ``raw_temp`` keeps what the device sent.
    ``fault`` names a stop of mining that is not an overheat (see ``_fault``).
    """
    notes: list[str] = []
    if not isinstance(body, Mapping):
        notes.append(f"body is {type(body).__name__}, not a JSON object")
        body = {}

    raw = body.get("temp")
    temp = hottest(raw, body.get("temp2"), notes)
    vr_temp, vr_reason = plausible_temp(body.get("vrTemp", 0), field="vrTemp")
    if vr_reason:
        notes.append(vr_reason)

    # autofanspeed is read once; its note still follows the fan's notes.
    autofan_notes: list[str] = []
    autofan = flag(body, "autofanspeed", autofan_notes)
    fan_pct, fan_rpm = _fan(body, notes, autofan)
    notes += autofan_notes
    actual = number(body, "actualFrequency", notes, low=0, high=API_MAX)
    uptime = number(body, "uptimeSeconds", notes, low=0, high=2**32, integer=True)
    fault = _fault(body, actual, fan_pct, uptime, notes)
    floor = key_floor(body)
    return Reading(
        device=device,
        ts_ms=ts_ms,
        temp=temp,
        vr_temp=vr_temp,
        frequency=number(body, "frequency", notes, low=API_MIN, high=API_MAX),
        actual_frequency=actual,
        core_voltage=number(body, "coreVoltage", notes, low=API_MIN, high=API_MAX, integer=True),
        core_voltage_actual=number(
            body, "coreVoltageActual", notes, low=0, high=API_MAX, integer=True
        ),
        # 1e5 GH/s is ~27x a SupraHex at its defaults (§10), far above any Bitaxe.
        hashrate=number(body, "hashRate", notes, low=0, high=1e5),
        power=number(body, "power", notes, low=0, high=1000),
        error_pct=number(body, "errorPercentage", notes, low=0, high=1000),
        expected_hashrate=number(body, "expectedHashrate", notes, low=0, high=1e5),
        fan_pct=fan_pct,
        fan_rpm=fan_rpm,
        autofan=autofan,
        uptime_s=uptime,
        version=text(body, "version", limit=64),
        asic_model=text(body, "ASICModel", limit=32),
        hostname=text(body, "hostname", limit=64),
        mac=text(body, "macAddr", limit=32),
        overheat=_overheat(body, actual, autofan, fan_pct, notes, uptime, fault),
        raw_temp=finite(raw),
        error="; ".join(notes) or None,
        fault=fault,
        firmware_floor=_floor_text(floor) if floor else None,
    )


_FLOOR_TEXT: dict[tuple[int, int, int], str] = {}


def _floor_text(floor: tuple[int, int, int]) -> str:
    """``format_version`` of a KEY_SINCE release (a few dozen): formatted once each."""
    text = _FLOOR_TEXT.get(floor)
    if text is None:
        text = _FLOOR_TEXT[floor] = format_version(floor)
    return text


def _fan(
    body: Mapping[str, Any], notes: list[str], autofan: bool | None
) -> tuple[float | None, int | None]:
    """Applied fan duty % and fan-1 rpm across the renames of §4.2.

    From v2.1.9 (when ``fanrpm`` appeared) ``fanspeed`` is the duty actually applied.
    Before that ``fanspeed`` was the manual *setting* and ``fanSpeed``/``fanSpeedRpm``
    the rpm, so the duty is only known when the fan is in manual mode.
    """
    rpm = None
    for rpm_key in ("fanrpm", "fanSpeedRpm", "fanSpeed"):
        if rpm_key in body:
            rpm = number(body, rpm_key, notes, low=0, high=30000, integer=True)
            break
    duty = number(body, "fanspeed", notes, low=0, high=100)
    if "fanrpm" not in body and autofan is not False:
        duty = None  # pre-v2.1.9 with autofan: fanspeed is a setting, not the duty
    return duty, rpm


def _stopped(body: Mapping[str, Any], actual: float | None) -> bool:
    """Mining is stopped by the firmware, not paused by the user: PLL at 50 MHz and
    expectedHashrate 0 (§4.1, §9.3; v2.14+ only, where actualFrequency exists)."""
    if actual is None or abs(actual - STOPPED_MHZ) > 0.5:
        return False
    expected = number(body, "expectedHashrate", [], low=0, high=1e5)
    return expected == 0 and flag(body, "miningPaused", []) is False


def _fault(
    body: Mapping[str, Any],
    actual: float | None,
    fan_pct: float | None,
    uptime: int | None,
    notes: list[str],
) -> str | None:
    """A stop of mining that is not an overheat, or None.

    * ``hardware_fault`` / ``power_fault``: main/http_server/system_api_json.c adds these
      string keys only while the fault lasts (TPS546 fault from v2.6, peripheral fault from
      v2.14; mining is stopped, power_management_task.c ≈ l.154).
    * ``pool_down``: v2.14+ stops the ASIC when no pool connection is up
      (power_management_task.c ≈ l.144) and the fan task forces 30 % (fan_controller_task.c
      ≈ l.75-76; axeos-api.md §14). Seen as: stopped at 50 MHz with expectedHashrate 0, not
      paused, and poolConnectionInfo saying it is not connected or the fan at 30 %. Not
      within BOOT_GRACE_S of a boot, when the pool is not connected yet either.
    """
    for key in ("hardware_fault", "power_fault"):
        if key in body:
            notes.append(f"{key} {show(body[key])}: mining stopped (not an overheat)")
            return key
    if not _stopped(body, actual) or (uptime is not None and uptime < BOOT_GRACE_S):
        return None
    pool = body.get("poolConnectionInfo")
    pool_says_down = isinstance(pool, str) and (
        "not connected" in pool.lower() or "unreachable" in pool.lower()
    )
    fan_forced = fan_pct is not None and abs(fan_pct - POOL_DOWN_FAN) <= 0.5
    if pool_says_down or fan_forced:
        notes.append("no pool reachable: the firmware stopped mining (not an overheat)")
        return "pool_down"
    return None


def _overheat(
    body: Mapping[str, Any],
    actual: float | None,
    autofan: bool | None,
    fan_pct: float | None,
    notes: list[str],
    uptime: float | None = None,
    fault: str | None = None,
) -> bool:
    """The firmware's own overheat handling is showing (§9.2, §9.3).

    ``overheat_mode`` (``overheat`` on v2.1.9) is reliable up to v2.13. On v2.14+ it is
    read from a RAM copy that a poller will practically never see set, so there the
    signature is: PLL at 50 MHz, expectedHashrate 0, not paused by the user, autofan
    off and the fan forced to 100 %. A device that is still booting looks the same
    when its fan is fixed at 100 % (§6: the ramp starts at 50 MHz, no hashrate yet), so
    the signature does not count within BOOT_GRACE_S of a boot, nor while a fault
    (``_fault``: power, hardware, pool down) explains the stop.
    """
    for key in ("overheat_mode", "overheat"):
        if flag(body, key, notes):
            return True
    if fault is not None or not _stopped(body, actual):
        return False
    if uptime is not None and uptime < BOOT_GRACE_S:
        return False
    manual = number(body, "manualFanSpeed", notes, low=0, high=100)
    fan_full = (fan_pct is not None and fan_pct >= 99.5) or (fan_pct is None and manual == 100)
    return autofan is False and fan_full
