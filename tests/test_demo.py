"""`tempctl demo` as a user runs it: a subprocess, its SQLite log read afterwards.

Each run carries a marker in its environment; once it has exited, no process on the
machine may still carry it (the emulator and daemon threads die with the process, and
Datasette is a child that must have been stopped).
"""

from __future__ import annotations

import io
import json
import os
import signal
import sqlite3
import subprocess
import sys
import threading
import time
import urllib.request
import uuid
from pathlib import Path

import pytest
from procs import wait_for

from tempctl.sim import demo
from tempctl.store.eventlog import Log

REPO = Path(__file__).resolve().parent.parent


class DemoProc:
    """``tempctl demo ...`` with stdout+stderr collected line by line (never a full pipe)."""

    def __init__(
        self,
        args: list[str],
        cwd: Path,
        env_extra: dict | None = None,
        argv0: list[str] | None = None,
    ):
        self.marker = uuid.uuid4().hex
        env = {k: v for k, v in os.environ.items() if k != "NOTIFY_SOCKET"}
        env.update(DEMO_TEST_MARKER=self.marker, PYTHONUNBUFFERED="1", **(env_extra or {}))
        env.setdefault("PYTHONPATH", str(REPO))
        cmd = (argv0 or [sys.executable, "-m", "tempctl"]) + ["demo", *args]
        self.popen = subprocess.Popen(
            cmd,
            cwd=cwd,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            text=True,
        )
        self.lines: list[str] = []
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        for line in self.popen.stdout:
            self.lines.append(line.rstrip("\n"))

    def output(self) -> str:
        return "\n".join(self.lines)

    def poll(self):
        return self.popen.poll()

    @property
    def name(self) -> str:
        return "tempctl demo"

    @property
    def returncode(self):
        return self.popen.returncode

    def wait(self, timeout: float) -> int:
        code = self.popen.wait(timeout=timeout)
        self._reader.join(timeout=5)
        return code

    def kill(self) -> None:
        if self.popen.poll() is None:
            self.popen.kill()
            self.popen.wait(timeout=10)

    def survivors(self) -> list[str]:
        """Processes still carrying this run's marker (Linux /proc)."""
        found = []
        needle = f"DEMO_TEST_MARKER={self.marker}".encode()
        for entry in Path("/proc").iterdir():
            if not entry.name.isdigit():
                continue
            try:
                if needle in (entry / "environ").read_bytes():
                    found.append(f"{entry.name}: {(entry / 'cmdline').read_bytes()!r}")
            except OSError:
                continue  # gone meanwhile, or not ours to read
        return found


needs_proc = pytest.mark.skipif(
    not Path("/proc/self/environ").exists(), reason="needs Linux /proc to find leftover processes"
)


def transitions(db: Path) -> list[tuple[str, str, float]]:
    conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    try:
        return conn.execute(
            "SELECT from_state, to_state, frequency FROM transitions ORDER BY id"
        ).fetchall()
    finally:
        conn.close()


def changes(db: Path) -> list[str]:
    return [b for a, b, _ in transitions(db) if a != b]


def assert_full_story(states: list[str]) -> None:
    """A throttle, then RECOVERING, then NORMAL again, in that order."""
    i = next(i for i, s in enumerate(states) if s.startswith("THROTTLED_"))
    j = states.index("RECOVERING", i)
    assert "NORMAL" in states[j:], states


def _get(url: str) -> bytes | None:
    try:
        with urllib.request.urlopen(url, timeout=2) as resp:
            return resp.read()
    except OSError:
        return None


@needs_proc
def test_demo_throttles_recovers_and_stops_on_sigterm(tmp_path):
    # 4x the default speed (scale 8000): the same story in a quarter of the time. The
    # user's own settings must not leak in (demo_settings reads environ={}).
    db = tmp_path / "demo.db"
    hostile = {
        "TEMP_THRESHOLD": "40",
        "CHECK_INTERVAL": "30",
        "BITAXE_IP": "192.0.2.1",
        "TEMPCTL_CONFIG": str(tmp_path / "missing.toml"),
    }
    run = DemoProc(
        ["--duration", "40", "--scale", "8000", "--port-ui", "0", "--db", str(db)],
        cwd=tmp_path,
        env_extra=hostile,
    )
    try:
        url_line = wait_for(
            lambda: next((ln for ln in run.lines if "Datasette" in ln), None),
            timeout=30,
            what="the Datasette URL",
            proc=run,
        )
        base = url_line.split()[-1].rstrip("/")
        assert base.startswith("http://127.0.0.1:")
        body = wait_for(
            lambda: _get(f"{base}/{db.stem}/transitions.json?_shape=array"),
            timeout=10,
            what="Datasette serving the log",
            proc=run,
        )
        assert isinstance(json.loads(body), list)

        # Non-TTY output: one line per state/frequency change. Wait for NORMAL after
        # RECOVERING, then stop the way systemd or `kill` would.
        def recovered():
            states = [ln.split("|")[1].split()[0] for ln in run.lines if ln.count("|") == 3]
            return "RECOVERING" in states and states[-1] == "NORMAL"

        wait_for(recovered, timeout=35, what="NORMAL after RECOVERING", proc=run)
        run.popen.send_signal(signal.SIGTERM)
        code = run.wait(timeout=10)
    finally:
        run.kill()
    out = run.output()
    assert code == 0, out
    assert "Summary" in out and f"tempctl ui --db {db}" in out
    assert_full_story(changes(db))
    conn = sqlite3.connect(db)
    config = json.loads(conn.execute("SELECT config FROM runs").fetchone()[0])
    # a heat wave is weather, not a failing fan: no "cooling got worse" alarm (at settle 1 s
    # the daemon read the 2000x room as warming 11x faster than any room can)
    worse = conn.execute(
        "SELECT count(*) FROM events WHERE message LIKE 'cooling got worse%'"
    ).fetchone()[0]
    conn.close()
    assert worse == 0
    assert config["temp_threshold"] == 63 and config["check_interval"] == 0.2
    assert run.survivors() == []
    # Closing the writer last leaves a single file, no -wal/-shm.
    assert sorted(p.name for p in tmp_path.glob("demo.db*")) == ["demo.db"]


@needs_proc
def test_demo_duration_in_the_current_directory(tmp_path):
    Log(tmp_path / "tempctl-demo.db").close()  # an earlier demo's log stays as it is
    run = DemoProc(["--duration", "1", "--no-ui"], cwd=tmp_path)
    code = run.wait(timeout=30)
    out = run.output()
    assert code == 0, out
    new = tmp_path / "tempctl-demo-2.db"
    assert f"log             {new}" in out
    assert transitions(new)[0][:2] == ("NORMAL", "NORMAL")  # the start, at 575 MHz
    assert transitions(tmp_path / "tempctl-demo.db") == []
    assert run.survivors() == []


def test_demo_refuses_a_foreign_file(tmp_path):
    notes = tmp_path / "notes.db"
    notes.write_text("not a database\n")
    run = DemoProc(["--duration", "1", "--no-ui", "--db", str(notes)], cwd=tmp_path)
    assert run.wait(timeout=30) == 1
    assert "not a SQLite database; refusing to touch it" in run.output()
    assert "Traceback" not in run.output()
    assert notes.read_text() == "not a database\n"


@pytest.mark.slow
@needs_proc
def test_readme_command_within_60_s(tmp_path):
    """The README's first command, from another directory, with the console script."""
    script = Path(sys.executable).with_name("tempctl")
    argv0 = [str(script)] if script.exists() else None
    started = time.monotonic()
    run = DemoProc(["--duration", "60"], cwd=tmp_path, argv0=argv0)
    try:
        code = run.wait(timeout=120)
    finally:
        run.kill()
    out = run.output()
    assert code == 0, out
    assert time.monotonic() - started < 90
    db = tmp_path / "tempctl-demo.db"
    assert_full_story(changes(db))
    assert run.survivors() == []


# --- the parts, in-process ----------------------------------------------------------------------


def test_timing_follows_the_scale():
    assert demo.Timing.for_scale() == demo.Timing(2000.0, 0.5, 0.09, 3.0)
    fast = demo.Timing.for_scale(20000.0)
    assert fast.check_interval == demo.MIN_CHECK_INTERVAL_S  # the daemon's floor
    assert (fast.settle, fast.stable_s) == pytest.approx((0.009, 0.3))
    # the daemon's time scale (TEMPCTL_SETTLE / 180 s) is the plant's at every scale
    for scale in (500.0, 2000.0, 8000.0):
        assert 180.0 / demo.Timing.for_scale(scale).settle == pytest.approx(scale)


def test_cli_default_scale_is_the_demo_default():
    from click.testing import CliRunner

    from tempctl.cli import cli

    help_text = CliRunner().invoke(cli, ["demo", "--help"]).output
    assert f"default: {demo.DEFAULT_SCALE:g}" in help_text.replace("\n", " ")


def test_default_db_path_never_reuses_a_file(tmp_path):
    assert demo.default_db_path(tmp_path) == tmp_path / "tempctl-demo.db"
    (tmp_path / "tempctl-demo.db").touch()
    (tmp_path / "tempctl-demo-2.db").touch()
    assert demo.default_db_path(tmp_path) == tmp_path / "tempctl-demo-3.db"


def test_settings_ignore_the_environment(tmp_path, monkeypatch):
    monkeypatch.setenv("TEMP_THRESHOLD", "40")
    monkeypatch.setenv("TEMPCTL_DRY_RUN", "true")
    s = demo.demo_settings(
        "127.0.0.1:8123", tmp_path / "d.db", demo.Timing.for_scale(), tmp_path / "absent.toml"
    )
    assert (s.temp_threshold, s.dry_run, s.check_interval, s.settle) == (63, False, 0.5, 0.09)
    assert s.stable_seconds == pytest.approx(3.0)
    assert [d.url for d in s.devices] == ["http://127.0.0.1:8123"]


STATUS = demo.Status("THROTTLED_1", since_ms=1_000, frequency=490.0, temp=63.25, reading_ms=2_000)


def test_status_line_on_a_terminal_rewrites_one_line():
    out = io.StringIO()
    line = demo.StatusLine(out, tty=True)
    line.show(STATUS, 3.5, 31.25, now_ms=2_500)
    line.show(STATUS, 3.6, 31.5, now_ms=3_000)
    line.end()
    text = out.getvalue()
    assert text.count("\n") == 1 and text.count("\r") == 2
    assert text.split("\r")[-1] == (
        "day 1 03:36 air 31.5 °C | THROTTLED_1   2.0 s | ASIC  63.2 °C | 490 MHz\n"
    )


def test_status_line_in_a_log_prints_changes_only():
    out = io.StringIO()
    line = demo.StatusLine(out, tty=False)
    line.show(STATUS, 3.5, 31.25, now_ms=2_500)
    line.show(STATUS, 3.6, 31.5, now_ms=3_000)
    t2 = demo.Status("THROTTLED_2", 3_000, 400.0, 63.5, 3_000)
    line.show(t2, 27.7, 30.0, now_ms=3_100)
    lines = out.getvalue().splitlines()
    assert [ln.split("|")[1].split()[0] for ln in lines] == ["THROTTLED_1", "THROTTLED_2"]
    assert lines[1].startswith("day 2 03:42 air 30.0 °C")
