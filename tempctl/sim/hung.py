"""Hung miners on loopback: ports that accept a connection, read the request and never answer.

What issue 23 item 1 found a dead miner can look like (a wedged HTTP task on the ESP32
while its TCP stack still accepts). One thread and one selector serve them all, so a
benchmark can run hundreds. A connection is closed only once the client closes its side
(its deadline ran out), so nothing here ever answers, resets or times out by itself.
"""

from __future__ import annotations

import selectors
import socket
import threading

__all__ = ["HungMiners"]


class HungMiners:
    """``n`` hung miners on ``host``; ``addrs`` are their "host:port". A context manager."""

    def __init__(self, n: int, host: str = "127.0.0.1"):
        self.sel = selectors.DefaultSelector()
        self.addrs: list[str] = []
        self.accepted = 0  # connections taken so far
        for _ in range(n):
            srv = socket.socket()
            srv.bind((host, 0))
            srv.listen(64)
            srv.setblocking(False)
            self.sel.register(srv, selectors.EVENT_READ, "listen")
            self.addrs.append(f"{host}:{srv.getsockname()[1]}")
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._serve, name="hung-miners", daemon=True)
        self._thread.start()

    def __enter__(self) -> HungMiners:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _serve(self) -> None:
        while not self._stop.is_set():
            for key, _ in self.sel.select(timeout=0.1):
                sock = key.fileobj
                if key.data == "listen":
                    try:
                        conn, _ = sock.accept()
                    except OSError:
                        continue
                    conn.setblocking(False)
                    self.accepted += 1
                    self.sel.register(conn, selectors.EVENT_READ, "conn")
                    continue
                try:
                    data = sock.recv(65536)  # the request: read and ignored
                except OSError:
                    data = b""
                if not data:  # the client gave up: close our side too
                    self.sel.unregister(sock)
                    sock.close()

    def close(self) -> None:
        """Stop, and close every socket (a request still blocked on one sees it closed)."""
        self._stop.set()
        self._thread.join(timeout=5)
        for key in list(self.sel.get_map().values()):
            key.fileobj.close()
        self.sel.close()
