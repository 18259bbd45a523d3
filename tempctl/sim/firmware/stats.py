"""GET /api/system/statistics: the firmware's sample ring (axeos-api.md §8)."""

from __future__ import annotations

import math

from tempctl.sim.firmware.versions import Version

__all__ = ["STATS_MAX", "STAT_COLUMNS", "STAT_COLUMNS_OLD", "StatsRing"]

STAT_COLUMNS = (
    "hashrate",
    "hashrate_1m",
    "hashrate_10m",
    "hashrate_1h",
    "errorPercentage",
    "asicTemp",
    "asicTemp2",
    "vrTemp",
    "asicVoltage",
    "voltage",
    "power",
    "current",
    "fanSpeed",
    "fanRpm",
    "fan2Rpm",
    "wifiRssi",
    "freeHeap",
    "responseTime",
)
STAT_COLUMNS_OLD = (  # v2.8-v2.10: fixed columns
    "hashrate",
    "asicTemp",
    "vrTemp",
    "asicVoltage",
    "voltage",
    "power",
    "current",
    "fanSpeed",
    "fanRpm",
    "wifiRssi",
    "freeHeap",
)
STATS_MAX = 720  # §8: up to 720 points


class StatsRing:
    """Rows every ``statsFrequency`` s while it is > 0; at most STATS_MAX kept."""

    def __init__(self) -> None:
        self.rows: list[tuple[float, dict[str, float]]] = []
        self.next_at: float | None = None

    def clear(self) -> None:
        self.rows.clear()
        self.next_at = None

    def due(self, t: float, period: int) -> bool:
        """True when a row is due at ``t``; arms the first sample one period ahead."""
        if self.next_at is None:
            self.next_at = t + period
            return False
        return t >= self.next_at - 1e-9

    def record(self, t: float, period: int, row: dict[str, float]) -> None:
        # One row per sample time passed; a coarse step repeats its values (the device sat at
        # equilibrium), and a jump longer than the ring only keeps what fits.
        assert self.next_at is not None
        due = math.floor((t - self.next_at) / period + 1e-9) + 1
        first = self.next_at + max(0, due - STATS_MAX) * period
        for k in range(min(due, STATS_MAX)):
            self.rows.append((first + k * period, row))
        del self.rows[:-STATS_MAX]
        self.next_at += due * period

    def body(self, v: Version, t: float, boot_t: float, columns: str | None) -> dict:
        if v >= (2, 11, 0):
            labels = list(STAT_COLUMNS)
            if columns:
                wanted = {c.strip() for c in columns.split(",")}
                labels = [c for c in labels if c in wanted]
        else:
            labels = list(STAT_COLUMNS_OLD)
        labels.append("timestamp")
        rows = [
            [row[c] for c in labels[:-1]] + [int((ts - boot_t) * 1000)] for ts, row in self.rows
        ]
        return {
            "currentTimestamp": int((t - boot_t) * 1000),
            "labels": labels,
            "statistics": rows,
        }
