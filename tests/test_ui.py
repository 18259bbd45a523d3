"""`tempctl ui`: the real Datasette process on a real log (tests/fixtures.py), over loopback.

The expectations come from what the controller did while the fixture was built (not
from SQL), so each canned query is checked against an independent computation.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
import time
from collections import defaultdict
from datetime import UTC, datetime
from pathlib import Path

import dashboard
import pytest
import requests
from click.testing import CliRunner
from dashboard import Server, free_port, render
from fixtures import build_log

from tempctl.cli import cli
from tempctl.core.reading import Reading
from tempctl.store.eventlog import Log
from tempctl.store.status import device_status
from tempctl.ui import server as ui

DAY_MS = 86_400_000


def _utc(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, UTC).strftime("%Y-%m-%d %H:%M:%S")


def _digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture(scope="session")
def fixture_log(tmp_path_factory):
    return build_log(tmp_path_factory.mktemp("ui") / "tempctl.db")


@pytest.fixture(scope="session")
def server(fixture_log, tmp_path_factory):
    srv = Server(fixture_log.path, tmp_path_factory.mktemp("ui-out") / "datasette.log")
    yield srv
    srv.stop()


# --- expectations computed from the controller's own output -----------------------------


def segments(fx) -> list[tuple[str, str, float | None, int, int]]:
    """(device, state, target MHz, start, end) per transition, as the controller logged them."""
    out = []
    for d in fx.devices:
        rows = [t for t in fx.transitions if t[0] == d]
        for i, (_, ts, _, to_state, freq) in enumerate(rows):
            end = rows[i + 1][1] if i + 1 < len(rows) else fx.last_reading_ms[d]
            out.append((d, to_state, freq, ts, end))
    return out


def hours_by_day(fx) -> dict[tuple[str, str, str], float]:
    """(device, UTC day, state) -> hours, splitting segments at midnight."""
    acc: dict = defaultdict(float)
    for d, state, _, start, end in segments(fx):
        while start < end:
            midnight = start - start % DAY_MS + DAY_MS
            stop = min(end, midnight)
            acc[(d, _utc(start)[:10], state)] += (stop - start) / 3_600_000
            start = stop
    return acc


# --- the process: read-only, loopback, only the allowed plugins ---------------------------


@pytest.mark.slow
def test_serves_the_live_file_mutable_on_loopback(server, fixture_log):
    cmd = ui.ui_command(fixture_log.path, "127.0.0.1", server.port)
    assert not {"-i", "--immutable", "--create", "--root", "--cors"} & set(cmd)
    [db] = server.get("/-/databases.json").json()
    assert (db["name"], db["is_mutable"]) == ("tempctl", True)
    settings = server.get("/-/settings.json").json()
    assert {k: settings[k] for k in ui.SETTINGS} == {
        k: (v if isinstance(v, int) else v == "on") for k, v in ui.SETTINGS.items()
    }
    plugins = {p["name"] for p in server.get("/-/plugins.json").json()}
    assert "datasette-dashboards" in plugins and plugins <= ui.ALLOWED_PLUGINS


@pytest.mark.slow
def test_write_sql_is_refused_and_the_file_is_untouched(server, fixture_log):
    before = _digest(fixture_log.path)
    for sql in (
        "DELETE FROM meta",
        "INSERT INTO meta VALUES ('x', 'y')",
        "UPDATE runs SET pid = 0",
        "PRAGMA user_version = 99",
        "DROP VIEW state_days",
        "ATTACH DATABASE '/tmp/x.db' AS x",
        "SELECT 1; DELETE FROM meta",
    ):
        r = server.sql(sql)
        assert r.status_code == 400 or r.json()["ok"] is False, (sql, r.text[:300])
    r = requests.post(f"{server.url}/tempctl/current_state", data={"device": "x"}, timeout=10)
    assert r.status_code != 200
    assert _digest(fixture_log.path) == before
    conn = sqlite3.connect(f"file:{fixture_log.path}?mode=ro", uri=True)
    assert conn.execute("SELECT count(*) FROM meta").fetchone()[0] == 1
    conn.close()


# --- canned queries ------------------------------------------------------------------------


@pytest.mark.slow
def test_current_state_is_the_last_transition(server, fixture_log):
    rows = {r["device"]: r for r in server.query("current_state")}
    assert set(rows) == set(fixture_log.devices)
    for d, (state, freq) in fixture_log.final.items():
        last = [t for t in fixture_log.transitions if t[0] == d][-1]
        assert (rows[d]["state"], rows[d]["target_mhz"]) == (state, freq) == (last[3], last[4])
        assert rows[d]["since_utc"] == _utc(last[1])
        assert rows[d]["last_reading_utc"] == _utc(fixture_log.last_reading_ms[d])
    # the fixture ends with the two devices in different states
    assert rows["garage"]["state"] == "NORMAL" and rows["office"]["state"] == "THROTTLED_1"


@pytest.mark.slow
def test_transitions_timeline(server, fixture_log):
    rows = server.query("transitions_timeline")
    assert len(rows) == len(fixture_log.transitions)
    expected = sorted(
        ((_utc(t[1]), t[0], t[2], t[3], t[4]) for t in fixture_log.transitions),
        key=lambda x: x[0],
        reverse=True,
    )
    got = [
        (r["time_utc"], r["device"], r["from_state"], r["to_state"], r["target_mhz"]) for r in rows
    ]
    assert sorted(got) == sorted(expected)
    assert [g[0] for g in got] == [e[0] for e in expected]  # newest first
    office = server.query("transitions_timeline", device="office")
    assert {r["device"] for r in office} == {"office"}
    assert len(office) == sum(t[0] == "office" for t in fixture_log.transitions)


@pytest.mark.slow
def test_time_in_state_per_day_adds_up(server, fixture_log):
    rows = server.query("time_in_state_daily")
    expected = hours_by_day(fixture_log)
    cols = {
        "NORMAL": "normal_h",
        "THROTTLED_1": "throttled_1_h",
        "THROTTLED_2": "throttled_2_h",
        "RECOVERING": "recovering_h",
    }
    assert {(r["device"], r["day"]) for r in rows} == {(k[0], k[1]) for k in expected}
    assert {r["day"] for r in rows} == {"2025-07-14", "2025-07-15"}  # crosses midnight
    for r in rows:
        for state, col in cols.items():
            assert r[col] == pytest.approx(
                expected.get((r["device"], r["day"], state), 0.0), abs=1e-3
            ), (r, state)
        assert r["logged_h"] == pytest.approx(sum(r[c] for c in cols.values()), abs=5e-3)
    for d in fixture_log.devices:
        total = sum(r["logged_h"] for r in rows if r["device"] == d)
        first = min(t[1] for t in fixture_log.transitions if t[0] == d)
        assert total == pytest.approx((fixture_log.last_reading_ms[d] - first) / 3.6e6, abs=5e-3)


@pytest.mark.slow
def test_throttled_hours_and_hashrate_lost(server, fixture_log):
    rows = server.query("throttled_hours")
    max_mhz = 575.0
    for d in fixture_log.devices:
        rate = sum(fixture_log.ghs_per_mhz[d]) / len(fixture_log.ghs_per_mhz[d])
        segs = [s for s in segments(fixture_log) if s[0] == d and s[1] != "NORMAL"]
        hours = sum((s[4] - s[3]) / 3.6e6 for s in segs)
        lost = sum((s[4] - s[3]) / 3.6e6 * (max_mhz - s[2]) for s in segs) * rate
        mine = [r for r in rows if r["device"] == d]
        assert sum(r["throttled_h"] for r in mine) == pytest.approx(hours, abs=2e-3)
        assert sum(r["lost_ghs_h"] for r in mine) == pytest.approx(lost, abs=0.2)
        assert {r["ghs_per_mhz"] for r in mine} == {round(rate, 3)}
        assert hours > 1 and lost > 100  # each device really was throttled


@pytest.mark.slow
def test_readings_above_the_threshold(server, fixture_log):
    rows = server.query("readings_above_threshold")
    expected = sorted(
        (d, _utc(ts), t)
        for d in fixture_log.devices
        for ts, t in fixture_log.temps[d]
        if t > fixture_log.limits[d].temp_threshold
    )
    assert sorted((r["device"], r["time_utc"], r["temp"]) for r in rows) == expected
    assert {r["device"]: r["threshold"] for r in rows} == {"garage": 63.0, "office": 60.0}
    assert len(expected) > 5
    at_58 = server.query("readings_above_threshold", threshold="58", device="garage")
    assert (
        len(at_58)
        == sum(t > 58 for _, t in fixture_log.temps["garage"])
        > len([e for e in expected if e[0] == "garage"])
    )


@pytest.mark.slow
def test_stable_window_progress_matches_tempctl_status(server, fixture_log):
    rows = {r["device"]: r for r in server.query("stable_window_progress")}
    conn = sqlite3.connect(f"file:{fixture_log.path}?mode=ro", uri=True)
    try:
        for d in fixture_log.devices:
            s = device_status(conn, d, fixture_log.last_reading_ms[d])
            r = rows[d]
            assert (r["state"], r["stable_min"], r["window_min"], bool(r["ready"])) == (
                s["state"],
                s["stable_min"],
                s["window_min"],
                s["stable_ok"],
            ), d
            assert r["window_avg"] == pytest.approx(s["window_avg"], abs=0.011)
    finally:
        conn.close()
    office = rows["office"]  # throttled at 19:19:30, 40 of 60 minutes stable at the end
    assert office["state"] == "THROTTLED_1" and 0 < office["stable_min"] < office["window_min"]
    assert not office["ready"]


@pytest.mark.slow
def test_failed_commands_lists_exactly_the_failed_one(server, fixture_log):
    rows = server.query("failed_commands")
    assert [r["id"] for r in rows] == fixture_log.failed_commands
    assert (rows[0]["outcome"], rows[0]["status"], rows[0]["device"]) == ("failed", 500, "office")


@pytest.mark.slow
def test_who_changed_the_frequency(server, fixture_log):
    rows = server.query("frequency_changes")
    by_tempctl = [r for r in rows if r["how"] == "set_frequency"]
    assert len(by_tempctl) == fixture_log.set_frequency_commands
    assert {r["origin"] for r in by_tempctl} == {"tempctl"}
    person = server.query("frequency_changes", origin="user", device="office")
    assert ("2025-07-15 09:00:00", 575.0, 550.0) in [
        (r["time_utc"], r["frequency_from"], r["frequency_to"]) for r in person
    ]
    assert {r["origin"] for r in person} == {"user"}


# --- metadata: every table, view and column documented; every page renders -------------------


@pytest.mark.slow
def test_every_table_view_and_column_is_documented(server):
    meta = server.get("/-/metadata.json").json()["databases"]["tempctl"]
    listing = server.get("/tempctl.json").json()
    names = [t["name"] for t in listing["tables"]] + [v["name"] for v in listing["views"]]
    assert {"readings", "transitions", "state_days", "run_limits", "state_periods"} <= set(names)
    for name in names:
        doc = meta["tables"].get(name, {})
        assert doc.get("description") and doc.get("title"), f"{name}: no title/description"
        columns = server.get(f"/tempctl/{name}.json", _size=1).json()["columns"]
        undocumented = [c for c in columns if not doc.get("columns", {}).get(c)]
        assert not undocumented, f"{name}: undocumented columns {undocumented}"
        page = server.get(f"/tempctl/{name}")  # the HTML page, with units and facets
        assert page.status_code == 200, f"{name}: {page.status_code}\n{server.output()[-2000:]}"
    for query, spec in meta["queries"].items():
        assert spec.get("title") and spec.get("description"), query
        assert "write" not in spec
        page = server.get(f"/tempctl/{query}")
        assert page.status_code == 200, f"{query}: {page.status_code}"


def test_render_metadata_names_the_database():
    md = ui.render_metadata("my log")
    assert list(md["databases"]) == ["my log"]
    charts = md["plugins"]["datasette-dashboards"]["tempctl-history"]["charts"]
    assert {c["db"] for c in charts.values() if "db" in c} == {"my log"}
    assert "../../my+log/current_state" in charts["about"]["display"]
    assert ui.DB_TOKEN not in json.dumps(md)
    # the shared range SQL is pasted into every chart query, and its holder dropped
    assert ui.FRAGMENTS_KEY not in md and "__RANGE__" not in json.dumps(md)
    queries = [c["query"] for c in charts.values() if "query" in c]
    assert len(queries) >= 5 and all("bucket_ms" in q and "widths(ms)" in q for q in queries)


# --- the dashboard ---------------------------------------------------------------------------


def _chart_rows(server, chart: dict, **filters) -> dict:
    """Fetch a chart's data the way datasette-dashboards' JS does."""
    sql = chart["query"]
    for opt in set(re.findall(r"\[\[.*?\]\]", sql, flags=re.DOTALL)):
        var = opt.split(":", 1)[1].split()[0].rstrip("]")
        sql = sql.replace(opt, opt[2:-2] if filters.get(var) else "")
    r = server.sql(sql, **filters)
    assert r.status_code == 200, r.text[:500]
    return r.json()


@pytest.mark.slow
def test_dashboard_loads_and_charts_stay_small(server, fixture_log):
    page = server.get(ui.DASHBOARD_PATH)
    assert page.status_code == 200
    charts = ui.render_metadata("tempctl")["plugins"]["datasette-dashboards"]["tempctl-history"][
        "charts"
    ]
    for slug in charts:
        assert f'id="chart-{slug}"' in page.text
    max_rows = ui.SETTINGS["max_returned_rows"]
    for filters in (
        {},
        {"device": "office"},
        {"date_start": "2025-07-15", "date_end": "2025-07-15"},
    ):
        for slug, chart in charts.items():
            if "query" not in chart:
                continue
            data = _chart_rows(server, chart, **filters)
            assert data["ok"] and not data["truncated"], (slug, filters, data.get("error"))
            assert 0 < len(data["rows"]) < max_rows // 2, (slug, filters, len(data["rows"]))
    series = _chart_rows(server, charts["temperature"])["rows"]
    kinds = {(r["kind"], r["device"]) for r in series}
    assert kinds == {
        (k, d) for k in ("reading", "band", "target", "threshold") for d in fixture_log.devices
    }
    assert {r["temp"] for r in series if r["kind"] == "threshold"} == {63.0, 60.0}
    throttled = sum((s[4] - s[3]) / 3.6e6 for s in segments(fixture_log) if s[1] != "NORMAL")
    metric = _chart_rows(server, charts["throttled"])["rows"][0]["hours"]
    assert metric == pytest.approx(round(throttled, 1), abs=0.051)


@pytest.mark.slow
def test_dashboard_renders_charts_in_chromium(server, fixture_log, tmp_path):
    dom, shot = render(server, tmp_path, "dashboard")
    for slug, kinds in (
        ("temperature", ("mark-rect", "mark-line", "mark-rule")),
        ("frequency", ("mark-rect", "mark-line", "mark-rule")),
        ("time_in_state", ("mark-rect",)),
    ):
        html = dashboard.chart(dom, slug)
        assert "<svg" in html and 'class="marks"' in html, f"{slug}: no vega-embed SVG"
        for kind in kinds:
            assert kind in html, f"{slug}: no {kind}"
        assert "garage" in html and "office" in html, f"{slug}: a device is missing"
    # The figures say what the drawing shows (both devices, MAX_FREQUENCY 575).
    throttled_ms, lost_pct = dashboard.figures_from_marks(dom, 575.0)
    shown, half_digit = dashboard.duration_ms(dashboard.metric(dom, "throttled"))
    assert dashboard.metric(dom, "throttled").endswith(" h") and throttled_ms > 3_600_000
    assert shown == pytest.approx(throttled_ms, abs=half_digit + 5)
    lost_shown = float(dashboard.metric(dom, "lost").removesuffix(" %"))
    # The figure is the controller's own (its logged segments), to its two decimals ...
    segs = segments(fixture_log)
    covered = sum(end - start for *_, start, end in segs)
    exact = (
        100.0
        * sum(
            (end - start) * max(575.0 - mhz, 0)
            for _, state, mhz, start, end in segs
            if state != "NORMAL"
        )
        / (covered * 575.0)
    )
    assert lost_shown == pytest.approx(exact, abs=0.006) and lost_pct > 1
    # ... and the drawing agrees, but for segments under two pixels (900 px for the day),
    # for which Vega draws no mark: their share bounds the difference.
    px_ms = covered / len(fixture_log.devices) / 900
    sliver = (
        100.0
        * sum(
            (end - start) * max(575.0 - mhz, 0)
            for _, state, mhz, start, end in segs
            if state != "NORMAL" and end - start < 2 * px_ms
        )
        / (covered * 575.0)
    )
    assert lost_shown == pytest.approx(lost_pct, abs=0.01 + sliver)
    # The picture really has the state bands: the RECOVERING blue at 22 % over white.
    import numpy as np
    from PIL import Image

    px = np.asarray(Image.open(shot).convert("RGB")).astype(int)
    blue = int((np.abs(px - (205, 226, 249)) <= (12, 12, 10)).all(axis=2).sum())
    assert blue > 5000, f"only {blue} band pixels; see {shot}"


# --- the allow-list really unloads an installed write plugin -----------------------------------

WRITER = """
from datasette import hookimpl
from datasette.utils.asgi import Response


@hookimpl
def register_routes():
    async def write(datasette):
        db = [d for d in datasette.databases.values() if not d.is_memory][0]
        await db.execute_write("INSERT INTO meta (key, value) VALUES ('written', 'yes')")
        return Response.text("written")
    return [(r"^/-/write$", write)]
"""


@pytest.mark.slow
def test_an_installed_write_plugin_is_not_loaded(fixture_log, tmp_path):
    site = tmp_path / "site"
    (site / "tempctl_test_writer").mkdir(parents=True)
    (site / "tempctl_test_writer" / "__init__.py").write_text(WRITER)
    info = site / "tempctl_test_writer-0.1.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(
        "Metadata-Version: 2.1\nName: tempctl-test-writer\nVersion: 0.1\n"
    )
    (info / "entry_points.txt").write_text("[datasette]\nwriter = tempctl_test_writer\n")
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(site), *filter(None, [os.environ.get("PYTHONPATH")])]),
    }
    # Control: plain Datasette would load it.
    code = (
        "from datasette.plugins import pm; "
        "print(sorted(d.project_name for _, d in pm.list_plugin_distinfo()))"
    )
    probe = subprocess.run(
        [sys.executable, "-c", code],
        check=False,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert "tempctl-test-writer" in probe.stdout, probe.stderr
    db = tmp_path / "copy.db"
    shutil.copy(fixture_log.path, db)
    before = _digest(db)
    srv = Server(db, tmp_path / "datasette.log", env=env)
    try:
        assert srv.get("/-/write").status_code == 404
        names = {p["name"] for p in srv.get("/-/plugins.json").json()}
        assert "tempctl-test-writer" not in names and names <= ui.ALLOWED_PLUGINS
    finally:
        srv.stop()
    assert "not loading the Datasette plugin tempctl-test-writer" in srv.output()
    assert _digest(db) == before


# --- the command line ------------------------------------------------------------------------


def test_cli_refuses_a_remote_host_without_allow_remote(fixture_log):
    res = CliRunner().invoke(
        cli, ["ui", "--db", str(fixture_log.path), "--host", "0.0.0.0"], env={"TEMPCTL_CONFIG": ""}
    )
    assert res.exit_code == 2
    assert "not a loopback address" in res.output and ui.README_SECTION in res.output
    readme = (Path(__file__).resolve().parent.parent / "README.md").read_text()
    assert f"## {ui.README_SECTION}\n" in readme and "Exposing it on a LAN" in readme


@pytest.mark.parametrize(
    "content, message",
    [
        (None, "no such tempctl log"),
        (b"", "an empty file, not a tempctl log"),
        (b"hello", "not a SQLite database"),
        ("other", "not a tempctl log"),
    ],
)
def test_cli_needs_an_existing_tempctl_log(tmp_path, content, message):
    db = tmp_path / "x.db"
    if content == "other":
        sqlite3.connect(db).execute("CREATE TABLE t (x)").connection.close()
    elif content is not None:
        db.write_bytes(content)
    res = CliRunner().invoke(cli, ["ui", "--db", str(db)], env={"TEMPCTL_CONFIG": ""})
    assert res.exit_code == 2 and message in res.output, res.output
    if isinstance(content, bytes):
        assert db.read_bytes() == content  # refused, untouched


def test_cli_refuses_a_busy_port(fixture_log):
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        res = CliRunner().invoke(
            cli,
            ["ui", "--db", str(fixture_log.path), "--port", str(port)],
            env={"TEMPCTL_CONFIG": ""},
        )
    assert res.exit_code == 1 and f"cannot listen on 127.0.0.1:{port}" in res.output, res.output


def test_missing_views_are_reported(fixture_log, tmp_path):
    db = tmp_path / "old.db"
    shutil.copy(fixture_log.path, db)
    conn = sqlite3.connect(db)
    conn.execute("DROP VIEW state_days")
    conn.close()
    [warning] = ui.check_log(db)
    assert "state_days" in warning
    assert ui.check_log(fixture_log.path) == []


@pytest.mark.slow
def test_cli_serves_the_live_log_until_sigterm(fixture_log, tmp_path):
    db = tmp_path / "live.db"
    shutil.copy(fixture_log.path, db)
    port = free_port()
    (tmp_path / "empty.toml").write_text("")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("TEMPCTL_", "BITAXE_"))}
    env["TEMPCTL_CONFIG"] = str(tmp_path / "empty.toml")
    out = tmp_path / "ui.log"
    url = f"http://127.0.0.1:{port}{ui.DASHBOARD_PATH}"
    count = f"http://127.0.0.1:{port}/live.json?sql=select+count(*)+as+n+from+readings&_shape=array"
    with open(out, "wb") as fh:
        proc = subprocess.Popen(
            [sys.executable, "-m", "tempctl", "ui", "--db", str(db), "--port", str(port)],
            stdout=fh,
            stderr=subprocess.STDOUT,
            env=env,
        )
        try:
            deadline = time.monotonic() + 30
            while url not in out.read_text(errors="replace"):  # the line printed when ready
                assert proc.poll() is None, out.read_text()
                assert time.monotonic() < deadline, out.read_text()
                try:
                    proc.wait(timeout=0.1)
                except subprocess.TimeoutExpired:
                    pass
            assert requests.get(url, timeout=10).status_code == 200
            before = requests.get(count, timeout=10).json()[0]["n"]
            # The daemon's writer appends while Datasette serves: the next query sees it.
            log = Log(db)
            log.save_reading(
                Reading(
                    "garage",
                    fixture_log.last_reading_ms["garage"] + 30_000,
                    temp=58.0,
                    frequency=575.0,
                )
            )
            log.close()
            assert requests.get(count, timeout=10).json()[0]["n"] == before + 1
        finally:
            proc.send_signal(signal.SIGTERM)
            try:
                code = proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                proc.kill()
                code = proc.wait()
    assert code == 0, out.read_text()
    with pytest.raises(requests.ConnectionError):  # the Datasette child is gone too
        requests.get(url, timeout=2)
