"""One webhook POST with an overall deadline, and the alert URL rules (issue 23 items 2, 3).

A socket timeout bounds each read only: a webhook that sends a byte every 2 s never trips
a 5 s timeout and held the alert thread forever. Here a watchdog timer shuts the socket
down when the delivery's deadline runs out, which wakes the blocked read at once. The
delivery ends as soon as the status line and headers are in: a 2xx means the webhook
took the alert, and its body is never read (a body that trickles cannot hold us).
Name resolution (getaddrinfo) cannot be interrupted; it is bounded by the resolver.

Credentials: a password in the URL (``http://alice:secret@host/``) is refused by the
config check; a user name in it (``http://alice@host/``) sends HTTP Basic auth with the
password from TEMPCTL_ALERT_PASSWORD_FILE. The user part never reaches the resolver
(the request goes to the URL without it) and logs show the URL without it.
"""

from __future__ import annotations

import base64
import http.client
import re
import socket
import threading
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit, urlunsplit

PASSWORD_FILE_ENV = "TEMPCTL_ALERT_PASSWORD_FILE"
# "//user:" then everything up to the last "@" before the path: urlsplit takes the last "@"
_USERINFO = re.compile(r"(//[^/:@]*):[^/]*@")
# "//host:" then a "port" that is not a number: a password whose "@host" was left out
_NOT_A_PORT = re.compile(r"(//[^/:@?#\s,]*):([^/@?#\s,]*[^0-9/@?#\s,][^/@?#\s,]*)(?=[/?#\s,]|$)")


def split_urls(text: str) -> list[str]:
    """The alert URLs in TEMPCTL_ALERT_URL: separated by commas or white space."""
    return [u for u in text.replace(",", " ").split() if u]


def without_userinfo(url: str) -> str:
    """``url`` with any ``user[:password]@`` removed: what is requested and shown."""
    parts = urlsplit(url)
    host = parts.netloc.rpartition("@")[2]
    return urlunsplit((parts.scheme, host, parts.path, parts.query, parts.fragment))


def hide_password(text: str) -> str:
    """``text`` with the password of every ``scheme://user:password@`` replaced by ``***``,
    and any port that is not a number (``http://alice:secret/`` lacks its ``@host``).

    Textual, so it also hides what ``urlsplit`` cannot parse; it may hide more, never less.
    """
    return _NOT_A_PORT.sub(r"\1:***", _USERINFO.sub(r"\1:***@", text))


def url_problem(text: str) -> str | None:
    """Why TEMPCTL_ALERT_URL is refused (never quoting a password), or None."""
    for url in split_urls(text):
        try:
            parts = urlsplit(url)
            parts.port  # noqa: B018 - raises ValueError on a bad port
        except ValueError:  # its text may quote part of the URL: never shown
            return "not a valid URL (a bad port or [IPv6] address)"
        if parts.scheme not in ("http", "https") or not parts.hostname:
            return "must be an http:// or https:// URL (or empty)"
        if parts.password is not None:
            return (
                "holds a password, which would show in logs and the stored config: "
                f"keep the user name in the URL (http://{parts.username or 'user'}@host/...) "
                f"and put the password in a file named by {PASSWORD_FILE_ENV}"
            )
    return None


def basic_auth(url: str, password: str | None) -> str | None:
    """The Authorization header for ``url``: Basic when the URL names a user, else None.

    ``password`` (from the file) wins over one in the URL, which the config refuses but a
    caller of ``Alerter`` may still pass."""
    parts = urlsplit(url)
    user, password = parts.username, password if password is not None else parts.password
    if user is None or password is None:
        return None
    token = base64.b64encode(f"{user}:{password}".encode()).decode("ascii")
    return f"Basic {token}"


class DeadlineExceeded(TimeoutError):
    pass


class _Watch:
    """Shuts the delivery's socket down when its deadline runs out."""

    def __init__(self, seconds: float) -> None:
        self._lock = threading.Lock()
        self._sock: socket.socket | None = None
        self.ends = time.monotonic() + seconds
        self.expired = False
        self._timer = threading.Timer(seconds, self._fire)
        self._timer.daemon = True
        self._timer.start()

    def left(self) -> float:
        return max(0.0, self.ends - time.monotonic())

    def attach(self, sock: socket.socket) -> None:
        with self._lock:
            self._sock = sock
            if not self.expired:
                return
        _shut(sock)

    def _fire(self) -> None:
        with self._lock:
            self.expired = True
            sock = self._sock
        if sock is not None:
            _shut(sock)

    def stop(self) -> None:
        self._timer.cancel()


def _shut(sock: socket.socket) -> None:
    try:  # the plain socket's shutdown, also for TLS: wakes a recv() in another thread
        socket.socket.shutdown(sock, socket.SHUT_RDWR)
    except OSError:
        pass


def _watched(base: type[http.client.HTTPConnection], watch: _Watch) -> Any:
    class Watched(base):  # type: ignore[valid-type, misc]
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            super().__init__(*args, **kwargs)
            # Watched from the moment the TCP connection exists, so a proxy tunnel or a
            # TLS handshake that trickles is cut short too.
            self._create_connection = self._connect_watched

        def _connect_watched(self, *args: Any, **kwargs: Any) -> socket.socket:
            sock = socket.create_connection(*args, **kwargs)
            watch.attach(sock)
            return sock

        def connect(self) -> None:
            # a connect cannot be shut down from the timer: it gets only the time left
            self.timeout = min(self.timeout or watch.left(), watch.left()) or 0.001
            super().connect()

    return Watched


class _Handler(urllib.request.HTTPHandler, urllib.request.HTTPSHandler):
    def __init__(self, watch: _Watch) -> None:
        urllib.request.HTTPHandler.__init__(self)
        urllib.request.HTTPSHandler.__init__(self)
        self._watch = watch

    def http_open(self, req: urllib.request.Request) -> Any:
        return self.do_open(_watched(http.client.HTTPConnection, self._watch), req)

    def https_open(self, req: urllib.request.Request) -> Any:
        conn = _watched(http.client.HTTPSConnection, self._watch)
        return self.do_open(conn, req, context=self._context)


class _NoRedirects(urllib.request.HTTPRedirectHandler):
    """Refuse every redirect: urllib then raises HTTPError for the 3xx, a failed POST."""

    def redirect_request(self, req, fp, code, msg, headers, newurl):  # noqa: PLR0913
        return None


@dataclass(frozen=True)
class Post:
    """Where and how one destination is POSTed to."""

    url: str  # without user info
    headers: dict[str, str]
    timeout_s: float  # per socket operation
    deadline_s: float  # the whole delivery: connect, send, status and headers


def post(p: Post, data: bytes) -> int:
    """POST ``data``; the HTTP status (2xx). Raises OSError (or ValueError for a bad URL)
    on any failure, DeadlineExceeded when the deadline cut it short. Redirects are never
    followed."""
    watch = _Watch(p.deadline_s)
    opener = urllib.request.build_opener(_Handler(watch), _NoRedirects())
    req = urllib.request.Request(p.url, data=data, method="POST", headers=p.headers)
    try:
        with opener.open(req, timeout=min(p.timeout_s, p.deadline_s)) as resp:
            return resp.status  # the body is not read: the status says the alert was taken
    except urllib.error.HTTPError as exc:
        exc.close()
        raise
    except (OSError, http.client.HTTPException) as exc:
        if watch.expired:
            raise DeadlineExceeded(f"no answer within the {p.deadline_s:g} s deadline") from exc
        if isinstance(exc, OSError):
            raise
        raise ConnectionError(f"bad answer ({type(exc).__name__}: {exc})") from exc
    finally:
        watch.stop()
