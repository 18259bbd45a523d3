"""The SQLite log: schema.sql applied, append-only history, restore, refusing foreign files."""

from __future__ import annotations

import sqlite3

import pytest

from tempctl.core.controller import Command, Decision, Event, State, Transition
from tempctl.core.reading import Reading
from tempctl.store.eventlog import Log, LogError


def decision(to="THROTTLED_1", freq=490.0, **kw):
    t = Transition(
        "NORMAL",
        to,
        "above threshold",
        freq,
        64.0,
        kw.get("ceiling"),
        kw.get("until"),
        kw.get("backoff", 0.0),
        kw.get("last_good"),
    )
    return Decision(
        t,
        [Command("set_frequency", "above threshold", freq)],
        [Event("alarm", "hot", level="alarm", origin="tempctl")],
    )


def test_schema_is_strict_wal_and_indexed(tmp_path):
    lg = Log(tmp_path / "a.db")
    assert lg.conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    sql = {r[0]: r[1] for r in lg.conn.execute("SELECT name, sql FROM sqlite_master")}
    for table in ("runs", "readings", "transitions", "commands", "command_results", "events"):
        assert "STRICT" in sql[table]
    assert "readings_device_ts" in sql
    with pytest.raises(sqlite3.IntegrityError):  # STRICT: a string is not a REAL
        lg.conn.execute(
            "INSERT INTO readings (device, ts_ms, valid, temp) VALUES ('d', 1, 1, 'hot')"
        )
    lg.close()


def test_history_is_append_only(log):
    log.save_reading(Reading("d", 1000, temp=60.0))
    ids = log.save_decision("d", 1000, decision())
    log.transaction([log.result_op(ids[0][0], 1100, "ok", latency_ms=12.0)])
    for sql in (
        "UPDATE readings SET temp = 1",
        "DELETE FROM readings",
        "UPDATE transitions SET to_state = 'NORMAL'",
        "DELETE FROM transitions",
        "UPDATE commands SET frequency = 1500",
        "DELETE FROM commands",
        "UPDATE command_results SET outcome = 'failed'",
        "DELETE FROM events",
    ):
        with pytest.raises(sqlite3.IntegrityError, match="append-only"):
            log.conn.execute(sql)
    row = log.conn.execute(
        "SELECT kind, frequency, outcome, latency_ms FROM command_log"
    ).fetchone()
    assert row == ("set_frequency", 490.0, "ok", 12.0)


def test_restore_reads_latest_transition(log):
    log.save_decision("d", 1000, decision())
    log.start_run({"test": True}, ts_ms=500)  # a run stamped earlier (a clock behind)
    log.save_decision(
        "d",
        5000,
        decision("RECOVERING", 425.0, ceiling=450.0, until=99_000, backoff=3600.0, last_good=400.0),
    )
    snap = log.restore("d")
    assert snap.state is State.RECOVERING and snap.frequency == 425.0
    assert (snap.ceiling, snap.ceiling_until_ms, snap.backoff_s, snap.last_good) == (
        450.0,
        99_000,
        3600.0,
        400.0,
    )
    assert snap.last_change_ms == 5000
    assert log.restore("d", before_run=2).state is State.THROTTLED_1  # as run 2 started
    assert log.restore("other") is None


def test_ids_survive_reopen(tmp_path):
    lg = Log(tmp_path / "a.db")
    lg.start_run({}, ts_ms=0)
    lg.save_reading(Reading("d", 1, temp=60.0))
    lg.close()
    lg = Log(tmp_path / "a.db")
    lg.start_run({}, ts_ms=2)
    lg.save_reading(Reading("d", 2, temp=60.0))
    assert [r[0] for r in lg.conn.execute("SELECT id FROM readings")] == [1, 2]
    assert lg.run_id == 2


def test_refuses_a_file_that_is_not_sqlite(tmp_path):
    p = tmp_path / "notes.db"
    p.write_text("my precious notes")
    with pytest.raises(LogError, match="not a SQLite database"):
        Log(p)
    assert p.read_text() == "my precious notes"


def test_refuses_someone_elses_database(tmp_path):
    p = tmp_path / "other.db"
    conn = sqlite3.connect(p)
    conn.execute("CREATE TABLE customers (id INTEGER)")
    conn.commit()
    conn.close()
    with pytest.raises(LogError, match="not a tempctl log"):
        Log(p)
    tables = [r[0] for r in sqlite3.connect(p).execute("SELECT name FROM sqlite_master")]
    assert tables == ["customers"]


def test_refuses_a_corrupt_database(tmp_path):
    p = tmp_path / "bad.db"
    lg = Log(p)
    lg.close()
    data = bytearray(p.read_bytes())
    data[100:4096] = b"\xff" * (4096 - 100)
    p.write_bytes(bytes(data))
    with pytest.raises(LogError):
        Log(p)


def test_refuses_a_newer_schema(tmp_path):
    p = tmp_path / "new.db"
    lg = Log(p)
    lg.conn.execute("PRAGMA user_version = 99")
    lg.close()
    with pytest.raises(LogError, match="newer"):
        Log(p)
