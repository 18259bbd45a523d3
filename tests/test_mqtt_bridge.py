"""The MQTT bridge in process: the scorecard sensors (a tiny fake scorecard), the bounded
queue, the settings, and the log migration that lets events carry origin 'mqtt'."""

from __future__ import annotations

import json
import sqlite3
import subprocess
import threading
from pathlib import Path

import pytest
from mqtt_broker import Broker, Subscriber, need_mosquitto
from procs import wait_for

from tempctl.config import ConfigError, Settings, load_settings
from tempctl.config import Device as DeviceConfig
from tempctl.core.controller import Controller, Limits
from tempctl.core.driver import Driver
from tempctl.core.reading import Reading
from tempctl.daemon.loop import Daemon, Device
from tempctl.daemon.notify import Notifier
from tempctl.mqtt import discovery as ha
from tempctl.mqtt.bridge import Bridge, broker_address
from tempctl.sim.emulator import Emulator
from tempctl.store.eventlog import Log

REPO = Path(__file__).resolve().parent.parent


class FakeScorecard:
    """The live scorecard's contract (discovery.Scorecard), with fixed numbers."""

    def __init__(self):
        self.asked: list[str] = []

    def values(self, device: str) -> dict[str, float | None]:
        self.asked.append(device)
        out = {k: 1.5 for k in ha.SCORE_KEYS}
        out.update(hash_ratio_est_24h=0.931, trips_start=None, changes_24h=3)
        return out


def run_daemon(settings, log, bridge):
    stop = threading.Event()
    daemon = Daemon(
        settings,
        eventlog=log,
        notifier=Notifier(environ={}),
        stop=stop,
        observers=[bridge],
        maintenance=[(0.0, bridge.maintain)],
    )
    bridge.attach(daemon)
    bridge.start()
    t = threading.Thread(target=daemon.run, daemon=True)
    t.start()
    return daemon, stop, t


@need_mosquitto
@pytest.mark.parametrize("with_scorecard", [True, False])
def test_scorecard_sensors_come_from_the_scorecard_object(tmp_path, with_scorecard):
    broker = Broker(tmp_path)
    sub = Subscriber(broker)
    card = FakeScorecard() if with_scorecard else None
    bridge = Bridge(broker.url, scorecard=card)
    log = Log(tmp_path / "tempctl.db")
    with Emulator("constant", seed=1) as emu:
        settings = Settings(devices=(DeviceConfig("gamma", emu.urls[0]),), check_interval=0.2)
        daemon, stop, thread = run_daemon(settings, log, bridge)
        try:
            wait_for(lambda: sub.json("tempctl/gamma/state"), 30, "a state")
            if with_scorecard:
                wait_for(lambda: sub.json("tempctl/gamma/scorecard"), 30, "the scorecard")
            configs = wait_for(
                lambda: len(sub.configs()) >= (29 if with_scorecard else 15) and sub.configs(),
                30,
                "discovery",
            )
        finally:
            stop.set()
            thread.join(15)
            bridge.close()
            log.close()
            sub.close()
            broker.stop()
    score = {t.split("/")[3]: c for t, c in configs.items() if t.split("/")[3] in ha.SCORE_KEYS}
    if not with_scorecard:
        assert score == {}
        return
    assert set(score) == set(ha.SCORE_KEYS) and len(score) == 14
    assert card.asked and set(card.asked) == {"gamma"}
    ratio = score["hash_ratio_est_24h"]
    assert "estimate" in ratio["name"] and ratio["unit_of_measurement"] == "%"
    assert score["j_per_th_start"]["unit_of_measurement"] == "J/TH"
    assert score["above_min_24h"]["device_class"] == "duration"
    assert score["above_degmin_24h"]["unit_of_measurement"] == "°C·min"
    assert all(c["state_topic"] == "tempctl/gamma/scorecard" for c in score.values())
    values = sub.json("tempctl/gamma/scorecard")
    assert values["hash_ratio_est_24h"] == 93.1 and values["changes_24h"] == 3
    assert values["trips_start"] is None and values["j_per_th_24h"] == 1.5


def test_a_full_queue_drops_updates_instead_of_waiting():
    # Not started, so nothing drains the queue: a poll's update is dropped, never waited for.
    bridge = Bridge("mqtt://127.0.0.1:9", queue_size=5)
    lim = Limits()
    d = Device("gamma", "http://127.0.0.1:1", lim, None, Driver(Controller(lim, "gamma")))
    for i in range(100):
        r = Reading("gamma", 1_700_000_000_000 + i * 1000, temp=60.0, frequency=575.0)
        bridge.on_reading(d, r, d.controller.step(r, r.ts_ms))
    assert bridge.queue.qsize() == 5 and bridge.dropped == 95
    kind, name, url, reading, payload, capped = bridge.queue.get_nowait()
    assert (kind, name, payload["state"], payload["throttled"]) == (
        "poll",
        "gamma",
        "NORMAL",
        "OFF",
    )


def test_settings_refuse_a_password_in_the_url_and_name_the_field(tmp_path):
    base = {"BITAXE_IP": "127.0.0.1:1"}
    none = str(tmp_path / "none.toml")
    with pytest.raises(ConfigError) as e:
        load_settings(
            environ={**base, "TEMPCTL_MQTT_URL": "mqtt://ha:s3cret@127.0.0.1"},
            default_config=none,
        )
    assert str(e.value).startswith("TEMPCTL_MQTT_URL=") and "s3cret" not in str(e.value)
    for bad in ("http://127.0.0.1", "mqtt://", "mqtt://127.0.0.1:99999", "mqtt://h/topic"):
        with pytest.raises(ConfigError, match="TEMPCTL_MQTT_URL"):
            load_settings(environ={**base, "TEMPCTL_MQTT_URL": bad}, default_config=none)
    with pytest.raises(ConfigError, match="TEMPCTL_MQTT_PREFIX"):
        load_settings(environ={**base, "TEMPCTL_MQTT_PREFIX": "a/#"}, default_config=none)
    s = load_settings(environ=base, default_config=none)
    assert (s.mqtt_url, s.mqtt_prefix, s.mqtt_discovery, s.mqtt_control) == (
        "",
        "tempctl",
        "homeassistant",
        False,
    )
    assert broker_address("mqtts://ha@127.0.0.1") == ("127.0.0.1", 8883, "ha", True)
    assert broker_address("mqtt://[::1]:1884") == ("::1", 1884, None, False)


def test_an_old_log_is_migrated_so_events_may_come_from_mqtt(tmp_path):
    """A log written by tempctl at 1d92cc0 (schema v2) refuses origin 'mqtt' until migrated."""
    old = subprocess.run(
        ["git", "show", "1d92cc0:schema.sql"], cwd=REPO, capture_output=True, text=True
    )
    if old.returncode != 0:
        pytest.skip("no git history to take the old schema from")
    path = tmp_path / "old.db"
    with sqlite3.connect(path) as conn:
        conn.executescript(old.stdout + "PRAGMA user_version = 2;")
        conn.execute("INSERT INTO meta (key, value) VALUES ('app', 'tempctl')")
        conn.execute(
            "INSERT INTO events (device, ts_ms, kind, origin, message) "
            "VALUES ('gamma', 1, 'log', 'daemon', 'old row')"
        )
        with pytest.raises(sqlite3.IntegrityError):
            conn.execute(
                "INSERT INTO events (device, ts_ms, kind, origin, message) "
                "VALUES ('gamma', 2, 'config', 'mqtt', 'x')"
            )
    log = Log(path)
    log.start_run({}, {}, ts_ms=3)
    sql, params = log.event_op("gamma", 4, "config", "TEMP_THRESHOLD 63 -> 60", origin="mqtt")
    log.conn.execute(sql, params)
    log.conn.commit()
    with pytest.raises(sqlite3.IntegrityError):
        sql, params = log.event_op("gamma", 5, "config", "x", origin="somebody")
        log.conn.execute(sql, params)
    log.close()
    with sqlite3.connect(path) as conn:
        rows = conn.execute("SELECT origin, message FROM events ORDER BY id").fetchall()
        assert conn.execute("PRAGMA integrity_check").fetchone() == ("ok",)
    assert ("daemon", "old row") in rows and ("mqtt", "TEMP_THRESHOLD 63 -> 60") in rows


def test_discovery_ids_come_from_the_mac_and_survive_an_address_change():
    t = ha.Topics()
    a = ha.Miner("10_0", "http://127.0.0.1:8001", mac="AA:BB:CC:DD:EE:0F", model="BM1370")
    b = ha.Miner("other", "http://127.0.0.1:8002", mac="aa:bb:cc:dd:ee:0f", model="BM1370")
    ids = lambda m: {  # noqa: E731
        c["unique_id"] for c in ha.miner_configs(t, m, control=False, scorecard=False).values() if c
    }
    assert ids(a) == ids(b) and all(i.startswith("tempctl_aabbccddee0f_") for i in ids(a))
    hostile = ha.Miner("x", "http://127.0.0.1:1", mac='"}/#+', hostname='"};x')
    cfgs = ha.miner_configs(t, hostile, control=True, scorecard=False)
    assert all("#" not in topic and "+" not in topic for topic in cfgs)
    assert json.loads(json.dumps(cfgs))  # hostile text is only ever JSON-encoded


def test_controls_apply_on_the_loop_thread_with_the_configuration_rules(tmp_path):
    from tempctl.mqtt.controls import PENDING, Controls

    settings = Settings(
        devices=(
            DeviceConfig("gamma", "http://127.0.0.1:9"),
            DeviceConfig("hex", "http://127.0.0.1:10"),
        ),
        critical=65.0,
    )
    log = Log(tmp_path / "tempctl.db")
    log.start_run({}, {}, ts_ms=1)
    daemon = Daemon(settings, eventlog=log, notifier=Notifier(environ={}))
    c = Controls(ha.Topics())
    c.offer("tempctl/gamma/temp_threshold/set", b"66")  # not below TEMPCTL_CRITICAL=65
    c.offer("tempctl/gamma/temp_threshold/set", b"nan")
    c.offer("tempctl/gamma/temp_threshold/set", b"64.5")
    c.offer("tempctl/nobody/temp_threshold/set", b"50")  # not ours: ignored
    c.offer("elsewhere/gamma/temp_threshold/set", b"50")  # not our prefix: ignored
    c.offer("tempctl/dry_run/set", b"maybe")
    c.offer("tempctl/dry_run/set", b"ON")
    assert c.apply(daemon, 2) is True
    daemon.writer.flush()
    gamma, hex_ = daemon.devices
    assert gamma.limits.temp_threshold == 64.5 and hex_.limits.temp_threshold == 63
    assert gamma.controller.limits is gamma.limits and gamma.driver.limits is gamma.limits
    assert all(d.limits.dry_run and d.controller.limits.dry_run for d in daemon.devices)
    rows = log.conn.execute(
        "SELECT device, level, origin, message FROM events ORDER BY id"
    ).fetchall()
    mqtt = [r for r in rows if r[2] == "mqtt"]
    assert [r[1] for r in mqtt] == ["warning", "warning", "info", "warning", "info"]
    assert "must be less than TEMPCTL_CRITICAL=65" in mqtt[0][3]
    assert "not a finite number" in mqtt[1][3]
    assert mqtt[2][0] == "gamma" and "63 -> 64.5" in mqtt[2][3]
    assert "not a boolean" in mqtt[3][3] and mqtt[4][0] is None
    for _ in range(PENDING + 10):  # a flood is bounded, not queued without end
        c.offer("tempctl/dry_run/set", b"OFF")
    assert c.dropped == 10
    daemon.lanes.shutdown()
    log.close()


@need_mosquitto
def test_a_power_cap_is_announced_with_its_ceiling(tmp_path):
    """Two emulated Gammas on a real broker: the one with TEMPCTL_POWER_LIMIT (under the
    levels law) gets a power-cap and a power-ceiling sensor whose state is its ceiling; the
    other gets none (their config topics are empty, as for any removed entity)."""
    broker = Broker(tmp_path)
    sub = Subscriber(broker)
    bridge = Bridge(broker.url)
    log = Log(tmp_path / "tempctl.db")
    with Emulator("constant", devices=2, seed=1) as emu:
        settings = Settings(
            devices=(
                DeviceConfig("capped", emu.urls[0], {"power_limit": 15.0, "law": "levels"}),
                DeviceConfig("free", emu.urls[1]),
            ),
            check_interval=0.2,
        )
        daemon, stop, thread = run_daemon(settings, log, bridge)
        try:
            capped = wait_for(
                lambda: (
                    (sub.json("tempctl/capped/state") or {}).get("power_ceiling", 575) < 575
                    and sub.json("tempctl/capped/state")
                ),
                60,
                "a power ceiling on MQTT",
            )
            configs = wait_for(
                lambda: (
                    [c for t, c in sub.configs().items() if t.endswith("/power_ceiling/config")]
                    and sub.configs()
                ),
                30,
                "the power ceiling's discovery config",
            )
            free = wait_for(lambda: sub.json("tempctl/free/state"), 30, "the free one's state")
            law = daemon.devices[0].limits.law
        finally:
            stop.set()
            thread.join(15)
            bridge.close()
            log.close()
            sub.close()
            broker.stop()
    assert law == "levels" and capped["power_limit"] == 15.0
    # the levels law took the device (575 MHz at the start) down under the ceiling
    assert capped["target"] <= capped["power_ceiling"] < 575
    assert "power_limit" not in free and "power_ceiling" not in free
    mine = {t.split("/")[3]: c for t, c in configs.items() if t.split("/")[3].startswith("power_")}
    assert set(mine) == {"power_limit", "power_ceiling"}  # the capped miner's only
    assert mine["power_ceiling"]["unit_of_measurement"] == "MHz"
    assert mine["power_ceiling"]["state_topic"] == "tempctl/capped/state"
    assert mine["power_ceiling"]["value_template"] == "{{ value_json.power_ceiling }}"
    assert mine["power_limit"]["unit_of_measurement"] == "W"
    assert mine["power_limit"]["device_class"] == "power"
