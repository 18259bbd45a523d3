"""The database misbehaves: locked by another writer, disk full, missing/corrupt/foreign file.

The daemon is the real `tempctl run` process; the device is the emulator. "No lost rows"
is checked with ``procs.check_log`` (ids 1..N in every table, one outcome per command)
plus: every poll the daemon made is in the log (the readings are evenly spaced at the
poll interval, except where the loop itself was held up, which is measured and reported).

Disk full is made two ways: RLIMIT_FSIZE lowered on the running daemon with prlimit(2)
(works unprivileged, here and in CI: writes past the limit fail with EFBIG, which SQLite
reports as "disk I/O error"; Python ignores SIGXFSZ), and, where mount(2) is permitted, a
small tmpfs that a filler file fills up (ENOSPC: "database or disk is full").
"""

from __future__ import annotations

import hashlib
import os
import resource
import shutil
import sqlite3
import subprocess
import time
from itertools import pairwise
from pathlib import Path

import procs
import pytest
from procs import (
    LogView,
    assert_clean_exit,
    check_log,
    daemon_env,
    limits_for,
    start_daemon,
    start_emulator,
    wait_for,
)

pytestmark = pytest.mark.slow
fault = procs.fault_recorder()


def gaps(v: LogView, interval: float) -> list[float]:
    """Seconds between consecutive readings that exceed two poll intervals."""
    ts = [r[0] for r in v.rows("SELECT ts_ms FROM readings ORDER BY id")]
    return [(b - a) / 1000 for a, b in pairwise(ts) if b - a > 2 * interval * 1000]


# --- locked by another writer -------------------------------------------------------------------


@pytest.mark.parametrize("hold_s", [3.0, 12.0], ids=["within-busy-timeout", "beyond-it"])
def test_database_locked_by_another_writer(tmp_path, fault, hold_s):
    short = hold_s < 10
    row = fault(
        f"database locked by another writer ({hold_s:g} s"
        + (", within the 10 s busy timeout)" if short else ", beyond the busy timeout)"),
        "no lost rows: every poll logged, ids contiguous"
        + (
            "; writes wait for the lock"
            if short
            else "; the failure is reported, rows are kept in memory and written once the "
            "lock is gone"
        ),
    )
    emu = start_emulator(tmp_path, scenario="constant")
    db = tmp_path / "tempctl.db"
    v = LogView(db)
    d = start_daemon(emu.address, db, tmp_path)
    try:
        wait_for(lambda: v.count("readings") >= 4, 20, "4 readings", d)
        other = sqlite3.connect(db, isolation_level=None, timeout=1)
        other.execute("BEGIN EXCLUSIVE")  # a second writer (another tool, a manual sqlite3)
        held = v.count("readings")
        time.sleep(hold_s)
        during = v.count("readings")  # readers are not blocked in WAL mode
        other.execute("COMMIT")
        other.close()
        released = v.count("readings")
        wait_for(lambda: v.count("readings") >= released + 8, 30, "8 readings after the lock", d)
        stop_s = assert_clean_exit(d)
    finally:
        d.stop()
        emu.stop()
    out = d.output()
    stalls = gaps(v, procs.FAST["check_interval"])
    reported = "cannot write the log (database is locked)" in out
    row.observed = (
        f"readings visible to readers during the hold: {during - held} new; "
        f"after release: all written, ids contiguous; longest pause between polls "
        f"{max(stalls, default=0):.1f} s (the loop waits on the lock); failure "
        f"reported: {reported}; SIGTERM: exit 0 in {stop_s:.1f} s"
    )
    assert check_log(db, limits_for()) == []
    assert during == held  # nothing could be written while it was held
    if short:
        assert not reported and "delayed statements written" not in out
    else:
        assert reported and "database writable again" in out


# --- disk full ----------------------------------------------------------------------------------


def lower_fsize(pid: int, db: Path) -> None:
    wal = Path(f"{db}-wal")
    resource.prlimit(
        pid, resource.RLIMIT_FSIZE, (wal.stat().st_size + 4096, resource.RLIM_INFINITY)
    )


def raise_fsize(pid: int, db: Path) -> None:
    resource.prlimit(pid, resource.RLIMIT_FSIZE, (resource.RLIM_INFINITY, resource.RLIM_INFINITY))


class Tmpfs:
    """A 2 MiB tmpfs; ``fill()`` takes the free space with a filler file, ``free()`` deletes it."""

    def __init__(self, path: Path):
        self.path = path
        path.mkdir()
        r = subprocess.run(
            ["mount", "-t", "tmpfs", "-o", "size=2m,mode=0700", "tmpfs", str(path)],
            capture_output=True,
            text=True,
            check=False,
        )
        if r.returncode != 0:
            path.rmdir()
            pytest.skip(
                f"mount not permitted here ({r.stderr.strip()}); the RLIMIT_FSIZE "
                "variant covers disk full"
            )
        self.filler = path / "filler"

    def fill(self, pid: int, db: Path) -> None:
        with open(self.filler, "wb", buffering=0) as fh:
            try:
                while True:
                    fh.write(b"\0" * 4096)
            except OSError:
                pass  # ENOSPC: the file system is full

    def free(self, pid: int, db: Path) -> None:
        self.filler.unlink()

    def close(self) -> None:
        subprocess.run(["umount", "-l", str(self.path)], check=False)


@pytest.mark.parametrize("how", ["fsize", "tmpfs"])
def test_disk_full(tmp_path, fault, how, request):
    row = fault(
        "disk full (" + ("RLIMIT_FSIZE: EFBIG" if how == "fsize" else "full tmpfs: ENOSPC") + ")",
        "control goes on (the device is throttled during the outage); the failure is "
        "reported; rows are kept in memory and written when space returns: no lost "
        "rows, ids contiguous",
    )
    fs = Tmpfs(tmp_path / "fs") if how == "tmpfs" else None
    if fs:
        request.addfinalizer(fs.close)  # after the log has been read
    db = (fs.path if fs else tmp_path) / "tempctl.db"
    emu = start_emulator(tmp_path, scenario="constant")
    v = LogView(db)
    d = start_daemon(emu.address, db, tmp_path)
    try:
        wait_for(lambda: v.count("readings") >= 4, 20, "4 readings", d)
        (fs.fill if fs else lower_fsize)(d.pid, db)
        wait_for(lambda: "cannot write the log" in d.output(), 20, "the write failure", d)
        t_full = time.monotonic()
        logged = v.count("readings")
        emu.set_ambient(10.0)  # a heat wave while the disk is full: the guard must still act
        wait_for(lambda: emu.state()["frequency_mhz"] < 575, 20, "a throttle during the outage", d)
        throttled = emu.state()["frequency_mhz"]
        frozen = v.count("readings")
        (fs.free if fs else raise_fsize)(d.pid, db)
        outage_s = time.monotonic() - t_full
        wait_for(lambda: "database writable again" in d.output(), 20, "the write recovery", d)
        back = v.count("readings")
        wait_for(lambda: v.count("readings") >= back + 4, 20, "readings after recovery", d)
        stop_s = assert_clean_exit(d)
    finally:
        d.stop()
        emu.stop()
    out = d.output()
    error = next(line for line in out.splitlines() if "cannot write the log" in line)
    delayed = next(line for line in out.splitlines() if "database writable again" in line)
    trans = v.transitions()
    row.observed = (
        f"'{error.split('ERROR ', 1)[-1]}'; during a {outage_s:.1f} s outage the "
        f"device was throttled to {throttled:g} MHz; then "
        f"'{delayed.split('WARNING ', 1)[-1]}'; {back - logged} readings and "
        f"{len(trans)} transitions written late, ids contiguous; "
        f"SIGTERM: exit 0 in {stop_s:.1f} s"
    )
    assert frozen == logged, "rows were written while the disk was full?"
    assert back > logged and any(t["to_state"].startswith("THROTTLED") for t in trans)
    assert check_log(db, limits_for()) == []
    assert max(gaps(v, procs.FAST["check_interval"]), default=0) < 1.5, "polls were lost"


# --- missing, corrupt or foreign at start -------------------------------------------------------


def sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def make_foreign(path: Path) -> None:
    conn = sqlite3.connect(path)
    conn.execute("CREATE TABLE photos (id INTEGER PRIMARY KEY, name TEXT)")
    conn.execute("INSERT INTO photos (name) VALUES ('holiday.jpg')")
    conn.commit()
    conn.close()


def make_corrupt(path: Path) -> None:
    path.write_bytes(b"SQLite format 3\x00" + os.urandom(8192))


def make_text(path: Path) -> None:
    path.write_text("these are my notes, not a database\n")


def make_newer(path: Path) -> None:
    from tempctl.store.eventlog import Log

    Log(path).close()
    conn = sqlite3.connect(path)
    conn.execute("PRAGMA user_version = 99")
    conn.close()


BAD_FILES = [
    ("foreign", make_foreign, "a SQLite database that is not a tempctl log (tables: photos)"),
    ("corrupt", make_corrupt, "unreadable SQLite database"),
    ("not SQLite", make_text, "not a SQLite database; refusing to touch it"),
    ("newer schema", make_newer, "database schema v99 is newer than this tempctl"),
]


@pytest.mark.parametrize("name,make,message", BAD_FILES, ids=[b[0] for b in BAD_FILES])
def test_bad_database_file_is_refused_and_left_untouched(tmp_path, fault, name, make, message):
    row = fault(
        f"database {name} at start",
        "clear one-line error, exit 1, nothing sent to "
        "the device; the file is left byte for byte as it was, no file added",
    )
    db = tmp_path / "data" / "tempctl.db"
    db.parent.mkdir()
    make(db)
    before, files = sha(db), sorted(os.listdir(db.parent))
    with procs.fake_device() as dev:
        env = daemon_env(dev.address, db, tmp_path)
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
    row.observed = f"exit {r.returncode}: '{err}'; file unchanged; {hits} requests to the device"
    assert r.returncode == 1, (r.stdout, r.stderr)
    assert err.startswith("Error: ") and message in err and len(err.splitlines()) == 1, err
    assert sha(db) == before and sorted(os.listdir(db.parent)) == files
    assert hits == 0


def test_missing_database(tmp_path, fault):
    row = fault(
        "database missing at start",
        "a missing file in an existing directory is "
        "created as a new tempctl log; a missing directory is a clear error (exit 1), "
        "nothing created",
    )
    with procs.fake_device() as dev:
        gone = tmp_path / "no" / "such" / "dir" / "tempctl.db"
        env = daemon_env(dev.address, gone, tmp_path)
        r = subprocess.run(
            [procs.PYTHON, "-m", "tempctl", "run"],
            env=env,
            cwd=tmp_path,
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
        )
        assert r.returncode == 1 and r.stderr.startswith("Error: "), r.stderr
        assert not (tmp_path / "no").exists()
        fresh = tmp_path / "fresh.db"
        d = start_daemon(dev.address, fresh, tmp_path)
        try:
            wait_for(lambda: LogView(fresh).count("readings") >= 2, 20, "2 readings", d)
            assert_clean_exit(d)
        finally:
            d.stop()
    app = LogView(fresh).value("SELECT value FROM meta WHERE key = 'app'")
    row.observed = (
        f"missing directory: exit {r.returncode}, '{r.stderr.strip()}'; missing "
        f"file: created (meta app={app!r}) and logging"
    )
    assert app == "tempctl"
    shutil.rmtree(tmp_path / "no", ignore_errors=True)
