"""Prometheus metrics, scraped from the real endpoint on loopback."""

from __future__ import annotations

import socket

import pytest
import requests
from prometheus_client.parser import text_string_to_metric_families

from tempctl.config import Device as DeviceConfig
from tempctl.config import Settings
from tempctl.core.controller import Command, Controller, Limits
from tempctl.core.driver import Driver
from tempctl.core.reading import Reading
from tempctl.daemon.loop import Daemon, Device
from tempctl.daemon.metrics import Metrics
from tempctl.sim.emulator import Emulator
from tempctl.store.eventlog import Log

T = 1_700_000_000_000


class Clock:
    def __init__(self):
        self.t = 100.0

    def __call__(self) -> float:
        return self.t


def scrape(port: int) -> dict:
    """{(name, frozenset(labels)): value} from GET /metrics."""
    resp = requests.get(f"http://127.0.0.1:{port}/metrics", timeout=5)
    assert resp.status_code == 200
    out = {}
    for fam in text_string_to_metric_families(resp.text):
        for s in fam.samples:
            out[(s.name, frozenset(s.labels.items()))] = s.value
    return out


def value(samples: dict, name: str, **labels) -> float:
    return samples[(name, frozenset(labels.items()))]


def device(name: str, limits: Limits) -> Device:
    return Device(
        name,
        f"http://127.0.0.1:1/{name}",
        limits,
        client=None,
        driver=Driver(Controller(limits, name)),
    )


def feed(m: Metrics, d: Device, r: Reading):
    """What the daemon does per poll, minus HTTP and SQLite."""
    d.polls += 1
    d.last_reading = r
    if not r.valid:
        d.errors += 1
    decision = d.controller.step(r, r.ts_ms)
    m.on_reading(d, r, decision)
    return decision


@pytest.fixture
def served():
    clock = Clock()
    m = Metrics(clock=clock)
    port = m.serve("127.0.0.1", 0)
    yield m, port, clock
    m.close()


def test_per_device_values_states_and_counters(served):
    m, port, clock = served
    limits = Limits(settle=0.0)
    hot, cool = device("hot", limits), device("cool", limits)
    feed(
        m,
        hot,
        Reading(
            "hot",
            T,
            temp=60.0,
            vr_temp=50.0,
            frequency=575.0,
            hashrate=1100.0,
            power=18.5,
            fan_pct=100.0,
        ),
    )
    feed(m, cool, Reading("cool", T, temp=55.0, frequency=575.0))
    clock.t += 30
    d = feed(m, hot, Reading("hot", T + 30_000, temp=66.5, vr_temp=61.0, frequency=575.0))
    assert d.transition.to_state == "THROTTLED_1" and d.commands
    m.on_result(hot, d.commands[0], "failed", "rejected: HTTP 400")
    m.on_result(hot, Command("restart", "apply"), "ok", None)
    feed(m, cool, Reading("cool", T + 30_000, error="timeout: no answer"))
    cool.missed += 2
    clock.t += 12.5

    s = scrape(port)
    assert value(s, "tempctl_devices") == 2
    assert value(s, "tempctl_temperature_celsius", device="hot") == 66.5
    assert value(s, "tempctl_vr_temperature_celsius", device="hot") == 61.0
    assert value(s, "tempctl_frequency_mhz", device="hot") == 575.0
    assert value(s, "tempctl_target_frequency_mhz", device="hot") == 490.0
    assert value(s, "tempctl_temperature_threshold_celsius", device="hot") == 63.0
    assert value(s, "tempctl_last_reading_timestamp_seconds", device="hot") == (T + 30_000) / 1000
    assert value(s, "tempctl_state", device="hot", state="THROTTLED_1") == 1
    assert value(s, "tempctl_state", device="hot", state="NORMAL") == 0
    assert value(s, "tempctl_state", device="cool", state="NORMAL") == 1
    assert value(s, "tempctl_state_seconds", device="hot") == 12.5
    assert value(s, "tempctl_state_seconds", device="cool") == 42.5
    assert value(s, "tempctl_transitions_total", device="hot", to_state="THROTTLED_1") == 1
    assert value(s, "tempctl_transitions_total", device="hot", to_state="NORMAL") == 1
    assert value(s, "tempctl_command_failures_total", device="hot", kind="set_frequency") == 1
    assert value(s, "tempctl_command_failures_total", device="hot", kind="restart") == 0
    assert value(s, "tempctl_commands_total", device="hot", kind="restart", outcome="ok") == 1
    assert value(s, "tempctl_polls_total", device="cool") == 2
    assert value(s, "tempctl_poll_errors_total", device="cool") == 1
    assert value(s, "tempctl_missed_polls_total", device="cool") == 2
    assert value(s, "tempctl_missed_polls_total", device="hot") == 0
    # an invalid reading leaves a gap, not a stale value
    assert ("tempctl_temperature_celsius", frozenset({("device", "cool")})) not in s
    assert value(s, "tempctl_last_reading_timestamp_seconds", device="cool") == T / 1000 + 30


def test_a_device_is_listed_before_its_first_poll(served):
    m, port, _ = served
    m.watch(device("slow", Limits()))
    s = scrape(port)
    assert value(s, "tempctl_polls_total", device="slow") == 0
    assert value(s, "tempctl_state", device="slow", state="NORMAL") == 1
    assert ("tempctl_state_seconds", frozenset({("device", "slow")})) not in s


def test_own_registry_and_loopback_only(served):
    m, port, _ = served
    text = requests.get(f"http://127.0.0.1:{port}/metrics", timeout=5).text
    assert "python_gc" not in text and "process_cpu" not in text  # not the global registry
    assert m.server.server_address[0] == "127.0.0.1"
    other = Metrics()  # a second endpoint in the same process is fine
    try:
        assert other.serve("127.0.0.1", 0) != port
    finally:
        other.close()
    with socket.socket() as s, pytest.raises(OSError):
        s.bind(("127.0.0.1", port))  # the port is really taken


def test_scraping_a_running_daemon(tmp_path):
    """Daemon + emulator end to end: a critical device whose PATCH is refused."""
    with Emulator("heatwave", start_hours=8.0, faults="patch_400", seed=1) as emu:
        name = "gamma"
        settings = Settings(
            devices=(DeviceConfig(name, emu.urls[0]),), check_interval=0.2, settle=0.0
        )
        m = Metrics()
        port = m.serve("127.0.0.1", 0)
        log = Log(tmp_path / "tempctl.db")
        try:
            daemon = Daemon(settings, eventlog=log, observers=[m])
            m.watch(daemon.devices[0])
            daemon.run(max_polls=4)
            s = scrape(port)
            polls = log.conn.execute("SELECT count(*) FROM readings").fetchone()[0]
            last_temp = log.conn.execute(
                "SELECT temp FROM readings ORDER BY ts_ms DESC LIMIT 1"
            ).fetchone()[0]
        finally:
            m.close()
            log.close()
    assert value(s, "tempctl_polls_total", device=name) == polls == 4
    assert value(s, "tempctl_temperature_celsius", device=name) == last_temp >= 70
    assert value(s, "tempctl_state", device=name, state="THROTTLED_2") == 1
    assert value(s, "tempctl_command_failures_total", device=name, kind="set_frequency") >= 1
    assert value(s, "tempctl_missed_polls_total", device=name) == 0


def test_run_refuses_a_metrics_port_in_use(tmp_path):
    from click.testing import CliRunner

    from tempctl.cli import cli

    (tmp_path / "none.toml").write_text("")
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen(1)
        port = taken.getsockname()[1]
        res = CliRunner().invoke(
            cli,
            [
                "run",
                "--bitaxe-ip",
                "127.0.0.1:1",
                "--db",
                str(tmp_path / "t.db"),
                "--metrics-port",
                str(port),
            ],
            env={"TEMPCTL_CONFIG": str(tmp_path / "none.toml")},
        )
    assert res.exit_code == 1, res.output
    assert f"metrics endpoint 127.0.0.1:{port}: Address already in use" in res.output


def test_the_scorecard_series_of_a_running_daemon(tmp_path):
    """Daemon + emulator: the tempctl_scorecard_* gauges are the scorecard's figures."""
    from tempctl.core.clock import FakeClock
    from tempctl.daemon.metrics import SCORECARD_GAUGES
    from tempctl.daemon.scorecard import Scorecard

    clock = FakeClock(start_ms=T)
    with Emulator("heatwave", start_hours=5.0, clock=clock.monotonic, seed=1) as emu:
        settings = Settings(
            devices=(DeviceConfig("gamma", emu.urls[0]),), check_interval=30.0, law="levels"
        )
        card = Scorecard.for_log(tmp_path / "tempctl.db")
        m = Metrics(scorecard=card)
        port = m.serve("127.0.0.1", 0)
        log = Log(tmp_path / "tempctl.db")
        try:
            Daemon(settings, eventlog=log, clock=clock, observers=[card, m]).run(max_polls=240)
            card.settle(timeout=60)
            s = scrape(port)
        finally:
            m.close()
            log.close()
    figures = card.values("gamma")
    assert figures["above_min_24h"] > 0 and figures["changes_24h"] > 0
    for name, _, key in SCORECARD_GAUGES:
        for window in ("24h", "start"):
            want = figures[f"{key}_{window}"]
            assert want is not None, key
            assert value(s, name, device="gamma", window=window) == pytest.approx(want), name


def run_cli(tmp_path, *args, env=None):
    from click.testing import CliRunner

    from tempctl.cli import cli

    (tmp_path / "none.toml").write_text("")
    cmd = ["run", "--bitaxe-ip", "127.0.0.1:1", "--db", str(tmp_path / "t.db"), *args]
    return CliRunner().invoke(
        cli, cmd, env={"TEMPCTL_CONFIG": str(tmp_path / "none.toml"), **(env or {})}
    )


def test_a_metrics_host_beyond_loopback_needs_allow_remote(tmp_path):
    # 192.0.2.1 is TEST-NET-1 (RFC 5737): not loopback, and no interface here has it
    port = "9101"
    res = run_cli(tmp_path, "--metrics-host", "192.0.2.1", "--metrics-port", port)
    assert res.exit_code == 2, res.output
    assert "TEMPCTL_METRICS_HOST (--metrics-host) 192.0.2.1 is not a loopback address" in (
        res.output
    )
    assert "--allow-remote" in res.output
    assert not (tmp_path / "t.db").exists()  # refused before anything started
    res = run_cli(
        tmp_path, "--metrics-port", port, env={"TEMPCTL_METRICS_HOST": "0.0.0.0"}
    )  # from the environment (or the config file) alike
    assert res.exit_code == 2 and "0.0.0.0 is not a loopback address" in res.output
    # with --allow-remote the check passes and binding is tried (this address has no interface)
    res = run_cli(tmp_path, "--metrics-host", "192.0.2.1", "--metrics-port", port, "--allow-remote")
    assert res.exit_code == 1, res.output
    assert "metrics endpoint 192.0.2.1:9101: Cannot assign requested address" in res.output


def test_the_daemon_has_one_scorecard_for_every_exporter(tmp_path):
    from tempctl.daemon.fleet import daemon_extras, scorecard

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    settings = Settings(metrics_port=port, db=str(tmp_path / "t.db"))
    extras = daemon_extras(settings)
    try:
        card = extras.scorecard
        assert extras.metrics.scorecard is card and card in extras.observers
        assert scorecard(extras, settings) is card  # the MQTT bridge gets the same one
        assert extras.observers.count(card) == 1
    finally:
        extras.close()


def test_the_power_cap_is_exported_per_device(served):
    """TEMPCTL_POWER_LIMIT: the watts, the frequency ceiling it sets and whether it binds,
    in the exposition text; a device without a cap has none of these series."""
    m, port, _ = served
    capped = device("capped", Limits(power_limit=15.0, law="levels", check_interval=5.0))
    free = device("free", Limits())
    for i in range(4):  # ~18 W at 575 MHz: three readings at one point move the ceiling
        r = Reading(
            "capped", T + i * 5000, temp=55.0, frequency=575.0, core_voltage=1150,
            hashrate=1200.0, power=18.0,
        )  # fmt: skip
        feed(m, capped, r)
    feed(m, free, Reading("free", T, temp=55.0, frequency=575.0, power=18.0))
    ctl = capped.controller
    assert ctl.power_mhz is not None and ctl.frequency == ctl.power_mhz < 575
    text = requests.get(f"http://127.0.0.1:{port}/metrics", timeout=5).text
    assert "# HELP tempctl_power_ceiling_mhz Highest frequency the power cap allows" in text
    assert "# TYPE tempctl_power_limit_watts gauge" in text
    assert f'tempctl_power_ceiling_mhz{{device="capped"}} {ctl.power_mhz}' in text
    s = scrape(port)
    assert value(s, "tempctl_power_limit_watts", device="capped") == 15.0
    assert value(s, "tempctl_power_ceiling_mhz", device="capped") == ctl.power_mhz
    assert value(s, "tempctl_power_cap_binding", device="capped") == 1
    assert ("tempctl_power_share_watts", frozenset({("device", "capped")})) not in s
    cap_series = ("limit_watts", "share_watts", "ceiling_mhz", "cap_binding")
    assert not [k for k in s if k[0][len("tempctl_power_") :] in cap_series and "free" in str(k)]
