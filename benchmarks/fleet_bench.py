"""Fleet: one `tempctl run` guarding N emulated miners (default 250 at CHECK_INTERVAL 5 s).

The emulator runs in its own process (`tempctl emulate --devices N`), the daemon in
another, both on this machine's cores. ``--hung H`` makes H of the N devices hung
miners: loopback sockets that accept a connection, read the request and never answer
(issue 23 item 1); the figures then also say how the N - H healthy ones fared.
Measured:

- poll lateness: when each poll started against when it was due. A daemon that
  records it (``Device.lateness_s``, exported as the ``tempctl_poll_lateness_seconds``
  histogram) is measured by itself. Otherwise it comes from the log: the reading's
  ts_ms is stamped by the worker just before the request, on the daemon's monotonic
  timeline; tick k is at t0 + k*interval, t0 being the earliest poll of the first
  tick (this understates lateness by the loop's own wake-up delay, well under 1 ms);
- missed polls: ``tempctl_missed_polls_total`` from the daemon's metrics endpoint, and
  cross-checked against the log (every device must have one reading per tick);
- daemon CPU (% of one core, after a warm-up of two ticks) and RSS;
- with hung devices, per healthy device from the log: the longest gap between two
  readings, ticks without a reading, and lateness against the device's own slot (its
  least-late poll, so this understates lateness by that poll's own, a few ms; a poll
  more than half an interval late shows as a gap instead).
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from pathlib import Path

import requests
from prometheus_client.parser import text_string_to_metric_families

from tempctl.daemon.lanes import room_for_sockets
from tempctl.sim.hung import HungMiners

from . import procs

EMULATOR_MAX = 256  # devices per `tempctl emulate` process


def percentile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q / 100 * (len(ordered) - 1)))]


def scrape(port: int) -> tuple[dict[str, float], dict[float, float]]:
    """(each metric summed over devices, the lateness histogram's cumulative buckets)."""
    text = requests.get(f"http://127.0.0.1:{port}/metrics", timeout=10).text
    sums: dict[str, float] = {}
    buckets: dict[float, float] = {}
    for fam in text_string_to_metric_families(text):
        for s in fam.samples:
            sums[s.name] = sums.get(s.name, 0.0) + s.value
            if s.name == "tempctl_poll_lateness_seconds_bucket":
                buckets[float(s.labels["le"])] = s.value
    return sums, buckets


def histogram_lateness(buckets: dict[float, float]) -> dict:
    """p50/p99 by linear interpolation inside the buckets; the share within 1 s is exact."""
    total = buckets.get(float("inf"), 0.0)
    bounds = sorted(buckets)

    def q(p: float) -> float:
        rank, lo, below = p * total, 0.0, 0.0
        for b in bounds:
            if buckets[b] >= rank:
                if b == float("inf"):
                    return lo
                inside = buckets[b] - below
                return lo + (b - lo) * ((rank - below) / inside if inside else 1.0)
            lo, below = b, buckets[b]
        return lo

    return {
        "lateness_source": "daemon (tempctl_poll_lateness_seconds)",
        "lateness_p50_s": round(q(0.50), 4),
        "lateness_p99_s": round(q(0.99), 4),
        "share_started_within_1s": round(buckets.get(1.0, 0.0) / total, 5),
    }


def from_log(db: Path, interval_s: float) -> dict:
    """Polls per tick from the log, and lateness assuming all polls share one tick."""
    import sqlite3

    conn = sqlite3.connect(db)
    rows = conn.execute("SELECT device, ts_ms FROM readings ORDER BY ts_ms").fetchall()
    conn.close()
    devices = {d for d, _ in rows}
    step = interval_s * 1000
    t0 = rows[0][1]
    late, per_tick = [], {}
    for dev, ts in rows:
        per_tick.setdefault(int((ts - t0) // step), set()).add(dev)  # slots lie within a tick
        late.append(((ts - t0 + step / 2) % step - step / 2) / 1000)
    full = sorted(per_tick)[:-1]  # the last tick may be cut short by SIGTERM
    return {
        "polls": len(rows),
        "ticks": len(full) + 1,
        "polls_missing_in_log": sum(len(devices) - len(per_tick[k]) for k in full),
        "lateness_source": "log (reading ts vs one shared tick)",
        "lateness_p50_s": round(statistics.median(late), 4),
        "lateness_p99_s": round(percentile(late, 99), 4),
        "lateness_max_s": round(max(late), 4),
        "share_started_within_1s": round(sum(x <= 1.0 for x in late) / len(late), 5),
    }


def healthy_figures(db: Path, names: set[str], interval_s: float) -> dict:
    """Gaps, ticks without a reading and lateness of the ``names`` devices, from the log."""
    import sqlite3

    conn = sqlite3.connect(db)
    rows = conn.execute("SELECT device, ts_ms FROM readings ORDER BY device, ts_ms").fetchall()
    conn.close()
    step = interval_s * 1000
    per: dict[str, list[int]] = {}
    for dev, ts in rows:
        if dev in names:
            per.setdefault(dev, []).append(ts)
    gaps, late, skipped = [], [], 0
    for ts in per.values():
        # Each poll's offset from the device's first one, folded into (-step/2, step/2]:
        # the least of them is the device's slot (a poll later than step/2 shows as a gap).
        offsets = [(t - ts[0] + step / 2) % step - step / 2 for t in ts]
        slot = min(offsets)
        late.extend((o - slot) / 1000 for o in offsets)
        for a, b in zip(ts, ts[1:]):
            gaps.append((b - a) / 1000)
            skipped += max(0, round((b - a) / step) - 1)
    return {
        "healthy_devices": len(names),
        "healthy_devices_polled": len(per),
        "healthy_polls": sum(len(t) for t in per.values()),
        "healthy_longest_gap_s": round(max(gaps), 3) if gaps else None,
        "healthy_longest_gap_x_interval": round(max(gaps) / interval_s, 3) if gaps else None,
        "healthy_ticks_without_reading": skipped,
        "healthy_lateness_p50_s": round(statistics.median(late), 4) if late else None,
        "healthy_lateness_p99_s": round(percentile(late, 99), 4),
        "healthy_lateness_max_s": round(max(late), 4) if late else None,
    }


def missed_by_device(port: int) -> dict[str, float]:
    text = requests.get(f"http://127.0.0.1:{port}/metrics", timeout=10).text
    return {
        s.labels["device"]: s.value
        for fam in text_string_to_metric_families(text)
        for s in fam.samples
        if s.name == "tempctl_missed_polls_total" and "device" in s.labels
    }


def run(devices: int = 250, interval_s: float = 5.0, seconds: float = 150.0, hung: int = 0) -> dict:
    if not 0 <= hung < devices:
        raise ValueError("hung must be in [0, devices)")
    # Listeners and keep-alive connections on both sides, all inherited by the children.
    fd_limit = room_for_sockets(2 * devices)
    procs.log(f"fleet: starting emulators for {devices - hung} devices, {hung} hung")
    emus, addrs = [], []
    for first in range(0, devices - hung, EMULATOR_MAX):  # `tempctl emulate` serves <= 256
        emu, some = procs.emulator(min(EMULATOR_MAX, devices - hung - first), seed=1 + first)
        emus.append(emu)
        addrs += some
    hung_miners = HungMiners(hung) if hung else None
    healthy = set(addrs)
    if hung_miners is not None:
        # Spread evenly, so hung devices sit before and after healthy ones in every tick.
        hung_at = {j * devices // hung for j in range(hung)}
        stuck, live = iter(hung_miners.addrs), iter(addrs)
        addrs = [next(stuck) if i in hung_at else next(live) for i in range(devices)]
    tmp = Path(tempfile.mkdtemp(prefix="tempctl-fleet-"))
    db = tmp / "fleet.db"
    port = procs.free_port()
    out_path = tmp / "daemon.log"
    try:
        with open(out_path, "w") as out:
            daemon = procs.tempctl(
                ["run"],
                {
                    "BITAXE_IP": ",".join(addrs),
                    "CHECK_INTERVAL": f"{interval_s:g}",
                    "TEMPCTL_DB": str(db),
                    "TEMPCTL_METRICS_PORT": str(port),
                },
                stdout=out,
            )
            try:
                warmup = 2 * interval_s + 1
                procs.log(f"fleet: daemon running; measuring for {seconds:g} s")
                time.sleep(warmup)
                c0, w0 = procs.cpu_s(daemon.pid), time.monotonic()
                e0 = sum(procs.cpu_s(e.pid) for e in emus)
                peak = 0.0
                while time.monotonic() - w0 < seconds - warmup:
                    time.sleep(min(5.0, seconds - warmup))
                    peak = max(peak, procs.memory_mb(daemon.pid)["rss_mb"])
                wall = time.monotonic() - w0
                cpu = (procs.cpu_s(daemon.pid) - c0) / wall * 100
                emu_cpu = (sum(procs.cpu_s(e.pid) for e in emus) - e0) / wall * 100
                mem = procs.memory_mb(daemon.pid)
                metrics, buckets = scrape(port)
                missed = missed_by_device(port)
            finally:
                procs.stop(daemon)
        if daemon.returncode != 0:
            raise RuntimeError(f"daemon exited {daemon.returncode}: {out_path.read_text()[-2000:]}")
        result = {
            "devices": devices,
            "hung_devices": hung,
            "check_interval_s": interval_s,
            "duration_s": seconds,
            "cpus": os.cpu_count(),
            "cpus_usable": len(os.sched_getaffinity(0)),
            # A daemon that records when each poll was due (Device.lateness_s) is
            # measured by itself; otherwise from the log, assuming one shared tick.
            **(
                dict(from_log(db, interval_s), lateness_max_s=None, **histogram_lateness(buckets))
                if buckets.get(float("inf"))
                else from_log(db, interval_s)
            ),
            "missed_polls": int(metrics.get("tempctl_missed_polls_total", -1)),
            "poll_errors": int(metrics.get("tempctl_poll_errors_total", -1)),
            "daemon_cpu_percent_of_one_core": round(cpu, 1),
            "daemon_cpu_ms_per_poll": round(cpu / 100 * interval_s / devices * 1000, 3),
            "daemon_rss_mb": mem["rss_mb"],
            "daemon_peak_rss_mb": max(mem["peak_rss_mb"], peak),
            "emulator_cpu_percent_of_one_core": round(emu_cpu, 1),
            "load_average_1m": round(os.getloadavg()[0], 2),
            "fd_soft_limit": fd_limit,
        }
        if hung:
            result.update(healthy_figures(db, healthy, interval_s))
            result["healthy_missed_polls"] = int(sum(missed.get(a, 0) for a in healthy))
            result["hung_connections_accepted"] = hung_miners.accepted
            result["daemon_log_unresponsive_lines"] = sum(
                "unresponsive:" in line for line in out_path.read_text().splitlines()
            )
        return result
    finally:
        for emu in emus:
            procs.stop(emu)
        if hung_miners is not None:
            hung_miners.close()
        for f in tmp.iterdir():
            f.unlink()
        tmp.rmdir()


if __name__ == "__main__":
    import json

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("devices", type=int, nargs="?", default=250, help="all devices, hung included")
    p.add_argument("seconds", type=float, nargs="?", default=150.0)
    p.add_argument("--hung", type=int, default=0, metavar="N", help="N of them hung")
    p.add_argument("--interval", type=float, default=5.0, help="CHECK_INTERVAL (s)")
    a = p.parse_args()
    print(json.dumps(run(a.devices, a.interval, a.seconds, hung=a.hung), indent=2))
