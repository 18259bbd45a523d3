"""`tempctl status` only reads the log (issue 13.13): a read-only file or directory is fine,
and the file is left byte for byte as it was.

The command runs as a real subprocess. Root writes through file modes, so for root the
read-only path is also bind-mounted read-only in a private mount namespace (unshare -m).
"""

from __future__ import annotations

import hashlib
import json
import os
import shlex
import shutil
import subprocess
from pathlib import Path

import procs
import pytest

from tempctl.core.controller import Command, Decision, Transition
from tempctl.core.reading import Reading
from tempctl.store.eventlog import Log

ROOT = os.geteuid() == 0


def make_log(path: Path) -> None:
    log = Log(path)
    log.start_run({}, ts_ms=1_700_000_000_000)
    log.save_reading(Reading("miner", 1_700_000_001_000, temp=66.0, frequency=575.0))
    t = Transition("NORMAL", "THROTTLED_1", "above threshold", 490.0, 66.0, None, None, 0.0, None)
    log.save_decision(
        "miner",
        1_700_000_001_000,
        Decision(t, [Command("set_frequency", "above threshold", 490.0)], []),
    )
    log.close()  # a clean close: no -wal or -shm left beside it


def sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def status(db: Path, cwd: Path, read_only: Path | None = None) -> subprocess.CompletedProcess:
    """``tempctl status --json``; ``read_only``: that file or directory cannot be written."""
    env = procs.daemon_env("127.0.0.1:9", db, cwd)  # status needs no device, none is reached
    argv = [procs.PYTHON, "-m", "tempctl", "status", "--db", str(db), "--json"]
    if read_only is not None and ROOT:
        if shutil.which("unshare") is None:
            pytest.skip("root, and no unshare(1) to make a read-only mount")
        ro = shlex.quote(str(read_only))
        argv = ["unshare", "-m", "sh", "-c", f'mount --bind -o ro {ro} {ro} && exec "$@"', "-"]
        argv += [procs.PYTHON, "-m", "tempctl", "status", "--db", str(db), "--json"]
    r = subprocess.run(
        argv, env=env, cwd=cwd, capture_output=True, text=True, timeout=60, check=False
    )
    if read_only is not None and ROOT and r.returncode != 0 and "mount" in r.stderr:
        pytest.skip(f"no read-only bind mount here: {r.stderr.strip()}")
    return r


def test_status_leaves_the_file_untouched(tmp_path):
    db = tmp_path / "tempctl.db"
    make_log(db)
    procs.empty_config(tmp_path)
    before, files = sha(db), sorted(os.listdir(tmp_path))
    r = status(db, tmp_path)
    assert r.returncode == 0, r.stderr
    rows = json.loads(r.stdout)
    assert [(x["device"], x["state"], x["frequency"]) for x in rows] == [
        ("miner", "THROTTLED_1", 490.0)
    ]
    assert sha(db) == before  # not even the schema was applied again
    # a reader may leave SQLite's -wal/-shm companions behind, nothing else
    assert sorted(set(os.listdir(tmp_path)) - {db.name + "-wal", db.name + "-shm"}) == files


@pytest.mark.parametrize("what", ["file", "directory"])
def test_status_on_a_read_only_log(tmp_path, what):
    data = tmp_path / "data"
    data.mkdir()
    db = data / "tempctl.db"
    make_log(db)
    before = sha(db)
    db.chmod(0o444)
    if what == "directory":
        data.chmod(0o555)
    try:
        r = status(db, tmp_path, read_only=db if what == "file" else data)
    finally:
        data.chmod(0o755)
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)[0]["state"] == "THROTTLED_1"
    assert sha(db) == before


def ramp_log(path: Path, settle: float, c_per_h: float) -> None:
    """An hour of readings (every 5 s) at one setting, the die warming at ``c_per_h`` °C/h
    with constant power: the room warms at that rate (issue 23.7)."""
    log = Log(path)
    t0 = 1_700_000_000_000
    log.start_run({"law": "model", "settle": settle}, ts_ms=t0)
    t = Transition("NORMAL", "NORMAL", "start", 575.0, 55.0, None, None, 0.0, None)
    log.save_decision("miner", t0 + 1, Decision(t, [], []))
    for i in range(1, 721):
        ts = t0 + 5000 * i
        log.save_reading(
            Reading(
                "miner",
                ts,
                temp=55.0 + c_per_h * (ts - t0) / 3_600_000,
                frequency=575.0,
                power=15.0,
                core_voltage=1150,
                fan_pct=50.0,
                asic_model="BM1370",
                hashrate=1000.0,
                uptime_s=100 + 5 * i,
            )
        )
    log.close()


@pytest.mark.parametrize("settle", [6.0, 180.0])
def test_status_shows_the_ambient_trend_per_hour(tmp_path, settle):
    # 180/settle used to scale the figure: +90.0 °C/h at settle 6 s for a 3 °C/h room
    db = tmp_path / "tempctl.db"
    ramp_log(db, settle, 3.0)
    r = status(db, tmp_path)
    assert r.returncode == 0, r.stderr
    doing = json.loads(r.stdout)[0]["doing"]
    assert doing.endswith("+3.0 °C/h"), doing
