"""Security properties of the daemon process.

* It talks only to the configured device: the real `tempctl run` runs under a Python audit
  hook (sys.addaudithook) that records every socket.connect / socket.bind and every way of
  starting a process; proxy variables point at a trap server that must see nothing.
* It never runs a shell or any other process, and opens no listening socket unless the
  metrics endpoint is configured.
* A world-writable config file is refused with one clear line, before anything is contacted.

Covered elsewhere, and referenced in docs/faults.md: response size cap and field validation
(tests/test_faults.py: body over 64 KiB, wrong types), Datasette read-only and on loopback
(tests/test_ui.py), systemd exposure <= 2.0 (tests/test_systemd.py).
"""

from __future__ import annotations

import base64
import json
import socket
import sqlite3
import subprocess
import threading
import time
from pathlib import Path

import procs
import pytest
from click.testing import CliRunner
from procs import (
    LogView,
    assert_clean_exit,
    daemon_env,
    fake_device,
    start_daemon,
    start_emulator,
    wait_for,
)

pytestmark = pytest.mark.slow
fault = procs.fault_recorder()

HOOK = r"""
import json, os, sys
_out = open(os.environ["AUDIT_LOG_PATH"], "a", buffering=1)
_SPAWN = {"subprocess.Popen", "os.system", "os.exec", "os.posix_spawn", "os.spawn", "os.fork",
          "os.forkpty", "pty.spawn", "os.startfile"}

def _hook(event, args):
    if event in ("socket.connect", "socket.bind"):
        sock, addr = args[0], args[1]
        addr = list(addr)[:2] if isinstance(addr, tuple) else repr(addr)
        _out.write(json.dumps({"event": event, "family": int(sock.family), "address": addr})
                   + "\n")
    elif event in _SPAWN:
        _out.write(json.dumps({"event": event, "args": repr(args)[:300]}) + "\n")

sys.addaudithook(_hook)
from tempctl.cli import cli
cli(["run"], prog_name="tempctl")
"""


class Trap:
    """A TCP listener that counts connections: the 'proxy' nothing may reach."""

    def __init__(self):
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(16)
        self.port = self.sock.getsockname()[1]
        self.hits = 0
        self._thread = threading.Thread(target=self._accept, daemon=True)
        self._thread.start()

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            self.hits += 1
            conn.close()

    def close(self) -> None:
        self.sock.close()


def audit(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def test_daemon_talks_only_to_the_configured_device(tmp_path, fault):
    row = fault(
        "network: only the configured device",
        "every connection the daemon opens goes to the configured device (audit hook on "
        "socket.connect); proxy variables are ignored (a trap proxy sees nothing); no "
        "listening socket without TEMPCTL_METRICS_PORT; no process or shell is started",
    )
    trap = Trap()
    proxy = f"http://127.0.0.1:{trap.port}"
    env = {
        name: proxy
        for name in (
            "HTTP_PROXY",
            "HTTPS_PROXY",
            "ALL_PROXY",
            "http_proxy",
            "https_proxy",
            "all_proxy",
        )
    }
    env["AUDIT_LOG_PATH"] = str(tmp_path / "audit.jsonl")
    emu = start_emulator(tmp_path, start_hours=5.0)  # hot: the daemon PATCHes too
    db = tmp_path / "tempctl.db"
    v = LogView(db)
    try:
        for run in (1, 2):  # the second start also backfills from /api/system/statistics
            d = start_daemon(
                emu.address,
                db,
                tmp_path,
                name=f"daemon{run}",
                env_extra=env,
                argv=[procs.PYTHON, "-c", HOOK],
            )
            try:
                wait_for(
                    lambda run=run: (
                        v.count("readings", "run_id = ?", run) >= 6 and v.count("commands") >= 1
                    ),
                    20,
                    "polls and a command",
                    d,
                )
                assert_clean_exit(d)
            finally:
                d.stop()
            if run == 1:
                last = v.value("SELECT max(ts_ms) FROM readings")
                wait_for(
                    lambda last=last: time.time() * 1000 - last > 1500, 5, "a gap worth a backfill"
                )
    finally:
        emu.stop()
        trap.close()
    events = audit(tmp_path / "audit.jsonl")
    connects = [e for e in events if e["event"] == "socket.connect"]
    host, port = emu.address.split(":")
    targets = {
        tuple(e["address"]) if isinstance(e["address"], list) else e["address"] for e in connects
    }
    # urllib3 probes IPv6 support by binding a throw-away socket to [::1]:0 (never listens)
    binds = [e for e in events if e["event"] == "socket.bind" and e["address"] != ["::1", 0]]
    spawns = [e for e in events if e["event"] not in ("socket.connect", "socket.bind")]
    row.observed = (
        f"{len(connects)} connects over 2 runs, to {sorted(map(str, targets))}; "
        f"trap proxy connections: {trap.hits}; binds: {len(binds)}; processes "
        f"started: {len(spawns)}"
    )
    assert connects, "the audit hook saw nothing: is it installed?"
    assert targets == {(host, int(port))}, targets
    assert trap.hits == 0
    assert binds == [] and spawns == [], (binds, spawns)


@pytest.mark.parametrize("mode", [0o666, 0o602])
def test_world_writable_config_file_is_refused(tmp_path, fault, mode):
    row = fault(
        f"world-writable config file (mode {mode:o})",
        "refused with one clear line "
        "naming the file and the fix, exit 2, before the device is contacted",
    )
    config = tmp_path / "tempctl.toml"
    config.write_text("temp_threshold = 90\n")  # what someone else on the host might try
    config.chmod(mode)
    with fake_device() as dev:
        env = daemon_env(dev.address, tmp_path / "tempctl.db", tmp_path)
        env["TEMPCTL_CONFIG"] = str(config)
        r = subprocess.run(
            [procs.PYTHON, "-m", "tempctl", "run"],
            env=env,
            cwd=tmp_path,
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
        )
        hits = sum(dev.hits.values())
    err = r.stderr.strip()
    row.observed = f"exit {r.returncode}: '{err}'; requests to the device: {hits}"
    assert r.returncode == 2, (r.stdout, r.stderr)
    assert err == (
        f"Error: {config}: refusing a world-writable config file (fix with: chmod o-w {config})"
    )
    assert hits == 0 and not (tmp_path / "tempctl.db").exists()


# --- issue 23 item 3: a password in an alert URL never shows, and Basic auth works ---------

ALERT_SECRET = "s3cret-Hook-pw"


@pytest.mark.parametrize("where", ["environment", "flag", "file"])
def test_a_password_in_the_alert_url_is_refused_without_showing_it(tmp_path, where):
    from tempctl.cli import cli

    url = f"http://alice:{ALERT_SECRET}@127.0.0.1:9/hooks/tempctl"
    config = procs.empty_config(tmp_path)
    env = {k: "" for k in ("TEMPCTL_ALERT_URL", "TEMPCTL_ALERT_PASSWORD_FILE")}
    env |= {"TEMPCTL_CONFIG": str(config), "BITAXE_IP": "127.0.0.1"}
    args = ["config"]
    if where == "environment":
        env["TEMPCTL_ALERT_URL"] = url
    elif where == "flag":
        args += ["--alert-url", url]
    else:
        del env["TEMPCTL_ALERT_URL"]
        config.write_text(f'alert_url = "{url}"\n')
    result = CliRunner().invoke(cli, args, env=env)
    assert result.exit_code == 2, result.output
    assert ALERT_SECRET not in result.output
    name = "--alert-url" if where == "flag" else "TEMPCTL_ALERT_URL"
    assert name in result.output and "TEMPCTL_ALERT_PASSWORD_FILE" in result.output
    if where == "file":
        assert str(config) in result.output
    assert "http://alice:***@127.0.0.1:9/hooks/tempctl" in result.output


def test_a_user_in_the_alert_url_needs_the_password_file(tmp_path):
    from tempctl.cli import cli

    env = {
        "TEMPCTL_CONFIG": str(procs.empty_config(tmp_path)),
        "BITAXE_IP": "127.0.0.1",
        "TEMPCTL_ALERT_URL": "http://alice@127.0.0.1:9/hooks/tempctl",
        "TEMPCTL_ALERT_PASSWORD_FILE": "",
    }
    result = CliRunner().invoke(cli, ["config"], env=env)
    assert result.exit_code == 2
    assert "TEMPCTL_ALERT_URL=http://alice@127.0.0.1:9/hooks/tempctl" in result.output
    assert "TEMPCTL_ALERT_PASSWORD_FILE, which is not set" in result.output


def test_the_daemon_alerts_with_basic_auth_and_never_shows_the_password(tmp_path):
    """`tempctl run` (real subprocess) with a hot device, TEMPCTL_ALERT_URL naming a user and
    TEMPCTL_ALERT_PASSWORD_FILE: the webhook gets Basic auth; the password is nowhere in the
    daemon's output, `tempctl config`, the log file, nor what Datasette serves."""
    from dashboard import Server
    from pytest_httpserver import HTTPServer
    from werkzeug import Response

    from tempctl.cli import cli

    hook = HTTPServer(host="127.0.0.1", port=0, threaded=True)
    hook.start()
    auth: list[str] = []

    def guarded(request):
        auth.append(request.headers.get("Authorization", ""))
        return Response("ok")

    hook.expect_request("/hooks/tempctl", method="POST").respond_with_handler(guarded)
    secret = tmp_path / "alert-password"
    secret.write_text(ALERT_SECRET + "\n")
    secret.chmod(0o600)
    url = f"http://alice@127.0.0.1:{hook.port}/hooks/tempctl"
    extra = {"TEMPCTL_ALERT_URL": url, "TEMPCTL_ALERT_PASSWORD_FILE": str(secret)}
    db = tmp_path / "tempctl.db"
    try:
        body = procs.template_body()
        body["temp"] = 72.0  # over TEMPCTL_CRITICAL (70): a critical alert
        with fake_device(body) as dev:
            d = start_daemon(dev.address, db, tmp_path, env_extra=extra)
            try:
                wait_for(lambda: auth, 30, "an alert at the webhook", d)
                assert_clean_exit(d)
            finally:
                d.stop()
            env = daemon_env(dev.address, db, tmp_path) | extra
            shown = CliRunner().invoke(cli, ["config", "--json"], env=env)
    finally:
        hook.clear()
        hook.stop()
    assert auth[0] == "Basic " + base64.b64encode(f"alice:{ALERT_SECRET}".encode()).decode()
    assert shown.exit_code == 0 and ALERT_SECRET not in shown.output
    assert str(secret) in shown.output
    assert ALERT_SECRET not in (tmp_path / "daemon.out").read_text()
    v = LogView(db)
    (config,) = [json.loads(r[0]) for r in v.rows("SELECT config FROM runs")]
    assert config["alert_url"] == url and config["alert_password_file"] == str(secret)
    with sqlite3.connect(db) as conn:
        assert ALERT_SECRET not in "\n".join(conn.iterdump())
    srv = Server(db, tmp_path / "datasette.log")
    try:
        page = srv.get(f"/{db.stem}/runs").text
        rows = srv.get(f"/{db.stem}/runs.json", _shape="array").text
    finally:
        srv.stop()
    assert "alert_password_file" in rows and ALERT_SECRET not in page + rows


@pytest.mark.parametrize(
    "url",
    [
        f"http://alice:{ALERT_SECRET}@127.0.0.1:9/h",
        f"http://alice:p@{ALERT_SECRET}@127.0.0.1/h",  # urlsplit splits at the last "@"
        f"http://127.0.0.1/ok,https://bob:{ALERT_SECRET}@127.0.0.1/h?x=1",
        f"http://alice:{ALERT_SECRET}@[::1/h",  # not even a URL
        f"http://alice:{ALERT_SECRET}/h",  # no "@": the password parses as a bad port
    ],
)
def test_no_refused_alert_url_shows_its_password(tmp_path, url):
    from tempctl.cli import cli

    env = {
        "TEMPCTL_CONFIG": str(procs.empty_config(tmp_path)),
        "BITAXE_IP": "127.0.0.1",
        "TEMPCTL_ALERT_URL": url,
    }
    result = CliRunner().invoke(cli, ["config"], env=env)
    assert result.exit_code == 2 and "TEMPCTL_ALERT_URL=" in result.output
    assert ALERT_SECRET not in result.output
