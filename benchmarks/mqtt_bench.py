"""MQTT bridge: CPU per poll with a fleet of 250 miners, against a real mosquitto on loopback.

``python -m benchmarks.mqtt_bench [--devices 250] [--ticks 40]`` prints one JSON document.

The bridge is fed what the daemon's loop gives it (``on_reading`` with a reading, the
device and its controller, 250 devices per tick), in this process; the broker is
``mosquitto`` and a subscriber counting the state messages runs in a child process, so
this process's CPU is the bridge's alone: its loop-thread hook, its publisher thread and
paho's network thread. Measured:

- ``loop_us_per_poll``: CPU the daemon's loop thread spends in the hook (thread time);
- ``bridge_us_per_poll``: all of this process's CPU for the run, until the subscriber
  got every state, divided by the polls;
- the same hook cost while the broker is down (the bridge then publishes nothing);
- updates dropped by the bounded queue (none expected at this rate).
Discovery (29 configs per miner with a scorecard) is published once per miner and
counted in the first tick.
"""

from __future__ import annotations

import argparse
import json
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from tempctl.core.controller import Controller, Decision, Limits
from tempctl.core.driver import Driver
from tempctl.core.reading import Reading
from tempctl.daemon.loop import Device
from tempctl.mqtt import discovery as ha
from tempctl.mqtt.bridge import Bridge

SUBSCRIBER = """
import sys, time, paho.mqtt.client as mqtt
want, port = int(sys.argv[1]), int(sys.argv[2])
seen = [0]
c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="bench-sub")
def on_message(cl, u, m):
    if m.topic.endswith("/state") and m.payload:
        seen[0] += 1
c.on_connect = lambda cl, *a: cl.subscribe("tempctl/+/state")
c.on_message = on_message
c.connect("127.0.0.1", port)
c.loop_start()
print("ready", flush=True)
deadline = time.monotonic() + 120
while seen[0] < want and time.monotonic() < deadline:
    time.sleep(0.05)
print(seen[0], flush=True)
"""


class Scores:
    def values(self, device: str) -> dict[str, float | None]:
        return {k: 1.0 for k in ha.SCORE_KEYS}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def mosquitto(tmp: Path, port: int) -> subprocess.Popen:
    exe = shutil.which("mosquitto") or "/usr/sbin/mosquitto"
    conf = tmp / "mosquitto.conf"
    conf.write_text(f"listener {port} 127.0.0.1\nallow_anonymous true\npersistence false\n")
    proc = subprocess.Popen([exe, "-c", str(conf)], stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return proc
        except OSError:
            time.sleep(0.05)
    raise RuntimeError("mosquitto did not start")


def fleet(n: int) -> list[Device]:
    lim = Limits()
    return [
        Device(f"m{i}", f"http://127.0.0.1:{9000 + i}", lim, None, Driver(Controller(lim, f"m{i}")))
        for i in range(n)
    ]


def reading(d: Device, tick: int) -> Reading:
    i = int(d.name[1:])
    return Reading(
        d.name,
        1_700_000_000_000 + tick * 5000,
        temp=55.0 + (i % 7) + tick * 0.01,
        vr_temp=50.0,
        frequency=575.0,
        hashrate=1000.0 + tick,
        power=18.0,
        fan_pct=100.0,
        version="v2.15.0",
        asic_model="BM1370",
        hostname=f"bitaxe{i}",
        mac=f"aa:bb:cc:00:{i // 256:02x}:{i % 256:02x}",
    )


def feed(bridge: Bridge, devices: list[Device], ticks: int) -> float:
    """Loop-thread CPU seconds spent in the hook."""
    none = Decision()
    spent = 0.0
    for tick in range(ticks):
        rows = [(d, reading(d, tick)) for d in devices]
        t0 = time.thread_time()
        for d, r in rows:
            bridge.on_reading(d, r, none)
        spent += time.thread_time() - t0
    return spent


def run(devices: int = 250, ticks: int = 40) -> dict:
    if not (shutil.which("mosquitto") or Path("/usr/sbin/mosquitto").exists()):
        return {"skipped": "mosquitto is not installed (apt-get install mosquitto)"}
    polls = devices * ticks
    with tempfile.TemporaryDirectory() as tmp:
        port = free_port()
        broker = mosquitto(Path(tmp), port)
        sub = subprocess.Popen(
            [sys.executable, "-c", SUBSCRIBER, str(polls), str(port)],
            stdout=subprocess.PIPE,
            text=True,
        )
        try:
            assert sub.stdout.readline().strip() == "ready"
            fl = fleet(devices)
            bridge = Bridge(f"mqtt://127.0.0.1:{port}", scorecard=Scores())
            bridge.start()
            while not bridge._connected:  # noqa: SLF001 - the benchmark waits for the broker
                time.sleep(0.01)
            time.sleep(0.5)  # the first resync
            cpu0, wall0 = time.process_time(), time.monotonic()
            loop_s = feed(bridge, fl, ticks)
            got = int(sub.stdout.readline())
            cpu = time.process_time() - cpu0
            wall = time.monotonic() - wall0
            published, dropped = bridge.published, bridge.dropped
            bridge.close()
        finally:
            sub.kill()
            broker.kill()
            broker.wait()
        # The broker is gone: the hook alone (the publisher only updates its cache).
        down = Bridge(f"mqtt://127.0.0.1:{port}", reconnect=(1, 1))
        down.start()
        loop_down_s = feed(down, fleet(devices), ticks)
        down.close()
    return {
        "devices": devices,
        "ticks": ticks,
        "polls": polls,
        "states_received": got,
        "messages_published": published,
        "dropped": dropped,
        "loop_us_per_poll": round(loop_s / polls * 1e6, 1),
        "bridge_us_per_poll": round(cpu / polls * 1e6, 1),
        "bridge_cpu_pct_at_5s_interval": round(cpu / polls * devices / 5.0 * 100, 2),
        "loop_us_per_poll_broker_down": round(loop_down_s / polls * 1e6, 1),
        "wall_s": round(wall, 2),
    }


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--devices", type=int, default=250)
    ap.add_argument("--ticks", type=int, default=40)
    a = ap.parse_args()
    print(json.dumps(run(a.devices, a.ticks), indent=2))
