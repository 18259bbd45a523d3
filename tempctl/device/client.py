"""``Client``: one AxeOS device over HTTP. The only place tempctl talks to a device.

Explicit timeouts on every request and a total deadline per call, a capped streamed
body (the cap holds after decompression too), urllib3 retries for GET/PATCH only, never
a retried POST, optional HTTP Basic auth, and one ``AxeOSError`` family for every way a
request can fail. ``read`` never raises anything else: whatever goes wrong while parsing
an answer becomes an invalid ``Reading`` of that device (issue 13 item 2).
"""

from __future__ import annotations

import http.client
import json
import time
import zlib
from collections.abc import Mapping
from typing import Any, Self

import requests
from requests.adapters import HTTPAdapter
from requests.auth import HTTPBasicAuth
from urllib3.exceptions import HTTPError as Urllib3Error
from urllib3.util.retry import Retry

from tempctl import __version__
from tempctl.core.reading import Reading
from tempctl.device.errors import (
    AuthRequired,
    AxeOSError,
    BadResponse,
    Rejected,
    Timeout,
    TooLarge,
)
from tempctl.device.parse import API_MAX, API_MIN, parse_info
from tempctl.device.secret import PasswordFile
from tempctl.device.statistics import STATS_COLUMNS
from tempctl.device.transport import (
    RETRY_STATUSES,
    Answer,
    Deadline,
    DeadlineAdapter,
    make_retry,
    map_error,
)
from tempctl.device.urls import normalize_url
from tempctl.device.values import finite, show

__all__ = [
    "DEVICE_USER",
    "MAX_BODY",
    "PATCH_MAX_BYTES",
    "STATS_MAX_BODY",
    "Client",
]

INFO_PATH = "/api/system/info"
SYSTEM_PATH = "/api/system"
RESTART_PATH = "/api/system/restart"
ASIC_PATH = "/api/system/asic"
STATISTICS_PATH = "/api/system/statistics"

MAX_BODY = 64 * 1024  # a v2.15 info body is ~4.3 KB; anything near 64 KiB is not AxeOS
# 720 points (§8) × the backfill columns stay under ~60 KB, but v2.8–v2.10 ignore
# ?columns= and send 12 columns for every point, so statistics get a larger (still fixed) cap.
STATS_MAX_BODY = 256 * 1024
PATCH_MAX_BYTES = 10240  # §2: the firmware answers 500 "content too long" at >= 10240 bytes
# PR #1750 (components/http_auth/http_auth.c, check_creds) compares only the password after
# the ':' of the Basic credentials; the user name is not checked. The web UI asks for one.
DEVICE_USER = "admin"
PASSWORD_HINT = "device wants a password: set TEMPCTL_DEVICE_PASSWORD_FILE"


class Client:
    """One AxeOS device. Not thread-safe: use one Client per device and thread.

    ``deadline_s`` bounds each call as a whole (retries included); by default it is the
    larger of the two timeouts, so a daemon that sets the read timeout below its poll
    interval (and the interval above the connect timeout) gets a total below the interval.
    ``password`` turns on HTTP Basic auth (open ESP-Miner PR #1750); it is never logged nor
    shown in errors or ``repr``. Given as a ``PasswordFile``, the file is read again after
    a 401 (once per run of 401s, or when the file changed since) and the request is sent
    once more if it holds a new password: never a loop.

    Example:
        client = Client("http://bitaxe.local")
        reading = client.read("gamma", ts_ms)
        client.set_frequency(490)
    """

    def __init__(
        self,
        base_url: str,
        *,
        connect_timeout: float = 3.05,
        read_timeout: float = 5.0,  # §11.5: the single-threaded server can be busy for seconds
        retries: int = 2,
        backoff: float = 0.25,
        max_body: int = MAX_BODY,
        deadline_s: float | None = None,
        password: str | PasswordFile | None = None,
        session: requests.Session | None = None,
    ) -> None:
        self.base_url = normalize_url(base_url)
        self.connect_timeout = connect_timeout
        self.read_timeout = read_timeout
        self.deadline_s = max(read_timeout, connect_timeout) if deadline_s is None else deadline_s
        self._effective = (connect_timeout, read_timeout)
        if not self.deadline_s > 0:
            raise ValueError(f"deadline_s={deadline_s!r}: must be > 0")
        self.max_body = max_body
        self._deadline = Deadline()
        self._session = session or requests.Session()
        if session is None:
            # A LAN device must not go through a proxy from the environment, nor pick up .netrc.
            self._session.trust_env = False
        self._session.headers.update(
            {"User-Agent": f"tempctl/{__version__}", "Accept-Encoding": "identity"}
        )
        self._password_file = password if isinstance(password, PasswordFile) else None
        self._auth = _basic(password.value if isinstance(password, PasswordFile) else password)
        self._refused = False  # the last answer was a 401 (and the file was read again)
        # GET and PATCH /api/system are idempotent, so urllib3 may retry them.
        retrying = DeadlineAdapter(
            self._deadline, max_retries=make_retry(retries, backoff, frozenset({"GET", "PATCH"}))
        )
        self._session.mount(self.base_url + "/", retrying)
        # POST (restart) must go out at most once: its own adapter with no retries at all
        # (requests picks the longest matching mount prefix), and its own connection pool,
        # so it never rides a keep-alive socket the device may already have closed.
        once: HTTPAdapter = DeadlineAdapter(self._deadline, max_retries=Retry(0))
        self._session.mount(self.base_url + RESTART_PATH, once)

    def __repr__(self) -> str:
        auth = ", with a password" if self._auth else ""
        return f"Client({self.base_url!r}{auth})"

    # -- reading -----------------------------------------------------------------------

    def fetch_info(self) -> dict[str, Any]:
        """``GET /api/system/info`` as the JSON object the device sent."""
        answer = self._exchange("GET", INFO_PATH)
        self._expect_200("GET", INFO_PATH, answer)
        return self._json_object("GET", INFO_PATH, answer)

    def read(self, device: str, ts_ms: int) -> Reading:
        """Fetch and parse one reading; ``ts_ms`` is the caller's wall clock.

        Raises only ``AxeOSError`` (no answer, or no JSON object). Anything that goes
        wrong while parsing the object gives an invalid Reading that says what.
        """
        try:
            body = self.fetch_info()
        except AxeOSError:
            raise
        except Exception as exc:  # an exotic failure below us still fails only this poll
            url = self._url(INFO_PATH)
            raise BadResponse(f"GET {url}: {_describe(exc)}", url=url) from exc
        try:
            return parse_info(body, device, ts_ms)
        except Exception as exc:  # a hostile answer must never crash the poll
            return Reading(
                device, ts_ms, error=f"bad_response: cannot parse the answer ({_describe(exc)})"
            )

    def fetch_asic(self) -> dict[str, Any] | None:
        """``GET /api/system/asic`` (v2.7+, §7), or None on firmware that lacks it."""
        answer = self._exchange("GET", ASIC_PATH)
        if answer.status in (302, 404) or _is_html(answer):
            return None  # before v2.7 an unknown GET is a 302 to the web UI (§2)
        self._expect_200("GET", ASIC_PATH, answer)
        return self._json_object("GET", ASIC_PATH, answer)

    def fetch_statistics(self, columns: tuple[str, ...] = STATS_COLUMNS) -> dict[str, Any] | None:
        """``GET /api/system/statistics`` (v2.8+, §8), or None when absent or empty.

        The buffer is empty unless ``statsFrequency`` > 0 on the device.
        """
        path = STATISTICS_PATH + ("?columns=" + ",".join(columns) if columns else "")
        answer = self._exchange("GET", path, max_body=max(self.max_body, STATS_MAX_BODY))
        if answer.status in (302, 404) or _is_html(answer):
            return None
        self._expect_200("GET", path, answer)
        body = self._json_object("GET", path, answer)
        rows = body.get("statistics")
        return body if isinstance(rows, list) and rows else None

    # -- writing -----------------------------------------------------------------------

    def set_frequency(self, mhz: float, core_voltage: int | None = None) -> float:
        """PATCH the frequency (MHz), and the core voltage (mV) if given. Returns seconds.

        The firmware applies a voltage change before it ramps the frequency (§5.3), so to
        lower both, lower the frequency first and the voltage in a later call.
        """
        fields: dict[str, Any] = {"frequency": mhz}
        if core_voltage is not None:
            if isinstance(core_voltage, bool) or not isinstance(core_voltage, int):
                raise ValueError(f"core_voltage={core_voltage!r}: must be an int (mV)")
            fields["coreVoltage"] = core_voltage
        for key, value in fields.items():
            number = _finite(key, value)
            if not API_MIN <= number <= API_MAX:
                raise ValueError(f"{key}={value!r}: outside the API range {API_MIN}..{API_MAX}")
        return self.set_fields(fields)

    def set_fields(self, fields: Mapping[str, Any]) -> float:
        """PATCH ``/api/system`` with exactly these keys, as JSON numbers. Returns seconds.

        200 is success. 4xx raises Rejected (on v2.11+ nothing was applied), 401
        AuthRequired, 5xx after retries BadResponse. On v2.11+ an unknown key is silently
        ignored, so read the value back to confirm (§11.3).
        """
        if not fields:
            raise ValueError("nothing to PATCH")
        payload: dict[str, int | float] = {}
        for key, value in fields.items():
            if key == "overheat_mode" and value not in (0, False):
                raise ValueError("overheat_mode can only be cleared (0); §5.1 rejects 1")
            number = int(value) if isinstance(value, bool) else _finite(key, value)
            payload[key] = int(number) if float(number).is_integer() else number
        data = json.dumps(payload, separators=(",", ":"), allow_nan=False).encode()
        if len(data) >= PATCH_MAX_BYTES:
            raise ValueError(f"PATCH body of {len(data)} bytes is over the device limit")
        answer = self._exchange(
            "PATCH", SYSTEM_PATH, data=data, headers={"Content-Type": "application/json"}
        )
        if answer.status == 200:
            return answer.latency_s
        raise self._write_error("PATCH", SYSTEM_PATH, answer)

    def restart(self) -> float:
        """POST ``/api/system/restart`` exactly once. Returns seconds until the answer.

        Counts as sent: any 200 (text or JSON body by version, §6), and a connection that
        drops after the request went out (≤ v2.1.5 sends nothing; the device resets the
        socket when it reboots). Raises Unreachable when it could not connect at all.
        """
        url = self._url(RESTART_PATH)
        what = f"POST {url}"
        started = time.perf_counter()
        self._deadline.start(self.deadline_s)
        try:
            try:
                response = self._session.post(
                    url,
                    headers={"Connection": "close"},
                    timeout=self._timeouts(),
                    stream=True,
                    allow_redirects=False,
                    auth=self._auth,
                )
            except (
                requests.RequestException,
                Urllib3Error,
                http.client.HTTPException,
                OSError,
            ) as exc:
                error, sent = self._transport_error(what, url, exc)
                if not sent:
                    raise error from exc
                if isinstance(error, Timeout):
                    raise Timeout(f"{error} (the restart may still happen)", url=url) from exc
                return time.perf_counter() - started  # dropped after it went out: sent
            latency = time.perf_counter() - started
            try:
                body = self._read_body(response, what, self.max_body)
            except AxeOSError:
                body = b""  # the device may reset the socket while it reboots; the 200 counted
            finally:
                response.close()
        finally:
            self._deadline.stop()
        if response.status_code == 200:
            return latency
        if response.status_code == 401:
            self._fresh_password()  # for the next call: a restart is never sent twice
        answer = Answer(response.status_code, body, "", None, latency)
        raise self._write_error("POST", RESTART_PATH, answer)

    def close(self) -> None:
        self._deadline.stop()
        self._session.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- plumbing ----------------------------------------------------------------------

    def _url(self, path: str) -> str:
        return self.base_url + path

    def _timeouts(self) -> tuple[float, float]:
        remaining = self._deadline.remaining()
        left = max(0.001, self.deadline_s if remaining is None else remaining)
        self._effective = (min(self.connect_timeout, left), min(self.read_timeout, left))
        return self._effective

    def _transport_error(self, what: str, url: str, exc: BaseException) -> tuple[AxeOSError, bool]:
        error, sent = map_error(what, url, exc, *self._effective)
        # A connect timeout keeps its own message unless an earlier attempt got through.
        if self._deadline.expired and (sent or self._deadline.connected):
            # The deadline shut the socket: the read broke because time ran out.
            error = Timeout(
                f"{what}: no complete answer within the {self.deadline_s:g} s deadline", url=url
            )
        return error, sent

    def _exchange(
        self,
        method: str,
        path: str,
        *,
        data: bytes | None = None,
        headers: dict[str, str] | None = None,
        max_body: int | None = None,
    ) -> Answer:
        answer = self._send(method, path, data, headers, max_body)
        if answer.status == 401 and self._fresh_password():
            # The 401 is the auth check answering instead of the request (axeos-api.md §14),
            # so a GET or PATCH sent once more with the new password is not applied twice.
            answer = self._send(method, path, data, headers, max_body)
        if answer.status == 401:
            raise self._auth_error(method, path, answer)
        self._refused = False
        return answer

    def _fresh_password(self) -> bool:
        """After a 401: True when the password file, read again, holds a new password.

        Read once per run of 401s, and again only if the file was written since: a
        device that keeps refusing never makes us read (or send) in a loop.
        """
        if self._password_file is None:
            return False
        if self._refused and not self._password_file.changed():
            return False
        self._refused = True
        if not self._password_file.reread():
            return False
        self._auth = _basic(self._password_file.value)
        return True

    def _send(
        self,
        method: str,
        path: str,
        data: bytes | None,
        headers: dict[str, str] | None,
        max_body: int | None,
    ) -> Answer:
        url = self._url(path)
        what = f"{method} {url}"
        started = time.perf_counter()
        self._deadline.start(self.deadline_s)
        try:
            try:
                response = self._session.request(
                    method,
                    url,
                    data=data,
                    headers=headers,
                    timeout=self._timeouts(),
                    stream=True,  # so the body cap holds: never read more than the cap + 1 chunk
                    allow_redirects=False,  # pre-v2.9 answers unknown GETs with 302 → "/" (§2)
                    auth=self._auth,
                )
            except (
                requests.RequestException,
                Urllib3Error,
                http.client.HTTPException,
                OSError,
            ) as exc:
                raise self._transport_error(what, url, exc)[0] from exc
            try:
                body = self._read_body(response, what, max_body or self.max_body)
            finally:
                response.close()
        finally:
            self._deadline.stop()
        answer = Answer(
            status=response.status_code,
            body=body,
            content_type=response.headers.get("Content-Type", ""),
            location=response.headers.get("Location"),
            latency_s=time.perf_counter() - started,
        )
        return answer

    def _read_body(self, response: requests.Response, what: str, cap: int) -> bytes:
        """The body, at most ``cap`` bytes on the wire and ``cap`` bytes decompressed.

        Read raw (undecoded) so a small gzip body cannot inflate past the cap in memory:
        the decompressor is told to stop at ``cap + 1`` bytes.
        """
        url = response.url
        status = response.status_code
        declared = response.headers.get("Content-Length", "")
        if declared.isdigit() and int(declared) > cap:
            raise TooLarge(
                f"{what}: body of {declared} bytes is over the {cap}-byte cap",
                url=url,
                status=status,
            )
        encoding = response.headers.get("Content-Encoding", "identity").strip().lower()
        if encoding not in ("", "identity", "gzip", "x-gzip", "deflate"):
            raise BadResponse(f"{what}: unsupported Content-Encoding {encoding!r}", url=url)
        inflate = zlib.decompressobj(wbits=47) if encoding not in ("", "identity") else None
        chunks: list[bytes] = []
        size = wire = 0
        try:
            for chunk in response.raw.stream(16384, decode_content=False):
                wire += len(chunk)
                if inflate is not None:
                    chunk = inflate.decompress(chunk, cap + 1 - size)
                    if inflate.unconsumed_tail:
                        chunk += b"x"  # more output is waiting: over the cap for sure
                size += len(chunk)
                if size > cap or wire > cap:
                    raise TooLarge(
                        f"{what}: body is over the {cap}-byte cap"
                        + (" once decompressed" if inflate is not None else "")
                        + " (stopped reading)",
                        url=url,
                        status=status,
                    )
                chunks.append(chunk)
            if inflate is not None:
                tail = inflate.flush(cap + 1 - size)
                if size + len(tail) > cap:
                    raise TooLarge(
                        f"{what}: body is over the {cap}-byte cap once decompressed",
                        url=url,
                        status=status,
                    )
                chunks.append(tail)
        except zlib.error as exc:
            raise BadResponse(
                f"{what}: bad {encoding} body ({exc})", url=url, status=status
            ) from None
        except (requests.RequestException, Urllib3Error, http.client.HTTPException, OSError) as exc:
            error, _ = self._transport_error(what, url, exc)
            if isinstance(error, Timeout):
                raise Timeout(f"{error} (while reading the body)", url=url) from exc
            raise BadResponse(
                f"{what}: body truncated (connection broke after {size} bytes)",
                url=url,
                status=status,
            ) from exc
        return b"".join(chunks)

    def _expect_200(self, method: str, path: str, answer: Answer) -> None:
        if answer.status != 200:
            raise self._status_error(method, path, answer)

    def _auth_error(self, method: str, path: str, answer: Answer) -> AxeOSError:
        url = self._url(path)
        snippet = _snippet(answer.body)
        if "authrequired" in snippet.lower().replace('"', "").replace(" ", ""):
            detail = (
                "the device refused the password" if self._auth else PASSWORD_HINT
            ) + " (HTTP 401, ESP-Miner Basic auth, PR #1750)"
            return AuthRequired(f"{method} {url}: {detail}", url=url, status=401)
        # §2: v2.5+ answers 401 "Unauthorized" to clients outside 10/8, 172.16/12, 192.168/16.
        return AuthRequired(
            f"{method} {url}: HTTP 401 {snippet!r} (AxeOS v2.5+ only accepts clients with a "
            f"private-range IPv4 address; or the {PASSWORD_HINT})",
            url=url,
            status=401,
        )

    def _write_error(self, method: str, path: str, answer: Answer) -> AxeOSError:
        url = self._url(path)
        if answer.status == 401:
            return self._auth_error(method, path, answer)
        if 400 <= answer.status < 500:
            text = _snippet(answer.body)
            return Rejected(
                f"{method} {url}: HTTP {answer.status} {text!r}",
                url=url,
                status=answer.status,
                body=text,
            )
        return self._status_error(method, path, answer)

    def _status_error(self, method: str, path: str, answer: Answer) -> BadResponse:
        url = self._url(path)
        if 300 <= answer.status < 400:
            detail = (
                f"HTTP {answer.status} redirect to {answer.location!r}, not followed "
                "(firmware before v2.9 redirects unknown routes to the web UI)"
            )
        else:
            detail = f"HTTP {answer.status} {_snippet(answer.body)!r}"
            if answer.status in RETRY_STATUSES:
                detail += " (after retries)"
        return BadResponse(f"{method} {url}: {detail}", url=url, status=answer.status)

    def _json_object(self, method: str, path: str, answer: Answer) -> dict[str, Any]:
        """The body as a JSON object. AxeOS sends UTF-8 (cJSON); anything else is refused,
        and no exception but BadResponse leaves here (huge ints, deep nesting, …)."""
        url = self._url(path)
        what = f"{method} {url}"

        def bad(reason: str) -> BadResponse:
            return BadResponse(f"{what}: {reason}", url=url, status=answer.status)

        try:
            doc = answer.body.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise bad(f"not JSON (not UTF-8 text: {exc.reason} at byte {exc.start})") from None
        try:
            value = json.loads(doc)
        except json.JSONDecodeError as exc:
            truncated = exc.pos >= len(exc.doc.rstrip())
            reason = "truncated JSON" if truncated and doc.strip() else "not JSON"
            raise bad(
                f"{reason} ({exc.msg} at byte {exc.pos}): {_snippet(answer.body)!r}"
            ) from None
        except RecursionError:
            raise bad("not JSON (nested too deeply)") from None
        except Exception as exc:  # e.g. ValueError: an integer over 4,300 digits
            raise bad(f"not JSON ({_describe(exc)})") from None
        if not isinstance(value, dict):
            raise bad(f"JSON {type(value).__name__}, expected an object")
        return value


def _basic(password: str | None) -> HTTPBasicAuth | None:
    # Bytes, so requests sends the password as UTF-8 (it would encode a str as latin-1).
    return HTTPBasicAuth(DEVICE_USER.encode(), password.encode("utf-8")) if password else None


def _is_html(answer: Answer) -> bool:
    return answer.status == 200 and (
        "html" in answer.content_type.lower() or answer.body.lstrip()[:1] == b"<"
    )


def _finite(key: str, value: Any) -> float | int:
    if finite(value) is None:
        raise ValueError(f"{key}={show(value)}: must be a finite number")
    return value


def _snippet(body: bytes, limit: int = 200) -> str:
    text = body[: limit * 4].decode("utf-8", errors="replace").strip()
    return text if len(text) <= limit else text[:limit] + "…"


def _describe(exc: BaseException) -> str:
    text = str(exc).splitlines()[0] if str(exc) else ""
    text = text if len(text) <= 120 else text[:119] + "…"
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__
