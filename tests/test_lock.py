"""One writer per database (issue 13.4).

* A second ``tempctl run`` on the same log exits 2 at once, with one line naming the
  process that holds it (pid and host), and sends nothing to the device; the first
  daemon keeps logging with contiguous ids.
* The lock dies with its process: after a SIGKILL the next daemon starts at once.
* One bad row never blocks the rest: a statement the database refuses for good (here a
  UNIQUE clash on an id) is dropped and reported, and every other row is written, in
  normal operation and when a backlog is written after an outage.
"""

from __future__ import annotations

import logging
import socket
import sqlite3
import subprocess

import procs
import pytest
from procs import LogView, check_log, daemon_env, fake_device, limits_for, start_daemon, wait_for

from tempctl.core.reading import Reading
from tempctl.store.eventlog import Log

pytestmark = pytest.mark.slow
fault = procs.fault_recorder()


def run_second(address: str, db, tmp_path) -> subprocess.CompletedProcess:
    env = daemon_env(address, db, tmp_path, **procs.FAST)
    return subprocess.run(
        [procs.PYTHON, "-m", "tempctl", "run"],
        env=env,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_second_daemon_on_the_same_log_exits_2_naming_the_first(tmp_path, fault):
    row = fault(
        "a second `tempctl run` on the same database",
        "exit 2 at once with one line naming the other process (pid, host); nothing "
        "sent to the device; the first daemon keeps logging, ids contiguous",
    )
    db = tmp_path / "tempctl.db"
    v = LogView(db)
    with fake_device() as dev, fake_device() as dev2:
        first = start_daemon(dev.address, db, tmp_path)
        try:
            wait_for(lambda: v.count("readings") >= 3, 30, "3 readings", first)
            second = run_second(dev2.address, db, tmp_path)
            n = v.count("readings")
            wait_for(lambda: v.count("readings") >= n + 3, 30, "3 more readings", first)
            assert first.poll() is None
            procs.assert_clean_exit(first)
        finally:
            first.stop()
        hits = sum(dev2.hits.values())
    err = second.stderr.strip()
    row.observed = f"exit {second.returncode}: '{err}'; {hits} requests to its device"
    assert second.returncode == 2, (second.stdout, second.stderr)
    assert len(err.splitlines()) == 1 and err.startswith("Error: "), err
    assert f"pid {first.pid}" in err and socket.gethostname() in err, err
    assert hits == 0
    assert v.count("runs") == 1  # the second one wrote nothing either
    assert check_log(db, limits_for()) == []


def test_lock_of_a_killed_daemon_does_not_block(tmp_path, fault):
    row = fault(
        "a daemon killed with SIGKILL, then started again",
        "the lock dies with the process: the next start runs at once",
    )
    db = tmp_path / "tempctl.db"
    v = LogView(db)
    with fake_device() as dev:
        first = start_daemon(dev.address, db, tmp_path)
        try:
            wait_for(lambda: v.count("readings") >= 2, 30, "2 readings", first)
            first.kill()
        finally:
            first.stop()
        again = start_daemon(dev.address, db, tmp_path, name="again")
        try:
            wait_for(lambda: v.count("readings", "run_id = 2") >= 2, 30, "readings of run 2", again)
            procs.assert_clean_exit(again)
        finally:
            again.stop()
    row.observed = f"run 2 logged {v.count('readings', 'run_id = 2')} readings after the kill"
    assert check_log(db, limits_for()) == []


# --- one bad row --------------------------------------------------------------------------


def reading(log: Log, ts: int):
    return log.reading_op(Reading("dev", ts, temp=50.0, frequency=500.0))


def clash(log: Log, ts: int):
    """A reading whose id is already taken: the database refuses it for good."""
    sql, params = reading(log, ts)
    return sql, (1, *params[1:])


def test_a_row_refused_for_good_is_dropped_and_the_rest_written(tmp_path, caplog):
    from tempctl.store.writer import Writer

    log = Log(tmp_path / "t.db")
    log.start_run({}, ts_ms=1)
    w = Writer(log)
    w.write([reading(log, 10)])
    with caplog.at_level(logging.ERROR, logger="tempctl"):
        w.write([reading(log, 20), clash(log, 30), reading(log, 40)])
    w.write([reading(log, 50)])
    ts = [r[0] for r in log.conn.execute("SELECT ts_ms FROM readings ORDER BY id")]
    assert ts == [10, 20, 40, 50]
    assert w.refused == 1 and not w.backlog
    assert "UNIQUE constraint failed: readings.id" in caplog.text


def test_a_row_refused_for_good_does_not_block_the_backlog(tmp_path):
    from tempctl.store.writer import Writer

    db = tmp_path / "t.db"
    log = Log(db)
    log.start_run({}, ts_ms=1)
    now = [0.0]
    w = Writer(log, monotonic=lambda: now[0])
    other = sqlite3.connect(db, isolation_level=None)
    other.execute("BEGIN IMMEDIATE")  # another writer holds the lock
    w.write([reading(log, 10)])
    w.write([clash(log, 20)])
    w.write([reading(log, 30)])
    assert w.backlog and w.error and "locked" in w.error
    other.execute("COMMIT")
    other.close()
    for _ in range(3):  # retries come once per retry period, whatever the caller does
        now[0] += w.retry_s
        w.write([reading(log, 40 + int(now[0]))])
    assert not w.backlog and w.error is None and w.refused == 1
    ts = [r[0] for r in log.conn.execute("SELECT ts_ms FROM readings ORDER BY id")]
    assert ts[:2] == [10, 30] and len(ts) == 5
