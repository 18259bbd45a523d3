"""`tempctl ui`: Datasette on the live log, read-only, with tempctl's metadata and dashboards.

Datasette runs as a child process, ``python -m tempctl.ui.server <datasette serve args>``,
which is ``datasette serve`` with two differences: only the plugins in
``ALLOWED_PLUGINS`` are loaded, and the metadata (tempctl/ui/metadata.yaml
rendered for this database) arrives on stdin (``--metadata -``), so nothing is
written to disk.

Why nothing can write to the log through it:
- The file is served mutable, never immutable (``-i`` would let Datasette assume
  a file the daemon is appending to never changes). Datasette opens every read
  connection with SQLite's ``mode=ro``.
- SQL from the web (``?sql=`` and canned queries) must be a single SELECT;
  Datasette refuses anything else, and the metadata has no ``write: true`` query.
- The only other way to a write connection is a plugin (datasette-write,
  datasette-insert, ...). The child unregisters every installed Datasette plugin
  that is not in ``ALLOWED_PLUGINS`` before Datasette starts.
"""

from __future__ import annotations

import json
import re
import sqlite3
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import yaml

from tempctl.daemon.scorecard import sql_fragments
from tempctl.resources import PACKAGE_DIR, schema_path
from tempctl.store.eventlog import LogError, check_file

METADATA_TEMPLATE = PACKAGE_DIR / "ui" / "metadata.yaml"
DB_TOKEN = "__DB__"  # the database's name in the metadata template
FRAGMENTS_KEY = "sql_fragments"  # SQL pasted into the queries at their __NAME__, then dropped
DASHBOARD_PATH = "/-/dashboards/tempctl-history"  # the slug in metadata.yaml

# Read-only plugins: the dashboards and the two it depends on (maps, markdown cells).
ALLOWED_PLUGINS = frozenset(
    {"datasette-dashboards", "datasette-leaflet", "datasette-render-markdown"}
)

# Datasette settings (docs.datasette.io/en/0.65.x/settings.html). A dashboard chart
# gets about 700 reading buckets plus the state periods in its range (see
# metadata.yaml), well inside max_returned_rows; the limit only trims long listings.
# A query over a long log on a small board (a Raspberry Pi) needs more than the
# default 1 s. Facet suggestions run a query per column on every table page: too slow
# for a readings table of millions of rows.
SETTINGS = {
    "max_returned_rows": 5000,
    "sql_time_limit_ms": 5000,
    "suggest_facets": "off",
}

README_SECTION = "Browsing the history with Datasette"  # its paragraph "Exposing it on a LAN"


class UIError(Exception):
    """The UI cannot be started (no log, a foreign file, Datasette did not come up)."""


def db_name(db: str | Path) -> str:
    """The name Datasette gives a database file (its stem)."""
    return Path(db).stem


def render_metadata(name: str) -> dict:
    """The packaged metadata for database ``name``: its name and the SQL fragments filled in."""
    from datasette.utils import tilde_encode

    data = yaml.safe_load(METADATA_TEMPLATE.read_text(encoding="utf-8"))
    # the scorecard's constants come from the code it must agree with
    fragments = {**data.pop(FRAGMENTS_KEY, {}), **sql_fragments()}
    url_name = tilde_encode(name)

    def walk(node):
        if isinstance(node, dict):
            return {(name if k == DB_TOKEN else k): walk(v) for k, v in node.items()}
        if isinstance(node, list):
            return [walk(v) for v in node]
        if node == DB_TOKEN:
            return name
        if isinstance(node, str):
            for token, sql in fragments.items():
                node = node.replace(token, sql)
            return node.replace(DB_TOKEN, url_name)
        return node

    return walk(data)


def check_log(db: str | Path) -> list[str]:
    """Refuse a missing or foreign file; return warnings (views this log does not have yet)."""
    p = Path(db)
    if not p.is_file():
        raise UIError(f"{p}: no such tempctl log (set TEMPCTL_DB or --db; the daemon creates it)")
    try:
        check_file(p)
        conn = sqlite3.connect(f"{p.resolve().as_uri()}?mode=ro", uri=True)
        try:
            names = {
                r[0]
                for r in conn.execute(
                    "SELECT name FROM sqlite_master WHERE type IN ('table', 'view')"
                )
            }
        finally:
            conn.close()
    except (LogError, sqlite3.DatabaseError) as exc:
        raise UIError(str(exc)) from None
    if "meta" not in names:  # check_file lets an empty database through (a log to be)
        raise UIError(f"{p}: an empty database, not a tempctl log yet")
    wanted = re.findall(r"CREATE (?:TABLE|VIEW) IF NOT EXISTS (\w+)", schema_path().read_text())
    missing = [n for n in wanted if n not in names]
    if missing:
        return [
            (
                f"{p} lacks {', '.join(missing)} (added by a newer tempctl); some queries and "
                "charts fail until the daemon restarts and adds them"
            )
        ]
    return []


def ui_command(db: str | Path, host: str = "127.0.0.1", port: int = 8001) -> list[str]:
    """The child's command line; it expects the rendered metadata on stdin (start_ui sends it)."""
    cmd = [
        sys.executable,
        "-m",
        "tempctl.ui.server",
        str(db),
        "--host",
        host.strip("[]"),
        "--port",
        str(port),
        "--metadata",
        "-",
    ]
    for key, value in SETTINGS.items():
        cmd += ["--setting", key, str(value)]
    return cmd


def start_ui(
    db: str | Path,
    host: str = "127.0.0.1",
    port: int = 8001,
    *,
    stdout=None,
    stderr=None,
    env: dict | None = None,
) -> subprocess.Popen:
    """Start Datasette on ``db``; pair with ``wait_until_ready`` and ``stop_ui``."""
    # JSON with ASCII escapes: Datasette decodes stdin with the locale's encoding.
    metadata = json.dumps(render_metadata(db_name(db)))
    proc = subprocess.Popen(
        ui_command(db, host, port), stdin=subprocess.PIPE, stdout=stdout, stderr=stderr, env=env
    )
    try:
        proc.stdin.write(metadata.encode("ascii"))
        proc.stdin.close()
    except BrokenPipeError:
        pass  # the child died at once; wait_until_ready reports it
    return proc


def base_url(host: str, port: int) -> str:
    host = host.strip("[]")
    return f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"


def wait_until_ready(url: str, proc: subprocess.Popen, timeout: float = 30.0) -> None:
    """Poll ``url``/-/versions.json until Datasette answers; UIError if it exits or times out."""
    deadline = time.monotonic() + timeout
    probe = url.rstrip("/") + "/-/versions.json"
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))  # loopback: no proxy
    while True:
        if proc.poll() is not None:
            raise UIError(f"Datasette exited with status {proc.returncode} before it was ready")
        try:
            with opener.open(probe, timeout=2) as resp:
                if resp.status == 200:
                    return
        except (urllib.error.URLError, OSError):
            pass
        if time.monotonic() > deadline:
            raise UIError(f"Datasette did not answer {probe} within {timeout:g} s")
        try:
            proc.wait(timeout=0.1)  # the pause between probes; returns early if it dies
        except subprocess.TimeoutExpired:
            pass


def stop_ui(proc: subprocess.Popen, timeout: float = 10.0) -> int:
    """Terminate, wait, then kill: the child's exit status."""
    if proc.poll() is None:
        proc.terminate()
        try:
            return proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
    return proc.wait()


def run_ui(
    db: str | Path,
    host: str = "127.0.0.1",
    port: int = 8001,
    *,
    open_browser: bool = False,
    echo=print,
    warn=print,
) -> int:
    """Serve ``db`` until Ctrl-C or SIGTERM (passed on to Datasette); its exit status."""
    import signal
    import socket
    import webbrowser

    for warning in check_log(db):
        warn(warning)
    family = socket.AF_INET6 if ":" in host.strip("[]") else socket.AF_INET
    with socket.socket(family) as s:  # else a server already there would look like ours
        try:
            s.bind((host.strip("[]"), port))
        except OSError as exc:
            raise UIError(f"cannot listen on {host}:{port}: {exc.strerror}") from None
    proc = start_ui(db, host, port)
    signal.signal(signal.SIGTERM, lambda *_: proc.terminate())
    url = base_url(host, port) + DASHBOARD_PATH
    try:
        wait_until_ready(base_url(host, port), proc)
        echo(f"tempctl ui: {url}  (Ctrl-C to stop)")
        if open_browser:
            webbrowser.open(url)
        return proc.wait()
    except UIError:
        stop_ui(proc)
        raise
    except KeyboardInterrupt:  # Datasette got the same SIGINT: let it finish shutting down
        try:
            return proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            return stop_ui(proc)


def unload_unlisted_plugins(pm) -> list[str]:
    """Unregister every Datasette plugin whose distribution is not in ALLOWED_PLUGINS."""
    dropped = []
    for plugin, dist in pm.list_plugin_distinfo():
        name = re.sub(r"[-_.]+", "-", dist.project_name).lower()
        if name not in ALLOWED_PLUGINS:
            pm.unregister(plugin)
            dropped.append(name)
    return sorted(set(dropped))


def main(argv: list[str] | None = None) -> None:
    """The child: ``datasette serve`` with only the allowed plugins loaded."""
    from datasette.plugins import pm

    for name in unload_unlisted_plugins(pm):
        print(
            f"tempctl ui: not loading the Datasette plugin {name}: only "
            f"{', '.join(sorted(ALLOWED_PLUGINS))} are allowed, so the log stays read-only",
            file=sys.stderr,
        )
    from datasette.cli import cli as datasette_cli

    datasette_cli.main(["serve", *(sys.argv[1:] if argv is None else argv)], prog_name="tempctl-ui")


if __name__ == "__main__":
    main()
