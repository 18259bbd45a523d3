"""`tempctl demo`: a fake Bitaxe in a heat wave, the real daemon guarding it, Datasette on the log.

Everything runs on loopback with no configuration: the emulator (a thread), the daemon
(``Daemon.run`` on a thread, settings from ``load_settings(environ={})`` so nothing from
the user's environment or /etc leaks in) and Datasette (``tempctl ui`` machinery, a child
process). The main thread shows a one-line status and, at the end, a summary from the log.

Compressed time: the emulator runs the ``heatwave`` scenario ``DEFAULT_SCALE`` times faster
than real time, from hour ``START_HOURS`` (ambient 28 °C, just before the rise to 38 °C).
The scenario is repeated day after day: its last point is 30 °C, where 550 MHz sits at
61.6 °C, above the 61 °C a restore step needs (TEMP_THRESHOLD 63 − hysteresis 2), so only
the next morning's 28 °C lets the last step to MAX_FREQUENCY happen. At scale 2000 one
real second is 33 plant minutes and the plant's time constants (48 s, tempctl/plant.py)
are over within a poll, so the daemon's own timings are compressed to match: polls every
0.5 s, settle 0.09 s (180 s of plant time: the daemon's time scale is the plant's), a 3 s
stable window. Measured timeline (scale 2000): throttle at ~3 s,
THROTTLED_2 at ~6 s, RECOVERING at ~10.5 s, NORMAL at ~26.5 s, the next day's throttle at ~47 s.
"""

from __future__ import annotations

import dataclasses
import logging
import signal
import socket
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TextIO

from tempctl.config import Settings, load_settings

SCENARIO = "heatwave"
DEFAULT_SCALE = 2000.0
START_HOURS = 1.5  # 28 °C; the die passes 63 °C at ~hour 3 (replay/scenarios/heatwave.toml)
# Real seconds at DEFAULT_SCALE; another --scale stretches them in proportion.
CHECK_INTERVAL_S = 0.5
SETTLE_S = 180.0 / DEFAULT_SCALE  # 180 s of plant time: the daemon takes its time scale from
# TEMPCTL_SETTLE / 180 s, and judges rates by it (a room warming 11x faster than any room
# read as "cooling got worse" at settle 1 s)
STABLE_S = 3.0
MIN_CHECK_INTERVAL_S = 0.2  # the daemon's lower bound (config.py)
DEFAULT_DB = "tempctl-demo.db"
UI_HOST = "127.0.0.1"
UI_READY_TIMEOUT_S = 30.0
REFRESH_S = 0.25


class DemoError(Exception):
    """The demo cannot start (bad --db, port trouble, Datasette did not come up)."""


@dataclass(frozen=True)
class Timing:
    scale: float
    check_interval: float
    settle: float
    stable_s: float

    @classmethod
    def for_scale(cls, scale: float = DEFAULT_SCALE) -> Timing:
        k = DEFAULT_SCALE / scale
        return cls(
            scale, max(MIN_CHECK_INTERVAL_S, CHECK_INTERVAL_S * k), SETTLE_S * k, STABLE_S * k
        )


def default_db_path(directory: Path | None = None) -> Path:
    """tempctl-demo.db in ``directory`` (the cwd), or tempctl-demo-N.db when that exists.

    A fresh file per demo keeps each run's story (and Datasette's charts) on its own.
    """
    base = Path(directory or Path.cwd())
    path = base / DEFAULT_DB
    n = 2
    while path.exists():
        path = base / f"tempctl-demo-{n}.db"
        n += 1
    return path


def demo_settings(
    device_url: str, db: Path, timing: Timing, no_config: Path, mqtt_url: str = ""
) -> Settings:
    """The daemon's settings: defaults for the thresholds, compressed timings, nothing else.

    ``environ={}`` and a ``default_config`` that does not exist keep the user's
    environment and /etc/tempctl/tempctl.toml out of the demo.
    """
    flags = {
        "devices": device_url,
        "db": str(db),
        "check_interval": timing.check_interval,
        "settle": timing.settle,
        "stable_timeframe": timing.stable_s / 3600.0,
        "log_level": "WARNING",
        "mqtt_url": mqtt_url,
    }
    return load_settings(flags, environ={}, default_config=str(no_config))


def free_port(host: str = UI_HOST) -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def port_is_free(port: int, host: str = UI_HOST) -> bool:
    with socket.socket() as s:
        try:
            s.bind((host, port))
        except OSError:
            return False
    return True


# --- reading the log (a read-only connection: the daemon thread is the writer) -----------


def connect_ro(db: Path) -> sqlite3.Connection:
    return sqlite3.connect(f"file:{db}?mode=ro", uri=True, check_same_thread=False)


@dataclass(frozen=True)
class Status:
    state: str | None
    since_ms: int | None
    frequency: float | None
    temp: float | None
    reading_ms: int | None


def read_status(conn: sqlite3.Connection, run_id: int) -> Status:
    t = conn.execute(
        "SELECT to_state, ts_ms, frequency FROM transitions WHERE run_id = ? "
        "ORDER BY id DESC LIMIT 1",
        (run_id,),
    ).fetchone()
    since = None
    if t is not None:
        # "Time in state" counts from the change into it, not from a RECOVERING step.
        row = conn.execute(
            "SELECT max(ts_ms) FROM transitions WHERE run_id = ? AND "
            "to_state = ? AND from_state != to_state",
            (run_id, t[0]),
        ).fetchone()
        since = row[0] if row and row[0] is not None else t[1]
    r = conn.execute(
        "SELECT temp, frequency, ts_ms FROM readings WHERE run_id = ? ORDER BY id DESC LIMIT 1",
        (run_id,),
    ).fetchone()
    return Status(
        t[0] if t else None,
        since,
        t[2] if t else (r[1] if r else None),
        r[0] if r else None,
        r[2] if r else None,
    )


def summarize(conn: sqlite3.Connection, run_id: int, end_ms: int) -> dict:
    """Transitions of this run and the time spent in each state (s), from the log."""
    start = conn.execute("SELECT ts_ms FROM runs WHERE id = ?", (run_id,)).fetchone()[0]
    rows = conn.execute(
        "SELECT ts_ms, from_state, to_state, frequency, temp, reason "
        "FROM transitions WHERE run_id = ? ORDER BY ts_ms, id",
        (run_id,),
    ).fetchall()
    changes = [
        {
            "t_s": (ts - start) / 1000,
            "from_state": a,
            "to_state": b,
            "frequency": f,
            "temp": t,
            "reason": why,
        }
        for ts, a, b, f, t, why in rows
        if a != b
    ]
    steps = sum(1 for _, a, b, *_ in rows if a == b == "RECOVERING")
    time_in: dict[str, float] = {}
    for (ts, _, state, *_), nxt in zip(rows, [r[0] for r in rows[1:]] + [end_ms]):
        time_in[state] = time_in.get(state, 0.0) + max(0, nxt - ts) / 1000
    return {
        "run_id": run_id,
        "duration_s": (end_ms - start) / 1000,
        "changes": changes,
        "restore_steps": steps,
        "time_in_state": time_in,
    }


def format_summary(summary: dict, db: Path) -> str:
    lines = [f"\nSummary ({summary['duration_s']:.0f} s):"]
    if summary["changes"]:
        lines.append("  transitions:")
        for c in summary["changes"]:
            temp = f", {c['temp']:.1f} °C" if c["temp"] is not None else ""
            lines.append(
                f"    {c['t_s']:6.1f} s  {c['from_state']} -> {c['to_state']} at "
                f"{c['frequency']:g} MHz ({c['reason']}{temp})"
            )
    else:
        lines.append("  no state changes (run longer: the first throttle comes after ~3 s)")
    if summary["restore_steps"]:
        lines.append(f"  restore steps while RECOVERING: {summary['restore_steps']}")
    if summary["time_in_state"]:
        spent = ", ".join(
            f"{state} {s:.1f} s"
            for state, s in sorted(summary["time_in_state"].items(), key=lambda kv: -kv[1])
        )
        lines.append(f"  time in state: {spent}")
    lines.append(f"  log: {db}")
    lines.append(f"  browse it: tempctl ui --db {db}")
    lines.append(f"  or:        tempctl status --db {db}")
    return "\n".join(lines)


# --- the live status line ----------------------------------------------------------------------


class StatusLine:
    """``\\r``-rewritten on a terminal; one line per state or frequency change otherwise."""

    def __init__(self, out: TextIO, tty: bool):
        self.out, self.tty = out, tty
        self._last_key: tuple | None = None
        self._width = 0

    def show(self, s: Status, hour: float, ambient: float, now_ms: int) -> None:
        day, minutes = divmod(int(hour * 60), 24 * 60)
        clock = f"day {day + 1} {minutes // 60:02d}:{minutes % 60:02d} air {ambient:4.1f} °C"
        if s.state is None:
            text = f"{clock} | waiting for the first reading..."
        else:
            in_state = (now_ms - s.since_ms) / 1000 if s.since_ms is not None else 0.0
            temp = f"ASIC {s.temp:5.1f} °C" if s.temp is not None else "ASIC   no temp"
            freq = f"{s.frequency:g} MHz" if s.frequency is not None else "? MHz"
            text = f"{clock} | {s.state:<11} {in_state:5.1f} s | {temp} | {freq}"
        key = (s.state, s.frequency)
        changed = key != self._last_key
        self._last_key = key
        if self.tty:
            # A change keeps the previous line on screen, so the story scrolls by.
            if changed and self._width:
                self.out.write("\n")
                self._width = 0
            self.out.write("\r" + text + " " * max(0, self._width - len(text)))
            self._width = len(text)
        elif changed:
            self.out.write(text + "\n")
        else:
            return
        self.out.flush()

    def end(self) -> None:
        if self.tty and self._width:
            self.out.write("\n")
            self.out.flush()


# --- running it -------------------------------------------------------------------------------


@dataclass
class _DaemonThread:
    thread: threading.Thread
    error: BaseException | None = None


def _start_daemon(settings: Settings, log_, stop: threading.Event, bridge=None) -> _DaemonThread:
    from tempctl.daemon.loop import Daemon
    from tempctl.daemon.notify import Notifier

    box = _DaemonThread(threading.Thread())
    extra = {"observers": [bridge], "maintenance": [(0.0, bridge.maintain)]} if bridge else {}

    def target() -> None:
        try:
            # Notifier(environ={}): a demo started from a systemd unit must not speak for it.
            daemon = Daemon(
                settings, eventlog=log_, notifier=Notifier(environ={}), stop=stop, **extra
            )
            if bridge is not None:
                bridge.attach(daemon)
                bridge.start()
            daemon.run()
        except Exception as exc:  # noqa: BLE001 - any failure is reported by the main thread
            box.error = exc
            stop.set()

    box.thread = threading.Thread(target=target, name="tempctl-demo-daemon", daemon=True)
    box.thread.start()
    return box


def _start_ui(db: Path, port: int, out: TextIO, output):
    """Datasette as a child process (``tempctl ui`` machinery); returns (process, base URL).

    Its own log lines go to ``output`` (a scratch file) so they don't break the status line;
    they are shown when it fails to start.
    """
    from tempctl.ui import server as ui

    if port == 0 or not port_is_free(port):
        if port:
            out.write(f"  (port {port} is busy; Datasette gets a free port instead)\n")
        port = free_port()
    url = ui.base_url(UI_HOST, port)
    proc = ui.start_ui(db, UI_HOST, port, stdout=output, stderr=subprocess.STDOUT)
    try:
        ui.wait_until_ready(url, proc, UI_READY_TIMEOUT_S)
    except ui.UIError as exc:
        ui.stop_ui(proc)
        output.seek(0)
        tail = output.read().decode(errors="replace")[-2000:]
        raise DemoError(f"{exc}\n{tail}".rstrip()) from None
    return proc, url


def _dashboard_path() -> str:
    from tempctl.ui.server import DASHBOARD_PATH

    return DASHBOARD_PATH


def run_demo(
    *,
    db: Path | None = None,
    duration: float | None = None,
    port_ui: int = 8001,
    scale: float = DEFAULT_SCALE,
    ui: bool = True,
    out: TextIO | None = None,
    tty: bool | None = None,
    stop: threading.Event | None = None,
    handle_signals: bool = True,
    mqtt_url: str = "",
) -> int:
    """Run the demo until ``duration`` seconds passed, ``stop`` is set, or SIGINT/SIGTERM.

    Returns the exit status: 0 after a clean run, 1 when the daemon thread failed.
    Raises DemoError when something cannot start. ``mqtt_url``: also publish the miner to
    Home Assistant through that broker (TEMPCTL_MQTT_URL's form).
    """
    from tempctl.config import ConfigError
    from tempctl.sim.emulator import Emulator
    from tempctl.sim.scenario import load_scenario
    from tempctl.store.eventlog import Log, LogError

    out = out or sys.stdout
    tty = out.isatty() if tty is None else tty
    stop = stop or threading.Event()
    timing = Timing.for_scale(scale)
    db = Path(db) if db is not None else default_db_path()
    try:
        log_ = Log(db)  # refuses a file that is not a tempctl log
    except LogError as exc:
        raise DemoError(str(exc)) from None

    previous = {}
    if handle_signals:
        for sig in (signal.SIGINT, signal.SIGTERM):
            previous[sig] = signal.signal(sig, lambda *_: stop.set())
    logging.basicConfig(
        level=logging.WARNING, format="%(levelname)s %(message)s", stream=sys.stderr
    )
    # Repeat the day so that the 28 °C morning after the heat wave allows MAX again.
    scenario = dataclasses.replace(load_scenario(SCENARIO), repeat=True)
    emu = Emulator(
        scenario, host="127.0.0.1", port=0, scale=timing.scale, seed=0, start_hours=START_HOURS
    )
    daemon = ui_proc = ui_url = run_id = bridge = None
    with tempfile.TemporaryFile() as ui_output:
        try:
            # Datasette first (it takes a couple of seconds), so the story starts once
            # everything is up and --duration is all story.
            if ui:
                ui_proc, ui_url = _start_ui(db, port_ui, out, ui_output)
            emu.start()
            with tempfile.TemporaryDirectory(prefix="tempctl-demo-") as scratch:
                try:
                    settings = demo_settings(
                        emu.urls[0], db, timing, Path(scratch) / "no-config.toml", mqtt_url
                    )
                except ConfigError as exc:
                    raise DemoError(str(exc).replace("TEMPCTL_MQTT_URL", "--mqtt")) from None
            if settings.mqtt_url:
                from tempctl.mqtt.bridge import bridge_from_settings

                bridge = bridge_from_settings(settings)
            daemon = _start_daemon(settings, log_, stop, bridge)
            run_id = _wait_for_run(log_, daemon)
            _print_header(out, emu, timing, settings, db, ui_url)
            if bridge is not None:
                _print_mqtt(out, bridge, settings)
            out.write(
                "Ctrl-C stops everything.\n\n"
                if duration is None
                else f"Stopping after {duration:g} s (Ctrl-C stops earlier).\n\n"
            )
            out.flush()
            _watch(db, run_id, emu, scenario, duration, stop, StatusLine(out, tty), ui_proc)
        finally:
            stop.set()
            if daemon is not None:
                daemon.thread.join(timeout=15)
            if bridge is not None:
                bridge.close()
            emu.stop()
            if ui_proc is not None:
                from tempctl.ui.server import stop_ui

                stop_ui(ui_proc)
            for sig, handler in previous.items():
                signal.signal(sig, handler)
            # The summary reads through the daemon's (writer) connection once its thread
            # is done, so closing it checkpoints the WAL and leaves a single file behind.
            if run_id is not None and not daemon.thread.is_alive():
                summary = summarize(log_.conn, run_id, int(time.time() * 1000))
                out.write(format_summary(summary, db) + "\n")
                out.flush()
            log_.close()
    if daemon.error is not None:
        print(f"Error: the daemon stopped: {daemon.error!r}", file=sys.stderr)
        return 1
    return 0


def _print_header(
    out: TextIO, emu, timing: Timing, settings: Settings, db: Path, ui_url: str | None
) -> None:
    out.write(
        f"tempctl demo: a Bitaxe Gamma in a heat wave, {timing.scale:g}x faster than real time\n"
    )
    out.write(f"  emulated miner  {emu.urls[0]}/api/system/info\n")
    if ui_url is not None:
        out.write(f"  Datasette       {ui_url}/\n")
        out.write(f"  dashboard       {ui_url}{_dashboard_path()}\n")
    out.write(f"  log             {db}\n")
    out.write(
        f"  thresholds      TEMP_THRESHOLD {settings.temp_threshold:g} °C, "
        f"MAX_FREQUENCY {settings.max_frequency:g} MHz (the defaults)\n"
    )
    out.write(
        f"  timing          polls every {timing.check_interval:.3g} s, settle "
        f"{timing.settle:.3g} s, stable window {timing.stable_s:.3g} s\n"
    )


def _print_mqtt(out: TextIO, bridge, settings: Settings) -> None:
    t = bridge.topics
    name = settings.devices[0].name
    out.write(f"  MQTT broker     {bridge.where} (Home Assistant discovery under {t.discovery}/)\n")
    out.write(f"  entities        {t.state(name)} (state), {t.available(name)}, {t.status}\n")
    out.write(
        "                  in Home Assistant: Settings > Devices > MQTT: a device per miner "
        "and one for tempctl\n"
    )


def _wait_for_run(log_, daemon: _DaemonThread) -> int:
    """The id of the run the daemon thread starts (``Log.start_run`` is its first write)."""
    deadline = time.monotonic() + 15
    while log_.run_id is None:
        if daemon.error is not None:
            raise DemoError(f"the daemon did not start: {daemon.error!r}")
        if time.monotonic() > deadline or not daemon.thread.is_alive():
            raise DemoError("the daemon did not start within 15 s")
        time.sleep(0.02)
    return log_.run_id


def _watch(db, run_id, emu, scenario, duration, stop, line, ui_proc) -> None:
    conn = connect_ro(db)
    t0 = time.monotonic()
    try:
        while not stop.wait(REFRESH_S):
            plant_s = emu.device_time()
            line.show(
                read_status(conn, run_id),
                plant_s / 3600,
                scenario.ambient(plant_s),
                int(time.time() * 1000),
            )
            if duration is not None and time.monotonic() - t0 >= duration:
                break
            if ui_proc is not None and ui_proc.poll() is not None:
                line.end()
                print(
                    f"Datasette exited (status {ui_proc.returncode}); the demo goes on",
                    file=sys.stderr,
                )
                ui_proc = None
    finally:
        line.end()
        conn.close()
