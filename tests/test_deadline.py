"""A total deadline per request (issue 13 item 3).

A device that drips one byte every 0.7 s never trips a socket read timeout, and held a
poll for 30 s. Here a real loopback socket server drips its answer; the client must give
up with a Timeout once its deadline has passed. The assertions do not depend on timing
precision: the drip would take minutes, the deadline is 1 s, and the bound checked is
"well under the drip" (60 s), not "close to 1 s".
"""

from __future__ import annotations

import socket
import threading
import time

import pytest

from tempctl.device import Client, Timeout

DRIP_S = 0.7
BODY = b'{"temp": 60.125, "frequency": 525, "version": "v2.15.0", "pad": "' + b"x" * 200 + b'"}'
DRIP_TOTAL_S = DRIP_S * len(BODY)  # ~190 s if a client waited for all of it


class DripServer:
    """Answers every request one byte per DRIP_S: the head too (``where="head"``) or only
    the body after a prompt head (``where="body"``)."""

    def __init__(self, where: str) -> None:
        self.where = where
        self.stop = threading.Event()
        self.sent = 0
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        while not self.stop.is_set():
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            threading.Thread(target=self._answer, args=(conn,), daemon=True).start()

    def _answer(self, conn: socket.socket) -> None:
        head = (
            b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
            + f"Content-Length: {len(BODY)}\r\n\r\n".encode()
        )
        with conn:
            try:
                data = b""
                while b"\r\n\r\n" not in data:
                    chunk = conn.recv(4096)
                    if not chunk:
                        return
                    data += chunk
                if self.where == "body":
                    conn.sendall(head)
                    dripped = BODY
                else:
                    dripped = head + BODY
                for i in range(len(dripped)):
                    if self.stop.wait(DRIP_S):
                        return
                    conn.sendall(dripped[i : i + 1])
                    self.sent += 1
            except OSError:
                return  # the client hung up: what a deadline does

    def close(self) -> None:
        self.stop.set()
        try:
            self.sock.shutdown(socket.SHUT_RDWR)  # wakes the blocked accept()
        except OSError:
            pass
        self.sock.close()
        self.thread.join(timeout=5)


@pytest.mark.parametrize("where", ["head", "body"])
@pytest.mark.parametrize("retries", [0, 2])
def test_a_dripping_device_is_given_up_at_the_deadline(where, retries):
    server = DripServer(where)
    try:
        # Read timeout 5 s: each byte arrives within 0.7 s, so only the deadline can end it.
        client = Client(
            f"127.0.0.1:{server.port}", read_timeout=5, retries=retries, backoff=0, deadline_s=1
        )
        started = time.monotonic()
        with pytest.raises(Timeout, match=r"within the 1 s deadline") as info:
            client.read("drip", 0)
        took = time.monotonic() - started
        client.close()
    finally:
        server.close()
    assert info.value.kind == "timeout"
    assert took < min(60, DRIP_TOTAL_S / 3)  # generous: far below the ~190 s drip
    assert server.sent < len(BODY)  # it stopped listening long before the end


def test_default_deadline_is_the_larger_timeout():
    # The daemon builds Client(url, read_timeout=min(5, 0.8 x interval), retries=1): at a
    # 5 s interval its total per request is 4 s, below the interval, with no other argument.
    assert Client("127.0.0.1:9", read_timeout=4.0, retries=1).deadline_s == 4.0
    assert Client("127.0.0.1:9", read_timeout=1.0).deadline_s == 3.05  # the connect timeout
    assert Client("127.0.0.1:9", read_timeout=4.0, deadline_s=2.5).deadline_s == 2.5
    with pytest.raises(ValueError, match="deadline_s"):
        Client("127.0.0.1:9", deadline_s=0)


def test_the_next_request_after_a_deadline_works():
    server = DripServer("body")
    try:
        client = Client(f"127.0.0.1:{server.port}", read_timeout=5, retries=0, deadline_s=1)
        with pytest.raises(Timeout):
            client.fetch_info()

        def prompt(conn: socket.socket) -> None:
            with conn:
                conn.recv(4096)
                conn.sendall(
                    b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
                    + f"Content-Length: {len(BODY)}\r\n\r\n".encode()
                    + BODY
                )

        server._answer = prompt  # the same socket server, now a healthy device
        assert client.read("drip", 0).temp == 60.125
        client.close()
    finally:
        server.close()
