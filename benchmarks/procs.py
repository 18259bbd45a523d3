"""Process helpers for the benchmarks: start tempctl commands, read CPU and RSS from /proc.

Linux only (/proc); the figures are for the process itself, not its children.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
TICK = os.sysconf("SC_CLK_TCK")
EMPTY_CONFIG = Path(__file__).resolve().parent / "empty.toml"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def cpu_s(pid: int) -> float:
    """User + system CPU seconds of a process so far."""
    with open(f"/proc/{pid}/stat") as fh:
        fields = fh.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICK


def memory_mb(pid: int) -> dict[str, float]:
    """Current (VmRSS) and peak (VmHWM) resident memory in MB."""
    out = {}
    with open(f"/proc/{pid}/status") as fh:
        for line in fh:
            key, _, rest = line.partition(":")
            if key in ("VmRSS", "VmHWM"):
                out[key] = int(rest.split()[0]) / 1024
    return {"rss_mb": round(out["VmRSS"], 1), "peak_rss_mb": round(out["VmHWM"], 1)}


def tempctl(
    args: list[str],
    env: dict[str, str] | None = None,
    *,
    stdout=subprocess.PIPE,
    code: str | None = None,
) -> subprocess.Popen:
    """`python -m tempctl ARGS`, or `python -c CODE ARGS` (CODE then runs the CLI)."""
    base = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("TEMPCTL_", "BITAXE", "CHECK_INTERVAL"))
    }
    base["PYTHONPATH"] = str(ROOT)
    base["TEMPCTL_CONFIG"] = str(EMPTY_CONFIG)  # not the machine's /etc/tempctl/tempctl.toml
    head = ["-c", code] if code else ["-m", "tempctl"]
    return subprocess.Popen(
        [sys.executable, *head, *args],
        cwd=ROOT,
        env={**base, **(env or {})},
        stdout=stdout,
        stderr=subprocess.STDOUT,
        text=True,
    )


def emulator(
    devices: int, *, scenario: str = "heatwave", seed: int = 1, timeout_s: float = 120.0
) -> tuple[subprocess.Popen, list[str]]:
    """`tempctl emulate --devices N` in its own process; returns it and the device addresses."""
    proc = tempctl(
        ["emulate", "--devices", str(devices), "--scenario", scenario, "--seed", str(seed)]
    )
    watchdog = threading.Timer(timeout_s, proc.kill)  # a hung start must not hang us
    watchdog.start()
    urls: list[str] = []
    try:
        for line in proc.stdout:
            line = line.strip()
            if line.startswith("http://"):
                urls.append(line.removeprefix("http://"))
            if line == "ready" or (devices == 1 and urls):
                break
    finally:
        watchdog.cancel()
    if len(urls) != devices:
        stop(proc)
        raise RuntimeError(f"emulator gave {len(urls)} of {devices} URLs")
    return proc, urls


def stop(proc: subprocess.Popen, timeout_s: float = 30.0) -> str:
    """SIGTERM, wait, then kill; returns what it printed."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
    try:
        out, _ = proc.communicate(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        proc.kill()
        out, _ = proc.communicate()
    return out or ""


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)
