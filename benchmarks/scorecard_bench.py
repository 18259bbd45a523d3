"""What the live scorecard costs (daemon/scorecard.py): prints JSON.

    python benchmarks/scorecard_bench.py [--devices 250]

- ``observe_us``: CPU per reading of ``Scorecard.on_reading`` (the daemon's main thread),
  for a device a day into its window (5 s polls);
- ``history_cpu_s_per_device_day``: reading one device-day at 5 s polls (17,280 readings,
  written by ``tempctl simulate --db``) back from the log on the loader thread;
- ``query_cpu_s_per_device_day``: the Datasette query ``scorecard`` on that log;
- ``bytes_per_device``: memory of one device's scorecard with a full 24 h window;
- ``scrape_cpu_ms``: one ``/metrics`` collection with ``--devices`` devices, scorecard
  included.

Times are CPU seconds of this process (the machine may be shared); wall times beside them.

Nothing is written into the repository (a temporary directory).
"""

from __future__ import annotations

import argparse
import json
import sqlite3
import sys
import tempfile
import time
import tracemalloc
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tempctl.config import Settings  # noqa: E402
from tempctl.core.controller import Controller, Limits  # noqa: E402
from tempctl.core.driver import Driver  # noqa: E402
from tempctl.core.reading import Reading  # noqa: E402
from tempctl.daemon.loop import Device  # noqa: E402
from tempctl.daemon.metrics import Metrics  # noqa: E402
from tempctl.daemon.scorecard import Scorecard  # noqa: E402

T0 = 1_767_225_600_000
POLL_MS = 5_000
DAY = 86_400_000 // POLL_MS


def device(name: str) -> Device:
    limits = Limits(check_interval=POLL_MS / 1000)
    return Device(name, "http://127.0.0.1:1", limits, None, Driver(Controller(limits, name)))


def reading(name: str, i: int) -> Reading:
    hot = 62.0 + (i % 40) / 10  # crosses 63 °C now and then
    return Reading(
        name,
        T0 + i * POLL_MS,
        temp=hot,
        frequency=525.0 if i % 500 < 250 else 550.0,
        hashrate=1100.0,
        power=18.5,
        fan_pct=100.0,
        autofan=False,
        asic_model="BM1370",
    )


def observe(sc: Scorecard, d: Device, n: int, start: int = 0) -> float:
    """CPU seconds for ``n`` readings."""
    t = time.process_time()
    for i in range(start, start + n):
        sc.on_reading(d, reading(d.name, i), None)
    return time.process_time() - t


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--devices", type=int, default=250)
    args = p.parse_args()
    out: dict = {"poll_s": POLL_MS / 1000}

    sc, d = Scorecard(), device("bench")
    observe(sc, d, DAY)  # a full window first
    n = 20_000
    out["observe_us"] = round(observe(sc, d, n, DAY) / n * 1e6, 2)

    tracemalloc.start()
    before = tracemalloc.get_traced_memory()[0]
    one = Scorecard()
    observe(one, device("mem"), DAY + 1000)
    out["bytes_per_device"] = tracemalloc.get_traced_memory()[0] - before
    tracemalloc.stop()

    from tempctl.sim.scenario import load_scenario
    from tempctl.sim.simulate import simulate

    with tempfile.TemporaryDirectory() as tmp:
        db = str(Path(tmp) / "day.db")
        simulate(load_scenario("heatwave"), ["tempctl"], Settings(), poll_s=5.0, db=db)
        conn = sqlite3.connect(db)
        name, last, rows = conn.execute(
            "SELECT device, max(ts_ms), count(*) FROM readings GROUP BY device"
        ).fetchone()
        conn.close()
        loader = Scorecard.for_log(db)
        t, w = time.process_time(), time.perf_counter()
        loader.on_reading(device(name), Reading(name, last + POLL_MS, temp=60.0), None)
        loader.settle()
        out["history_readings"] = rows
        out["history_cpu_s_per_device_day"] = round(time.process_time() - t, 3)
        out["history_wall_s"] = round(time.perf_counter() - w, 3)
        loader.close()

        from tempctl.ui.server import render_metadata

        sql = render_metadata("day")["databases"]["day"]["queries"]["scorecard"]["sql"]
        conn = sqlite3.connect(db)
        t, w = time.process_time(), time.perf_counter()
        conn.execute(sql, {"device": name}).fetchall()
        out["query_cpu_s_per_device_day"] = round(time.process_time() - t, 3)
        out["query_wall_s"] = round(time.perf_counter() - w, 3)
        conn.close()

    m = Metrics(scorecard=Scorecard())
    devs = [device(f"miner{i:03d}") for i in range(args.devices)]
    for dv in devs:
        m.watch(dv)
        for i in range(3):
            r = reading(dv.name, i)
            dv.last_reading = r
            m.scorecard.on_reading(dv, r, None)
    t, w = time.process_time(), time.perf_counter()
    for _ in range(5):
        list(m.collect())
    out["devices"] = args.devices
    out["scrape_cpu_ms"] = round((time.process_time() - t) / 5 * 1000, 1)
    out["scrape_wall_ms"] = round((time.perf_counter() - w) / 5 * 1000, 1)
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
