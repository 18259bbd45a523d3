"""The dashboard as a browser shows it: a Datasette child, headless Chromium, the SVG read back.

Vega renders each chart as SVG whose marks carry an ``aria-label`` listing the fields of
their datum ("state: THROTTLED_2; from (UTC): ...; to (UTC): ..."), and each line as one
``<path d="M x,y L x,y ...">``. The tests read the figures a person would read from
those, not from the SQL behind them.
"""

from __future__ import annotations

import re
import shutil
import socket
import subprocess
from datetime import UTC, datetime
from pathlib import Path

import pytest
import requests

from tempctl.ui import server as ui

ARTIFACTS = Path(__file__).resolve().parent / "artifacts"
CHROMIUM_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    """A running `python -m tempctl.ui.server` child and what it printed."""

    def __init__(self, db: Path, out: Path, env: dict | None = None):
        self.db, self.out = db, out
        self.port = free_port()
        self.url = ui.base_url("127.0.0.1", self.port)
        self._fh = open(out, "wb")  # noqa: SIM115 - open while the server runs
        self.proc = ui.start_ui(
            db, "127.0.0.1", self.port, stdout=self._fh, stderr=subprocess.STDOUT, env=env
        )
        try:
            ui.wait_until_ready(self.url, self.proc, timeout=30)
        except ui.UIError as e:
            self.stop()
            pytest.fail(f"{e}\n--- Datasette output ---\n{self.output()}")

    def output(self) -> str:
        return self.out.read_text(errors="replace")

    def get(self, path: str, **params) -> requests.Response:
        return requests.get(self.url + path, params=params, timeout=30)

    def query(self, name: str, **params) -> list[dict]:
        r = self.get(f"/{ui.db_name(self.db)}/{name}.json", _shape="array", **params)
        assert r.status_code == 200, f"{name}: {r.status_code} {r.text[:500]}\n{self.output()}"
        return r.json()

    def sql(self, sql: str, **params) -> requests.Response:
        return self.get(f"/{ui.db_name(self.db)}.json", sql=sql, _shape="objects", **params)

    def stop(self) -> None:
        ui.stop_ui(self.proc)
        self._fh.close()


def render(server: Server, tmp_path: Path, name: str) -> tuple[str, Path]:
    """The dashboard's DOM after its scripts ran, and a screenshot (also in tests/artifacts)."""
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    if chromium is None:
        pytest.skip("no chromium binary (Debian: apt-get install chromium)")
    shot = tmp_path / f"{name}.png"
    cmd = [
        chromium,
        *CHROMIUM_FLAGS,
        f"--user-data-dir={tmp_path / 'profile'}",
        "--window-size=1400,2100",
        "--virtual-time-budget=15000",
        f"--screenshot={shot}",
        "--dump-dom",
        server.url + ui.DASHBOARD_PATH,
    ]
    res = subprocess.run(cmd, check=False, capture_output=True, text=True, timeout=120)
    assert res.returncode == 0 and shot.exists(), res.stderr[-3000:]
    ARTIFACTS.mkdir(exist_ok=True)
    shutil.copy(shot, ARTIFACTS / f"{name}.png")
    (ARTIFACTS / f"{name}.html").write_text(res.stdout)
    return res.stdout, shot


def chart(dom: str, slug: str) -> str:
    """The HTML of one dashboard card."""
    start = dom.index(f'id="chart-{slug}"')
    end = dom.find('class="dashboard-card"', start)
    return dom[start : end if end > 0 else len(dom)]


def metric(dom: str, slug: str) -> str:
    """The text a metric card shows."""
    found = re.search(r"<p[^>]*>([^<]*)</p>", chart(dom, slug))
    assert found, f"{slug}: no metric text"
    return found.group(1)


def marks(html: str, kind: str) -> list[dict[str, str]]:
    """The aria-label fields of every ``kind`` mark (rect, rule, line) in a chart."""
    out = []
    for tag in re.findall(rf'<[a-z]+ [^>]*aria-roledescription="{kind} mark"[^>]*>', html):
        label = re.search(r'aria-label="([^"]*)"', tag)
        fields = dict(part.split(": ", 1) for part in label.group(1).split("; ")) if label else {}
        d = re.search(r' d="([^"]*)"', tag)
        fields["_d"] = d.group(1) if d else ""
        out.append(fields)
    return out


def path_points(d: str) -> list[tuple[float, float]]:
    """The vertices of an SVG path made of M, L, H and V commands (what Vega draws lines with)."""
    points: list[tuple[float, float]] = []
    x = y = 0.0
    for cmd, args in re.findall(r"([MLHV])([^MLHVZ]*)", d):
        nums = [float(n) for n in re.findall(r"-?\d+(?:\.\d+)?(?:e-?\d+)?", args)]
        if cmd in "ML":
            for i in range(0, len(nums) - 1, 2):
                x, y = nums[i], nums[i + 1]
                points.append((x, y))
        elif cmd == "H":
            for x in nums:
                points.append((x, y))
        else:
            for y in nums:
                points.append((x, y))
    return points


def y_domain(html: str, title: str) -> tuple[float, float]:
    """The value range of the y axis titled ``title`` (from its aria-label)."""
    found = re.search(
        rf"Y-axis titled '{re.escape(title)}' for a linear scale with values from "
        r"(-?[\d.,]+) to (-?[\d.,]+)",
        html,
    )
    assert found, f"no y axis titled {title}"
    return float(found.group(1).replace(",", "")), float(found.group(2).replace(",", ""))


def utc_ms(text: str) -> int:
    """Epoch ms of a tooltip time, 2026-12-03 07:58:30 or 2026-12-03 07:58:30.270 (UTC)."""
    fmt = "%Y-%m-%d %H:%M:%S.%f" if "." in text else "%Y-%m-%d %H:%M:%S"
    return round(datetime.strptime(text, fmt).replace(tzinfo=UTC).timestamp() * 1000)


def duration_ms(text: str) -> tuple[float, float]:
    """A shown length ("42.5 s", "12.3 min", "11.4 h") in ms, and half its last digit in ms."""
    value, unit = text.split()
    scale = {"s": 1000, "min": 60_000, "h": 3_600_000}[unit]
    decimals = len(value.partition(".")[2])
    return float(value) * scale, 0.5 * 10**-decimals * scale


def band_spans(html: str) -> list[tuple[str, int, int]]:
    """(state, start ms, end ms) of every state band drawn in a chart."""
    return [
        (m["state"], utc_ms(m["from (UTC)"]), utc_ms(m["to (UTC)"]))
        for m in marks(html, "rect")
        if "state" in m
    ]


def figures_from_marks(dom: str, max_mhz: float) -> tuple[float, float]:
    """What the drawing says the two figures should be: ms outside NORMAL, % hashrate lost.

    Time from the state bands of the temperature chart; the loss from the target-frequency
    rules of the frequency chart (hashrate proportional to frequency, as the figure's query
    takes it), against MAX_FREQUENCY over all the time the bands cover.
    """
    bands = band_spans(chart(dom, "temperature"))
    throttled = sum(end - start for state, start, end in bands if state != "NORMAL")
    covered = sum(end - start for _, start, end in bands)
    lost = sum(
        (utc_ms(r["to (UTC)"]) - utc_ms(r["from (UTC)"])) * max(max_mhz - float(r["mhz"]), 0)
        for r in marks(chart(dom, "frequency"), "rule")
        if r.get("state", "NORMAL") != "NORMAL"
    )
    return throttled, 100.0 * lost / (covered * max_mhz)
