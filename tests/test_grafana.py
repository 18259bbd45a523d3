"""The shipped Grafana dashboard: every panel query parses (promtool) and reads only series
that a real running exporter serves."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest
import requests
from prometheus_client.parser import text_string_to_metric_families

from tempctl.config import Device, Settings
from tempctl.core.clock import FakeClock
from tempctl.daemon.loop import Daemon
from tempctl.daemon.metrics import SCORECARD_GAUGES, Metrics
from tempctl.daemon.scorecard import Scorecard
from tempctl.sim.emulator import Emulator
from tempctl.store.eventlog import Log

DASHBOARD = Path(__file__).resolve().parent.parent / "grafana" / "tempctl.json"
PROVISIONING = DASHBOARD.parent / "provisioning"

# PromQL words that are not series: functions, aggregations, keywords
PROMQL_WORDS = {
    "sum", "max", "min", "avg", "count", "rate", "irate", "increase", "delta",
    "histogram_quantile", "clamp_min", "clamp_max", "max_over_time", "min_over_time",
    "avg_over_time", "label_replace", "bool", "and", "or", "unless", "offset", "time",
    "timestamp", "vector", "scalar", "abs", "topk", "bottomk", "e",
}  # fmt: skip


def panel_targets(panels: list) -> list[tuple[str, str]]:
    out = []
    for p in panels:
        out += [(p["title"], t["expr"]) for t in p.get("targets", [])]
        out += panel_targets(p.get("panels", []))
    return out


def series_in(expr: str) -> set[str]:
    """The series names an expression selects (strings, matchers, ranges and label lists
    removed; what is left is functions, keywords, numbers and series)."""
    e = re.sub(r'"(?:[^"\\]|\\.)*"', '""', expr)
    e = re.sub(r"\{[^}]*\}|\[[^\]]*\]", " ", e)
    e = re.sub(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", " ", e)
    words = set(re.findall(r"(?<![\w.])[A-Za-z_:][\w:]*", e))
    return words - PROMQL_WORDS


@pytest.fixture(scope="module")
def dashboard() -> dict:
    return json.loads(DASHBOARD.read_text(encoding="utf-8"))


@pytest.fixture(scope="module")
def exported(tmp_path_factory) -> set[str]:
    """Sample names a running daemon's endpoint serves: the daemon against the emulator
    (fake clock, a hot afternoon: throttles, commands, a scorecard with every figure; a
    power cap, so its series are served too)."""
    db = tmp_path_factory.mktemp("grafana") / "tempctl.db"
    clock = FakeClock()
    with Emulator("heatwave", start_hours=5.0, clock=clock.monotonic, seed=1) as emu:
        settings = Settings(
            devices=(Device("gamma", emu.urls[0]),),
            check_interval=30.0,
            law="levels",
            power_limit=15.0,
        )
        card = Scorecard.for_log(db)
        m = Metrics(scorecard=card)
        port = m.serve("127.0.0.1", 0)
        log = Log(db)
        try:
            daemon = Daemon(settings, eventlog=log, clock=clock, observers=[card, m])
            m.watch(daemon.devices[0])
            daemon.run(max_polls=120)
            card.settle(timeout=60)
            text = requests.get(f"http://127.0.0.1:{port}/metrics", timeout=5).text
        finally:
            m.close()
            log.close()
    return {s.name for fam in text_string_to_metric_families(text) for s in fam.samples}


def test_the_dashboard_shows_what_the_issue_asks(dashboard):
    exprs = " ".join(e for _, e in panel_targets(dashboard["panels"]))
    for name in (
        "tempctl_temperature_celsius",
        "tempctl_temperature_threshold_celsius",
        "tempctl_frequency_mhz",
        "tempctl_target_frequency_mhz",
        "tempctl_power_ceiling_mhz",
        "tempctl_power_limit_watts",
        "tempctl_state",
        *(name for name, _, _ in SCORECARD_GAUGES),
    ):
        assert re.search(rf"\b{name}\{{", exprs), name
    types = {p["type"] for p in dashboard["panels"]}
    assert {"timeseries", "state-timeline", "stat"} <= types
    ds = {v["name"]: v for v in dashboard["templating"]["list"]}
    assert ds["datasource"]["query"] == "prometheus" and "device" in ds and "window" in ds


def test_every_query_uses_only_exported_series(dashboard, exported):
    assert "tempctl_polls_total" in exported and "tempctl_poll_lateness_seconds_bucket" in exported
    assert "tempctl_scorecard_joules_per_terahash" in exported
    used = set()
    for title, expr in panel_targets(dashboard["panels"]):
        names = series_in(expr)
        assert names, (title, expr)
        assert names <= exported, (title, sorted(names - exported))
        used |= names
    assert len(used) >= 15
    # the check can fail: a name the exporter does not serve (no _total suffix) is caught
    assert not series_in("rate(tempctl_polls[5m])") <= exported


def promtool_check(exprs: list[str], tmp_path: Path) -> subprocess.CompletedProcess:
    """Each expression as a recording rule; `promtool check rules` parses every one."""
    rules = {
        "groups": [
            {
                "name": "tempctl-dashboard",
                "rules": [
                    {"record": f"dashboard:query_{i}", "expr": e} for i, e in enumerate(exprs)
                ],
            }
        ]
    }
    path = tmp_path / "rules.yml"
    path.write_text(json.dumps(rules))  # JSON is YAML
    return subprocess.run(
        ["promtool", "check", "rules", str(path)], capture_output=True, text=True, timeout=60
    )


def test_every_panel_query_parses(dashboard, tmp_path):
    if shutil.which("promtool") is None:
        pytest.skip("promtool not installed (Debian package prometheus; .ci/run installs it)")
    exprs = [e for _, e in panel_targets(dashboard["panels"])]
    res = promtool_check(exprs, tmp_path)
    assert res.returncode == 0, res.stdout + res.stderr
    assert f"SUCCESS: {len(exprs)} rules found" in res.stdout
    bad = promtool_check(["sum by (device) (tempctl_state"], tmp_path)
    assert bad.returncode != 0 and "parse error" in bad.stdout + bad.stderr


def test_the_provisioning_examples_point_at_the_dashboard():
    import yaml

    provider = yaml.safe_load((PROVISIONING / "dashboards" / "tempctl.yaml").read_text())
    [p] = provider["providers"]
    assert p["type"] == "file" and p["options"]["path"]
    source = yaml.safe_load((PROVISIONING / "datasources" / "prometheus.yaml").read_text())
    [ds] = source["datasources"]
    assert ds["type"] == "prometheus" and ds["url"].startswith("http://127.0.0.1:")
