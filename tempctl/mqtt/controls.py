"""Changes made from Home Assistant (TEMPCTL_MQTT_CONTROL=true): dry run and TEMP_THRESHOLD.

paho's network thread only ``offer``s a message (a bounded queue; the rest is dropped);
the daemon's loop thread ``apply``s it from a maintenance job: it is validated like
configuration (the field's own range check and the rule that TEMPCTL_CRITICAL stays
above TEMP_THRESHOLD), applied to the devices' limits, and logged as an event with
origin ``mqtt`` through the daemon's one writer. A change lasts until the daemon
restarts: only the config file (or environment) makes it permanent.
"""

from __future__ import annotations

import logging
import math
import queue
from dataclasses import dataclass, replace

from tempctl.fields import BY_ATTR, format_value
from tempctl.mqtt.discovery import Topics, slug

logger = logging.getLogger("tempctl")

PENDING = 64  # changes waiting for the loop thread; a flood beyond this is dropped
PER_CALL = 16  # changes applied per maintenance call
UNTIL_RESTART = "until restart unless also set in the config"
_TRUE, _FALSE = {"1", "true", "yes", "on"}, {"0", "false", "no", "off"}  # config.py's words


@dataclass(frozen=True)
class Control:
    setting: str  # "dry_run" | "temp_threshold"
    device: str | None  # the miner's topic slug (temp_threshold), None for the daemon
    raw: str


class Controls:
    def __init__(self, topics: Topics):
        self.topics = topics
        self.pending: queue.Queue[Control] = queue.Queue(maxsize=PENDING)
        self.dropped = 0

    def subscriptions(self) -> list[str]:
        return [self.topics.dry_run_set, f"{self.topics.prefix}/+/temp_threshold/set"]

    def offer(self, topic: str, payload: bytes) -> None:
        """paho's thread: recognise the topic, keep the text for the loop thread."""
        raw = payload.decode("utf-8", errors="replace").strip()
        if topic == self.topics.dry_run_set:
            item = Control("dry_run", None, raw)
        else:
            head, _, rest = topic.partition("/")
            dev, _, tail = rest.partition("/")
            if head != self.topics.prefix or tail != "temp_threshold/set":
                return
            item = Control("temp_threshold", dev, raw)
        try:
            self.pending.put_nowait(item)
        except queue.Full:
            self.dropped += 1

    def apply(self, daemon, now_ms: int) -> bool:
        """Loop thread: validate, apply and log what came in. True when anything changed."""
        changed = False
        for _ in range(PER_CALL):
            try:
                c = self.pending.get_nowait()
            except queue.Empty:
                break
            ops = []
            if c.setting == "dry_run":
                ok, ops = _dry_run(daemon, c, now_ms)
            else:
                ok, ops = _threshold(daemon, c, now_ms)
            changed |= ok
            if ops:
                daemon.writer.write(ops)
        return changed


def _event(daemon, device, now_ms, message, level="info"):
    log = logging.WARNING if level == "warning" else logging.INFO
    logger.log(log, "%s%s", f"{device}: " if device else "", message)
    return daemon.eventlog.event_op(device, now_ms, "config", message, level=level, origin="mqtt")


def _set(d, **values) -> None:
    """New limits for one device: the loop, the law and the driver read the same object."""
    new = replace(d.limits, **values)
    d.limits = new
    d.driver.limits = new
    d.driver.controller.limits = new


def _dry_run(daemon, c: Control, now_ms: int):
    env = BY_ATTR["dry_run"].env
    word = c.raw.lower()
    if word not in _TRUE | _FALSE:
        msg = f"{env}={c.raw!r} (mqtt): not a boolean (use ON/OFF); ignored"
        return False, [_event(daemon, None, now_ms, msg, "warning")]
    value = word in _TRUE
    if all(d.limits.dry_run == value for d in daemon.devices):
        return False, []
    for d in daemon.devices:
        _set(d, dry_run=value)
    msg = f"{env}={format_value(value)} set from MQTT ({UNTIL_RESTART})"
    return True, [_event(daemon, None, now_ms, msg)]


def _threshold(daemon, c: Control, now_ms: int):
    f = BY_ATTR["temp_threshold"]
    d = next((d for d in daemon.devices if slug(d.name) == c.device), None)
    if d is None:
        return False, []  # not one of ours (another daemon may share the prefix)
    try:
        value = float(c.raw)
        problem = None if math.isfinite(value) else "not a finite number"
    except ValueError:
        value, problem = math.nan, "not a number"
    if problem is None:
        problem = f.validator(value)
    critical = d.limits.critical
    if problem is None and not value < critical:
        crit = BY_ATTR["critical"].env
        problem = f"must be less than {crit}={format_value(critical)}"
    if problem:
        msg = f"{f.env}={c.raw!r} (mqtt): {problem}; ignored"
        return False, [_event(daemon, d.name, now_ms, msg, "warning")]
    old = d.limits.temp_threshold
    if value == old:
        return False, []
    _set(d, temp_threshold=value)
    msg = f"{f.env} {format_value(old)} -> {format_value(value)} °C set from MQTT ({UNTIL_RESTART})"
    return True, [_event(daemon, d.name, now_ms, msg)]
