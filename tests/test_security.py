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

import json
import socket
import subprocess
import threading
import time
from pathlib import Path

import procs
import pytest
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
