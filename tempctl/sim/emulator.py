"""A fake Bitaxe on loopback: AxeOS HTTP around one or many ``Firmware`` objects.

Each device gets its own port and ``ThreadingHTTPServer``; one lock per device
serialises requests, as the real single-task server does (axeos-api.md §2).
While a device reboots its listening socket is closed, so clients see a real
"connection refused". Plant time runs ``scale`` times faster than ``clock``.

Fault injection (``parse_faults``) is reproducible with the seed: each request
draws one number per fault that applies to its route, in a fixed order, from a
per-device RNG. A control API under ``/_emulator/`` (never faulted, never
access-checked) lets tests read the true state and steer the device.
"""

from __future__ import annotations

import ipaddress
import json
import random
import socket
import struct
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Self
from urllib.parse import parse_qs, urlsplit

from tempctl.sim.firmware import RESET_PANIC, Firmware, dumps
from tempctl.sim.scenario import Scenario, load_scenario

# Fault names, in the order their numbers are drawn.
FAULT_NAMES = (
    "timeout",
    "5xx",
    "reboot",
    "overheat",
    "sensor_m1",
    "sensor_0",
    "sensor_127",
    "wrong_types",
    "missing",
    "mac_change",
    "huge",
    "truncated",
    "malformed",
    "patch_ignored",
    "patch_400",
    "restart_fail",
)
# Which faults each kind of request can suffer.
INFO_FAULTS = (
    "timeout",
    "5xx",
    "reboot",
    "overheat",
    "sensor_m1",
    "sensor_0",
    "sensor_127",
    "wrong_types",
    "missing",
    "mac_change",
    "huge",
    "truncated",
    "malformed",
)
GET_FAULTS = ("timeout", "5xx", "huge", "truncated", "malformed")
PATCH_FAULTS = ("timeout", "5xx", "reboot", "overheat", "patch_ignored", "patch_400")
RESTART_FAULTS = ("timeout", "5xx", "restart_fail")

PRIVATE_NETS = [ipaddress.ip_network(n) for n in ("10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16")]
CORS_HEADERS = (
    ("Access-Control-Allow-Origin", "*"),
    ("Access-Control-Allow-Methods", "GET, POST, PUT, PATCH, DELETE, OPTIONS"),
    ("Access-Control-Allow-Headers", "Content-Type"),
)
INDEX_HTML = b"<!doctype html><html><head><title>AxeOS</title></head><body>AxeOS</body></html>"


@dataclass(frozen=True)
class FaultSpec:
    """Fault name -> probability per request (1.0 = always)."""

    probabilities: tuple[tuple[str, float], ...] = ()

    def p(self, name: str) -> float:
        return dict(self.probabilities).get(name, 0.0)

    def __str__(self) -> str:
        return ",".join(name if p == 1.0 else f"{name}={p:g}" for name, p in self.probabilities)

    def __bool__(self) -> bool:
        return bool(self.probabilities)


def parse_faults(spec: str | None) -> FaultSpec:
    """``"timeout=0.1,5xx,malformed=0.5"`` -> FaultSpec; ValueError naming the bad item."""
    items: dict[str, float] = {}
    for raw in (spec or "").split(","):
        item = raw.strip()
        if not item:
            continue
        name, sep, value = item.partition("=")
        name = name.strip()
        if name not in FAULT_NAMES:
            raise ValueError(f"unknown fault {name!r} in {item!r}; known: {', '.join(FAULT_NAMES)}")
        if sep:
            try:
                p = float(value)
            except ValueError:
                raise ValueError(f"bad probability in fault {item!r}: not a number") from None
            if not 0.0 <= p <= 1.0:
                raise ValueError(f"bad probability in fault {item!r}: must be within 0..1")
        else:
            p = 1.0
        items[name] = p
    return FaultSpec(tuple(items.items()))


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    block_on_close = False
    device: _Device

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


class _Server6(_Server):
    address_family = socket.AF_INET6


@dataclass
class _Device:
    index: int
    firmware: Firmware
    faults: FaultSpec
    rng: random.Random
    port: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)
    server: _Server | None = None
    thread: threading.Thread | None = None


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
    ):
        if devices < 1:
            raise ValueError("devices must be >= 1")
        if scale <= 0:
            raise ValueError("scale must be > 0")
        self.scenario = load_scenario(scenario) if isinstance(scenario, str) else scenario
        self.host = host
        self.scale = scale
        self.clock = clock
        self.private_ip_check = private_ip_check
        self.hang_s = hang_s
        self.tick_s = tick_s
        self.start_s = start_hours * 3600.0
        self._t0: float | None = None
        self._stop = threading.Event()
        self._sync_lock = threading.Lock()
        self._supervisor: threading.Thread | None = None
        spec = parse_faults(faults)
        self.devices: list[_Device] = []
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
            )
            self.devices.append(
                _Device(
                    i, fw, spec, random.Random(f"faults:{seed + i}"), port=port + i if port else 0
                )
            )

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

    def device_time(self) -> float:
        """Plant seconds: start + scale * (clock() - t0)."""
        if self._t0 is None:
            return self.start_s
        return self.start_s + self.scale * (self.clock() - self._t0)

    def firmware(self, index: int = 0) -> Firmware:
        return self.devices[index].firmware

    def set_faults(self, spec: str | None, index: int | None = None) -> FaultSpec:
        parsed = parse_faults(spec)
        for d in self.devices if index is None else [self.devices[index]]:
            d.faults = parsed
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
                    up = d.firmware.reachable()
                finally:
                    d.lock.release()
                if self._stop.is_set():
                    return
                if up and d.server is None:
                    self._listen(d)
                elif not up and d.server is not None:
                    self._close(d)
        finally:
            self._sync_lock.release()

    def _supervise(self) -> None:
        while not self._stop.wait(self.tick_s):
            try:
                self.sync()
            except OSError:
                pass  # the port is briefly unavailable; retry on the next tick

    def _listen(self, d: _Device) -> None:
        cls = _Server6 if ":" in self.host else _Server
        server = cls((self.host, d.port), _Handler, bind_and_activate=True)
        server.device = d
        server.emulator = self  # type: ignore[attr-defined]
        d.port = server.server_address[1]
        d.server = server
        d.thread = threading.Thread(
            target=server.serve_forever,
            kwargs={"poll_interval": 0.02},
            name=f"emulator-{d.index}",
            daemon=True,
        )
        d.thread.start()

    def _close(self, d: _Device) -> None:
        server, d.server = d.server, None
        if server is not None:
            server.shutdown()
            server.server_close()
            server.reset_connections()
        if d.thread is not None:
            d.thread.join(timeout=5)
            d.thread = None


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True  # headers and body go out separately: avoid a 40 ms ACK stall
    server: _Server

    # -- plumbing ---------------------------------------------------------------------------------

    def log_message(self, format: str, *args: object) -> None:
        pass

    def do_GET(self) -> None:
        self._handle("GET")

    def do_POST(self) -> None:
        self._handle("POST")

    def do_PATCH(self) -> None:
        self._handle("PATCH")

    def do_PUT(self) -> None:
        self._handle("PUT")

    def do_DELETE(self) -> None:
        self._handle("DELETE")

    def do_OPTIONS(self) -> None:
        self._handle("OPTIONS")

    @property
    def emulator(self) -> Emulator:
        return self.server.emulator  # type: ignore[attr-defined]

    def _body(self) -> bytes:
        if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
            self.close_connection = True  # §2: chunked bodies arrive as length 0
            return b""
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length > 0 else b""

    def _send(
        self,
        status: int,
        ctype: str,
        body: bytes,
        *,
        cors: bool = True,
        headers: tuple[tuple[str, str], ...] = (),
        chunked: bool = False,
    ) -> None:
        # send_response_only: the ESP server sends no Server or Date header (§2)
        self.send_response_only(status)
        if ctype:
            self.send_header("Content-Type", ctype)
        for name, value in (CORS_HEADERS if cors else ()) + headers:
            self.send_header(name, value)
        if chunked:
            self.send_header("Transfer-Encoding", "chunked")
            self.end_headers()
            if body:
                self.wfile.write(b"%x\r\n%s\r\n" % (len(body), body))
            self.wfile.write(b"0\r\n\r\n")
        else:
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

    def _json(self, status: int, obj: object) -> None:
        self._send(status, "application/json", json.dumps(obj).encode(), cors=False)

    def _drop(self, *, reset: bool = True) -> None:
        """Close without an answer; with ``reset`` the peer gets an RST, like a rebooting ESP."""
        self.close_connection = True
        if reset:
            try:
                self.connection.setsockopt(
                    socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0)
                )
            except OSError:
                pass

    def _hang(self) -> None:
        self.emulator._stop.wait(self.emulator.hang_s)
        self._drop(reset=False)

    # -- dispatch ---------------------------------------------------------------------------------

    def _handle(self, method: str) -> None:
        url = urlsplit(self.path)
        body = self._body() if method in ("POST", "PATCH", "PUT") else b""
        if url.path.startswith("/_emulator/"):
            self._control(method, url.path, body)
            return
        d = self.server.device
        with d.lock:
            fw = d.firmware
            fw.advance(self.emulator.device_time())
            if not fw.reachable():
                self._drop()
                return
            if self.emulator.private_ip_check and fw.v >= (2, 5, 0) and not self._allowed(fw):
                # §2: 401 text/html "Unauthorized", without CORS headers
                self._send(401, "text/html", b"Unauthorized", cors=False)
                return
            self._route(d, method, url.path, parse_qs(url.query), body)

    def _allowed(self, fw: Firmware) -> bool:
        def private(host: str) -> bool:
            try:
                addr = ipaddress.ip_address(host.strip("[]"))
            except ValueError:
                return False
            return addr.version == 4 and any(addr in net for net in PRIVATE_NETS)

        if not private(self.client_address[0]):
            return False
        origin = self.headers.get("Origin")
        if origin:
            host = urlsplit(origin).hostname or ""
            if private(host):
                return True
            # v2.15: a hostname Origin is fine when .local, dot-less or the device's own name
            return fw.v >= (2, 15, 0) and (
                host.endswith(".local") or "." not in host or host == fw.hostname
            )
        return True

    def _roll(self, d: _Device, names: tuple[str, ...]) -> set[str]:
        """Draw one number per applicable fault (always, so sequences stay aligned)."""
        active = set()
        for name in names:
            u = d.rng.random()
            if u < d.faults.p(name):
                active.add(name)
        return active

    def _route(self, d: _Device, method: str, path: str, query: dict, body: bytes) -> None:
        fw = d.firmware
        v = fw.v
        if method == "OPTIONS" and v >= (2, 13, 0) and path.startswith("/api/"):
            self._send(200, "", b"")  # §2: OPTIONS on any /api/* path from v2.13
            return
        if path == "/api/system/info" and method == "GET":
            self._info(d)
        elif path == "/api/system" and method == "PATCH":
            self._patch(d, body)
        elif path == "/api/system/restart" and method == "POST":
            self._restart(d)
        elif path == "/api/system/asic" and method == "GET" and fw.asic() is not None:
            self._get_json(d, fw.asic())
        elif path == "/api/system/statistics" and method == "GET" and fw.statistics() is not None:
            columns = query.get("columns", [None])[0] if v >= (2, 11, 0) else None
            self._get_json(d, fw.statistics(columns))
        elif (
            path in ("/api/system/pause", "/api/system/resume")
            and method == "POST"
            and v >= (2, 14, 0)
        ):
            if path.endswith("pause"):
                fw.pause()
                msg = "Mining paused"
            else:
                fw.resume()
                msg = "Mining resumed"
            self._send(200, "application/json", dumps({"message": msg}, pretty=False).encode())
        elif path == "/api/system/identify" and method == "POST" and v >= (2, 12, 0):
            msg = {"message": 'The device says "Hi!" for 30 seconds.'}
            self._send(200, "application/json", dumps(msg, pretty=fw.pretty).encode())
        elif path == "/" and method == "GET":
            self._send(200, "text/html", INDEX_HTML, cors=False)
        else:
            self._unknown(fw, method)

    def _unknown(self, fw: Firmware, method: str) -> None:
        # §2: v2.9+ answers 404 JSON; older firmware sends an unknown GET to the captive portal
        if fw.v >= (2, 9, 0):
            self._send(404, "application/json", b'{"error":"unknown route"}')
        elif method == "GET":
            self._send(
                302,
                "text/plain",
                b"Redirect to the captive portal",
                cors=False,
                headers=(("Location", "/"),),
            )
        else:
            self._send(404, "text/html", b"This URI does not exist", cors=False)

    # -- routes with faults ---------------------------------------------------------------

    def _common_faults(self, d: _Device, active: set[str]) -> bool:
        """Apply the faults that end the request early; True when it is over."""
        if "timeout" in active:
            self._hang()
            return True
        if "5xx" in active:
            self._send(500, "text/html", b"Internal Server Error")
            return True
        if "reboot" in active:
            d.firmware.crash(RESET_PANIC)
            self._drop()
            return True
        if "overheat" in active:
            d.firmware.force_overheat()
            if not d.firmware.reachable():  # latched firmware crash-reboots at once (§9.2)
                self._drop()
                return True
        return False

    def _info(self, d: _Device) -> None:
        fw = d.firmware
        active = self._roll(d, INFO_FAULTS)
        if self._common_faults(d, active):
            return
        for name, value in (("sensor_m1", -1.0), ("sensor_0", 0.0), ("sensor_127", 127.0)):
            if name in active:
                fw.inject_temp(value)  # the firmware itself reads it (127 trips, §10)
        if not fw.reachable():
            self._drop()
            return
        info = fw.info()
        for name, value in (("sensor_m1", -1), ("sensor_0", 0), ("sensor_127", 127.0)):
            if name in active:
                info["temp"] = value  # also while booting, when the firmware ignores the sensor
        if "wrong_types" in active:
            self._wrong_types(d.rng, info)
        if "missing" in active:
            for key in ["temp"] + d.rng.sample(
                ["vrTemp", "frequency", "hashRate", "uptimeSeconds", "coreVoltage", "version"], 2
            ):
                info.pop(key, None)
        if "mac_change" in active:
            info["hostname"] = fw.hostname + "-other"
            if "macAddr" in info:
                info["macAddr"] = "02:00:00:" + ":".join(
                    f"{d.rng.randrange(256):02X}" for _ in range(3)
                )
        self._send_body(d, active, info, pretty=fw.pretty)

    def _get_json(self, d: _Device, obj: object) -> None:
        active = self._roll(d, GET_FAULTS)
        if self._common_faults(d, active):
            return
        self._send_body(d, active, obj, pretty=d.firmware.pretty)

    def _send_body(self, d: _Device, active: set[str], obj: object, *, pretty: bool) -> None:
        if "huge" in active and isinstance(obj, dict):
            obj = dict(obj, _padding="x" * 70_000)  # > 64 KiB, still valid JSON
        raw = dumps(obj, pretty=pretty).encode()
        if "truncated" in active:
            raw = raw[: d.rng.randint(1, max(1, len(raw) - 1))]
        if "malformed" in active:
            raw = d.rng.choice(
                [
                    b"<html><body>AxeOS</body></html>",
                    b"{power: 12.5, temp: 61}",
                    b"Redirect to the captive portal",
                    b"\x00\xff\xfe garbage",
                ]
            )
        self._send(200, "application/json", raw)

    @staticmethod
    def _wrong_types(rng: random.Random, info: dict) -> None:
        info["temp"] = rng.choice(["hot", None, "61.5", True, [61.5]])
        for key in rng.sample(
            ["frequency", "hashRate", "vrTemp", "uptimeSeconds", "coreVoltage", "fanspeed"], 3
        ):
            if key in info:
                info[key] = rng.choice([str(info[key]), None, False, {"value": info[key]}])

    def _patch(self, d: _Device, body: bytes) -> None:
        fw = d.firmware
        active = self._roll(d, PATCH_FAULTS)
        if self._common_faults(d, active):
            return
        if "patch_400" in active:
            fw.patches += 1
            self._send(400, "text/html", b"Wrong API input")
            return
        if "patch_ignored" in active:
            fw.patches += 1
            self._send(200, "text/html", b"", chunked=True)
            return
        status, ctype, reply = fw.patch(body)
        if status == 0:
            self._drop()
        elif status == 200 and not reply:
            self._send(200, ctype, b"", chunked=True)  # §3: empty chunked 200
        else:
            self._send(status, ctype, reply)

    def _restart(self, d: _Device) -> None:
        active = self._roll(d, RESTART_FAULTS)
        if self._common_faults(d, active):
            return
        if "restart_fail" in active:
            if d.rng.random() < 0.5:
                self._send(500, "text/html", b"Internal Server Error")
            else:
                self._hang()
            return
        status, ctype, reply = d.firmware.restart()
        if status == 0:
            self._drop(reset=False)  # <= v2.1.5: the connection just drops (§6)
        else:
            self._send(status, ctype, reply)
            self.close_connection = True

    # -- control API ------------------------------------------------------------------------------

    def _control(self, method: str, path: str, body: bytes) -> None:
        d = self.server.device
        emu = self.emulator
        with d.lock:
            fw = d.firmware
            fw.advance(emu.device_time())
            if path == "/_emulator/state" and method == "GET":
                state = fw.state()
                state.update(index=d.index, faults=str(d.faults), device_time_s=emu.device_time())
                self._json(200, state)
            elif path == "/_emulator/faults" and method == "POST":
                try:
                    spec = _spec_from_body(body)
                    d.faults = parse_faults(spec)
                except ValueError as exc:
                    self._json(400, {"error": str(exc)})
                    return
                self._json(200, {"faults": str(d.faults)})
            elif path == "/_emulator/ambient" and method == "POST":
                try:
                    offset = float(json.loads(body or b"{}")["offset_c"])
                except (ValueError, KeyError, TypeError):
                    self._json(400, {"error": 'expected JSON {"offset_c": <number>}'})
                    return
                fw.ambient_shift_c = offset
                self._json(200, {"offset_c": offset, "ambient_c": fw.ambient_c()})
            else:
                self._json(
                    404,
                    {
                        "error": "unknown emulator route",
                        "routes": [
                            "GET /_emulator/state",
                            "POST /_emulator/faults",
                            "POST /_emulator/ambient",
                        ],
                    },
                )


def _spec_from_body(body: bytes) -> str:
    """Accept ``{"faults": "..."}`` or the bare spec text."""
    text = body.decode("utf-8", "replace").strip()
    if text.startswith("{"):
        obj = json.loads(text)
        spec = obj.get("faults", obj.get("spec")) if isinstance(obj, dict) else None
        if not isinstance(spec, str):
            raise ValueError('expected {"faults": "name=p,..."}')
        return spec
    return text
