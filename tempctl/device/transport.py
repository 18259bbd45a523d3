"""The plumbing under ``Client``: error mapping, retries, and a deadline per exchange.

Connect and read timeouts bound each socket operation only: a device that drips one
byte every 0.7 s never trips a 5 s read timeout and held a poll for 30 s (issue 13
item 3). ``Deadline`` bounds the whole exchange: when it runs out, the socket is shut
down, which wakes the blocked read at once. The HTTP connections of a Client report
themselves to its Deadline through ``DeadlineAdapter``. One watcher thread keeps every
Deadline of the process (a thread per exchange cost a fleet of 1,000 miners ~200 thread
starts a second, issue 23 item 1).
"""

from __future__ import annotations

import heapq
import http.client
import itertools
import socket
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import requests
from requests.adapters import HTTPAdapter
from urllib3.connection import HTTPConnection
from urllib3.connectionpool import HTTPConnectionPool
from urllib3.exceptions import (
    ConnectTimeoutError,
    NameResolutionError,
    NewConnectionError,
    ProtocolError,
    ReadTimeoutError,
)
from urllib3.util.retry import Retry

from tempctl.device.errors import AxeOSError, Timeout, Unreachable

__all__ = ["RETRY_STATUSES", "Answer", "Deadline", "DeadlineAdapter", "make_retry", "map_error"]

RETRY_STATUSES = (500, 502, 503, 504)


@dataclass(frozen=True)
class Answer:
    status: int
    body: bytes
    content_type: str
    location: str | None
    latency_s: float


class Deadline:
    """A time limit for one whole exchange (connect, retries, headers, body).

    ``start(seconds)`` arms it; connections ``attach`` themselves as they send; when the
    time is up the current connection's socket is shut down (and any connection that
    attaches later is refused). ``expired`` tells the caller why the read broke.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._conn: Any = None
        self._armed: object | None = None  # this exchange's token; None when none runs
        self._ends = 0.0
        self.expired = False
        self.connected = False  # some attempt of this exchange got a connection

    def start(self, seconds: float) -> None:
        token = object()
        with self._lock:
            self.expired = False
            self.connected = False
            self._conn = None
            self._ends = time.monotonic() + seconds
            self._armed = token
        _WATCH.add(self._ends, self, token)

    def remaining(self) -> float | None:
        """Seconds left, or None when no exchange is running (no limit)."""
        if self._armed is None:
            return None
        return max(0.0, self._ends - time.monotonic())

    def stop(self) -> None:
        with self._lock:
            self._armed = None  # the watcher drops this exchange's entry unseen
            self._conn = None

    def attach(self, conn: Any) -> None:
        """Watch ``conn``; raise when the time is already up (a retry after the deadline).

        Not connected yet, that is a connect timeout (nothing was sent); else a read one.
        """
        with self._lock:
            self._conn = conn
            if getattr(conn, "sock", None) is not None:
                self.connected = True
            if not self.expired:
                return
        if getattr(conn, "sock", None) is None:
            raise ConnectTimeoutError(conn, "the exchange ran past its deadline")
        _shut(conn)
        raise TimeoutError("the exchange ran past its deadline")

    def _fire(self, token: object) -> None:
        with self._lock:
            if token is not self._armed:
                return  # that exchange ended in time
            self.expired = True
            conn = self._conn
        if conn is not None:
            _shut(conn)

    def _live(self, token: object) -> bool:
        return token is self._armed


class _Watcher:
    """One daemon thread that fires every Deadline of the process when its time is up.

    Entries of exchanges that ended in time stay in the heap until they reach its top,
    where they are dropped without a wake-up of their own.
    """

    def __init__(self) -> None:
        self._cond = threading.Condition(threading.Lock())
        self._heap: list[tuple[float, int, Deadline, object]] = []
        self._seq = itertools.count()
        self._thread: threading.Thread | None = None

    def add(self, ends: float, deadline: Deadline, token: object) -> None:
        with self._cond:
            heapq.heappush(self._heap, (ends, next(self._seq), deadline, token))
            if self._thread is None or not self._thread.is_alive():  # first use, or a fork
                self._thread = threading.Thread(
                    target=self._run, name="tempctl-deadlines", daemon=True
                )
                self._thread.start()
            if self._heap[0][2] is deadline:
                self._cond.notify()  # earlier than what the watcher sleeps for

    def _run(self) -> None:
        while True:
            with self._cond:
                while True:
                    while self._heap and not self._heap[0][2]._live(self._heap[0][3]):
                        heapq.heappop(self._heap)
                    now = time.monotonic()
                    if self._heap and self._heap[0][0] <= now:
                        _, _, deadline, token = heapq.heappop(self._heap)
                        break
                    self._cond.wait(self._heap[0][0] - now if self._heap else None)
            deadline._fire(token)


_WATCH = _Watcher()


def _shut(conn: Any) -> None:
    sock = getattr(conn, "sock", None)
    if sock is not None:
        try:
            sock.shutdown(socket.SHUT_RDWR)  # wakes a recv() blocked in another thread
        except OSError:
            pass


class _WatchedConnection(HTTPConnection):
    deadline: Deadline  # set on the per-Client subclass

    def connect(self) -> None:
        # A socket that is still connecting cannot be shut down from the timer, so a
        # (re)connect gets only the time that is left.
        left = self.deadline.remaining()
        if left is not None:
            if left <= 0 or self.deadline.expired:
                raise ConnectTimeoutError(self, "the exchange ran past its deadline")
            if self.timeout is None or not isinstance(self.timeout, (int, float)):
                self.timeout = left
            else:
                self.timeout = min(self.timeout, left)
        super().connect()
        self.deadline.attach(self)

    def request(self, *args: Any, **kwargs: Any) -> None:
        self.deadline.attach(self)
        super().request(*args, **kwargs)


class DeadlineAdapter(HTTPAdapter):
    """An HTTPAdapter whose plain-HTTP connections report to ``deadline``."""

    def __init__(self, deadline: Deadline, **kwargs: Any) -> None:
        self._deadline = deadline
        super().__init__(**kwargs)

    def init_poolmanager(self, *args: Any, **kwargs: Any) -> None:
        super().init_poolmanager(*args, **kwargs)
        conn_cls = type("WatchedConnection", (_WatchedConnection,), {"deadline": self._deadline})
        pool_cls = type("WatchedPool", (HTTPConnectionPool,), {"ConnectionCls": conn_cls})
        classes = dict(self.poolmanager.pool_classes_by_scheme)
        classes["http"] = pool_cls
        self.poolmanager.pool_classes_by_scheme = classes

    def __setstate__(self, state: dict) -> None:  # requests re-inits pools on unpickle
        self._deadline = Deadline()
        super().__setstate__(state)


def _chain(exc: BaseException) -> Iterator[BaseException]:
    """Every exception wrapped inside ``exc``: requests wraps urllib3, which wraps socket
    errors in ``args``, ``reason`` (MaxRetryError) and ``__cause__``."""
    seen: set[int] = set()
    stack: list[Any] = [exc]
    while stack:
        item = stack.pop()
        if not isinstance(item, BaseException) or id(item) in seen:
            continue
        seen.add(id(item))
        yield item
        stack.extend(item.args)
        stack.extend((getattr(item, "reason", None), item.__cause__, item.__context__))


def map_error(
    what: str, url: str, exc: BaseException, connect_timeout: float, read_timeout: float
) -> tuple[AxeOSError, bool]:
    """Map a requests/urllib3 failure to our error, plus "the request may have been sent"."""
    chain = list(_chain(exc))

    def has(*types: type[BaseException]) -> bool:
        return any(isinstance(e, types) for e in chain)

    # NewConnectionError subclasses ConnectTimeoutError in urllib3 2, so test it first.
    if has(NameResolutionError, socket.gaierror):
        return Unreachable(f"{what}: cannot resolve host name", url=url), False
    if has(ConnectionRefusedError):
        return Unreachable(f"{what}: connection refused", url=url), False
    if has(NewConnectionError):
        cause = next((e for e in chain if isinstance(e, OSError)), None)
        return Unreachable(f"{what}: cannot connect ({cause or 'no route'})", url=url), False
    if has(ConnectTimeoutError, requests.ConnectTimeout):
        return Timeout(f"{what}: connect timeout after {connect_timeout:.3g} s", url=url), False
    if has(ReadTimeoutError, requests.ReadTimeout, TimeoutError):
        return Timeout(f"{what}: read timeout after {read_timeout:.3g} s", url=url), True
    if has(ProtocolError, http.client.HTTPException, ConnectionError):
        return Unreachable(f"{what}: connection closed or reset by the device", url=url), True
    return Unreachable(f"{what}: {exc}", url=url), True


def make_retry(total: int, backoff: float, methods: frozenset[str]) -> Retry:
    return Retry(
        total=total,
        other=0,
        allowed_methods=methods,
        status_forcelist=RETRY_STATUSES,
        backoff_factor=backoff,
        raise_on_status=False,  # hand back the last 5xx so we can say what it was
        respect_retry_after_header=False,  # keep the worst-case delay bounded by backoff
    )
