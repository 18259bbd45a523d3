"""One device: CPU per poll (decision + insert) and the daemon's memory.

In process, the steps the daemon runs per poll on its main thread (daemon.py
``_on_reading``/``_act``): append the reading (one transaction), ``Controller.step``
with the stable-window query, and commit the decision's rows when there is one. The
trace crosses TEMP_THRESHOLD so transitions, commands and window queries all happen;
the log holds a day of history first. CPU is ``time.thread_time`` per poll.

As a process: `tempctl run` against one emulated miner (`tempctl emulate`, another
process); CPU per poll of the whole process (HTTP, parsing, thread pool, loop and
the above) and its resident memory. The same run again with ``sqlite_utils`` kept out
of the process shows what that import costs (see run_all's notes).
"""

from __future__ import annotations

import dataclasses
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

from . import procs

STUB_SQLITE_UTILS = (
    "import sys, types; m = types.ModuleType('sqlite_utils'); m.Database = lambda conn: None; "
    "sys.modules['sqlite_utils'] = m; from tempctl.cli import cli; cli(prog_name='tempctl')"
)


def in_process(polls: int = 5000) -> dict:
    from tempctl.core.controller import Controller, Limits
    from tempctl.device import parse_info
    from tempctl.sim.firmware import BODIES_DIR
    from tempctl.store.eventlog import Log

    body = json.loads((BODIES_DIR / "v2.15.0_gamma-602_BM1370.json").read_text())
    limits = Limits(settle=180.0)
    step_ms = int(limits.check_interval * 1000)
    with tempfile.TemporaryDirectory(prefix="tempctl-poll-") as tmp:
        log = Log(Path(tmp) / "poll.db")
        t0 = 1_700_000_000_000
        log.start_run({}, ts_ms=t0)
        template = parse_info(body, "gamma", t0)
        history = [
            dataclasses.replace(template, ts_ms=t0 + i * step_ms, temp=58.0 + i % 7 * 0.5)
            for i in range(2880)
        ]  # a day at 30 s
        log.transaction([log.reading_op(r) for r in history])
        start = t0 + 2880 * step_ms
        ctl = Controller(limits, "gamma")
        freq = 575.0
        costs, decisions, window_calls = [], 0, 0
        parse_cost = []
        for i in range(polls):
            ts = start + i * step_ms
            phase = i % 480 / 240  # a 4-hour triangle, 57..65 °C
            temp = round(57.0 + 8.0 * (phase if phase <= 1 else 2 - phase), 2)
            c = time.thread_time()
            r = parse_info(body, "gamma", ts)
            parse_cost.append(time.thread_time() - c)
            r = dataclasses.replace(r, temp=temp, frequency=freq)

            def window(ts=ts):
                nonlocal window_calls
                window_calls += 1
                return log.window("gamma", ts, limits)

            c = time.thread_time()
            log.transaction([log.reading_op(r)])
            d = ctl.step(r, ts, window=window)
            if d:
                ops, _ = log.decision_ops("gamma", ts, d)
                log.transaction(ops)
            costs.append(time.thread_time() - c)
            if d:
                decisions += 1
                for cmd in d.commands:
                    ctl.command_result(cmd, True, ts)
                    if cmd.kind == "set_frequency":
                        freq = cmd.frequency
        # the stable-window query alone, on the same log
        c = time.thread_time()
        for i in range(1000):
            log.window("gamma", start + (polls - 1 - i % 100) * step_ms, limits)
        window_ms = (time.thread_time() - c) / 1000 * 1000
        log.close()
    costs_ms = sorted(x * 1000 for x in costs)
    return {
        "polls": polls,
        "decisions": decisions,
        "window_queries": window_calls,
        "cpu_ms_per_poll_mean": round(statistics.fmean(costs_ms), 4),
        "cpu_ms_per_poll_p99": round(costs_ms[int(0.99 * (len(costs_ms) - 1))], 4),
        "cpu_ms_per_poll_max": round(costs_ms[-1], 4),
        "cpu_ms_window_query": round(window_ms, 4),
        "cpu_ms_parse_info": round(statistics.fmean(parse_cost) * 1000, 4),
    }


def daemon_process(
    seconds: float = 40.0, interval_s: float = 0.5, *, stub_sqlite_utils: bool = False
) -> dict:
    emu, (addr,) = procs.emulator(1)
    tmp = Path(tempfile.mkdtemp(prefix="tempctl-poll-"))
    db = tmp / "one.db"
    try:
        env = {"BITAXE_IP": addr, "CHECK_INTERVAL": f"{interval_s:g}", "TEMPCTL_DB": str(db)}
        with open(tmp / "daemon.log", "w") as out:
            daemon = procs.tempctl(
                ["run"], env, stdout=out, code=STUB_SQLITE_UTILS if stub_sqlite_utils else None
            )
            try:
                time.sleep(3.0)  # imports, schema, first polls
                c0, w0 = procs.cpu_s(daemon.pid), time.monotonic()
                n0 = _count(db)
                time.sleep(seconds)
                cpu = procs.cpu_s(daemon.pid) - c0
                wall = time.monotonic() - w0
                polls = _count(db) - n0
                mem = procs.memory_mb(daemon.pid)
            finally:
                procs.stop(daemon)
        if daemon.returncode != 0:
            raise RuntimeError((tmp / "daemon.log").read_text()[-2000:])
        return {
            "check_interval_s": interval_s,
            "polls": polls,
            "cpu_ms_per_poll": round(cpu / max(polls, 1) * 1000, 3),
            "cpu_percent_of_one_core": round(cpu / wall * 100, 2),
            **mem,
        }
    finally:
        procs.stop(emu)
        for f in tmp.iterdir():
            f.unlink()
        tmp.rmdir()


def _count(db: Path) -> int:
    import sqlite3

    conn = sqlite3.connect(db)
    try:
        return conn.execute("SELECT count(*) FROM readings").fetchone()[0]
    finally:
        conn.close()


def run(polls: int = 5000, seconds: float = 40.0) -> dict:
    procs.log("poll: decision + insert in process")
    inproc = in_process(polls)
    procs.log(f"poll: one-device daemon process for {seconds:g} s (twice)")
    proc = daemon_process(seconds)
    lean = daemon_process(seconds, stub_sqlite_utils=True)
    return {
        "decision_and_insert": inproc,
        "daemon_process": proc,
        "daemon_process_without_sqlite_utils": {
            k: lean[k] for k in ("rss_mb", "peak_rss_mb", "cpu_ms_per_poll")
        },
    }


if __name__ == "__main__":
    print(json.dumps(run(int(sys.argv[1]) if len(sys.argv) > 1 else 5000), indent=2))
