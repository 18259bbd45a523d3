"""The MQTT bridge end to end: `tempctl run` (a subprocess) against `tempctl emulate` and a
real mosquitto on loopback, watched by a subscriber that listens like Home Assistant.

No assertion depends on scheduling: every step waits for its condition with a generous
deadline. FAST timing (procs.py): 4 polls a second, the emulator at 60x.
"""

from __future__ import annotations

import json
import re
import signal
import time
from contextlib import contextmanager
from itertools import pairwise

import pytest
from mqtt_broker import Broker, Subscriber, need_mosquitto
from procs import FAST, LogView, assert_clean_exit, start_daemon, start_emulator, wait_for

pytestmark = [pytest.mark.slow, need_mosquitto]

DISC = "homeassistant"
REQUIRED = {"name", "unique_id", "state_topic", "device", "availability", "origin"}


@pytest.fixture
def broker(tmp_path):
    b = Broker(tmp_path)
    yield b
    b.stop()


@pytest.fixture
def ha(broker):
    s = Subscriber(broker)
    yield s
    s.close()


@contextmanager
def guarded(tmp_path, broker, seed: int, **settings):
    """An emulated miner in a steady room and `tempctl run` publishing to ``broker``:
    (emulator, log path, daemon), both stopped at the end."""
    emu = start_emulator(tmp_path, scenario="constant", seed=seed)
    db = tmp_path / "tempctl.db"
    d = start_daemon(emu.address, db, tmp_path, mqtt_url=broker.url, **settings)
    try:
        yield emu, db, d
    finally:
        d.stop()
        emu.stop()


def miner_node(ha: Subscriber) -> str:
    """The miner's discovery node id, once its configs are there (TEMP_THRESHOLD's is last)."""
    nodes = {t.split("/")[2] for t in ha.configs() if t.endswith("/temp_threshold/config")}
    return nodes.pop() if len(nodes) == 1 else ""


def state(ha: Subscriber, emu) -> dict:
    slug = re.sub(r"[^a-z0-9]+", "_", emu.address).strip("_")
    return ha.json(f"tempctl/{slug}/state") or {}


def availability(ha: Subscriber, emu) -> str | None:
    slug = re.sub(r"[^a-z0-9]+", "_", emu.address).strip("_")
    return ha.text(f"tempctl/{slug}/availability")


def test_discovery_state_and_availability_follow_the_miner(tmp_path, broker, ha):
    with guarded(tmp_path, broker, 1) as (emu, db, d):
        node = wait_for(lambda: miner_node(ha), 30, "the miner's discovery configs", d)
        mac = emu.state().get("mac") or ""
        assert node == "tempctl_" + re.sub(r"[^0-9a-f]", "", mac.lower()) or not mac

        def mine_now():
            configs = ha.configs()
            return {t.split("/")[3]: (t.split("/")[1], c) for t, c in configs.items() if node in t}

        def score(m):
            return {k for k in m if k.endswith(("_24h", "_start"))}

        # the discovery burst may still be arriving: wait for its last part, the scorecard's
        wait_for(lambda: len(score(mine_now())) == 14, 30, "the scorecard's discovery configs", d)
        mine = mine_now()
        for key, (_, cfg) in mine.items():
            assert REQUIRED <= set(cfg), (key, cfg)
            assert cfg["unique_id"] == f"{node}_{key}"
            assert cfg["availability_mode"] == "all"
            assert {a["topic"] for a in cfg["availability"]} == {
                "tempctl/status",
                cfg["state_topic"]
                .replace("/state", "/availability")
                .replace("/scorecard", "/availability"),
            }
        dev = mine["temp"][1]["device"]
        assert dev["identifiers"] == [node]
        assert dev["configuration_url"] == emu.url
        assert dev["model"] == "BM1370" and dev["sw_version"] == "v2.15.0"
        units = {k: c.get("unit_of_measurement") for k, (_, c) in mine.items()}
        assert units["temp"] == units["vr_temp"] == "°C"
        assert units["frequency"] == units["target"] == "MHz"
        assert (units["hashrate"], units["power"], units["fan"]) == ("GH/s", "W", "%")
        assert mine["temp"][1]["device_class"] == "temperature"
        assert mine["temp"][1]["state_class"] == "measurement"
        assert mine["power"][1]["device_class"] == "power"
        assert {k for k, (comp, _) in mine.items() if comp == "binary_sensor"} == {
            "throttled",
            "overheat",
            "alarm",
        }
        assert mine["state"][1]["options"] == ["NORMAL", "THROTTLED_1", "THROTTLED_2", "RECOVERING"]
        # tempctl run hands the bridge its live scorecard: one sensor per figure and window
        assert "hash_ratio_est_24h" in score(mine) and "j_per_th_start" in score(mine)
        daemon_cfgs = [c for t, c in ha.configs().items() if "/tempctl_daemon_" in t]
        assert daemon_cfgs and all(c["availability_topic"] == "tempctl/status" for c in daemon_cfgs)
        wait_for(lambda: ha.text("tempctl/status") == "online", 10, "daemon online", d)
        wait_for(lambda: availability(ha, emu) == "online", 10, "miner online", d)
        s = wait_for(lambda: state(ha, emu).get("temp") and state(ha, emu), 10, "a state", d)
        assert s["state"] == "NORMAL" and s["throttled"] == "OFF" and s["target"] == 575
        assert s["frequency"] == 575 and s["threshold"] == 63 and s["law"]

        # A heat wave: the state follows the throttle, and the recovery once it is cool.
        emu.set_ambient(12.0)
        hot = wait_for(
            lambda: state(ha, emu).get("throttled") == "ON" and state(ha, emu),
            60,
            "a throttle on MQTT",
            d,
        )
        assert hot["state"].startswith("THROTTLED") and hot["target"] < 575
        wait_for(lambda: state(ha, emu).get("frequency", 575) < 575, 30, "the lower frequency", d)
        emu.set_ambient(-8.0)
        wait_for(
            lambda: state(ha, emu).get("state") == "NORMAL" and state(ha, emu)["target"] == 575,
            180,
            "the recovery on MQTT",
            d,
        )
        assert state(ha, emu)["throttled"] == "OFF"

        # The miner stops answering: unavailable; it answers again: available.
        emu.set_faults("5xx")
        wait_for(lambda: availability(ha, emu) == "offline", 30, "miner unavailable", d)
        assert ha.text("tempctl/status") == "online"
        emu.set_faults("")
        wait_for(lambda: availability(ha, emu) == "online", 30, "miner available again", d)
        assert_clean_exit(d)
        wait_for(lambda: ha.text("tempctl/status") == "offline", 10, "offline at a clean stop")


def test_last_will_on_kill_9_and_unique_ids_stable_across_restarts(tmp_path, broker, ha):
    with guarded(tmp_path, broker, 2) as (emu, db, d):
        wait_for(lambda: miner_node(ha) and ha.text("tempctl/status") == "online", 30, "up", d)
        wait_for(lambda: state(ha, emu).get("temp"), 10, "a state", d)
        first = {c["unique_id"] for c in ha.configs().values()}
        d.kill()  # SIGKILL: no goodbye; the broker publishes the last will
        wait_for(lambda: ha.text("tempctl/status") == "offline", 60, "the last will")
        mark = len(ha.history)
        d2 = start_daemon(emu.address, db, tmp_path, name="daemon2", mqtt_url=broker.url)
        try:
            wait_for(lambda: ha.text("tempctl/status") == "online", 30, "online again", d2)
            wait_for(lambda: state(ha, emu).get("temp"), 10, "a state", d2)

            def again():
                with ha.lock:
                    new = [(t, p) for t, p in ha.history[mark:] if t.endswith("/config") and p]
                return {json.loads(p)["unique_id"] for _, p in new}

            wait_for(lambda: again() == first, 30, "the same unique ids republished", d2)
            assert_clean_exit(d2)
        finally:
            d2.stop()


def test_a_dead_broker_costs_no_poll(tmp_path, broker, ha):
    v = LogView(tmp_path / "tempctl.db")
    with guarded(tmp_path, broker, 3) as (emu, db, d):
        wait_for(lambda: miner_node(ha) and state(ha, emu).get("temp"), 30, "publishing", d)
        ha.close()
        broker.kill()
        t0_ms = int(time.time() * 1000)
        before = v.count("readings")
        wait_for(lambda: "MQTT broker" in d.output() and "polls go on" in d.output(), 20, "warn", d)
        wait_for(lambda: v.count("readings") >= before + 40, 60, "40 polls with no broker", d)
        t1_ms = int(time.time() * 1000)
        broker.start()  # the same port, empty (no persistence): the bridge must resend all
        ha2 = Subscriber(broker)
        try:
            wait_for(lambda: "connected again" in d.output(), 60, "the reconnection", d)
            wait_for(lambda: miner_node(ha2), 30, "discovery on the new broker", d)
            wait_for(lambda: ha2.text("tempctl/status") == "online", 30, "online", d)
            wait_for(lambda: state(ha2, emu).get("temp"), 10, "state on the new broker", d)
        finally:
            ha2.close()
        assert_clean_exit(d)
    ts = [r[0] for r in v.rows("SELECT ts_ms FROM readings ORDER BY id")]
    down = [t for t in ts if t0_ms <= t <= t1_ms]
    gaps = [b - a for a, b in pairwise(ts)]
    out = d.output()
    warnings = [ln for ln in out.splitlines() if "WARNING MQTT broker" in ln]
    interval_ms = FAST["check_interval"] * 1000
    print(
        f"broker down {(t1_ms - t0_ms) / 1000:.1f} s: {len(down)} polls logged "
        f"(one per {interval_ms:g} ms = {(t1_ms - t0_ms) / interval_ms:.0f} expected), "
        f"largest gap between readings {max(gaps)} ms, {len(warnings)} warning(s)"
    )
    assert len(warnings) == 1, warnings
    assert max(gaps) < 1500, "a poll was lost while the broker was down"
    assert v.count("readings", "valid = 0") == 0


def test_controls_from_home_assistant_are_validated_and_logged(tmp_path, broker, ha):
    v = LogView(tmp_path / "tempctl.db")
    with guarded(tmp_path, broker, 4, mqtt_control=True) as (emu, db, d):
        node = wait_for(lambda: miner_node(ha), 30, "discovery", d)
        cfg = ha.configs()[f"{DISC}/number/{node}/temp_threshold/config"]
        assert (cfg["min"], cfg["max"]) == (30, 74)  # TEMP_THRESHOLD's own range
        sw = [c for t, c in ha.configs().items() if t.startswith(f"{DISC}/switch/")]
        assert len(sw) == 1 and sw[0]["command_topic"] == "tempctl/dry_run/set"
        wait_for(lambda: state(ha, emu).get("temp"), 10, "a state", d)
        cmd = cfg["command_topic"]
        ha.publish(cmd, "80")  # out of range: refused like a config value
        ha.publish(cmd, "abc")
        ha.publish(cmd, "60.5")
        wait_for(lambda: state(ha, emu).get("threshold") == 60.5, 20, "the new threshold", d)
        ha.publish("tempctl/dry_run/set", "ON")
        wait_for(
            lambda: (ha.json("tempctl/daemon/state") or {}).get("dry_run") == "ON", 20, "dry", d
        )
        ev = wait_for(
            lambda: len(v.events("config")) >= 4 and v.events("config"), 20, "4 events", d
        )
        assert_clean_exit(d)
    assert {e["origin"] for e in ev} == {"mqtt"}
    msgs = [e["message"] for e in ev]
    assert "must be between 30 and 74" in msgs[0] and ev[0]["level"] == "warning"
    assert "not a number" in msgs[1]
    assert "TEMP_THRESHOLD 63 -> 60.5" in msgs[2] and "unless also set in the config" in msgs[2]
    assert "TEMPCTL_DRY_RUN=true" in msgs[3]
    # the law used the new threshold: the dry run is logged on the following commands
    assert v.count("events", "origin = 'mqtt'") == 4


def test_without_control_nothing_is_subscribed(tmp_path, broker, ha):
    v = LogView(tmp_path / "tempctl.db")
    with guarded(tmp_path, broker, 5) as (emu, db, d):
        node = wait_for(lambda: miner_node(ha), 30, "discovery", d)
        assert f"{DISC}/sensor/{node}/temp_threshold/config" in ha.configs()
        slug = re.sub(r"[^a-z0-9]+", "_", emu.address).strip("_")
        ha.publish(f"tempctl/{slug}/temp_threshold/set", "60")
        ha.publish("tempctl/dry_run/set", "ON")
        n = v.count("readings")
        wait_for(lambda: v.count("readings") >= n + 8, 20, "polls after the commands", d)
        assert state(ha, emu)["threshold"] == 63
        assert v.count("events", "origin = 'mqtt'") == 0
        assert "Subscribed" not in broker.proc.output().split("tempctl-")[-1]
        assert_clean_exit(d)


def test_broker_password_from_a_file_is_never_shown(tmp_path):
    secret = "pw-Zq81-never-shown"
    b = Broker(tmp_path, password=secret)
    ha = Subscriber(b)
    emu = start_emulator(tmp_path, scenario="constant", seed=6)
    pw = tmp_path / "mqtt.pw"
    pw.write_text(secret + "\n")
    pw.chmod(0o600)
    db = tmp_path / "tempctl.db"
    d = start_daemon(emu.address, db, tmp_path, mqtt_url=b.url, mqtt_password_file=pw)
    try:
        wait_for(lambda: miner_node(ha) and state(ha, emu).get("temp"), 30, "published", d)
        assert_clean_exit(d)
    finally:
        d.stop()
        emu.stop()
        ha.close()
        b.stop()
    assert secret not in d.output()
    for f in tmp_path.glob("tempctl.db*"):
        assert secret.encode() not in f.read_bytes()


def test_a_password_in_the_url_exits_2_naming_the_field(tmp_path):
    d = start_daemon(
        "127.0.0.1:9", tmp_path / "x.db", tmp_path, mqtt_url="mqtt://u:hunter2@127.0.0.1"
    )
    assert d.wait(30) == 2
    out = d.output()
    assert "TEMPCTL_MQTT_URL" in out and "password" in out and "hunter2" not in out
    d.signal(signal.SIGTERM)


def test_demo_shows_the_entities_live_on_a_broker(tmp_path, broker, ha):
    from procs import PYTHON, REPO, Proc

    args = [PYTHON, "-m", "tempctl", "demo", "--mqtt", broker.url, "--no-ui", "--duration", "60"]
    args += ["--db", str(tmp_path / "demo.db")]
    demo = Proc("demo", args, cwd=REPO, out=tmp_path / "demo.out")
    try:
        node = wait_for(lambda: miner_node(ha), 60, "the demo's miner in discovery", demo)
        assert "MQTT broker" in demo.output() and broker.url.split("//")[1] in demo.output()
        slug = ha.configs()[f"{DISC}/sensor/{node}/temp/config"]["state_topic"]
        wait_for(lambda: (ha.json(slug) or {}).get("temp"), 30, "live state", demo)
        first = ha.json(slug)["temp"]
        wait_for(lambda: ha.json(slug)["temp"] != first, 30, "the state moving", demo)
        wait_for(lambda: ha.json(slug)["throttled"] == "ON", 60, "the heat wave's throttle", demo)
        demo.signal(signal.SIGINT)
        assert demo.wait(30) == 0, demo.output()
        wait_for(lambda: ha.text("tempctl/status") == "offline", 10, "offline after the demo")
    finally:
        demo.stop()


def test_demo_refuses_a_password_in_the_mqtt_url(tmp_path):
    from procs import PYTHON, REPO, Proc

    args = [PYTHON, "-m", "tempctl", "demo", "--mqtt", "mqtt://u:pw123@127.0.0.1", "--no-ui"]
    demo = Proc("demo", args, cwd=REPO, out=tmp_path / "demo.out")
    assert demo.wait(30) == 2
    out = demo.output()
    assert "--mqtt" in out and "must not contain a password" in out and "pw123" not in out


@pytest.mark.parametrize("broker_kind", ["refusing", "silent"])
def test_a_refusing_or_silent_broker_costs_no_poll(tmp_path, broker_kind):
    """A broker that refuses our login, or accepts TCP and never answers the CONNECT."""
    import socket

    if broker_kind == "refusing":
        b = Broker(tmp_path, password="not-given-to-tempctl")
        url, holder = b.url, None
    else:
        b, holder = None, socket.socket()
        holder.bind(("127.0.0.1", 0))
        holder.listen(8)  # the kernel accepts; nobody ever reads or answers
        url = f"mqtt://127.0.0.1:{holder.getsockname()[1]}"
    emu = start_emulator(tmp_path, scenario="constant", seed=7)
    db = tmp_path / "tempctl.db"
    v = LogView(db)
    d = start_daemon(emu.address, db, tmp_path, mqtt_url=url)
    try:
        if broker_kind == "refusing":
            wait_for(lambda: "refused" in d.output(), 30, "the refusal", d)
        wait_for(lambda: v.count("readings") >= 40, 60, "40 polls", d)
        assert_clean_exit(d)
    finally:
        d.stop()
        emu.stop()
        if b is not None:
            b.stop()
        if holder is not None:
            holder.close()
    ts = [r[0] for r in v.rows("SELECT ts_ms FROM readings ORDER BY id")]
    assert max(b - a for a, b in pairwise(ts)) < 1500
    warnings = [ln for ln in d.output().splitlines() if "WARNING MQTT broker" in ln]
    # one per outage: the refusal repeats at every retry; a silent broker is given up on
    # after 1.5 keep-alives (45 s), which a slow run may reach
    assert len(warnings) == 1 if broker_kind == "refusing" else len(warnings) <= 1, warnings
