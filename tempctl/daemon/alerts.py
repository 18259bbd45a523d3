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

Rate limit: one alert per (device, kind) per ``min_interval_s``; the next one says how
many were held back. Delivery: the observer only puts the alert on a bounded queue
(``put_nowait``; a full queue drops and counts); one background thread POSTs with a
timeout. A failed POST is logged and dropped, never retried: the condition, if it
lasts, raises a fresh alert after the rate-limit interval.
"""

from __future__ import annotations

import json
import logging
import queue
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from urllib.parse import urlsplit, urlunsplit

from tempctl import __version__

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


class _NoRedirects(urllib.request.HTTPRedirectHandler):
    """Refuse every redirect: urllib then raises HTTPError for the 3xx, a failed POST."""

    def redirect_request(self, req, fp, code, msg, headers, newurl):  # noqa: PLR0913
        return None


_OPENER = urllib.request.build_opener(_NoRedirects())


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


class Alerter:
    """Daemon observer that turns readings and command outcomes into webhook alerts."""

    def __init__(
        self,
        url: str,
        *,
        min_interval_s: float = 900.0,
        unreachable_after: int = 3,
        queue_size: int = 100,
        timeout_s: float = 5.0,
        clock: Callable[[], float] = time.monotonic,
    ):
        self.url, self.topic = target(url)
        self.min_interval_s = min_interval_s
        self.unreachable_after = unreachable_after
        self.timeout_s = timeout_s
        self.clock = clock
        self.queue: queue.Queue[Alert | None] = queue.Queue(maxsize=queue_size)
        self.sent = 0
        self.failed = 0
        self.dropped = 0
        self.suppressed = 0
        self._last: dict[tuple[str, str], float] = {}
        self._held: dict[tuple[str, str], int] = {}
        self._fails: dict[str, int] = {}
        self._thread = threading.Thread(target=self._deliver, name="tempctl-alerts", daemon=True)
        self._thread.start()

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
        try:
            held = self._held.pop(key, 0)
            self.queue.put_nowait(Alert(device, kind, message, ts_ms, held, priority))
        except queue.Full:
            self.dropped += 1
            if self.dropped == 1 or self.dropped % 100 == 0:
                log.warning(
                    "alerts: queue full (the webhook is slow or down); %d dropped", self.dropped
                )
            return False
        return True

    # -- delivery (background thread) --------------------------------------------

    def _deliver(self) -> None:
        while (alert := self.queue.get()) is not None:  # None: close() asks us to stop
            self._post(alert)

    def _post(self, alert: Alert) -> None:
        data = json.dumps(body(alert, self.topic)).encode()
        req = urllib.request.Request(
            self.url,
            data=data,
            method="POST",
            headers={"Content-Type": "application/json", "User-Agent": f"tempctl/{__version__}"},
        )
        try:
            with _OPENER.open(req, timeout=self.timeout_s) as resp:
                resp.read()
            self.sent += 1
        except (OSError, ValueError) as exc:  # URLError, HTTPError, timeouts are OSErrors
            self.failed += 1
            log.warning(
                "alert %s for %s not delivered to %s: %s", alert.kind, alert.device, self.url, exc
            )

    def close(self, timeout_s: float = 2.0) -> None:
        """Deliver what is queued for up to ``timeout_s``, then stop the thread."""
        deadline = time.monotonic() + timeout_s
        try:
            self.queue.put(None, timeout=timeout_s)  # after what is already queued
        except queue.Full:
            pass  # a hung webhook: the daemon thread is abandoned at exit
        self._thread.join(timeout=max(0.0, deadline - time.monotonic()))


def _no_data(reading) -> bool:
    """A poll that failed outright (nothing parsed), as opposed to a bad sensor value."""
    return (
        reading.error is not None
        and reading.frequency is None
        and reading.uptime_s is None
        and reading.version is None
        and not reading.overheat
    )
