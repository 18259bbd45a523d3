"""Hung miners (they accept a connection and never answer) never delay the healthy ones.

Issue 23 item 1: with one FIFO pool of 64 threads, 64 hung miners held every thread
for their request deadline while a healthy miner's poll waited in the queue behind
them. Here the daemon runs in-process on a fake clock that moves a step each time it
is read, so the loop walks through its slots without waiting on the machine's clock;
the miners are real sockets on loopback and the real ``Client``. What is checked are
counts (how many hung polls had ended when the healthy miner's readings came in), and
the hung polls' deadline is far beyond anything the healthy ones need.
"""

from __future__ import annotations

import logging
import threading
from concurrent.futures import Future

import pytest
from pytest_httpserver import HTTPServer
from werkzeug import Response

from tempctl.config import Device as DeviceConfig
from tempctl.config import Settings
from tempctl.core.clock import FakeClock
from tempctl.daemon.loop import Daemon
from tempctl.daemon.notify import Notifier
from tempctl.device import Client
from tempctl.sim.emulator import Emulator
from tempctl.sim.firmware import BODIES_DIR
from tempctl.sim.hung import HungMiners
from tempctl.store.eventlog import Log

OLD_POOL = 64  # the old daemon's thread pool: at most 64 workers, first come first served
HUNG = OLD_POOL + 2
HUNG_DEADLINE_S = 15.0  # a hung poll ends only after this long (real time)


@pytest.fixture
def hung():
    with HungMiners(HUNG) as h:
        yield h


class Stepping(FakeClock):
    """Fake time that moves ``step`` seconds each time it is read: the loop reaches each
    slot by going round, whatever the machine's load (no sleeping, no wall clock)."""

    def __init__(self, step: float):
        super().__init__()
        self.step = step
        self.lock = threading.Lock()

    def monotonic(self) -> float:
        with self.lock:
            self._t += self.step
            return self._t


class Counter:
    """Observer: readings per device; stops the daemon when ``until(self)`` holds."""

    def __init__(self, stop: threading.Event, until):
        self.stop, self.until = stop, until
        self.readings: dict[str, list] = {}
        self.order: list[str] = []

    def on_reading(self, device, reading, decision) -> None:
        self.readings.setdefault(device.name, []).append(reading)
        self.order.append(device.name)
        if self.until(self):
            self.stop.set()

    def on_result(self, device, command, outcome, error) -> None:
        pass

    def count(self, names) -> int:
        return sum(len(self.readings.get(n, [])) for n in names)


def test_hung_miners_do_not_delay_a_healthy_one(tmp_path, hung):
    """66 hung miners come before a healthy one in every tick: more than the old pool's
    64 threads. The healthy miner's readings must come in while every hung poll is
    still waiting for its answer (15 s away); behind them, it got none before one ended."""
    with Emulator("heatwave", seed=2) as emu:
        healthy = emu.urls[0]
        devices = tuple(DeviceConfig(a, "http://" + a) for a in hung.addrs)
        devices += (DeviceConfig("healthy", healthy),)
        settings = Settings(devices=devices, check_interval=5.0)
        stop = threading.Event()
        seen = Counter(stop, lambda c: len(c.readings.get("healthy", [])) >= 3)

        def client(url):
            if url == healthy:
                return Client(url, read_timeout=HUNG_DEADLINE_S, retries=0)
            return Client(
                url, connect_timeout=HUNG_DEADLINE_S, read_timeout=HUNG_DEADLINE_S, retries=0
            )

        log = Log(tmp_path / "tempctl.db")
        try:
            daemon = Daemon(
                settings,
                eventlog=log,
                clock=Stepping(0.05),
                # A loop that wakes every millisecond (as for a 4 ms WatchdogSec), so
                # going round, not waiting, is what moves the fake clock on.
                notifier=Notifier(environ={"WATCHDOG_USEC": "4000"}),
                client_factory=client,
                observers=[seen],
                stop=stop,
            )
            daemon.run(max_polls=100_000)
        finally:
            log.close()
    first = seen.order.index("healthy")
    third = [i for i, n in enumerate(seen.order) if n == "healthy"][2]
    hung_before = sum(n != "healthy" for n in seen.order[:third])
    assert hung_before == 0, (
        f"the healthy miner's 1st reading came after {first} hung polls had timed out, "
        f"its 3rd after {hung_before}"
    )
    assert all(r.valid for r in seen.readings["healthy"]), seen.readings["healthy"]


@pytest.fixture
def comeback():
    """A miner that reads the request and answers only once ``gate`` is set."""
    server = HTTPServer(host="127.0.0.1", port=0, threaded=True)
    body = (BODIES_DIR / "v2.15.0_gamma-602_BM1370.json").read_bytes()
    gate = threading.Event()

    def info(request):
        gate.wait(30)  # hung until the test lets it answer
        return Response(body, content_type="application/json")

    server.expect_request("/api/system/info").respond_with_handler(info)
    server.start()
    yield server, gate
    gate.set()
    server.clear()
    server.stop()


def test_unresponsive_is_logged_once_per_device_and_so_is_its_return(
    tmp_path, hung, comeback, caplog
):
    """Hung miners time out at every probe (a 0.3 s deadline) but say so once; the one
    that comes back has 3 s to answer, the healthy one 10 s: generous on loopback."""
    server, gate = comeback
    back = f"127.0.0.1:{server.port}"
    stuck = hung.addrs[:3]
    with Emulator("heatwave", seed=4) as emu:
        devices = tuple(DeviceConfig(a, "http://" + a) for a in [*stuck, back])
        devices += (DeviceConfig("healthy", emu.urls[0]),)
        settings = Settings(devices=devices, check_interval=5.0)
        stop = threading.Event()

        def until(c: Counter) -> bool:
            if len(c.readings.get(back, [])) >= 2:
                gate.set()  # it timed out twice: now it comes back
            answers = [r for r in c.readings.get(back, []) if r.valid]
            return len(answers) >= 3 and min(len(c.readings.get(a, [])) for a in stuck) >= 4

        def client(url: str) -> Client:
            s = {emu.urls[0]: 10.0, "http://" + back: 3.0}.get(url, 0.3)
            return Client(url, connect_timeout=s, read_timeout=s, retries=0)

        seen = Counter(stop, until)
        log = Log(tmp_path / "tempctl.db")
        try:
            with caplog.at_level(logging.INFO, logger="tempctl"):
                Daemon(
                    settings,
                    eventlog=log,
                    clock=FakeClock(),
                    client_factory=client,
                    observers=[seen],
                    stop=stop,
                ).run(max_polls=200)
            events = log.conn.execute(
                "SELECT device, message FROM events WHERE kind = 'log' AND device != 'healthy' "
                "AND message NOT LIKE 'start:%' ORDER BY id"
            ).fetchall()
        finally:
            log.close()
    assert stop.is_set(), "the miner that came back never answered 3 times"
    assert [r.valid for r in seen.readings[back][:2]] == [False, False]
    for a in stuck:
        timeouts = [r for r in seen.readings[a] if r.error and r.error.startswith("timeout")]
        assert len(timeouts) >= 4, seen.readings[a]
    lines = [r.getMessage() for r in caplog.records]
    for a in [*stuck, back]:
        gone = [m for m in lines if m.startswith(f"{a}: unresponsive")]
        assert len(gone) == 1, (a, gone)
        assert f"{3 if a == back else 0.3:g} s deadline" in gone[0], gone
    returned = [m for m in lines if "answers again" in m]
    assert returned == [f"{back}: answers again: back on its schedule"], returned
    assert not [m for m in lines if m.startswith("healthy:") and "unresponsive" in m]
    assert [d for d, _ in events].count(back) == 2 and len(events) == len(stuck) + 2, events


def test_the_probe_lane_takes_devices_in_turn_and_never_more_than_its_threads():
    from tempctl.daemon.lanes import Lanes  # here, so the tests above also run on 1d92cc0

    lanes = Lanes(devices=5, probe_workers=2)
    gate = threading.Event()

    class D:
        def __init__(self, name):
            self.name = name

    a, b, c = D("a"), D("b"), D("c")
    try:
        assert lanes.queue(a) and lanes.queue(b) and lanes.queue(c)
        assert not lanes.queue(a)  # one place per device
        started = lanes.start_probes(lambda d: gate.wait(30))
        assert [d.name for d, _ in started] == ["a", "b"]
        assert lanes.start_probes(lambda d: None) == []  # both threads busy: c waits
        gate.set()
        done: Future = started[0][1]
        done.result(timeout=30)
        lanes.finished(done)
        assert [d.name for d, _ in lanes.start_probes(lambda d: None)] == ["c"]
        assert lanes.queue(a)  # probed, so it may queue again
    finally:
        gate.set()
        lanes.shutdown()


def test_one_watcher_ends_every_hung_request_at_its_own_deadline(hung):
    """Many requests to hung miners at once, with different deadlines: each ends with a
    timeout naming its own deadline, and no thread is started per request."""
    from tempctl.device import Timeout

    deadlines = [0.2, 0.5, 0.3, 0.4] * 4
    clients = [
        Client("http://" + a, connect_timeout=s, read_timeout=s, retries=0)
        for a, s in zip(hung.addrs, deadlines, strict=False)
    ]
    errors: list[BaseException | None] = [None] * len(clients)

    def ask(i: int) -> None:
        try:
            clients[i].fetch_info()
        except BaseException as exc:  # noqa: BLE001 - what it raised is the point
            errors[i] = exc

    askers = [threading.Thread(target=ask, args=(i,)) for i in range(len(clients))]
    for t in askers:
        t.start()
    for t in askers:
        t.join(timeout=60)
    assert not any(t.is_alive() for t in askers), "a request outlived its deadline"
    for s, exc in zip(deadlines, errors, strict=False):
        assert isinstance(exc, Timeout), exc
        assert f"within the {s:g} s deadline" in str(exc) or "timeout after" in str(exc), exc
    watchers = [t for t in threading.enumerate() if t.name == "tempctl-deadlines"]
    assert len(watchers) == 1
    assert not [t for t in threading.enumerate() if isinstance(t, threading.Timer)]
