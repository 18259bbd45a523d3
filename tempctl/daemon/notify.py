"""sd_notify: READY, WATCHDOG, STATUS and STOPPING for systemd ``Type=notify``.

Does nothing when NOTIFY_SOCKET is unset, so ``tempctl run`` works in a terminal.
The socket can be injected for tests. Watchdog pings are sent only when half of
WATCHDOG_USEC has passed, so calling ``ping()`` every loop is cheap.
"""

from __future__ import annotations

import os
import socket
import time


class Notifier:
    def __init__(self, environ=None, sock: socket.socket | None = None, clock=time.monotonic):
        env = os.environ if environ is None else environ
        addr = env.get("NOTIFY_SOCKET", "")
        if addr.startswith("@"):  # abstract namespace
            addr = "\0" + addr[1:]
        self.addr = addr or None
        self._sock = sock
        self._clock = clock
        usec = env.get("WATCHDOG_USEC")
        pid = env.get("WATCHDOG_PID")
        self.watchdog_s = (
            int(usec) / 1e6
            if usec and usec.isdigit() and (not pid or pid == str(os.getpid()))
            else None
        )
        self._last_ping = float("-inf")
        if self.addr and self._sock is None:
            self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)

    @property
    def enabled(self) -> bool:
        return self.addr is not None

    def send(self, message: str) -> bool:
        if not self.addr:
            return False
        try:
            self._sock.sendto(message.encode(), self.addr)
            return True
        except OSError:
            return False  # systemd gone or socket full: never fatal

    def ready(self, status: str = "") -> None:
        self.send("READY=1" + (f"\nSTATUS={status}" if status else ""))

    def status(self, text: str) -> None:
        self.send(f"STATUS={text}")

    def ping(self) -> None:
        if self.watchdog_s is None:
            return
        now = self._clock()
        if now - self._last_ping >= self.watchdog_s / 2:
            self._last_ping = now
            self.send("WATCHDOG=1")

    def stopping(self) -> None:
        self.send("STOPPING=1")

    def close(self) -> None:
        if self._sock is not None:
            self._sock.close()
