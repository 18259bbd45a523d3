"""The AxeOS routes of one emulated device, and the ``/_emulator/`` control API."""

from __future__ import annotations

import base64
import hmac
import ipaddress
import json
import random
import socket
import struct
from http.server import BaseHTTPRequestHandler
from typing import TYPE_CHECKING
from urllib.parse import parse_qs, urlsplit

from tempctl.sim.emulator import live
from tempctl.sim.emulator.faults import (
    FIELD_FAULTS,
    GET_FAULTS,
    INFO_FAULTS,
    PATCH_FAULTS,
    RESTART_FAULTS,
    SPIKE_W,
    apply_conditions,
    parse_faults,
    spec_from_body,
)
from tempctl.sim.firmware import RESET_PANIC, Firmware, dumps

if TYPE_CHECKING:
    from tempctl.sim.emulator.server import Device, DeviceServer, Emulator

__all__ = ["CORS_HEADERS", "Handler", "INDEX_HTML", "PRIVATE_NETS"]

PRIVATE_NETS = [ipaddress.ip_network(n) for n in ("10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16")]
CORS_HEADERS = (
    ("Access-Control-Allow-Origin", "*"),
    ("Access-Control-Allow-Methods", "GET, POST, PUT, PATCH, DELETE, OPTIONS"),
    ("Access-Control-Allow-Headers", "Content-Type"),
)
INDEX_HTML = b"<!doctype html><html><head><title>AxeOS</title></head><body>AxeOS</body></html>"


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True  # headers and body go out separately: avoid a 40 ms ACK stall
    server: DeviceServer

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
        self.emulator.wait_stopped(self.emulator.hang_s)
        self._drop(reset=False)

    # -- dispatch ---------------------------------------------------------------------------------

    def _handle(self, method: str) -> None:
        url = urlsplit(self.path)
        body = self._body() if method in ("POST", "PATCH", "PUT") else b""
        if url.path.startswith("/_emulator/"):
            self._control(method, url.path, body)
            return
        d = self.server.device
        self._live: dict | None = None
        with d.lock:
            fw = d.firmware
            poll = method == "GET" and url.path == "/api/system/info"
            fw.advance(self.emulator.polled() if poll else self.emulator.device_time())
            if not fw.reachable():
                self._drop()
                return
            if self.emulator.private_ip_check and fw.v >= (2, 5, 0) and not self._allowed(fw):
                # §2: 401 text/html "Unauthorized", without CORS headers
                self._send(401, "text/html", b"Unauthorized", cors=False)
                return
            if not self._authorized(method, url.path):
                # §14 / ESP-Miner PR #1750: 401 JSON and a Basic challenge
                self._send(
                    401,
                    "application/json",
                    b'{"authRequired":1}',
                    cors=False,
                    headers=(("WWW-Authenticate", 'Basic realm="Bitaxe"'),),
                )
                return
            self._route(d, method, url.path, parse_qs(url.query), body)
        if self._live is not None:
            live.stream(self, d, self._live)

    def _authorized(self, method: str, path: str) -> bool:
        emu = self.emulator
        if emu.password is None or not path.startswith("/api/") or method == "OPTIONS":
            return True
        if method == "GET" and not emu.auth_read_required:
            return True
        scheme, _, token = self.headers.get("Authorization", "").partition(" ")
        if scheme.lower() != "basic":
            return False
        try:
            _, _, given = base64.b64decode(token.strip(), validate=True).decode().partition(":")
        except (ValueError, UnicodeDecodeError):
            return False
        return hmac.compare_digest(given.encode(), emu.password.encode())

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

    def _roll(self, d: Device, names: tuple[str, ...]) -> set[str]:
        """Draw one number per applicable fault (always, so sequences stay aligned)."""
        active = set()
        for name in names:
            u = d.rng.random()
            if u < d.faults.p(name):
                active.add(name)
        return active

    def _route(self, d: Device, method: str, path: str, query: dict, body: bytes) -> None:
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
        elif path == "/api/ws/live" and method == "GET" and v >= (2, 14, 0):
            if live.handshake(self):
                self._live = fw.info()  # streamed after the device lock is released
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

    def _common_faults(self, d: Device, active: set[str]) -> bool:
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

    def _info(self, d: Device) -> None:
        fw = d.firmware
        apply_conditions(d, draw=True)
        active = self._roll(d, INFO_FAULTS)
        active |= self._roll(d, tuple(n for n in FIELD_FAULTS if d.faults.p(n) > 0))
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
        if "no_power" in active:
            info.pop("power", None)
            info.pop("coreVoltage", None)
        if "power_spike" in active:
            info["power"] = SPIKE_W
        if "mac_change" in active:
            info["hostname"] = fw.hostname + "-other"
            if "macAddr" in info:
                info["macAddr"] = "02:00:00:" + ":".join(
                    f"{d.rng.randrange(256):02X}" for _ in range(3)
                )
        self._send_body(d, active, info, pretty=fw.pretty)

    def _get_json(self, d: Device, obj: object) -> None:
        active = self._roll(d, GET_FAULTS)
        if self._common_faults(d, active):
            return
        self._send_body(d, active, obj, pretty=d.firmware.pretty)

    def _send_body(self, d: Device, active: set[str], obj: object, *, pretty: bool) -> None:
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

    def _patch(self, d: Device, body: bytes) -> None:
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

    def _restart(self, d: Device) -> None:
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
                state.update(
                    index=d.index,
                    faults=str(d.faults),
                    device_time_s=emu.device_time(),
                    pace_held_s=round(emu.held_s, 3),
                )
                self._json(200, state)
            elif path == "/_emulator/faults" and method == "POST":
                try:
                    spec = spec_from_body(body)
                    d.faults = parse_faults(spec)
                    apply_conditions(d, draw=False)
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
            elif path == "/_emulator/cooling" and method == "POST":
                # a failing fan or heatsink from now on: the thermal resistance times
                # ``scale`` (plant.Plant.cooling_scale); the reported fan duty is unchanged
                try:
                    scale = float(json.loads(body or b"{}")["scale"])
                    if not 0.1 <= scale <= 10.0:
                        raise ValueError
                except (ValueError, KeyError, TypeError):
                    self._json(400, {"error": 'expected JSON {"scale": <0.1..10>}'})
                    return
                fw.plant.cooling_scale = scale
                self._json(200, {"scale": scale})
            else:
                self._json(
                    404,
                    {
                        "error": "unknown emulator route",
                        "routes": [
                            "GET /_emulator/state",
                            "POST /_emulator/faults",
                            "POST /_emulator/ambient",
                            "POST /_emulator/cooling",
                        ],
                    },
                )
