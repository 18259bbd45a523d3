"""The daemon loop: poll every device on one monotonic schedule, log, decide, act.

I/O lives here and only here: HTTP (axeos.Client, on worker threads), SQLite
(store.eventlog.Log through store.writer.Writer, on this thread only: one writer, which
never waits long for a locked database), the clock and sd_notify, all injected. The
decisions come from controller.Controller, the same object replay and simulation drive.

Per poll of a device: the reading is appended; the controller judges it (the
stable-window check is a SQL query on the log); the decision (transition,
events, command intents) is committed; only then are commands sent, on the
device's worker, and their outcomes appended when they finish.

Requests run in lanes (daemon/lanes.py): a device whose polls got no answer within
the request deadline twice in a row is polled in a bounded probe lane until it
answers again, so devices that answer never wait for a thread behind ones that don't.
"""

from __future__ import annotations

import logging
import queue
import threading
from collections.abc import Callable
from concurrent.futures import Future, wait
from dataclasses import dataclass

from tempctl.config import config_dict
from tempctl.core import powercap
from tempctl.core.clock import ANCHOR_MAX_AHEAD_MS, SystemClock, anchor
from tempctl.core.controller import Command, Controller, Decision, Limits
from tempctl.core.decision import Outcome
from tempctl.core.driver import Driver
from tempctl.core.reading import Reading
from tempctl.daemon.lanes import PROBE_AFTER, Lanes, room_for_sockets
from tempctl.daemon.notify import Notifier
from tempctl.device import (
    AxeOSError,
    Client,
    Timeout,
    parse_statistics,
    password_from,
    reading_capabilities,
)
from tempctl.store.eventlog import Log
from tempctl.store.writer import Writer

logger = logging.getLogger("tempctl")

STOP_GRACE_S = 3.0  # a command in flight at SIGTERM may finish for this long (exit within 5 s)
POLL_SPREAD = 0.5  # a tick's polls start spread over this fraction of CHECK_INTERVAL
INTERRUPTED = "interrupted: tempctl stopped before the device answered (applied or not unknown)"


@dataclass
class Device:
    name: str
    url: str
    limits: Limits
    client: object
    driver: Driver
    busy: Future | None = None
    polls: int = 0
    missed: int = 0
    errors: int = 0
    last_error: str | None = None
    last_reading: Reading | None = None
    lateness_s: float | None = None  # how late the last poll started after its slot
    unresponsive: bool = False  # its last poll got no answer in time
    timeouts: int = 0  # polls in a row without an answer in time (PROBE_AFTER: probe lane)

    @property
    def controller(self) -> Controller:
        return self.driver.controller


class Daemon:
    def __init__(
        self,
        settings,
        *,
        eventlog: Log,
        clock=None,
        client_factory: Callable | None = None,
        notifier: Notifier | None = None,
        stop: threading.Event | None = None,
        observers: list | None = None,
        maintenance: list | None = None,
    ):
        self.settings = settings
        self.eventlog = eventlog
        self.anchor_note: str | None = None
        if clock is None:
            clock = SystemClock()
        if isinstance(clock, SystemClock):
            # Stamps continue after the log's rows, unless those are far in the future.
            wall = clock.wall_ms()
            last = eventlog.last_ts()
            bound = wall + ANCHOR_MAX_AHEAD_MS
            plausible = eventlog.last_ts(at_most=bound) if last and last > bound else last
            not_before, self.anchor_note = anchor(wall, last, plausible)
            if not_before is not None:
                clock.start_after(not_before)
        self.clock = clock
        self.notifier = notifier or Notifier(environ={})
        watchdog = self.notifier.watchdog_s
        self.wake_s = min(1.0, watchdog / 4) if watchdog else 1.0
        self.stop = stop or threading.Event()
        self.interval = float(settings.check_interval)
        # The one writer: never waits long for the database (store/writer.py).
        self.writer = Writer(eventlog, monotonic=self.clock.monotonic)
        self.sending: dict[Future, list[tuple[int, Command]]] = {}  # command jobs in flight
        self.in_flight = 0  # requests still running when the stop grace ran out
        # Observers (metrics, alerts) see every reading and command outcome; they must
        # not block. Maintenance jobs (retention) run on the loop: [(period_s, fn(log, now_ms))].
        self.observers = observers or []
        self.maintenance = [[period, fn, None] for period, fn in (maintenance or [])]
        self._skew_reported = 0
        self.devices: list[Device] = []
        if client_factory is None:
            # One retry at most, and a read timeout within the poll interval (3-5 s on a
            # real device: its single-threaded server can be busy, axeos-api.md §11.5).
            timeout = min(5.0, max(1.0, 0.8 * self.interval))
            # The device password (TEMPCTL_DEVICE_PASSWORD_FILE, per device) is read here,
            # once; it is never logged.
            per_url = {d.url: settings.for_device(d).device_password_file for d in settings.devices}
            client_factory = lambda url: Client(  # noqa: E731
                url, read_timeout=timeout, retries=1, password=password_from(per_url.get(url))
            )
        for dev in settings.devices:
            s = settings.for_device(dev)
            limits = Limits.from_settings(s)
            snap = eventlog.restore(dev.name)  # future stamps: Controller._clip_future
            driver = Driver(Controller(limits, dev.name, snapshot=snap), reading_capabilities)
            self.devices.append(Device(dev.name, dev.url, limits, client_factory(dev.url), driver))
        self.lanes = Lanes(len(self.devices))
        self._finished: queue.SimpleQueue[Future] = queue.SimpleQueue()  # jobs done, in order
        room_for_sockets(len(self.devices))

    # -- the loop ------------------------------------------------------------

    def run(self, max_polls: int | None = None) -> int:
        s = self.settings
        now = self.clock.now_ms()
        self._write([self.eventlog.run_op(config_dict(s), dict(s.sources), ts_ms=now)])
        if self.anchor_note:
            logger.warning("clock: %s", self.anchor_note)
            op = self.eventlog.event_op(
                None, now, "clock", self.anchor_note, level="warning", origin="daemon"
            )
            self._write([op])
        for d in self.devices:
            snap = d.controller.snapshot() if d.controller.restored else None
            msg = (
                f"restored {snap.state.value} at {snap.frequency:g} MHz"
                if snap
                else "no history for this device"
            )
            self._write(
                [self.eventlog.event_op(d.name, now, "log", f"start: {msg}", origin="daemon")]
            )
            logger.info("%s: %s (%s)", d.name, msg, d.url)
        self._backfill(now)
        self.notifier.ready(self._status_line())
        logger.info(
            "tempctl running: %d device(s), every %g s%s",
            len(self.devices),
            self.interval,
            " (dry run: nothing is written to devices)" if s.dry_run else "",
        )
        pending: set[Future] = set()
        next_tick = self.clock.monotonic()
        ticks = 0
        # A tick's polls start in slots spread over part of the interval, not all at
        # once: no burst of N requests, threads and commits, and each starts on time.
        step = self.interval * POLL_SPREAD / max(1, len(self.devices))
        due: list[tuple[float, Device]] = []  # this tick's polls not started yet, latest first
        while not self.stop.is_set():
            mono = self.clock.monotonic()
            if mono >= next_tick:
                if max_polls is not None and ticks >= max_polls:
                    break
                ticks += 1
                self._check_clock()
                for _, d in due:
                    d.missed += 1  # the loop itself fell a whole interval behind
                due = [(next_tick + i * step, d) for i, d in enumerate(self.devices)][::-1]
                next_tick += self.interval
                if next_tick <= mono:  # we fell behind (suspend, overload): skip, don't burst
                    behind = int((mono - next_tick) // self.interval) + 1
                    next_tick += behind * self.interval
                    for d in self.devices:
                        d.missed += behind  # whole ticks skipped: no device was polled
            while due and due[-1][0] <= mono:
                slot, d = due.pop()
                if d.busy is not None and not d.busy.done():
                    d.missed += 1  # a slow device never delays the others
                elif d.timeouts >= PROBE_AFTER:
                    if not self.lanes.queue(d):
                        d.missed += 1  # still waiting for its probe
                else:
                    d.busy = self._track(self.lanes.submit(self._poll, d, slot), pending)
            for d, fut in self.lanes.start_probes(self._poll):
                d.lateness_s = None  # a probe keeps no schedule
                d.busy = self._track(fut, pending)
            # Wake for the next slot or tick, at least every second, and often enough
            # for a short WatchdogSec.
            wake = min(next_tick, due[-1][0]) if due else next_tick
            timeout = min(max(0.0, wake - self.clock.monotonic()), self.wake_s)
            if pending:
                self._collect(pending, timeout, due)
            else:
                self.clock.wait(timeout, self.stop)
            self._maintain()
            self.notifier.ping()
        self._shutdown(pending)
        return 0

    def _track(self, fut: Future, pending: set[Future]) -> Future:
        pending.add(fut)
        fut.add_done_callback(self._finished.put)
        return fut

    def _collect(self, pending: set[Future], timeout: float, due: list) -> None:
        """Handle finished jobs: wait up to ``timeout`` for the first, then take the rest
        while no poll is due (a burst of answers must not hold back the next slot).

        Finished jobs come through a queue: waiting on hundreds of pending futures (hung
        devices) at every turn of the loop would cost the loop more than the polls."""
        try:
            fut = self._finished.get(timeout=timeout)
        except queue.Empty:
            return
        while True:
            pending.discard(fut)
            self.sending.pop(fut, None)
            self.lanes.finished(fut)
            for new in self._handle(fut.result()):
                self._track(new, pending)
            if due and due[-1][0] <= self.clock.monotonic():
                return
            try:
                fut = self._finished.get_nowait()
            except queue.Empty:
                return

    def _maintain(self) -> None:
        mono = self.clock.monotonic()
        for job in self.maintenance:
            period, fn, last = job
            if last is None or mono - last >= period:
                job[2] = mono
                try:
                    fn(self.eventlog, self.clock.now_ms())
                except Exception:  # maintenance must never stop control
                    logger.exception("maintenance job %s failed", getattr(fn, "__name__", fn))

    def _backfill(self, now: int) -> None:
        """Fill the gap since the last logged reading from the device's statistics ring.

        Firmware v2.8+ keeps up to 720 samples when statsFrequency > 0 (axeos-api.md §8).
        Backfilled rows only feed the stable window and Datasette; the law never steps on
        them. When the device has nothing, the gap is recorded as a gap.
        """
        gaps: list[tuple[Device, int]] = []
        for d in self.devices:
            row = self.eventlog.conn.execute(
                "SELECT max(ts_ms) FROM readings WHERE device = ?", (d.name,)
            ).fetchone()
            last = row[0]
            if last is not None and now - last > d.limits.gap_ms:
                gaps.append((d, last))
        # All at once, each on its own thread: a hung device holds up the start by one
        # request deadline, not one per device.
        asked = [(d, last, self.lanes.submit(_statistics, d.client)) for d, last in gaps]
        for d, last, fut in asked:
            rows: list[Reading] = []
            body, exc = fut.result()
            try:
                if body:
                    rows = [
                        r
                        for r in parse_statistics(body, d.name, self.clock.now_ms(), None)
                        if last < r.ts_ms <= now
                    ]
            except AxeOSError as bad:
                exc = bad
            if exc is not None:
                logger.info("%s: no statistics to backfill the gap (%s)", d.name, exc)
                if isinstance(exc, Timeout):
                    self._lane(d, False, now)
            gap = f"{(now - last) / 1000:.0f} s without readings"
            if rows:
                msg = f"backfilled {len(rows)} readings from the device's statistics ({gap})"
                ops = [self.eventlog.reading_op(r) for r in sorted(rows, key=lambda r: r.ts_ms)]
            else:
                msg = f"gap in the log: {gap} and nothing to backfill"
                ops = []
            ops.append(
                self.eventlog.event_op(
                    d.name, now, "gap", msg, origin="daemon", level="info" if rows else "warning"
                )
            )
            self._write(ops)
            logger.info("%s: %s", d.name, msg)

    def _shutdown(self, pending: set[Future]) -> None:
        self.notifier.stopping()
        # Finish what is in flight (a PATCH must get its outcome logged), briefly.
        done, not_done = wait(pending, timeout=STOP_GRACE_S)
        for fut in done:
            res = fut.result()
            if res[0] == "results":
                self._handle(res)
        now = self.clock.now_ms()
        ops = []
        for fut in not_done:
            fut.cancel()
            # A command still unanswered gets an outcome row all the same: whether the
            # device applied it is unknown; the next start reconciles with what it reports.
            for cid, _ in self.sending.get(fut, []):
                ops.append(self.eventlog.result_op(cid, now, "failed", error=INTERRUPTED))
        self.in_flight = sum(not fut.done() for fut in not_done)
        ops.append(self.eventlog.event_op(None, now, "log", "stop", origin="daemon"))
        self.writer.write(ops)
        if self.writer.backlog:  # a last try, with a wait that still exits within 5 s
            self.writer.set_busy_timeout(1.0)
            self.writer.flush()
        self.lanes.shutdown()
        if self.writer.backlog:
            logger.error(
                "%d log statements could not be written: %s",
                self.writer.pending,
                self.writer.error,
            )
        polls = ", ".join(f"{d.name}={d.polls}" for d in self.devices)
        logger.info("tempctl stopped (polls: %s)", polls)

    # -- worker side (threads): HTTP only ----------------------------------------

    def _poll(self, d: Device, slot: float | None = None):
        if slot is not None:
            d.lateness_s = self.clock.monotonic() - slot  # for metrics and benchmarks
        answered = True
        try:
            ts = self.clock.now_ms()
            reading = d.client.read(d.name, ts)
        except AxeOSError as exc:
            reading = Reading(d.name, self.clock.now_ms(), error=f"{exc.kind}: {exc}")
            answered = not isinstance(exc, Timeout)
        return ("reading", d, reading, answered)

    def _send(self, d: Device, jobs: list[tuple[int, Command]]):
        return ("results", d, d.driver.carry_out(jobs, d.client))

    # -- main thread: SQLite and the controller ----------------------------------

    def _handle(self, res) -> set[Future]:
        if res[0] == "reading":
            _, d, reading, answered = res
            self._lane(d, answered, reading.ts_ms)
            return self._on_reading(d, reading)
        _, d, outcomes = res
        self._on_results(d, outcomes)
        return set()

    def _lane(self, d: Device, answered: bool, ts: int) -> None:
        """Move a device between lanes, with one log line each way."""
        d.timeouts = 0 if answered else d.timeouts + 1
        if answered == (not d.unresponsive):
            return
        d.unresponsive = not answered
        if d.unresponsive:
            level, msg = (
                "warning",
                f"unresponsive: no answer within {self._deadline_s(d)}; from {PROBE_AFTER} "
                "in a row, polled in the probe lane (up to "
                f"{self.lanes.probe_workers} at a time) until it answers",
            )
        else:
            level, msg = "info", "answers again: back on its schedule"
        logger.log(logging.WARNING if d.unresponsive else logging.INFO, "%s: %s", d.name, msg)
        self._write([self.eventlog.event_op(d.name, ts, "log", msg, level=level, origin="daemon")])

    @staticmethod
    def _deadline_s(d: Device) -> str:
        deadline = getattr(d.client, "deadline_s", None)
        return f"the {deadline:g} s deadline" if deadline else "the deadline"

    def _on_reading(self, d: Device, r: Reading) -> set[Future]:
        d.polls += 1
        d.last_reading = r
        if r.error and not r.valid:
            d.errors += 1
            if d.last_error != r.error:
                logger.warning("%s: %s", d.name, r.error)
            d.last_error = r.error
        else:
            d.last_error = None
            logger.debug(
                "%s: %s °C vr %s °C %s MHz %s GH/s",
                d.name,
                r.temp,
                r.vr_temp,
                r.frequency,
                r.hashrate,
            )
        self._write([self.eventlog.reading_op(r)])
        if self.settings.power_budget > 0:
            self._share(d, r.ts_ms)
        decision = d.driver.step(r, window=lambda: self.eventlog.window(d.name, r.ts_ms, d.limits))
        for obs in self.observers:
            obs.on_reading(d, r, decision)
        return self._act(d, r.ts_ms, decision)

    def _share(self, d: Device, ts: int) -> None:
        """TEMPCTL_POWER_BUDGET: this device's share, logged at its reading (replay feeds it
        back at the same one); the allocation itself is pure (core/powercap.py)."""
        budget = self.settings.power_budget
        new = powercap.reallocate({x.name: x.controller for x in self.devices}, budget).get(d.name)
        if new is None:
            return
        ev = powercap.share_event(d.controller.power_share, new, budget)
        powercap.set_share(d.controller, new)
        self._act(d, ts, Decision(events=[ev]))

    def _act(self, d: Device, ts: int, decision: Decision) -> set[Future]:
        if not decision:
            return set()
        ops, jobs = self.eventlog.decision_ops(d.name, ts, decision)
        self._write(ops)  # intents are committed before anything is sent
        _log_decision(d.name, decision)
        if not jobs:
            return set()
        known = d.driver.preset(jobs)
        if known is not None:
            self._on_results(d, known)
            return set()
        fut = self.lanes.submit(self._send, d, jobs)
        self.sending[fut] = jobs
        d.busy = fut
        return {fut}

    def _on_results(self, d: Device, outcomes: list[Outcome]) -> None:
        now = self.clock.now_ms()
        ops = []
        for o in outcomes:
            latency = None if o.latency_s is None else o.latency_s * 1000
            ops.append(
                self.eventlog.result_op(
                    o.command_id, now, o.outcome, status=o.status, error=o.error, latency_ms=latency
                )
            )
            cmd = o.command
            logger.log(
                logging.INFO if o.ok else logging.WARNING,
                "%s: %s %s -> %s%s",
                d.name,
                cmd.kind,
                f"{cmd.frequency:g} MHz" if cmd.frequency else "",
                o.outcome,
                f" ({o.error})" if o.error else "",
            )
            for obs in self.observers:
                obs.on_result(d, cmd, o.outcome, o.error)
        follow = d.driver.results(outcomes, now)
        if follow:
            f_ops, _ = self.eventlog.decision_ops(d.name, now, follow)
            ops.extend(f_ops)
            _log_decision(d.name, follow)
        self._write(ops)

    def _write(self, ops: list[tuple[str, tuple]]) -> None:
        """Append, or keep for later when the database refuses (locked, disk full)."""
        self.writer.write(ops)

    def _check_clock(self) -> None:
        skew = self.clock.skew_ms()
        if abs(skew - self._skew_reported) > 2000:
            self._skew_reported = skew
            msg = (
                f"wall clock moved {skew / 1000:+.1f} s from the monotonic schedule; "
                "timestamps keep the monotonic timeline until restart"
            )
            logger.warning(msg)
            self._write(
                [
                    self.eventlog.event_op(
                        None, self.clock.now_ms(), "clock", msg, level="warning", origin="daemon"
                    )
                ]
            )

    def _status_line(self) -> str:
        parts = []
        for d in self.devices:
            r = d.last_reading
            temp = f"{r.temp:.1f}°C" if r is not None and r.temp is not None else "?°C"
            parts.append(
                f"{d.name} {d.controller.current.value} {d.controller.frequency:g}MHz {temp}"
            )
        return "; ".join(parts)


def _statistics(client) -> tuple[dict | None, AxeOSError | None]:
    try:
        return client.fetch_statistics(), None
    except AxeOSError as exc:
        return None, exc


def _log_decision(device: str, decision: Decision) -> None:
    t = decision.transition
    if t is not None:
        logger.info(
            "%s: %s -> %s at %s MHz (%s)",
            device,
            t.from_state,
            t.to_state,
            f"{t.frequency:g}" if t.frequency is not None else "?",
            t.reason,
        )
    for e in decision.events:
        level = {"alarm": logging.ERROR, "warning": logging.WARNING}.get(e.level, logging.INFO)
        logger.log(level, "%s: %s", device, e.message)
    for c in decision.commands:
        logger.info(
            "%s: command %s %s (%s)",
            device,
            c.kind,
            f"{c.frequency:g} MHz" if c.frequency else "",
            c.reason,
        )
