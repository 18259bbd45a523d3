"""Helpers for suites that run real processes: the emulator, the daemon, a scriptable device.

* ``start_emulator(...)``: ``tempctl emulate`` in a subprocess on a free loopback port; its
  control API (``/_emulator/state``, ``/_emulator/faults``, ``/_emulator/ambient``) as methods.
* ``start_daemon(...)``: ``tempctl run`` in a subprocess with a hermetic environment (an empty
  private config file, only the settings given), output captured for failure messages.
* ``FakeAxeOS``: a v2.15 device on a pytest-httpserver ``HTTPServer`` whose answers a test
  scripts (bodies the emulator never sends: NaN, 1e308, 404, a PATCH that blocks...).
* ``wait_for``: poll a condition against a deadline, with the process output on failure.
* ``LogView`` / ``check_log``: read the daemon's SQLite log read-only while it runs, and the
  invariants every fault test asserts (ids contiguous, transitions chained, no unsafe command,
  no step on an invalid reading, no duplicated reading).
* ``fault_recorder()``: a fixture that records (fault, expected, observed, result) rows for
  the published table (tests/fault_report.py renders docs/faults.md from them).

Processes are stopped by their own pid (SIGTERM, wait, then SIGKILL), never by name.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import sqlite3
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Self

import pytest
import requests

from tempctl.config import FIELDS
from tempctl.core.controller import FREQ_EPS, Limits
from tempctl.sim.firmware import BODIES_DIR

REPO = Path(__file__).resolve().parent.parent
PYTHON = sys.executable
# JSON-lines file the fault recorder appends to (not TEMPCTL_*: the daemon would warn)
RESULTS_ENV = "FAULT_TABLE_RESULTS"

# Compressed time for end-to-end runs: 4 polls a second, judge a change after 2 s, and a
# stable window of 7.2 s. With the emulator at --scale 60 one real second is a plant minute.
# The fault suite was written against the fixed levels of tempctl 0.1 (its frequencies are
# asserted exactly); the model law has its own end-to-end tests (test_model_e2e.py).
FAST = {"check_interval": 0.25, "settle": 2.0, "stable_timeframe": 0.002, "law": "levels"}

_SETTING_ENVS = {f.env for f in FIELDS} | {
    "TEMPCTL_CONFIG",
    "NOTIFY_SOCKET",
    "WATCHDOG_USEC",
    "WATCHDOG_PID",
    "STATE_DIRECTORY",
}


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def wait_for(
    predicate: Callable[[], Any],
    timeout: float = 10.0,
    what: str = "condition",
    proc: Proc | None = None,
    interval: float = 0.05,
) -> Any:
    """Return the first truthy ``predicate()``; fail with ``proc``'s output at the deadline."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if proc is not None and proc.poll() is not None:
            raise AssertionError(
                f"{proc.name} exited ({proc.returncode}) while waiting for {what}\n{proc.output()}"
            )
        if time.monotonic() >= deadline:
            tail = f"\n--- {proc.name} output ---\n{proc.output()}" if proc is not None else ""
            raise AssertionError(f"timed out after {timeout:g} s waiting for {what}{tail}")
        time.sleep(interval)


def http() -> requests.Session:
    """A session for loopback control calls that ignores proxy variables."""
    s = requests.Session()
    s.trust_env = False
    return s


# --- processes ----------------------------------------------------------------------------------


class Proc:
    """A child process whose stdout+stderr go to a file (never a pipe that could fill up)."""

    def __init__(
        self,
        name: str,
        args: list[str],
        *,
        env: dict | None = None,
        cwd: str | os.PathLike | None = None,
        out: Path,
        preexec_fn: Callable[[], None] | None = None,
    ):
        self.name = name
        self.args = args
        n = 1
        while out.exists():  # a restarted process gets its own file
            n += 1
            out = out.with_name(f"{out.stem.rsplit('~', 1)[0]}~{n}{out.suffix}")
        self.out_path = out
        self._out = open(out, "wb")  # noqa: SIM115 (lives as long as the process)
        self.popen = subprocess.Popen(
            args,
            stdout=self._out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env=env,
            cwd=cwd,
            preexec_fn=preexec_fn,
        )  # noqa: PLW1509 (rlimits only)
        self.pid = self.popen.pid

    @property
    def returncode(self) -> int | None:
        return self.popen.returncode

    def poll(self) -> int | None:
        return self.popen.poll()

    def output(self) -> str:
        if not self._out.closed:
            self._out.flush()
        try:
            return self.out_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def signal(self, sig: int) -> None:
        if self.popen.poll() is None:
            os.kill(self.pid, sig)

    def wait(self, timeout: float) -> int:
        return self.popen.wait(timeout=timeout)

    def stop(self, timeout: float = 10.0) -> int:
        """SIGTERM, wait up to ``timeout``, then SIGKILL. Returns the exit status."""
        if self.popen.poll() is None:
            self.signal(signal.SIGTERM)
            try:
                self.popen.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.kill()
        self._out.close()
        return self.popen.returncode

    def kill(self) -> int:
        if self.popen.poll() is None:
            os.kill(self.pid, signal.SIGKILL)
        return self.popen.wait(timeout=10)

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


class EmulatorProc(Proc):
    """``tempctl emulate`` on a free port; ``url``/``address`` once it printed its first line."""

    def __init__(
        self,
        out: Path,
        *,
        scenario: str = "heatwave",
        scale: float = 60.0,
        faults: str | None = None,
        seed: int = 0,
        start_hours: float = 0.0,
        firmware: str | None = None,
        asic: str | None = None,
        port: int = 0,
        extra: tuple[str, ...] = (),
    ):
        args = [
            PYTHON,
            "-m",
            "tempctl",
            "emulate",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--scenario",
            scenario,
            "--scale",
            f"{scale:g}",
            "--seed",
            str(seed),
            "--start-hours",
            f"{start_hours:g}",
            *extra,
        ]
        if faults:
            args += ["--faults", faults]
        if firmware:
            args += ["--firmware", firmware]
        if asic:
            args += ["--asic", asic]
        super().__init__("emulator", args, out=out, env=_base_env(), cwd=REPO)
        line = wait_for(
            lambda: self.output().split("\n", 1)[0] if "\n" in self.output() else "",
            timeout=15,
            what="the emulator's URL line",
            proc=self,
        )
        if not line.startswith("http://"):
            raise AssertionError(f"emulator printed {line!r}\n{self.output()}")
        self.url = line.strip()
        self.address = self.url.split("://", 1)[1]
        self._http = http()

    def state(self) -> dict:
        return self._http.get(self.url + "/_emulator/state", timeout=30).json()

    def set_faults(self, spec: str) -> None:
        # the control API waits for the device lock, which a hanging request holds for a while
        r = self._http.post(self.url + "/_emulator/faults", json={"faults": spec}, timeout=30)
        r.raise_for_status()

    def set_ambient(self, offset_c: float) -> None:
        r = self._http.post(
            self.url + "/_emulator/ambient", json={"offset_c": offset_c}, timeout=30
        )
        r.raise_for_status()


def start_emulator(tmp_path: Path, name: str = "emulator", **kw) -> EmulatorProc:
    return EmulatorProc(Path(tmp_path) / f"{name}.out", **kw)


def _base_env() -> dict[str, str]:
    """This environment minus every tempctl setting, so only what a test gives applies."""
    env = {k: v for k, v in os.environ.items() if k not in _SETTING_ENVS | {RESULTS_ENV}}
    env["PYTHONUNBUFFERED"] = "1"
    env.setdefault("PYTHONPATH", str(REPO))
    return env


def empty_config(tmp_path: Path) -> Path:
    """A private, empty config file, so /etc/tempctl/tempctl.toml never leaks into a test."""
    path = Path(tmp_path) / "tempctl.toml"
    if not path.exists():
        path.write_text("# empty: every setting comes from the test's environment\n")
        path.chmod(0o600)
    return path


def daemon_env(
    devices: str | list[str], db: str | os.PathLike, tmp_path: Path, **settings: Any
) -> dict[str, str]:
    """Environment for ``tempctl run``: settings by Settings attribute name, e.g. settle=2."""
    env = _base_env()
    env["TEMPCTL_CONFIG"] = str(empty_config(tmp_path))
    env["BITAXE_IP"] = devices if isinstance(devices, str) else ",".join(devices)
    env["TEMPCTL_DB"] = str(db)
    by_attr = {f.attr: f.env for f in FIELDS}
    for attr, value in settings.items():
        if attr not in by_attr:
            raise TypeError(f"unknown setting {attr!r}")
        env[by_attr[attr]] = (
            ("true" if value else "false") if isinstance(value, bool) else str(value)
        )
    return env


def start_daemon(
    devices: str | list[str],
    db: str | os.PathLike,
    tmp_path: Path,
    *,
    name: str = "daemon",
    env_extra: dict | None = None,
    preexec_fn: Callable[[], None] | None = None,
    argv: list[str] | None = None,
    **settings: Any,
) -> Proc:
    """``tempctl run`` (FAST timing unless overridden) writing its output to tmp/<name>.out.

    ``argv`` replaces the command line (e.g. the daemon under an audit hook)."""
    env = daemon_env(devices, db, tmp_path, **{**FAST, **settings})
    env.update(env_extra or {})
    args = argv or [PYTHON, "-m", "tempctl", "run"]
    return Proc(
        name, args, env=env, cwd=tmp_path, out=Path(tmp_path) / f"{name}.out", preexec_fn=preexec_fn
    )


def limits_for(**settings: Any) -> Limits:
    merged = {**FAST, **settings}
    return Limits(**{k: v for k, v in merged.items() if k in Limits.__dataclass_fields__})


# --- a scriptable AxeOS device on pytest-httpserver ---------------------------------------------


def template_body() -> dict:
    """The v2.15.0 reference body (shared/reference/system-info-examples), at 575 MHz."""
    body = json.loads((BODIES_DIR / "v2.15.0_gamma-602_BM1370.json").read_text())
    body.update(frequency=575, actualFrequency=575, temp=58.0, vrTemp=50, uptimeSeconds=1000)
    return body


class FakeAxeOS:
    """An AxeOS v2.15 device whose answers a test scripts, served by a pytest-httpserver.

    ``info`` is the body served (a dict, dumped with NaN allowed) unless ``info_raw``
    (bytes) or ``info_status`` (non-200) is set. A PATCH applies ``frequency`` unless
    ``on_patch`` answers instead; ``on_restart`` likewise for POST /api/system/restart.
    Every request is counted in ``hits`` by "METHOD path"; ``uptime`` grows per poll.
    """

    def __init__(self, server, body: dict | None = None):
        from werkzeug import Response

        self._Response = Response
        self.server = server
        self.info = body or template_body()
        self.info_raw: bytes | None = None
        self.info_status = 200
        self.on_patch: Callable | None = None
        self.on_restart: Callable | None = None
        self.hits: Counter[str] = Counter()
        self.patches: list[dict] = []
        self.lock = threading.Lock()
        server.expect_request("/api/system/info", method="GET").respond_with_handler(self._info)
        server.expect_request("/api/system", method="PATCH").respond_with_handler(self._patch)
        server.expect_request("/api/system/restart", method="POST").respond_with_handler(
            self._restart
        )
        server.expect_request("/api/system/statistics").respond_with_handler(self._none)
        server.expect_request("/api/system/asic").respond_with_handler(self._none)

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.server.port}"

    def _none(self, request):
        self.hits[f"{request.method} {request.path}"] += 1
        return self._Response(
            '{"error":"unknown route"}', status=404, content_type="application/json"
        )

    def _info(self, request):
        with self.lock:
            self.hits["GET /api/system/info"] += 1
            if self.info_status != 200:
                return self._Response(
                    "Not Found", status=self.info_status, content_type="text/html"
                )
            if self.info_raw is not None:
                return self._Response(self.info_raw, content_type="application/json")
            if isinstance(self.info.get("uptimeSeconds"), int):
                self.info["uptimeSeconds"] += 1
            return self._Response(json.dumps(self.info), content_type="application/json")

    def _patch(self, request):
        self.hits["PATCH /api/system"] += 1
        data = json.loads(request.get_data() or b"{}")
        self.patches.append(data)
        if self.on_patch is not None:
            return self.on_patch(request)
        with self.lock:
            if "frequency" in data:
                self.info["frequency"] = self.info["actualFrequency"] = data["frequency"]
        return self._Response("", status=200, content_type="text/html")

    def _restart(self, request):
        self.hits["POST /api/system/restart"] += 1
        if self.on_restart is not None:
            return self.on_restart(request)
        return self._Response(
            '{"message":"System will restart shortly."}', content_type="application/json"
        )


@contextmanager
def fake_device(body: dict | None = None) -> Iterator[FakeAxeOS]:
    """A FakeAxeOS on its own threaded server on 127.0.0.1 (a blocking handler blocks one
    request, not the server)."""
    from pytest_httpserver import HTTPServer

    server = HTTPServer(host="127.0.0.1", port=0, threaded=True)
    server.start()
    try:
        yield FakeAxeOS(server, body)
    finally:
        server.clear()
        server.stop()


# --- the log, read-only -------------------------------------------------------------------------

TABLES = ("runs", "readings", "transitions", "commands", "command_results", "events")
# Transitions the law did not fire from a reading: start-up, reconciliation, safety clamps.
NOT_FROM_A_READING = ("start", "reconcile", "device at")


class LogView:
    """Read-only queries on a tempctl log that a daemon may be writing (WAL allows it)."""

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)

    def rows(self, sql: str, *params: Any) -> list[tuple]:
        if not self.path.exists():
            return []
        conn = sqlite3.connect(f"file:{self.path}?mode=ro", uri=True, timeout=10)
        try:
            return conn.execute(sql, params).fetchall()
        except sqlite3.OperationalError as exc:
            if "no such table" in str(exc):
                return []
            raise
        finally:
            conn.close()

    def value(self, sql: str, *params: Any) -> Any:
        rows = self.rows(sql, *params)
        return rows[0][0] if rows else None

    def count(self, table: str, where: str = "1", *params: Any) -> int:
        return self.value(f"SELECT count(*) FROM {table} WHERE {where}", *params) or 0

    def readings(self, where: str = "1", *params: Any) -> list[sqlite3.Row]:
        return self.dicts(f"SELECT * FROM readings WHERE {where} ORDER BY id", *params)

    def dicts(self, sql: str, *params: Any) -> list[dict]:
        if not self.path.exists():
            return []
        conn = sqlite3.connect(f"file:{self.path}?mode=ro", uri=True, timeout=10)
        conn.row_factory = sqlite3.Row
        try:
            return [dict(r) for r in conn.execute(sql, params)]
        finally:
            conn.close()

    def transitions(self) -> list[dict]:
        return self.dicts("SELECT * FROM transitions ORDER BY id")

    def commands(self) -> list[dict]:
        return self.dicts("SELECT * FROM command_log ORDER BY id")

    def events(self, kind: str | None = None) -> list[dict]:
        if kind is None:
            return self.dicts("SELECT * FROM events ORDER BY id")
        return self.dicts("SELECT * FROM events WHERE kind = ? ORDER BY id", kind)

    def max_ids(self) -> dict[str, int]:
        return {t: self.value(f"SELECT coalesce(max(id), 0) FROM {t}") or 0 for t in TABLES}

    def snapshot(self) -> dict[str, list[tuple]]:
        """Every row of every history table, by id: to prove rows are never lost or changed."""
        return {t: self.rows(f"SELECT * FROM {t} ORDER BY id") for t in TABLES}


def check_log(
    db: str | os.PathLike, limits: Limits | None = None, *, complete: bool = True
) -> list[str]:
    """Invariants every run must keep; returns the problems found (empty = all good).

    * ids in each history table are 1..N with no hole (nothing lost, nothing written twice);
    * per device, each transition's from_state is the previous row's to_state;
    * no two readings of a device share a timestamp, and stamps only increase by id;
    * every set_frequency command and transition frequency is within [lowest, MAX];
    * no law step was taken on an invalid reading (valid or overheat rows only);
    * each command has at most one outcome (exactly one when ``complete``).
    """
    v = LogView(db)
    lim = limits or Limits()
    problems: list[str] = []
    for t in TABLES:
        n, lo, hi = v.rows(f"SELECT count(*), min(id), max(id) FROM {t}")[0]
        if n and (lo != 1 or hi != n):
            problems.append(f"{t}: ids {lo}..{hi} for {n} rows (a hole or a duplicate)")
    last: dict[str, str] = {}
    for t in v.transitions():
        prev = last.get(t["device"], "NORMAL")
        if t["from_state"] != prev:
            problems.append(
                f"transition {t['id']}: from {t['from_state']} but the previous "
                f"row left the device in {prev}"
            )
        last[t["device"]] = t["to_state"]
        f = t["frequency"]
        if f is not None and not (lim.lowest - FREQ_EPS <= f <= lim.max_frequency + FREQ_EPS):
            problems.append(
                f"transition {t['id']}: frequency {f} outside "
                f"[{lim.lowest:g}, {lim.max_frequency:g}]"
            )
    dup = v.rows(
        "SELECT device, ts_ms, count(*) FROM readings GROUP BY device, ts_ms HAVING count(*) > 1"
    )
    if dup:
        problems.append(f"duplicated readings (device, ts, n): {dup[:5]}")
    back = v.value(
        "SELECT count(*) FROM readings a JOIN readings b ON a.device = b.device "
        "AND b.id = (SELECT min(id) FROM readings c WHERE c.device = a.device "
        "AND c.id > a.id) WHERE b.ts_ms <= a.ts_ms"
    )
    if back:
        problems.append(f"{back} readings stamped at or before the row logged before them")
    for c in v.dicts("SELECT * FROM commands WHERE kind = 'set_frequency'"):
        f = c["frequency"]
        if f is None or not (lim.lowest - FREQ_EPS <= f <= lim.max_frequency + FREQ_EPS):
            problems.append(f"command {c['id']}: unsafe frequency {f}")
    bad = v.dicts(
        "SELECT t.id, t.reason, r.valid, r.overheat, r.error FROM transitions t "
        "LEFT JOIN readings r ON r.device = t.device AND r.ts_ms = t.ts_ms "
        "WHERE coalesce(r.valid, 0) = 0 AND coalesce(r.overheat, 0) = 0"
    )
    for b in bad:
        if not b["reason"].startswith(NOT_FROM_A_READING):
            problems.append(
                f"transition {b['id']} ({b['reason']}) on an invalid reading: {b['error']}"
            )
    multi = v.rows(
        "SELECT command_id, count(*) FROM command_results GROUP BY command_id HAVING count(*) > 1"
    )
    if multi:
        problems.append(f"commands with several outcomes: {multi[:5]}")
    if complete:
        open_ = v.rows(
            "SELECT c.id FROM commands c LEFT JOIN command_results r "
            "ON r.command_id = c.id WHERE r.id IS NULL"
        )
        if open_:
            problems.append(f"commands without an outcome: {[r[0] for r in open_]}")
    return problems


def assert_clean_exit(proc: Proc, timeout: float = 10.0) -> float:
    """SIGTERM the daemon; it must exit 0 without a traceback. Returns the seconds it took."""
    t0 = time.monotonic()
    proc.signal(signal.SIGTERM)
    try:
        rc = proc.wait(timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        raise AssertionError(
            f"{proc.name} did not stop within {timeout:g} s of SIGTERM\n{proc.output()}"
        ) from None
    took = time.monotonic() - t0
    out = proc.output()
    assert rc == 0, f"{proc.name} exited {rc}\n{out}"
    assert "Traceback" not in out, out
    return took


# --- the published table ------------------------------------------------------------------------


class FaultRow(dict):
    """One row of docs/faults.md. Set ``observed`` as facts are measured (before asserting,
    so a failing test still shows what it saw)."""

    @property
    def observed(self) -> str:
        return self["observed"]

    @observed.setter
    def observed(self, text: str) -> None:
        self["observed"] = text


def fault_recorder():
    """Build the ``fault`` fixture: ``row = fault("5xx", "no crash; ...")``.

    Rows are appended to $FAULT_TABLE_RESULTS (JSON lines) at teardown with the test's
    result; without that variable nothing is written.
    """

    @pytest.fixture
    def fault(request, tmp_path_factory):
        rows: list[FaultRow] = []
        failed_before = request.session.testsfailed
        t0 = time.monotonic()

        def make(name: str, expected: str, observed: str = "") -> FaultRow:
            row = FaultRow(
                fault=name, expected=expected, observed=observed, test=request.node.nodeid
            )
            rows.append(row)
            return row

        yield make
        path = os.environ.get(RESULTS_ENV)
        if not path:
            return
        # the call phase's report is counted before fixtures are torn down
        result = "fail" if request.session.testsfailed > failed_before else "pass"
        base = str(tmp_path_factory.getbasetemp())
        seconds = round(time.monotonic() - t0, 1)
        with open(path, "a") as fh:
            for row in rows:
                row.observed = row.observed.replace(base, "<tmp>")  # no machine paths
                fh.write(json.dumps({**row, "result": result, "seconds": seconds}) + "\n")

    return fault
