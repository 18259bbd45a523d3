"""The emulator: one or many ``Firmware`` objects, each behind its own HTTP server on loopback.

Each device gets its own port and ``ThreadingHTTPServer``; one lock per device
serialises requests, as the real single-task server does (axeos-api.md §2).
While a device reboots its listening socket is closed, so clients see a real
"connection refused", but the port stays reserved: a bound socket that does not
listen holds it (SO_REUSEPORT, which only our own sockets set) until the device
listens again, so no other program can take the port during the reboot. A failed
rebind is logged and counted in ``Emulator.errors``, and retried every tick.
Plant time runs ``scale`` times faster than ``clock``. With ``pace_s`` it also waits for a
late poll: it runs at most ``pace_s`` plant seconds past the latest GET /api/system/info, so
a compressed run on a busy machine (a daemon scheduled late) is not a plant left unwatched.

The package docstring (``tempctl.sim.emulator``) gives the overview; fault injection
is described in ``faults``.
"""

from __future__ import annotations

import logging
import random
import socket
import struct
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import ThreadingHTTPServer
from typing import Self

from tempctl.sim.emulator.faults import FaultSpec, apply_conditions, parse_faults
from tempctl.sim.emulator.handler import Handler
from tempctl.sim.firmware import Firmware
from tempctl.sim.scenario import Scenario, load_scenario

__all__ = ["Device", "DeviceServer", "DeviceServer6", "Emulator", "placeholder", "reuse_port"]

log = logging.getLogger("tempctl.emulator")


def reuse_port(sock: socket.socket) -> None:
    # Lets a listener and the reboot placeholder share the port; a socket of another
    # program cannot join unless it sets SO_REUSEPORT too (and runs as the same user).
    if hasattr(socket, "SO_REUSEPORT"):
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)


def placeholder(family: int, address: tuple) -> socket.socket:
    """A bound socket that does not listen: it holds the port, connections are refused."""
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        reuse_port(sock)
        sock.bind(address)
    except OSError:
        sock.close()
        raise
    return sock


class DeviceServer(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    block_on_close = False
    device: Device

    def server_bind(self) -> None:
        reuse_port(self.socket)
        super().server_bind()

    def server_activate(self) -> None:
        self.connections: set[socket.socket] = set()
        self.conn_lock = threading.Lock()
        super().server_activate()

    def process_request(self, request, client_address) -> None:
        with self.conn_lock:
            self.connections.add(request)
        super().process_request(request, client_address)

    def shutdown_request(self, request) -> None:
        with self.conn_lock:
            self.connections.discard(request)
        super().shutdown_request(request)

    def reset_connections(self) -> None:
        """A rebooting ESP forgets its keep-alive connections: reset them all."""
        with self.conn_lock:
            conns = list(self.connections)
        for conn in conns:
            try:
                conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                conn.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass

    def handle_error(self, request, client_address) -> None:
        pass  # a client that hung up mid-request is normal here


class DeviceServer6(DeviceServer):
    address_family = socket.AF_INET6


@dataclass
class Device:
    index: int
    firmware: Firmware
    faults: FaultSpec
    rng: random.Random
    port: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)
    server: DeviceServer | None = None
    thread: threading.Thread | None = None
    hold: socket.socket | None = None  # the port while the device reboots
    until: dict[str, float] = field(default_factory=dict)  # condition faults: plant time
    failing: bool = False  # the last (re)bind failed; logged once per streak


class Emulator:
    """One or many emulated Bitaxes on loopback; usable in-process from tests and benchmarks."""

    def __init__(
        self,
        scenario: Scenario | str,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        devices: int = 1,
        scale: float = 1.0,
        firmware: str | None = None,
        asic: str | None = None,
        faults: str | None = None,
        seed: int = 0,
        start_hours: float = 0.0,
        clock: Callable[[], float] = time.monotonic,
        private_ip_check: bool = False,
        ambient_spread_c: float = 2.0,
        restart_downtime_s: float = 7.0,
        boot_s: float = 8.0,
        hang_s: float = 10.0,
        tick_s: float = 0.05,
        version_label: str | None = None,
        password: str | None = None,
        auth_read_required: bool = False,
        pace_s: float | None = None,
    ):
        if devices < 1:
            raise ValueError("devices must be >= 1")
        if scale <= 0:
            raise ValueError("scale must be > 0")
        if pace_s is not None and pace_s <= 0:
            raise ValueError("pace must be > 0")
        self.scenario = load_scenario(scenario) if isinstance(scenario, str) else scenario
        self.host = host
        self.scale = scale
        self.clock = clock
        self.private_ip_check = private_ip_check
        self.hang_s = hang_s
        self.tick_s = tick_s
        self.password = password
        self.auth_read_required = auth_read_required
        self.errors: list[str] = []  # failed (re)binds, oldest first
        self.start_s = start_hours * 3600.0
        self._t0: float | None = None
        self.pace_s = pace_s
        self._poll: tuple[float, float] | None = None  # (clock, plant s) at the latest poll
        self.held_s = 0.0  # plant seconds the pace held back, for the state endpoint
        self._pace_lock = threading.Lock()
        self._stop = threading.Event()
        self._sync_lock = threading.Lock()
        self._supervisor: threading.Thread | None = None
        spec = parse_faults(faults)
        self.devices: list[Device] = []
        for i in range(devices):
            # spread ambient evenly over [-spread/2, +spread/2] so a fleet is not identical
            offset = ambient_spread_c * (i / (devices - 1) - 0.5) if devices > 1 else 0.0
            fw = Firmware(
                self.scenario,
                firmware=firmware,
                asic=asic,
                seed=seed + i,
                ambient_offset_c=offset,
                start_s=self.start_s,
                restart_downtime_s=restart_downtime_s,
                boot_s=boot_s,
                hostname="bitaxe" if devices == 1 else f"bitaxe-{i + 1}",
                version_label=version_label,
            )
            dev = Device(
                i, fw, spec, random.Random(f"faults:{seed + i}"), port=port + i if port else 0
            )
            apply_conditions(dev, draw=False)
            self.devices.append(dev)

    # -- lifecycle -------------------------------------------------------------------------------

    @property
    def urls(self) -> list[str]:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return [f"http://{host}:{d.port}" for d in self.devices]

    def start(self) -> None:
        self._t0 = self.clock()
        try:
            for d in self.devices:
                self._listen(d)
        except OSError:
            self.stop()  # e.g. PORT+i taken: close the ones already open
            raise
        self._supervisor = threading.Thread(
            target=self._supervise, name="emulator-tick", daemon=True
        )
        self._supervisor.start()

    def stop(self) -> None:
        self._stop.set()
        if self._supervisor is not None:
            self._supervisor.join(timeout=5)
        with self._sync_lock:
            for d in self.devices:
                self._close(d)

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def wait_stopped(self, seconds: float) -> bool:
        """Wait up to ``seconds`` (real time) for stop(); True once stopping."""
        return self._stop.wait(seconds)

    def device_time(self) -> float:
        """Plant seconds: start + scale * (clock() - t0), held within ``pace_s`` of the
        latest poll when pacing."""
        if self._t0 is None:
            return self.start_s
        now = self.clock()
        poll = self._poll
        if poll is None:
            return self.start_s + self.scale * (now - self._t0)
        return poll[1] + min(self.scale * (now - poll[0]), self.pace_s)

    def polled(self) -> float:
        """A GET /api/system/info arrived: the plant time it reads (and, pacing, the new
        anchor the plant may run ``pace_s`` past)."""
        if self.pace_s is None or self._t0 is None:
            return self.device_time()
        with self._pace_lock:
            now = self.clock()
            plant = self.device_time()
            if self._poll is not None:
                self.held_s += max(0.0, self.scale * (now - self._poll[0]) - self.pace_s)
            self._poll = (now, plant)
            return plant

    def firmware(self, index: int = 0) -> Firmware:
        return self.devices[index].firmware

    def set_faults(self, spec: str | None, index: int | None = None) -> FaultSpec:
        parsed = parse_faults(spec)
        for d in self.devices if index is None else [self.devices[index]]:
            with d.lock:
                d.faults = parsed
                apply_conditions(d, draw=False)
        return parsed

    def sync(self) -> None:
        """Advance every device to ``device_time()`` and open/close listeners to match.

        The background thread does this every ``tick_s``; tests with a fake clock call it
        after moving the clock so a reboot closes the port at once.
        """
        background = threading.current_thread() is self._supervisor
        if not self._sync_lock.acquire(timeout=0 if background else 10):
            return
        try:
            now = self.device_time()
            for d in self.devices:
                if not d.lock.acquire(timeout=0 if background else 5):
                    continue  # busy (e.g. a hanging request): the next tick catches up
                try:
                    d.firmware.advance(now)
                    apply_conditions(d, draw=False)
                    up = d.firmware.reachable()
                finally:
                    d.lock.release()
                if self._stop.is_set():
                    return
                if up and d.server is None:
                    self._relisten(d)
                elif not up and d.server is not None:
                    self._close(d, hold=True)
        finally:
            self._sync_lock.release()

    def _supervise(self) -> None:
        while not self._stop.wait(self.tick_s):
            self.sync()

    def _relisten(self, d: Device) -> None:
        """Back from a reboot: listen on the same port again (retried every tick)."""
        try:
            self._listen(d)
        except OSError as exc:
            if not d.failing:
                msg = f"device {d.index}: cannot listen on port {d.port} again: {exc}"
                self.errors.append(msg)
                log.error("%s (retrying every %g s)", msg, self.tick_s)
            d.failing = True
            return
        if d.failing:
            log.warning("device %d: listening on port %d again", d.index, d.port)
        d.failing = False

    def _listen(self, d: Device) -> None:
        cls = DeviceServer6 if ":" in self.host else DeviceServer
        server = cls((self.host, d.port), Handler, bind_and_activate=True)
        server.device = d
        server.emulator = self  # type: ignore[attr-defined]
        d.port = server.server_address[1]
        d.server = server
        if d.hold is not None:
            d.hold.close()  # the listener has the port now
            d.hold = None
        d.thread = threading.Thread(
            target=server.serve_forever,
            kwargs={"poll_interval": 0.02},
            name=f"emulator-{d.index}",
            daemon=True,
        )
        d.thread.start()

    def _close(self, d: Device, *, hold: bool = False) -> None:
        """Stop serving; with ``hold`` keep the port (a reboot), else release it (stop)."""
        server, d.server = d.server, None
        if server is not None:
            server.shutdown()
            if hold and d.hold is None:
                family = server.socket.family
                try:
                    d.hold = placeholder(family, server.server_address[:2])
                except OSError as exc:
                    msg = f"device {d.index}: cannot hold port {d.port} over the reboot: {exc}"
                    self.errors.append(msg)
                    log.error("%s", msg)
            server.server_close()
            server.reset_connections()
        if not hold and d.hold is not None:
            d.hold.close()
            d.hold = None
        if d.thread is not None:
            d.thread.join(timeout=5)
            d.thread = None
