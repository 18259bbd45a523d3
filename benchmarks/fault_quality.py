"""Control quality under faults vs fault-free, both measured in one run. Prints JSON.

    python benchmarks/fault_quality.py               # heat wave hours 2-16 at scale 240: ~3.5 min
    python benchmarks/fault_quality.py --scale 480   # faster, coarser

One emulator serves two identical Gammas (same scenario, no ambient spread) and one real
`tempctl run` guards both. Device "clean" gets no faults. Device "faulted" gets a few % of
failing polls (5xx, hangs, truncated bodies), sensor glitches (-1 and 0 °C) and one
spontaneous reboot at the peak of the heat wave.

Measured on the emulator's true plant state (not on what the daemon read), integrated over
plant time:

* hashrate kept: the integral of the running PLL frequency over the integral of
  MAX_FREQUENCY (hashrate = small cores x frequency, so this is the hashrate fraction);
* °C·s above TEMP_THRESHOLD: the integral of max(0, die - 63 °C).
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

from procs import LogView, assert_clean_exit, start_daemon, wait_for

from tempctl.sim.emulator import Emulator

FAULTS = "5xx=0.02,timeout=0.01,truncated=0.01,sensor_m1=0.01,sensor_0=0.01"
THRESHOLD, MAX_MHZ = 63.0, 575.0


class Meter:
    """Integrates one device's true state over plant time (trapezoids)."""

    def __init__(self) -> None:
        self.last: tuple[float, float, float] | None = None  # (t, mhz running, die)
        self.mhz_s = self.max_mhz_s = self.above = 0.0
        self.max_die = 0.0

    def add(self, t: float, mhz: float, die: float) -> None:
        if self.last is not None and t > self.last[0]:
            t0, f0, d0 = self.last
            dt = t - t0
            self.mhz_s += (f0 + mhz) / 2 * dt
            self.max_mhz_s += MAX_MHZ * dt
            self.above += (max(0.0, d0 - THRESHOLD) + max(0.0, die - THRESHOLD)) / 2 * dt
        self.last = (t, mhz, die)
        self.max_die = max(self.max_die, die)

    def result(self) -> dict:
        return {
            "hashrate_kept_pct": round(100 * self.mhz_s / self.max_mhz_s, 2),
            "degC_s_above_threshold": round(self.above, 1),
            "max_die_c": round(self.max_die, 2),
        }


def sample(emu: Emulator, index: int) -> tuple[float, float, float]:
    d = emu.devices[index]
    with d.lock:
        d.firmware.advance(emu.device_time())
        s = d.firmware.state()
    return s["plant_time_s"], s["actual_mhz"] if s["running"] else 0.0, s["die_c"]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--scale", type=float, default=240.0)
    p.add_argument("--start-hours", type=float, default=2.0)
    p.add_argument("--end-hours", type=float, default=16.0)
    p.add_argument("--reboot-hours", type=float, default=7.0)
    p.add_argument("--faults", default=FAULTS)
    p.add_argument("--seed", type=int, default=3)
    p.add_argument("--workdir", type=Path, default=None)
    args = p.parse_args(argv)

    work = args.workdir or Path(tempfile.mkdtemp(prefix="tempctl-quality-"))
    work.mkdir(parents=True, exist_ok=True)
    db = work / "tempctl.db"
    k = args.scale
    timing = {"check_interval": max(0.2, 30 / k), "settle": 180 / k, "stable_timeframe": 1 / k}
    emu = Emulator(
        "heatwave",
        host="127.0.0.1",
        port=0,
        devices=2,
        scale=k,
        seed=args.seed,
        start_hours=args.start_hours,
        ambient_spread_c=0.0,
        hang_s=1.5,
    )
    emu.start()
    emu.set_faults(args.faults, index=1)
    names = [u.split("://", 1)[1] for u in emu.urls]
    meters = [Meter(), Meter()]
    rebooted = False
    d = start_daemon(names, db, work, **timing)
    try:
        v = LogView(db)
        wait_for(lambda: v.count("readings") >= 2, 30, "the first polls", d)
        end_s = args.end_hours * 3600
        while (now := emu.device_time()) < end_s:
            if d.poll() is not None:
                raise SystemExit(f"the daemon died:\n{d.output()[-3000:]}")
            for i in (0, 1):
                meters[i].add(*sample(emu, i))
            if not rebooted and now >= args.reboot_hours * 3600:
                dev = emu.devices[1]
                with dev.lock:
                    dev.firmware.crash()
                rebooted = True
            time.sleep(0.05)
        stop_s = assert_clean_exit(d, timeout=15)
    finally:
        d.stop()
        emu.stop()

    def logged(name: str) -> dict:
        n = v.count("readings", "device = ?", name)
        bad = v.count("readings", "device = ? AND valid = 0", name)
        return {
            "polls": n,
            "invalid_polls_pct": round(100 * bad / max(1, n), 2),
            "transitions": v.count("transitions", "device = ?", name),
            "commands": v.count("commands", "device = ?", name),
            "reboots_seen": v.count("events", "device = ? AND kind = 'reboot'", name),
            "alarms": v.count("events", "device = ? AND level = 'alarm'", name),
        }

    clean = meters[0].result() | logged(names[0])
    faulted = meters[1].result() | logged(names[1])
    base_above = clean["degC_s_above_threshold"]
    out = {
        "scenario": f"heatwave hours {args.start_hours:g}-{args.end_hours:g}",
        "scale": k,
        "timing": {k_: round(v_, 6) for k_, v_ in timing.items()},
        "faults_on_faulted_device": args.faults,
        "reboot_at_plant_hour": args.reboot_hours,
        "clean": clean,
        "faulted": faulted,
        "delta": {
            "hashrate_kept_pct_points": round(
                faulted["hashrate_kept_pct"] - clean["hashrate_kept_pct"], 2
            ),
            "hashrate_kept_rel_pct": round(
                100 * (faulted["hashrate_kept_pct"] / clean["hashrate_kept_pct"] - 1), 2
            ),
            "degC_s_above_abs": round(faulted["degC_s_above_threshold"] - base_above, 1),
            "degC_s_above_rel_pct": (
                round(100 * (faulted["degC_s_above_threshold"] / base_above - 1), 1)
                if base_above
                else None
            ),
        },
        "sigterm_exit_s": round(stop_s, 2),
        "log": str(db),
    }
    print(json.dumps(out, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
