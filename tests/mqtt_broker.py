"""A real mosquitto broker on a free loopback port, and a subscriber that listens like
Home Assistant does (the MQTT tests; the broker is Debian's ``mosquitto`` package)."""

from __future__ import annotations

import getpass
import json
import shutil
import subprocess
import threading
from pathlib import Path

import pytest
from procs import Proc, free_port, wait_for

MOSQUITTO = shutil.which("mosquitto") or (
    "/usr/sbin/mosquitto" if Path("/usr/sbin/mosquitto").exists() else None
)
PASSWD = shutil.which("mosquitto_passwd") or "/usr/bin/mosquitto_passwd"
need_mosquitto = pytest.mark.skipif(
    MOSQUITTO is None, reason="mosquitto is not installed (apt-get install mosquitto)"
)


class Broker:
    """mosquitto listening on 127.0.0.1 only, no persistence; ``restart()`` keeps the port."""

    def __init__(self, tmp_path: Path, *, password: str | None = None, user: str = "ha"):
        self.tmp = Path(tmp_path)
        self.port = free_port()
        self.user, self.password = user, password
        # ``user``: mosquitto started as root would switch to "mosquitto", who cannot read
        # the test's private directory; as anyone else the line is ignored.
        conf = [
            f"listener {self.port} 127.0.0.1",
            "persistence false",
            "log_type all",
            f"user {getpass.getuser()}",
        ]
        if password is None:
            conf.append("allow_anonymous true")
        else:
            pw = self.tmp / "mosquitto.passwd"
            pw.write_text("")
            pw.chmod(0o600)
            subprocess.run(
                [PASSWD, "-b", str(pw), user, password],
                check=True,
                capture_output=True,
            )
            conf += ["allow_anonymous false", f"password_file {pw}"]
        self.conf = self.tmp / "mosquitto.conf"
        self.conf.write_text("\n".join(conf) + "\n")
        self.proc: Proc | None = None
        self.start()

    @property
    def url(self) -> str:
        user = f"{self.user}@" if self.password is not None else ""
        return f"mqtt://{user}127.0.0.1:{self.port}"

    def start(self) -> None:
        self.proc = Proc(
            "mosquitto", [MOSQUITTO, "-c", str(self.conf)], out=self.tmp / "mosquitto.out"
        )
        wait_for(
            lambda: f"port {self.port}" in self.proc.output() and "Opening" in self.proc.output(),
            15,
            "mosquitto listening",
            self.proc,
        )

    def kill(self) -> None:
        self.proc.kill()

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.stop()


class Subscriber:
    """Subscribes to the discovery prefix and tempctl's topics and keeps every message."""

    def __init__(self, broker: Broker, topics=("homeassistant/#", "tempctl/#")):
        import paho.mqtt.client as mqtt

        self.lock = threading.Lock()
        self.last: dict[str, bytes] = {}
        self.history: list[tuple[str, bytes]] = []
        c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="test-ha")
        if broker.password is not None:
            c.username_pw_set(broker.user, broker.password)
        c.on_connect = lambda cl, *_: cl.subscribe([(t, 1) for t in topics])
        c.on_message = self._on_message
        c.reconnect_delay_set(0.2, 1)
        c.connect("127.0.0.1", broker.port, 30)
        c.loop_start()
        self.client = c

    def _on_message(self, client, userdata, msg) -> None:
        with self.lock:
            self.last[msg.topic] = msg.payload
            self.history.append((msg.topic, msg.payload))

    def json(self, topic: str) -> dict | None:
        with self.lock:
            raw = self.last.get(topic)
        return json.loads(raw) if raw else None

    def text(self, topic: str) -> str | None:
        with self.lock:
            raw = self.last.get(topic)
        return None if raw is None else raw.decode()

    def configs(self, prefix: str = "homeassistant") -> dict[str, dict]:
        """Live discovery configs (an empty retained payload removes one)."""
        with self.lock:
            items = list(self.last.items())
        return {
            t: json.loads(p)
            for t, p in items
            if t.startswith(prefix + "/") and t.endswith("/config") and p
        }

    def seen(self, topic: str, payload: str) -> bool:
        with self.lock:
            return any(t == topic and p.decode() == payload for t, p in self.history)

    def publish(self, topic: str, payload: str) -> None:
        self.client.publish(topic, payload, qos=1).wait_for_publish(10)

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()
