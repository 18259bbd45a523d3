"""The MQTT bridge: a daemon observer that never makes a poll wait for the broker.

Three threads, one job each:

* the daemon's loop thread calls ``on_reading`` (copy a few numbers into a bounded queue;
  when it is full the poll's update is dropped and counted, never waited for) and
  ``maintain`` (apply changes from Home Assistant, sample the scorecard);
* the bridge's publisher thread turns queue items into JSON and publishes them, and keeps
  each miner's latest discovery, state and availability to publish again on reconnect;
* paho-mqtt's network thread (``loop_start``) owns the socket: connecting, TLS, keep-alive,
  and reconnecting with back-off (RECONNECT_MIN_S doubling to RECONNECT_MAX_S).

While the broker is away nothing is queued in paho at all: the publisher only updates its
cache, so memory stays bounded however long the outage. One warning per outage is logged.
"""

from __future__ import annotations

import json
import logging
import os
import queue
import threading
import time
from urllib.parse import urlsplit

from tempctl.core import powercap
from tempctl.mqtt import discovery as ha
from tempctl.mqtt.controls import Controls

logger = logging.getLogger("tempctl")

QUEUE_SIZE = 10_000  # poll updates waiting for the publisher (40 ticks of 250 miners)
RECONNECT_MIN_S, RECONNECT_MAX_S = 1, 60
KEEPALIVE_S = 30
SCORECARD_PERIOD_S = 30.0  # how often a miner's scorecard is sampled and published
MAX_COMMAND_BYTES = 64
CLOSE_WAIT_S = 2.0  # at stop, how long the "offline" message may take
UNANSWERED = 2  # polls in a row without an answer before a miner shows unavailable


def broker_address(url: str) -> tuple[str, int, str | None, bool]:
    """(host, port, user, tls) of a TEMPCTL_MQTT_URL (validated by fields.py)."""
    parts = urlsplit(url)
    tls = parts.scheme == "mqtts"
    return parts.hostname or "", parts.port or (8883 if tls else 1883), parts.username, tls


class Bridge:
    """Home Assistant over MQTT for one daemon. ``start()`` after ``attach(daemon)``."""

    def __init__(
        self,
        url: str,
        *,
        password: str | None = None,
        prefix: str = "tempctl",
        discovery: str = "homeassistant",
        control: bool = False,
        scorecard: ha.Scorecard | None = None,
        queue_size: int = QUEUE_SIZE,
        reconnect: tuple[float, float] = (RECONNECT_MIN_S, RECONNECT_MAX_S),
        client_id: str | None = None,
    ):
        import paho.mqtt.client as mqtt

        self.host, self.port, user, tls = broker_address(url)
        scheme = "mqtts" if tls else "mqtt"
        self.where = f"{scheme}://{user + '@' if user else ''}{self.host}:{self.port}"
        self.topics = ha.Topics(prefix, discovery)
        self.control = control
        self.scorecard = scorecard
        self.controls = Controls(self.topics) if control else None
        self.queue: queue.Queue = queue.Queue(maxsize=queue_size)
        self.dropped = 0  # poll updates the full queue refused
        self.published = 0
        self.outages = 0
        self.dry_run: bool | None = None
        self._daemon = None
        self._alarm: dict[str, bool] = {}
        self._scored: dict[str, float] = {}
        self._miners: dict[str, ha.Miner] = {}  # publisher thread only, from here down
        self._states: dict[str, str] = {}
        self._scores: dict[str, str] = {}
        self._available: dict[str, bool] = {}
        self._unanswered: dict[str, int] = {}
        self._daemon_json: str | None = None
        self._hook_failed = False
        self._connected = False
        self._closing = False
        self._down_since: float | None = None
        self._resync = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

        cid = client_id or f"tempctl-{ha.slug(prefix)}-{os.getpid()}"
        c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=cid)
        if user:
            c.username_pw_set(user, password)
        if tls:
            c.tls_set()  # the system's CA store; the broker's name is checked
        # The last will: the broker says "offline" for us when we vanish (kill -9, power).
        c.will_set(self.topics.status, "offline", qos=1, retain=True)
        c.reconnect_delay_set(*reconnect)
        c.on_connect = self._on_connect
        c.on_disconnect = self._on_disconnect
        c.on_connect_fail = self._on_connect_fail
        c.on_message = self._on_message
        self.client = c

    # -- lifecycle ------------------------------------------------------------------

    def attach(self, daemon) -> None:
        """The daemon whose devices the controls change and whose writer logs them."""
        self._daemon = daemon
        if daemon.devices:
            self.dry_run = daemon.devices[0].limits.dry_run
        self._put(("daemon", self._daemon_state()))

    def start(self) -> None:
        """Connect in the background: never raises for a broker that is down."""
        self._thread = threading.Thread(target=self._run, name="tempctl-mqtt", daemon=True)
        self._thread.start()
        self.client.connect_async(self.host, self.port, KEEPALIVE_S)
        self.client.loop_start()

    def close(self) -> None:
        """Say "offline" (briefly, if the broker is there) and stop both threads."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=CLOSE_WAIT_S)
        self._closing = True
        if self._connected:
            info = self.client.publish(self.topics.status, "offline", qos=1, retain=True)
            try:
                info.wait_for_publish(timeout=CLOSE_WAIT_S)
            except (RuntimeError, ValueError):
                pass  # the connection went meanwhile: the last will says it instead
        self.client.disconnect()
        self.client.loop_stop()

    # -- observer hooks (daemon loop thread: copy, enqueue, never wait) --------------

    def watch(self, device) -> None:
        pass  # a miner is announced with its first answer, which carries its MAC

    def on_reading(self, device, reading, decision) -> None:
        try:
            self._on_reading(device, reading, decision)
        except Exception:  # a bug here must never stop control
            if not self._hook_failed:
                self._hook_failed = True
                logger.exception("MQTT bridge: a poll's update failed; control goes on")

    def _on_reading(self, device, reading, decision) -> None:
        name, ctl = device.name, device.controller
        state = ctl.current.value
        if decision and any(e.level == "alarm" for e in decision.events):
            self._alarm[name] = True
        elif state == "NORMAL" and reading.valid and not reading.overheat:
            self._alarm.pop(name, None)
        power = powercap.shown(ctl)
        payload = ha.miner_state(
            reading,
            state,
            ctl.frequency,
            ctl.explain(),
            device.limits.temp_threshold,
            self._alarm.get(name, False),
            power,
        )
        self._put(("poll", name, device.url, reading, payload, power is not None))

    def on_result(self, device, command, outcome, error) -> None:
        pass  # the next poll's state shows the effect

    def maintain(self, eventlog, now_ms: int) -> None:
        """A daemon maintenance job (loop thread): controls from MQTT, scorecard samples."""
        d = self._daemon
        if self.controls is not None and d is not None:
            if self.controls.apply(d, now_ms):
                self.dry_run = d.devices[0].limits.dry_run if d.devices else self.dry_run
                self._put(("daemon", self._daemon_state()))
        if self.scorecard is not None and d is not None:
            now = time.monotonic()
            for dev in d.devices:
                last = self._scored.get(dev.name)
                if last is None or now - last >= SCORECARD_PERIOD_S:
                    self._scored[dev.name] = now
                    try:
                        values = self.scorecard.values(dev.name)
                    except Exception:  # a scorecard bug must not stop control
                        logger.exception("scorecard of %s failed", dev.name)
                        continue
                    self._put(("score", dev.name, ha.scorecard_state(values)))

    def _put(self, item) -> None:
        try:
            self.queue.put_nowait(item)
        except queue.Full:
            self.dropped += 1

    def _daemon_state(self) -> dict:
        n = len(self._daemon.devices) if self._daemon is not None else 0
        return {"devices": n, "dry_run": ha.onoff(bool(self.dry_run))}

    # -- paho's network thread -----------------------------------------------------

    def _on_connect(self, client, userdata, flags, reason, properties) -> None:
        if reason.is_failure:
            self._outage(f"refused: {reason}")
            return
        self._connected = True
        if self._down_since is not None:
            took = time.monotonic() - self._down_since
            logger.info("MQTT broker %s: connected again after %.0f s", self.where, took)
        else:
            logger.info("MQTT broker %s: connected", self.where)
        self._down_since = None
        if self.controls is not None:
            client.subscribe([(t, 1) for t in self.controls.subscriptions()])
        self._resync.set()

    def _on_disconnect(self, client, userdata, flags, reason, properties) -> None:
        self._connected = False
        if not self._closing:
            self._outage(f"connection lost ({reason})")

    def _on_connect_fail(self, client, userdata) -> None:
        self._outage("cannot connect")

    def _outage(self, why: str) -> None:
        if self._down_since is None:  # one warning per outage
            self._down_since = time.monotonic()
            self.outages += 1
            logger.warning(
                "MQTT broker %s: %s; polls go on, retrying every %g-%g s",
                self.where,
                why,
                RECONNECT_MIN_S,
                RECONNECT_MAX_S,
            )

    def _on_message(self, client, userdata, msg) -> None:
        if self.controls is not None and len(msg.payload) <= MAX_COMMAND_BYTES:
            self.controls.offer(msg.topic, msg.payload)

    # -- the publisher thread ------------------------------------------------------

    def _run(self) -> None:
        while not self._stop.is_set():
            if self._resync.is_set() and self._connected:
                self._resync.clear()
                self._publish_all()
            try:
                item = self.queue.get(timeout=0.2)
            except queue.Empty:
                continue
            try:
                self._handle(item)
            except Exception:  # keep publishing whatever one bad item did
                logger.exception("MQTT bridge: could not publish %s", item[0])

    def _handle(self, item) -> None:
        kind = item[0]
        if kind == "poll":
            _, name, url, reading, payload, capped = item
            self._poll(name, url, reading, payload, capped)
        elif kind == "score":
            _, name, values = item
            self._scores[name] = json.dumps(values)
            self._send(self.topics.scorecard(name), self._scores[name])
        elif kind == "daemon":
            self._daemon_json = json.dumps(item[1])
            self._send(self.topics.daemon_state, self._daemon_json)

    def _poll(self, name: str, url: str, reading, payload: dict, capped: bool = False) -> None:
        answered = ha.answered(reading)
        # One lost answer is not an outage (a busy single-threaded web server, a retry).
        misses = 0 if answered else self._unanswered.get(name, 0) + 1
        self._unanswered[name] = misses
        up = answered or (misses < UNANSWERED and name in self._miners)
        if answered:
            miner = ha.Miner(
                name,
                url,
                reading.mac,
                reading.asic_model,
                reading.version,
                reading.hostname,
                power_cap=capped,
            )
            old = self._miners.get(name)
            if miner != old:
                self._miners[name] = miner
                if old is not None and old.node != miner.node:
                    self._announce(old, remove=True)
                self._announce(miner)
        if self._available.get(name) != up:
            self._available[name] = up
            self._send(self.topics.available(name), "online" if up else "offline")
        self._states[name] = json.dumps(payload)
        self._send(self.topics.state(name), self._states[name])

    def _announce(self, miner: ha.Miner, remove: bool = False) -> None:
        configs = ha.miner_configs(
            self.topics, miner, control=self.control, scorecard=self.scorecard is not None
        )
        for topic, cfg in configs.items():
            self._send(topic, json.dumps(cfg) if cfg and not remove else "")

    def _publish_all(self) -> None:
        """After (re)connecting: everything a subscriber needs, retained."""
        t = self.topics
        for topic, cfg in ha.daemon_configs(t, control=self.control).items():
            self._send(topic, json.dumps(cfg) if cfg else "")
        if self._daemon_json:
            self._send(t.daemon_state, self._daemon_json)
        self._send(t.status, "online")
        for miner in list(self._miners.values()):
            self._announce(miner)
        for name, up in list(self._available.items()):
            self._send(t.available(name), "online" if up else "offline")
        for name, text in list(self._states.items()):
            self._send(t.state(name), text)
        for name, text in list(self._scores.items()):
            self._send(t.scorecard(name), text)

    def _send(self, topic: str, payload: str) -> None:
        # Retained, QoS 0: a subscriber that comes later (Home Assistant restarting) gets
        # the latest at once; what a broken connection loses, the resync sends again.
        if self._connected:
            self.client.publish(topic, payload, qos=0, retain=True)
            self.published += 1


def bridge_from_settings(settings, scorecard: ha.Scorecard | None = None) -> Bridge:
    """The bridge TEMPCTL_MQTT_* describe (the password read here, once; never logged)."""
    from tempctl.device import password_from

    secret = password_from(settings.mqtt_password_file)
    return Bridge(
        settings.mqtt_url,
        password=secret.value if secret is not None else None,
        prefix=settings.mqtt_prefix,
        discovery=settings.mqtt_discovery,
        control=settings.mqtt_control,
        scorecard=scorecard,
    )


__all__ = ["Bridge", "bridge_from_settings", "broker_address"]
