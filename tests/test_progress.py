"""Long offline runs draw a progress bar on a terminal, and nothing on a pipe (issue 14).

Each command runs as a user runs it, with stderr on a real pseudo-terminal (``pty``), and
again with stderr on a pipe: the bar's label must appear on the terminal only, and
``--json`` output on stdout must parse either way.
"""

from __future__ import annotations

import json
import os
import pty
import subprocess
import sys
import threading

import pytest

LABELS = {
    "fit": "fit",
    "replay-set": "replay --set",
    "replay-check": "replay --check",
    "simulate": "simulated hours",
    "tune": "candidates",
}


@pytest.fixture(scope="module")
def small_log(tmp_path_factory):
    db = tmp_path_factory.mktemp("progress") / "sim.db"
    subprocess.run(
        [sys.executable, "-m", "tempctl", "simulate", "--scenario", "heatwave"]
        + ["--days", "0.25", "--policy", "tempctl", "--db", str(db)],
        check=True,
        capture_output=True,
    )
    return db


def args_for(name: str, db) -> list[str]:
    return {
        "fit": ["fit", str(db), "--json"],
        "replay-set": ["replay", str(db), "--set", "TEMP_THRESHOLD=61", "--json"],
        "replay-check": ["replay", str(db), "--json"],
        "simulate": ["simulate", "--scenario", "heatwave", "--days", "0.25", "--json"],
        "tune": ["tune", str(db), "--grid", "TEMP_THRESHOLD=61,62", "--jobs", "1", "--json"],
    }[name]


def on_terminal(args: list[str]) -> tuple[str, str]:
    """Run ``tempctl args`` with stderr on a pty; (stdout, everything the terminal got)."""
    master, slave = pty.openpty()
    proc = subprocess.Popen(
        [sys.executable, "-m", "tempctl", *args],
        stdout=subprocess.PIPE,
        stderr=slave,
        stdin=subprocess.DEVNULL,
    )
    os.close(slave)
    chunks: list[bytes] = []

    def drain():  # read as it comes, so the child never waits on a full terminal buffer
        while True:
            try:
                data = os.read(master, 4096)
            except OSError:  # EIO: the child closed its end
                return
            if not data:
                return
            chunks.append(data)

    reader = threading.Thread(target=drain, daemon=True)
    reader.start()
    out, _ = proc.communicate(timeout=300)
    reader.join(timeout=30)
    os.close(master)
    assert proc.returncode in (0, 1), b"".join(chunks).decode(errors="replace")
    return out.decode(), b"".join(chunks).decode(errors="replace")


@pytest.mark.parametrize("name", list(LABELS))
def test_a_bar_on_a_terminal_and_none_on_a_pipe(small_log, name):
    args = args_for(name, small_log)
    out, terminal = on_terminal(args)
    json.loads(out)  # the bar never mixes into stdout
    assert LABELS[name] in terminal and "100%" in terminal, terminal[-500:]

    piped = subprocess.run(
        [sys.executable, "-m", "tempctl", *args], capture_output=True, text=True, timeout=300
    )
    assert piped.returncode in (0, 1), piped.stderr
    json.loads(piped.stdout)
    assert LABELS[name] not in piped.stderr and "%" not in piped.stderr, piped.stderr
