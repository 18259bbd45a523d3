"""sd_notify, for real: AF_UNIX datagram sockets bound here, and `tempctl run` talking to one.

The protocol (sd_notify(3)): datagrams of newline-separated VAR=value lines sent to the
socket named by NOTIFY_SOCKET (a path, or "@name" for the abstract namespace); with
WatchdogSec= systemd sets WATCHDOG_USEC (and WATCHDOG_PID) and kills a service whose
WATCHDOG=1 pings stop for that long.
"""

from __future__ import annotations

import os
import signal
import socket
import tempfile
import threading
import time
import uuid

import pytest
from procs import start_daemon, wait_for

from tempctl.daemon.notify import Notifier
from tempctl.sim.emulator import Emulator

WATCHDOG_USEC = 400_000


class NotifySocket:
    """A bound SOCK_DGRAM socket standing in for systemd; records (monotonic time, message)."""

    def __init__(self, address: str):
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(address)
        self.sock.settimeout(0.2)
        self.messages: list[tuple[float, str]] = []
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._receive, daemon=True)
        self._thread.start()

    def _receive(self) -> None:
        while not self._stop.is_set():
            try:
                data = self.sock.recv(4096)
            except TimeoutError:
                continue
            except OSError:
                return
            with self._lock:
                self.messages.append((time.monotonic(), data.decode()))

    def lines(self) -> list[tuple[float, str]]:
        """Every VAR=value line received, with its datagram's arrival time."""
        with self._lock:
            return [(t, line) for t, msg in self.messages for line in msg.split("\n")]

    def times(self, line: str) -> list[float]:
        return [t for t, seen in self.lines() if seen == line]

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=2)
        self.sock.close()


@pytest.fixture
def notify_path(tmp_path):
    # sun_path holds 108 bytes; a deep tmp_path may not fit.
    path = tmp_path / "notify.sock"
    if len(os.fsencode(path)) < 100:
        yield str(path)
        return
    with tempfile.TemporaryDirectory(prefix="tn-") as short:
        yield os.path.join(short, "notify.sock")


@pytest.fixture
def systemd(notify_path):
    listener = NotifySocket(notify_path)
    yield listener
    listener.close()


def wait_lines(listener: NotifySocket, line: str, count: int = 1, timeout: float = 5.0):
    return wait_for(
        lambda: len(listener.times(line)) >= count, timeout=timeout, what=f"{count} x {line}"
    )


# --- Notifier on its own ------------------------------------------------------------------------


def test_disabled_without_notify_socket():
    n = Notifier(environ={"WATCHDOG_USEC": "1000000"})
    assert not n.enabled
    assert n.send("READY=1") is False
    n.ready("status")
    n.ping()
    n.stopping()
    n.close()
    assert n._sock is None  # no socket is even created


def test_messages_reach_a_path_socket(systemd, notify_path):
    n = Notifier(environ={"NOTIFY_SOCKET": notify_path})
    assert n.enabled
    n.ready("NORMAL 575 MHz")
    n.status("THROTTLED_1 490 MHz")
    n.stopping()
    wait_lines(systemd, "STOPPING=1")
    n.close()
    assert [m for _, m in systemd.messages] == [
        "READY=1\nSTATUS=NORMAL 575 MHz",
        "STATUS=THROTTLED_1 490 MHz",
        "STOPPING=1",
    ]


def test_abstract_socket_with_at_sign():
    name = f"tempctl-test-{uuid.uuid4().hex}"
    listener = NotifySocket("\0" + name)
    try:
        n = Notifier(environ={"NOTIFY_SOCKET": "@" + name})
        n.ready()
        wait_lines(listener, "READY=1")
        n.close()
    finally:
        listener.close()
    assert [m for _, m in listener.messages] == ["READY=1"]


def test_watchdog_pings_at_half_the_interval(systemd, notify_path):
    now = [100.0]
    n = Notifier(
        environ={"NOTIFY_SOCKET": notify_path, "WATCHDOG_USEC": "10000000"}, clock=lambda: now[0]
    )
    assert n.watchdog_s == 10.0
    for t in (100.0, 104.0, 104.999, 105.0, 109.9, 110.0, 110.1, 115.0):
        now[0] = t
        n.ping()
    n.stopping()  # a marker: datagrams on one socket arrive in order
    wait_lines(systemd, "STOPPING=1")
    n.close()
    assert len(systemd.times("WATCHDOG=1")) == 4  # at 100, 105, 110 and 115


@pytest.mark.parametrize(
    "env, pings",
    [
        ({"WATCHDOG_USEC": "400000", "WATCHDOG_PID": str(os.getpid())}, True),
        ({"WATCHDOG_USEC": "400000", "WATCHDOG_PID": "1"}, False),  # meant for another process
        ({}, False),  # no WatchdogSec=
        ({"WATCHDOG_USEC": "soon"}, False),
    ],
)
def test_watchdog_only_when_meant_for_us(systemd, notify_path, env, pings):
    n = Notifier(environ={"NOTIFY_SOCKET": notify_path, **env})
    n.ping()
    n.stopping()  # a marker: everything sent before it has arrived once it has
    wait_lines(systemd, "STOPPING=1")
    n.close()
    assert bool(systemd.times("WATCHDOG=1")) is pings


def test_a_missing_listener_is_not_fatal(tmp_path):
    n = Notifier(environ={"NOTIFY_SOCKET": str(tmp_path / "gone.sock")})
    assert n.send("READY=1") is False
    n.ready()
    n.stopping()
    n.close()


# --- the daemon ---------------------------------------------------------------------------------


def test_daemon_ready_watchdog_stopping(tmp_path, systemd, notify_path):
    env = {"NOTIFY_SOCKET": notify_path, "WATCHDOG_USEC": str(WATCHDOG_USEC)}
    with (
        Emulator("constant", seed=3) as emu,
        start_daemon(
            emu.urls[0], tmp_path / "tempctl.db", tmp_path, env_extra=env, check_interval=0.2
        ) as daemon,
    ):
        wait_for(lambda: systemd.times("READY=1"), timeout=15, what="READY=1", proc=daemon)
        wait_for(
            lambda: len(systemd.times("WATCHDOG=1")) >= 6,
            timeout=5,
            what="6 watchdog pings",
            proc=daemon,
        )
        sent = time.monotonic()
        daemon.signal(signal.SIGTERM)
        code = daemon.wait(timeout=5)
        took = time.monotonic() - sent
        wait_lines(systemd, "STOPPING=1")
    assert code == 0, daemon.output()
    assert took < 5
    ready = systemd.times("READY=1")
    pings = systemd.times("WATCHDOG=1")
    stopping = systemd.times("STOPPING=1")
    assert len(ready) == 1 and len(stopping) == 1
    assert ready[0] <= pings[0] and pings[-1] <= stopping[0]
    # READY=1 carries a STATUS= line naming the device.
    status = next(m for _, m in systemd.messages if m.startswith("READY=1"))
    assert "STATUS=" in status and emu.urls[0].split("//")[1] in status
    # The watchdog contract: never WATCHDOG_USEC without a ping while running. The loop
    # wakes every CHECK_INTERVAL (at most 1 s) and pings once half of it has passed.
    gaps = [b - a for a, b in zip([ready[0], *pings], pings)]
    assert max(gaps) < WATCHDOG_USEC / 1e6, gaps


def test_daemon_without_notify_socket_sends_nothing(tmp_path, systemd):
    # The same daemon with NOTIFY_SOCKET unset (a terminal) must not find our socket.
    with (
        Emulator("constant", seed=4) as emu,
        start_daemon(emu.urls[0], tmp_path / "tempctl.db", tmp_path, check_interval=0.25) as daemon,
    ):
        # Its loop is running (signal handlers installed) once it said so.
        wait_for(
            lambda: "tempctl running" in daemon.output(),
            timeout=15,
            what="the daemon's loop",
            proc=daemon,
        )
        daemon.signal(signal.SIGTERM)
        assert daemon.wait(timeout=5) == 0, daemon.output()
    assert systemd.messages == []
