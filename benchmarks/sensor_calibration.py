"""Sensor calibration (issue 20): noise, steps, spikes, holds and hashrate noise of real Bitaxes.

    python benchmarks/sensor_calibration.py                  # JSON, per trace and device
    python benchmarks/sensor_calibration.py --traces DIR     # another copy of shared/data/traces

Reads the polled ``/api/system/info`` traces of shared/data/traces (data/README §2) and, per
trace and device, takes *pairs of successive polls at unchanged settings*: the same frequency
and set voltage (where logged), no restart between them (uptime grew by about the gap), a gap
at most 1.5 × the trace's median poll interval, a valid reading on both sides (temperature
> 0, hashrate > 50 GH/s). On those pairs (the data README's method):

* ``noise_sd_c``: sd of the successive temperature differences / √2. For white reading noise
  it is the noise sd; slow drift (ambient, the fan PID) barely adds at 30-60 s gaps.
* ``max_jump_c``: the largest |difference|; ``jumps_over_2c``: how many exceed 2 °C (the
  rare spikes), ``spike_rate``: half of that per reading (a spike makes two jumps).
* ``*_settled``: the same without the pairs within 300 s of a boot (the data README's
  settle rule): the mtab3000 2025-05-29 sweep restarts every 17 min, and the autofan's
  recovery after each restart makes most of its large jumps.
* ``step_c``: the sensor resolution seen (the coarsest of 1, 0.5, 0.25, 0.125, 0.0625 °C
  that divides every reading; 0.1 or 0.01 where the logging tool rounded),
  ``held_share``: the share of differences that are exactly 0.
* ``hash_noise``: sd of successive differences of ln(hashrate) / √2 (relative noise).

Per trace the median over its devices is given too, and over all 30-60 s traces the median
of the per-device noise: the simulator's default (tempctl/sim/sensor.py, docs/sensor.md).
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import statistics
import sys
from collections import defaultdict
from datetime import datetime
from pathlib import Path

DEFAULT_TRACES = Path("/work/shared/data/traces")
SETTLE_S = 300.0
SPIKE_JUMP_C = 2.0
STEPS = (1.0, 0.5, 0.25, 0.125, 0.0625, 0.1, 0.01)  # 0.1, 0.01: rounded by the logging tool


def _f(v: str) -> float | None:
    try:
        x = float(v)
    except (TypeError, ValueError):
        return None
    return x if math.isfinite(x) else None


def _rows(path: Path) -> dict[str, list[dict]]:
    by_dev: dict[str, list[dict]] = defaultdict(list)
    with path.open(newline="", encoding="utf-8") as f:
        for r in csv.DictReader(f):
            ts = datetime.fromisoformat(r["timestamp"].replace("Z", "")).timestamp()
            by_dev[r["device"]].append(
                {
                    "t": ts,
                    "f": _f(r["frequency_mhz"]),
                    "v": _f(r["core_voltage_set_mv"]),
                    "hr": _f(r["hashrate_ghs"]),
                    "temp": _f(r["asic_temp_c"]),
                    "up": _f(r["uptime_s"]),
                }
            )
    for rows in by_dev.values():
        rows.sort(key=lambda r: r["t"])
    return by_dev


def _step(values: list[float]) -> float | None:
    for step in STEPS:
        if all(abs(v / step - round(v / step)) < 1e-6 for v in values):
            return step
    return None


def device_figures(rows: list[dict], interval_s: float, settle_s: float = 0.0) -> dict | None:
    """The figures of one device's rows (see the module text), or None without pairs."""
    dt_max = 1.5 * interval_s
    diffs, hdiffs, temps = [], [], []
    for a, b in zip(rows, rows[1:]):
        gap = b["t"] - a["t"]
        if not 0 < gap <= dt_max:
            continue
        if a["f"] != b["f"] or a["v"] != b["v"]:
            continue
        if any(r["temp"] is None or r["temp"] <= 0 or (r["hr"] or 0) <= 50 for r in (a, b)):
            continue
        if a["up"] is not None and b["up"] is not None:
            if b["up"] < a["up"] or b["up"] < settle_s:
                continue  # a restart between them, or still settling after one
        diffs.append(b["temp"] - a["temp"])
        hdiffs.append(math.log(b["hr"] / a["hr"]))
        temps.append(b["temp"])
    if len(diffs) < 10:
        return None
    jumps = [abs(d) for d in diffs]
    over = sum(1 for j in jumps if j > SPIKE_JUMP_C)
    return {
        "pairs": len(diffs),
        "noise_sd_c": round(statistics.pstdev(diffs) / math.sqrt(2), 3),
        "max_jump_c": round(max(jumps), 3),
        "jumps_over_2c": over,
        "spike_rate": round(over / 2 / len(diffs), 4),
        "step_c": _step(temps),
        "held_share": round(sum(1 for d in diffs if d == 0) / len(diffs), 3),
        "hash_noise": round(statistics.pstdev(hdiffs) / math.sqrt(2), 4),
    }


def trace_figures(path: Path) -> dict:
    by_dev = _rows(path)
    gaps = [
        b["t"] - a["t"]
        for rows in by_dev.values()
        for a, b in zip(rows, rows[1:])
        if b["t"] > a["t"]
    ]
    interval = statistics.median(gaps) if gaps else 0.0
    devices = {}
    for name, rows in sorted(by_dev.items()):
        fig = device_figures(rows, interval)
        if fig is not None:
            settled = device_figures(rows, interval, SETTLE_S)
            fig["noise_sd_c_settled"] = settled["noise_sd_c"] if settled else None
            fig["max_jump_c_settled"] = settled["max_jump_c"] if settled else None
            fig["jumps_over_2c_settled"] = settled["jumps_over_2c"] if settled else 0
            fig["pairs_settled"] = settled["pairs"] if settled else 0
            devices[name] = fig
    out: dict = {"poll_s": round(interval, 1), "devices": devices}
    if devices:
        out["median_noise_sd_c"] = round(
            statistics.median(d["noise_sd_c"] for d in devices.values()), 3
        )
        out["median_hash_noise"] = round(
            statistics.median(d["hash_noise"] for d in devices.values()), 4
        )
    return out


def calibrate(traces: Path) -> dict:
    doc: dict = {"traces": {}}
    for path in sorted(traces.glob("*.csv")):
        with path.open(encoding="utf-8") as f:
            if not f.readline().startswith("timestamp,"):
                continue  # not a trace (the steady-state table, say)
        doc["traces"][path.name] = trace_figures(path)
    slow = [
        d for t in doc["traces"].values() if 30 <= t["poll_s"] <= 60 for d in t["devices"].values()
    ]
    if slow:
        noise = sorted(d["noise_sd_c"] for d in slow)
        doc["slow_traces"] = {
            "devices": len(slow),
            "noise_sd_c_median": round(statistics.median(noise), 3),
            "noise_sd_c_range": [noise[0], noise[-1]],
            "max_jump_c": max(d["max_jump_c"] for d in slow),
            "spike_rate_median": round(statistics.median(d["spike_rate"] for d in slow), 4),
            "spike_rate_pooled": round(
                sum(d["jumps_over_2c"] for d in slow) / 2 / sum(d["pairs"] for d in slow), 4
            ),
            "spike_rate_settled_pooled": round(
                sum(d["jumps_over_2c_settled"] for d in slow)
                / 2
                / sum(d["pairs_settled"] for d in slow),
                4,
            ),
            "hash_noise_median": round(statistics.median(d["hash_noise"] for d in slow), 4),
        }
    return doc


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--traces", type=Path, default=DEFAULT_TRACES)
    args = p.parse_args(argv)
    if not args.traces.is_dir():
        p.error(f"{args.traces}: no such directory (shared/data/traces)")
    json.dump(calibrate(args.traces), sys.stdout, indent=2)
    sys.stdout.write("\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
