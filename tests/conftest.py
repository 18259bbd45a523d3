"""Shared fixtures. Real parts only: SQLite files in tmp_path, loopback servers."""

from __future__ import annotations

import socket

import pytest

from tempctl.core.controller import Limits
from tempctl.store.eventlog import Log


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def limits() -> Limits:
    # Compressed time, as in the end-to-end tests: 1 s polls, 10 s settle, 60 s window.
    return Limits(check_interval=1.0, settle=10.0, stable_timeframe=60 / 3600, law="levels")


@pytest.fixture
def log(tmp_path):
    lg = Log(tmp_path / "tempctl.db")
    lg.start_run({"test": True}, ts_ms=0)
    yield lg
    lg.close()
