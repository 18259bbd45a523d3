"""Webhook alerts (TEMPCTL_ALERT_URL), ntfy-compatible, that never block the control loop.

What is sent (``kind``; ntfy priority 1-5):
- ``critical`` (5): a reading at or above TEMPCTL_CRITICAL;
- ``overheat`` (5): the firmware's own overheat trip shows (axeos-api.md §9);
- ``unreachable`` (4): ``unreachable_after`` polls in a row brought no data at all;
  ``reachable`` (2) follows once it answers again;
- ``command_failed`` (4): a PATCH or restart failed;
- ``identity`` (4): a different device answers at the address (MAC/hostname changed);
- ``fault`` (4; ``pool_down`` 3): the firmware stopped mining for a reason that is not an
  overheat (``power_fault``, ``hardware_fault``: needs a person; ``pool_down``);
- ``alarm`` (4): any other alarm the controller raised (e.g. a frequency not applied).

Format: JSON. When the URL is a topic URL, ``scheme://host[:port]/<topic>`` (one path
segment, no query), it is published the way ntfy takes JSON: POST to the server root
with ``{"topic", "title", "message", "priority", "tags"}`` and nothing else. Any other
URL (more segments, a trailing slash, a query) is a generic webhook: the same fields
without ``topic``, plus ``device``, ``kind``, ``ts_ms`` and ``suppressed``, POSTed to
the URL as given. So ``https://ntfy.sh/my-miners`` works with ntfy as is, and
``http://127.0.0.1:9000/hooks/tempctl`` receives the full record.

A redirect (3xx) is a failure, never followed: an alert goes only where it was configured
to go (issue 13 item 14).

Several destinations: TEMPCTL_ALERT_URL may list more than one URL, separated by commas;
each alert goes to every one. Credentials: see ``tempctl.daemon.webhook``.

Rate limit: one alert per (device, kind) per ``min_interval_s``; the next one says how
many were held back. Delivery: the observer only puts the alert on each destination's
bounded queue (``put_nowait``; a full queue drops and counts). Each destination has its
own thread (a lane), so a slow or hung webhook holds back only its own alerts, and each
POST has an overall deadline (``deadline_s``) on top of the per-read ``timeout_s``: a
webhook that trickles its answer is cut off when the deadline runs out (issue 23 item 2).
A failed POST is logged and dropped, never retried: the condition, if it lasts, raises
a fresh alert after the rate-limit interval.
"""

from __future__ import annotations

import json
import logging
import queue
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from urllib.parse import urlsplit, urlunsplit

from tempctl import __version__
from tempctl.daemon.webhook import Post, basic_auth, post, split_urls, without_userinfo

log = logging.getLogger("tempctl")

PRIORITY = {
    "critical": 5,
    "overheat": 5,
    "unreachable": 4,
    "command_failed": 4,
    "identity": 4,
    "fault": 4,
    "alarm": 4,
    "reachable": 2,
}
TAGS = {
    "critical": ["fire"],
    "overheat": ["fire", "warning"],
    "unreachable": ["warning"],
    "command_failed": ["warning"],
    "identity": ["warning"],
    "fault": ["warning"],
    "alarm": ["warning"],
    "reachable": ["white_check_mark"],
}
FAULT_TEXT = {
    "power_fault": "the voltage regulator reports a fault and mining stopped; check the device",
    "hardware_fault": "the firmware reports a hardware fault and mining stopped; check the device",
    "pool_down": "no pool is reachable, so the firmware stopped mining (not an overheat)",
}


@dataclass(frozen=True)
class Alert:
    device: str
    kind: str
    message: str
    ts_ms: int
    suppressed: int = 0  # alerts of this device and kind held back since the last one
    priority: int | None = None  # None: the kind's priority

    @property
    def title(self) -> str:
        return f"tempctl: {self.device} {self.kind.replace('_', ' ')}"


def target(url: str) -> tuple[str, str | None]:
    """(where to POST, ntfy topic or None) for TEMPCTL_ALERT_URL (see the module docstring)."""
    parts = urlsplit(url)
    segments = parts.path.split("/")[1:] if parts.path else []
    if len(segments) == 1 and segments[0] and not parts.query and not parts.fragment:
        return urlunsplit((parts.scheme, parts.netloc, "/", "", "")), segments[0]
    return url, None


def body(alert: Alert, topic: str | None) -> dict:
    message = alert.message
    if alert.suppressed:
        message += f" ({alert.suppressed} more held back by the rate limit)"
    out = {
        "title": alert.title,
        "message": message,
        "priority": alert.priority or PRIORITY.get(alert.kind, 3),
        "tags": TAGS.get(alert.kind, []),
    }
    if topic is not None:
        return {"topic": topic, **out}
    return {
        **out,
        "device": alert.device,
        "kind": alert.kind,
        "ts_ms": alert.ts_ms,
        "suppressed": alert.suppressed,
    }


class Lane:
    """One destination: its own bounded queue and thread, so a slow one holds only itself."""

    def __init__(
        self,
        url: str,
        password: str | None,
        *,
        queue_size: int,
        timeout_s: float,
        deadline_s: float,
    ):
        self.url, self.topic = target(without_userinfo(url))  # never the user info
        headers = {"Content-Type": "application/json", "User-Agent": f"tempctl/{__version__}"}
        auth = basic_auth(url, password)
        if auth:
            headers["Authorization"] = auth
        self._post = Post(self.url, headers, timeout_s, deadline_s)
        self.queue: queue.Queue[Alert | None] = queue.Queue(maxsize=queue_size)
        self.sent = 0
        self.failed = 0
        self.dropped = 0
        self.thread = threading.Thread(target=self._deliver, name="tempctl-alerts", daemon=True)
        self.thread.start()

    def put(self, alert: Alert) -> bool:
        try:
            self.queue.put_nowait(alert)
        except queue.Full:
            self.dropped += 1
            if self.dropped == 1 or self.dropped % 100 == 0:
                log.warning(
                    "alerts to %s: queue full (the webhook is slow or down); %d dropped",
                    self.url,
                    self.dropped,
                )
            return False
        return True

    def _deliver(self) -> None:
        while (alert := self.queue.get()) is not None:  # None: close() asks us to stop
            self._send(alert)

    def _send(self, alert: Alert) -> None:
        data = json.dumps(body(alert, self.topic)).encode()
        try:
            post(self._post, data)
            self.sent += 1
        except Exception as exc:  # the lane must outlive any failure; URLError etc. are OSErrors
            self.failed += 1
            log.warning(
                "alert %s for %s not delivered to %s: %s", alert.kind, alert.device, self.url, exc
            )


class Alerter:
    """Daemon observer that turns readings and command outcomes into webhook alerts.

    ``url``: one URL, several separated by commas, or a list; ``password`` is sent with
    HTTP Basic auth to the URLs that name a user (``http://alice@host/...``).
    """

    def __init__(
        self,
        url: str | Sequence[str],
        *,
        password: str | None = None,
        min_interval_s: float = 900.0,
        unreachable_after: int = 3,
        queue_size: int = 100,
        timeout_s: float = 5.0,
        deadline_s: float = 10.0,
        clock: Callable[[], float] = time.monotonic,
    ):
        urls = split_urls(url) if isinstance(url, str) else list(url)
        if not urls:
            raise ValueError("no alert URL given")
        self.min_interval_s = min_interval_s
        self.unreachable_after = unreachable_after
        self.clock = clock
        self.lanes = [
            Lane(u, password, queue_size=queue_size, timeout_s=timeout_s, deadline_s=deadline_s)
            for u in urls
        ]
        self.suppressed = 0
        self._last: dict[tuple[str, str], float] = {}
        self._held: dict[tuple[str, str], int] = {}
        self._fails: dict[str, int] = {}

    @property
    def sent(self) -> int:
        return sum(lane.sent for lane in self.lanes)

    @property
    def failed(self) -> int:
        return sum(lane.failed for lane in self.lanes)

    @property
    def dropped(self) -> int:
        return sum(lane.dropped for lane in self.lanes)

    # -- observer hooks (daemon main thread: decide, enqueue, return) ------------

    def on_reading(self, device, reading, decision) -> None:
        name = device.name
        if _no_data(reading):
            n = self._fails[name] = self._fails.get(name, 0) + 1
            if n == self.unreachable_after:
                self.alert(
                    name,
                    "unreachable",
                    f"no answer for {n} polls in a row: {reading.error}",
                    reading.ts_ms,
                )
        else:
            if self._fails.get(name, 0) >= self.unreachable_after:
                self.alert(
                    name,
                    "reachable",
                    f"answering again after {self._fails[name]} failed polls",
                    reading.ts_ms,
                )
            self._fails[name] = 0
        if reading.overheat:
            self.alert(
                name,
                "overheat",
                "the firmware's overheat trip is showing"
                + (f" (frequency {reading.frequency:g} MHz)" if reading.frequency else ""),
                reading.ts_ms,
            )
        fault = getattr(reading, "fault", None)
        if fault:
            text = FAULT_TEXT.get(fault, f"the firmware reports {fault}")
            self.alert(
                name,
                "fault",
                f"{fault}: {text}",
                reading.ts_ms,
                priority=3 if fault == "pool_down" else None,
            )
        critical = device.limits.critical
        if reading.temp is not None and reading.temp >= critical:
            self.alert(
                name,
                "critical",
                f"ASIC at {reading.temp:g} °C (TEMPCTL_CRITICAL {critical:g} °C)",
                reading.ts_ms,
            )
        for e in decision.events if decision else ():
            if e.kind == "identity":
                self.alert(name, "identity", e.message, reading.ts_ms)
            elif e.level == "alarm" and not e.message.startswith("critical"):
                self.alert(name, "alarm", e.message, reading.ts_ms)

    def on_result(self, device, command, outcome, error) -> None:
        if outcome != "failed":
            return
        what = command.kind + (f" {command.frequency:g} MHz" if command.frequency else "")
        self.alert(
            device.name, "command_failed", f"{what} failed: {error}", int(time.time() * 1000)
        )

    def alert(
        self, device: str, kind: str, message: str, ts_ms: int, *, priority: int | None = None
    ) -> bool:
        """Rate-limit and enqueue; True when queued. Never blocks."""
        key = (device, kind)
        now = self.clock()
        last = self._last.get(key)
        if last is not None and now - last < self.min_interval_s:
            self._held[key] = self._held.get(key, 0) + 1
            self.suppressed += 1
            return False
        self._last[key] = now
        alert = Alert(device, kind, message, ts_ms, self._held.pop(key, 0), priority)
        queued = [lane.put(alert) for lane in self.lanes]
        return any(queued)

    def close(self, timeout_s: float = 2.0) -> None:
        """Deliver what is queued for up to ``timeout_s``, then stop the threads."""
        deadline = time.monotonic() + timeout_s
        for lane in self.lanes:
            try:  # after what is already queued
                lane.queue.put(None, timeout=max(0.0, deadline - time.monotonic()))
            except queue.Full:
                pass  # a hung webhook: its daemon thread is abandoned at exit
        for lane in self.lanes:
            lane.thread.join(timeout=max(0.0, deadline - time.monotonic()))


def _no_data(reading) -> bool:
    """A poll that failed outright (nothing parsed), as opposed to a bad sensor value."""
    return (
        reading.error is not None
        and reading.frequency is None
        and reading.uptime_s is None
        and reading.version is None
        and not reading.overheat
    )
