"""``GET /api/system/statistics`` (v2.8+, axeos-api.md §8) → backfilled ``Reading``s."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from tempctl.core.reading import Reading
from tempctl.device.parse import API_MAX
from tempctl.device.values import finite, hottest, is_number, number, plausible_temp

__all__ = ["MAX_BOOT_MS", "MAX_SPAN_MS", "STATS_COLUMNS", "STATS_LABELS_V28", "parse_statistics"]

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
# Bounds on the clock of the ring (ms since boot). uptimeSeconds is a u32 (§4.1), so no
# real device is up for more than 2**32 s; and the ring spans at most 720 points ×
# statsFrequency ≤ 65535 s (§8, §5.1). Anything outside is a hostile or broken body, and
# a stamp from it must never reach SQLite (a currentTimestamp of 2**80 overflowed it).
MAX_BOOT_MS = 2**32 * 1000
MAX_SPAN_MS = 720 * 65535 * 1000


def parse_statistics(
    body: Mapping[str, Any], device: str, now_ts_ms: int, uptime_s_now: int | None
) -> list[Reading]:
    """Readings (``backfilled=True``) from a ``GET /api/system/statistics`` body.

    Row timestamps are ms since boot; they become wall time through ``currentTimestamp``
    (same clock), taken at ``now_ts_ms``. Without ``currentTimestamp``, ``uptime_s_now``
    stands in. The buffer has no frequency column, so ``frequency`` stays None. Rows that
    are malformed, lie in the future, or further back than the ring can span are skipped;
    an implausible ``currentTimestamp`` gives no rows at all.
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
    if not is_number(boot_ms):
        boot_ms = None if uptime_s_now is None else uptime_s_now * 1000
    boot = finite(boot_ms)
    if boot is None or not 0 <= boot <= MAX_BOOT_MS:
        return []

    readings = []
    for row in rows:
        if not isinstance(row, list) or len(row) != len(labels):
            continue
        values = dict(zip(labels, row, strict=True))
        stamp = finite(values["timestamp"])
        if stamp is None or not (0 <= stamp <= boot and boot - stamp <= MAX_SPAN_MS):
            continue
        readings.append(_stats_reading(values, device, now_ts_ms - int(boot - stamp), stamp))
    return readings


def _stats_reading(values: dict[str, Any], device: str, ts_ms: int, stamp: float) -> Reading:
    notes: list[str] = []

    def pick(field: str) -> tuple[str | None, Any]:
        for label in _STATS_FIELDS[field]:
            if label is not None and label in values:
                return label, values[label]
        return None, None

    (temp_label, temp_value), (temp2_label, temp2_value) = pick("temp"), pick("temp2")
    temp = hottest(
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
        return number(values, label, notes, low=0, high=high, integer=integer)

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
        raw_temp=finite(values.get(temp_label)) if temp_label else None,
        error="; ".join(notes) or None,
        backfilled=True,
    )
