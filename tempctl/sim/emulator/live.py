"""GET /api/ws/live (v2.14+): the info object over a WebSocket (axeos-api.md §3).

The firmware sends ``{"event":"update","data":{...}}``: the full info object on connect,
then only the keys that changed, at most every 500 ms. RFC 6455 framing, text frames,
no extensions; the emulator answers a close or ping and ignores other client frames.
"""

from __future__ import annotations

import base64
import hashlib
import select
import struct
from typing import TYPE_CHECKING

from tempctl.sim.firmware import dumps

if TYPE_CHECKING:
    from tempctl.sim.emulator.handler import Handler
    from tempctl.sim.emulator.server import Device

__all__ = ["LIVE_PERIOD_S", "accept_key", "encode_frame", "handshake", "stream"]

LIVE_PERIOD_S = 0.5  # §3: changed keys at most every 500 ms
_GUID = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"  # RFC 6455 §1.3


def accept_key(key: str) -> str:
    return base64.b64encode(hashlib.sha1((key + _GUID).encode()).digest()).decode()


def encode_frame(payload: bytes, opcode: int = 0x1) -> bytes:
    """One unmasked, final frame (server to client)."""
    n = len(payload)
    if n < 126:
        head = struct.pack("!BB", 0x80 | opcode, n)
    elif n < 1 << 16:
        head = struct.pack("!BBH", 0x80 | opcode, 126, n)
    else:
        head = struct.pack("!BBQ", 0x80 | opcode, 127, n)
    return head + payload


def _read_frame(rfile) -> tuple[int, bytes] | None:
    head = rfile.read(2)
    if len(head) < 2:
        return None
    opcode, n = head[0] & 0x0F, head[1] & 0x7F
    if n == 126:
        n = struct.unpack("!H", rfile.read(2))[0]
    elif n == 127:
        n = struct.unpack("!Q", rfile.read(8))[0]
    mask = rfile.read(4) if head[1] & 0x80 else b"\0\0\0\0"
    data = bytes(b ^ mask[i % 4] for i, b in enumerate(rfile.read(n)))
    return opcode, data


def handshake(h: Handler) -> bool:
    """Answer the upgrade (101); False (and a 400) when the request is not one."""
    key = h.headers.get("Sec-WebSocket-Key")
    if "websocket" not in h.headers.get("Upgrade", "").lower() or not key:
        # (estimate) esp_http_server refuses a plain GET on a WebSocket URI
        h.send_response_only(400)
        h.send_header("Content-Type", "text/html")
        h.send_header("Content-Length", "11")
        h.end_headers()
        h.wfile.write(b"Bad Request")
        return False
    h.send_response_only(101)
    h.send_header("Upgrade", "websocket")
    h.send_header("Connection", "Upgrade")
    h.send_header("Sec-WebSocket-Accept", accept_key(key))
    h.end_headers()
    return True


def _update(data: dict) -> bytes:
    return encode_frame(dumps({"event": "update", "data": data}, pretty=False).encode())


def stream(h: Handler, d: Device, first: dict) -> None:
    """Full object now, then the changed keys every LIVE_PERIOD_S until either side closes."""
    emu = h.emulator
    h.close_connection = True
    last = first
    try:
        h.wfile.write(_update(first))
        h.wfile.flush()
        while not emu.wait_stopped(LIVE_PERIOD_S):
            readable, _, _ = select.select([h.connection], [], [], 0)
            if readable:
                got = _read_frame(h.rfile)
                if got is None or got[0] == 0x8:
                    h.wfile.write(encode_frame(b"", 0x8))
                    return
                if got[0] == 0x9:
                    h.wfile.write(encode_frame(got[1], 0xA))
            with d.lock:
                fw = d.firmware
                fw.advance(emu.device_time())
                if not fw.reachable():
                    return
                now = fw.info()
            changed = {k: v for k, v in now.items() if last.get(k) != v}
            if changed:
                h.wfile.write(_update(changed))
                h.wfile.flush()
            last = now
    except (OSError, struct.error):
        return  # the client went away, or a reboot reset the connection
