"""The control law: readings in, decisions out. No I/O, no clock, no randomness.

The daemon, `tempctl replay` and `tempctl simulate` all drive this same object:
each poll they call ``Controller.step(reading, now_ms, window)`` and carry out
the returned ``Decision`` (log it, send its commands). Time is whatever the
caller passes in, so a recorded run replays to the identical decisions.

The law is the ``LAW`` table below, read top to bottom; on every poll the first
row whose source state and conditions all hold fires (one ``tick`` trigger of a
``transitions`` Machine, ``queued=True``, ``auto_transitions=False``).
"""

from __future__ import annotations

import enum
from collections.abc import Callable
from dataclasses import dataclass, field

from transitions import Machine

from tempctl.core.reading import Reading


class State(str, enum.Enum):
    NORMAL = "NORMAL"
    THROTTLED_1 = "THROTTLED_1"
    THROTTLED_2 = "THROTTLED_2"
    RECOVERING = "RECOVERING"


N, T1, T2, R = State.NORMAL, State.THROTTLED_1, State.THROTTLED_2, State.RECOVERING

# The control law. Conditions are Facts attributes (computed once per poll);
# `action` names the method that picks the new frequency. First match wins.
LAW: tuple[dict, ...] = (
    # At or above TEMPCTL_CRITICAL, or the firmware's own overheat trip: straight to SECOND.
    dict(
        source=[N, T1, R], dest=T2, conditions=["critical"], action="to_second", reason="critical"
    ),
    dict(
        source=T2,
        dest=T2,
        conditions=["critical", "settled", "floor_available"],
        action="to_floor",
        reason="still critical at SECOND_FREQUENCY",
    ),
    dict(
        source=T2,
        dest=T2,
        conditions=["critical", "above_second"],
        action="to_second",
        reason="critical",
    ),
    # Above TEMP_THRESHOLD (or the VR above TEMPCTL_VR_THRESHOLD).
    dict(
        source=N,
        dest=T1,
        conditions=["hot", "above_first"],
        action="to_first",
        reason="above threshold",
    ),
    dict(
        source=N,
        dest=T2,
        conditions=["hot"],
        action="to_second",
        reason="above threshold, already at or below FIRST_FREQUENCY",
    ),
    dict(
        source=T1,
        dest=T2,
        conditions=["hot", "settled"],
        action="to_second",
        reason="still above threshold after settling",
    ),
    # Overheated right after a restore step: back to the last frequency that held.
    dict(
        source=R,
        dest=R,
        conditions=["hot", "just_raised"],
        action="back_off",
        reason="overheated after a restore step",
    ),
    dict(
        source=R,
        dest=T1,
        conditions=["hot", "settled", "above_first"],
        action="to_first",
        reason="above threshold while recovering",
    ),
    dict(
        source=R,
        dest=T2,
        conditions=["hot", "settled"],
        action="to_second",
        reason="above threshold while recovering",
    ),
    # Stable for STABLE_TIMEFRAME (a query over the persisted log): start restoring.
    dict(
        source=[T1, T2],
        dest=R,
        conditions=["settled", "stable"],
        action="step_up",
        reason="stable for STABLE_TIMEFRAME",
    ),
    dict(
        source=R,
        dest=N,
        conditions=["at_max", "settled", "not_hot"],
        action="hold",
        reason="restored to MAX_FREQUENCY",
    ),
    dict(
        source=R,
        dest=R,
        conditions=["cool", "settled", "can_step"],
        action="step_up",
        reason="cool after settling",
    ),
)

CONDITIONS = (
    "critical",
    "settled",
    "floor_available",
    "above_second",
    "hot",
    "above_first",
    "just_raised",
    "stable",
    "at_max",
    "not_hot",
    "cool",
    "can_step",
)

MAX_BACKOFF_S = 24 * 3600.0
VERIFY_RETRIES = 2  # PATCH re-sent at most twice when the read-back disagrees, then an alarm
VERIFY_POLLS = 2  # polls a read-back may lag before it counts as a mismatch
RESTART_CONFIRM_MS = 120_000  # uptime must drop within this long after a restart request
FREQ_EPS = 0.5  # MHz: PLL granularity and float formatting differences (axeos-api.md §4.1)


@dataclass(frozen=True, slots=True)
class Limits:
    """The subset of Settings the law reads (all plain numbers, for speed and clarity)."""

    temp_threshold: float = 63.0
    first_frequency: float = 490.0
    second_frequency: float = 400.0
    max_frequency: float = 575.0
    check_interval: float = 30.0
    stable_timeframe: float = 1.0  # hours
    settle: float = 180.0
    hysteresis: float = 2.0
    critical: float = 70.0
    vr_threshold: float = 85.0
    critical_floor: float = 0.0
    min_frequency: float = 0.0  # 0 = auto (see min_frequency_for)
    law: str = "levels"
    step: float = 25.0
    apply: str = "auto"
    dry_run: bool = False
    max_restarts_per_hour: int = 4

    @classmethod
    def from_settings(cls, settings) -> Limits:
        return cls(**{f: getattr(settings, f) for f in cls.__dataclass_fields__})

    @property
    def window_ms(self) -> int:
        return int(round(self.stable_timeframe * 3_600_000))

    @property
    def gap_ms(self) -> int:
        """Longest hole the stable window tolerates: a few poll intervals."""
        return int(round(max(3 * self.check_interval, 1.0) * 1000))

    @property
    def lowest(self) -> float:
        return self.critical_floor if self.critical_floor > 0 else self.second_frequency


@dataclass(frozen=True, slots=True)
class WindowStats:
    """Summary of the persisted readings behind the stable-timeframe check."""

    stable_ms: int  # how long the trailing streak has held (no gap, none hot)
    count: int  # valid readings in [now - window, now]
    sum_mc: int  # their temperatures summed in milli-°C (exact integer arithmetic)

    def ok(self, limits: Limits) -> bool:
        if self.count == 0 or self.stable_ms < limits.window_ms:
            return False
        bound = int(round((limits.temp_threshold - limits.hysteresis) * 1000))
        return self.sum_mc <= bound * self.count


@dataclass(frozen=True, slots=True)
class Command:
    kind: str  # set_frequency | restart
    reason: str
    frequency: float | None = None
    attempt: int = 1


@dataclass(frozen=True, slots=True)
class Transition:
    from_state: str
    to_state: str
    reason: str
    frequency: float | None
    temp: float | None
    ceiling: float | None
    ceiling_until_ms: int | None
    backoff_s: float
    last_good: float | None


@dataclass(frozen=True, slots=True)
class Event:
    kind: str
    message: str
    level: str = "info"
    origin: str | None = None
    frequency_from: float | None = None
    frequency_to: float | None = None


@dataclass(slots=True)
class Decision:
    transition: Transition | None = None
    commands: list[Command] = field(default_factory=list)
    events: list[Event] = field(default_factory=list)

    def __bool__(self) -> bool:
        return bool(self.transition or self.commands or self.events)


@dataclass(frozen=True, slots=True)
class Snapshot:
    """What survives a restart: the latest transition row of a device, plus history facts."""

    state: State
    frequency: float | None
    ceiling: float | None = None
    ceiling_until_ms: int | None = None
    backoff_s: float = 0.0
    last_good: float | None = None
    last_change_ms: int | None = None
    restarts_ms: tuple[int, ...] = ()


class Facts:
    """The conditions of one poll, computed lazily and at most once each."""

    __slots__ = ("_c", "_r", "_now", "_window", "_stable", "temp", "vr")

    def __init__(
        self,
        controller: Controller,
        reading: Reading,
        now_ms: int,
        window: Callable[[], WindowStats] | None,
    ):
        self._c = controller
        self._r = reading
        self._now = now_ms
        self._window = window
        self._stable: bool | None = None
        self.temp = reading.temp
        self.vr = reading.vr_temp

    @property
    def critical(self) -> bool:
        return self._r.overheat or (self.temp is not None and self.temp >= self._c.limits.critical)

    @property
    def hot(self) -> bool:
        lim = self._c.limits
        if self.temp is None:  # only reached with the firmware overheat flag set
            return True
        return self.temp > lim.temp_threshold or (
            self.vr is not None and self.vr > lim.vr_threshold
        )

    @property
    def not_hot(self) -> bool:
        return not self.hot

    @property
    def cool(self) -> bool:
        lim = self._c.limits
        return (
            self.temp is not None
            and self.temp <= lim.temp_threshold - lim.hysteresis
            and not self.hot
        )

    @property
    def settled(self) -> bool:
        c = self._c
        return c.last_change_ms is None or self._now - c.last_change_ms >= c.limits.settle * 1000

    @property
    def floor_available(self) -> bool:
        lim = self._c.limits
        return lim.critical_floor > 0 and self._c.frequency > lim.critical_floor + FREQ_EPS

    @property
    def above_second(self) -> bool:
        return self._c.frequency > self._c.limits.second_frequency + FREQ_EPS

    @property
    def above_first(self) -> bool:
        return self._c.frequency > self._c.limits.first_frequency + FREQ_EPS

    @property
    def at_max(self) -> bool:
        return self._c.frequency >= self._c.limits.max_frequency - FREQ_EPS

    @property
    def just_raised(self) -> bool:
        c = self._c
        return c.last_good is not None and c.frequency > c.last_good + FREQ_EPS and c.raised

    @property
    def can_step(self) -> bool:
        return self._c.next_step(self._now) is not None

    @property
    def stable(self) -> bool:
        if self._stable is None:
            self._stable = self._window is not None and self._window().ok(self._c.limits)
        return self._stable


class Controller:
    """One device's thermal controller. Pure: every input arrives as an argument."""

    def __init__(self, limits: Limits, device: str = "device", snapshot: Snapshot | None = None):
        self.limits = limits
        self.device = device
        self.frequency: float = limits.max_frequency  # what tempctl believes the device runs
        self.last_change_ms: int | None = None
        self.ceiling: float | None = None
        self.ceiling_until_ms: int | None = None
        self.backoff_s: float = 0.0
        self.last_good: float | None = None
        self.raised = False  # the last change was a restore step not yet proven
        self.restarts_ms: list[int] = []
        self.uptime_s: int | None = None
        self.identity: tuple[str | None, str | None] | None = None
        self.started = False
        self.restored = snapshot is not None
        # read-back verification of the last set_frequency
        self.pending: float | None = None
        self.pending_attempt = 0
        self.pending_polls = 0
        # Where the device stayed after refusing or ignoring a change through every re-send:
        # not adopted again, or the law would send the same change every poll (a loop).
        self.refused_at: float | None = None
        # The setting when the firmware's overheat trip was first seen: its recovery writes
        # that minus 100 MHz, overwriting any PATCH made during the cool-down (§9.2 step 6).
        self.trip_mhz: float | None = None
        self.tripped = False
        self.restart_requested_ms: int | None = None
        self.machine = Machine(
            model=self,
            states=list(State),
            initial=snapshot.state if snapshot else State.NORMAL,
            transitions=[
                dict(
                    trigger="tick",
                    source=row["source"],
                    dest=row["dest"],
                    conditions=[f"_cond_{c}" for c in row["conditions"]],
                    after=f"_act_{row['action']}",
                )
                for row in LAW
            ],
            auto_transitions=False,
            queued=True,
            send_event=True,
            model_attribute="state",
        )
        # Per-state candidate rows, so a poll where nothing can fire skips the Machine.
        self._rows_for = {s: [r for r in LAW if s in _as_list(r["source"])] for s in State}
        # Fast path (replay feeds ~10^5 polls/s): with no critical/hot signal, which rows of a
        # state could still fire? Derived from LAW: None = none; True = only after settling.
        self._quiet_unless_settled = {s: _quiet_rule(self._rows_for[s]) for s in State}
        # The same rows with their conditions as Facts property getters (no name lookups).
        self._compiled = {
            s: [(r, tuple(getattr(Facts, c).fget for c in r["conditions"])) for r in rows]
            for s, rows in self._rows_for.items()
        }
        self._calm_rows = {
            s: [(r, t) for r, t in rows if not {"critical", "hot"} & set(r["conditions"])]
            for s, rows in self._compiled.items()
        }
        self._facts: Facts | None = None
        self._fired: dict | None = None
        self._decision: Decision | None = None
        if snapshot:
            self._restore(snapshot)

    # -- public --------------------------------------------------------------

    @property
    def current(self) -> State:
        return State(self.state) if not isinstance(self.state, State) else self.state

    def step(
        self, reading: Reading, now_ms: int, window: Callable[[], WindowStats] | None = None
    ) -> Decision:
        """Judge one poll. ``window`` is called only when the law needs the stable check."""
        decision = Decision()
        self._observe(reading, now_ms, decision)
        # Invalid readings never move the law on their own; the firmware's overheat
        # flag is a signal of its own and does.
        if not self.started or not (reading.valid or reading.overheat):
            return decision
        calm = self._calm(reading)
        if calm and self._quiet(now_ms):
            return decision
        facts = Facts(self, reading, now_ms, window)
        row = self._first_match(facts, calm)
        if row is not None:
            self._facts, self._fired, self._decision = facts, row, decision
            self._now, self._from_state = now_ms, self.current
            self.tick()
            self._facts = self._fired = self._decision = None
        return decision

    def command_result(
        self, command: Command, ok: bool, now_ms: int, error: str | None = None
    ) -> Decision:
        """Feed back what happened to a command (the daemon, or replay from the log)."""
        decision = Decision()
        if command.kind == "set_frequency":
            if ok or self.limits.dry_run:
                self.pending = None if self.limits.dry_run else command.frequency
                self.pending_attempt = command.attempt
                self.pending_polls = 0
            else:
                # Not applied (4xx, 5xx, timeout): verified like a change the device ignored,
                # so it is re-sent at most VERIFY_RETRIES times, then an alarm; never a loop.
                self.pending = command.frequency
                self.pending_attempt = command.attempt
                self.pending_polls = 0
                decision.events.append(
                    Event(
                        "command",
                        f"set_frequency {command.frequency:g} MHz failed: {error}",
                        level="warning",
                        origin="tempctl",
                    )
                )
        elif command.kind == "restart":
            if ok:
                self.restart_requested_ms = now_ms
            else:
                decision.events.append(
                    Event(
                        "restart",
                        f"restart request failed: {error} (not retried)",
                        level="warning",
                        origin="tempctl",
                    )
                )
        return decision

    def snapshot(self) -> Snapshot:
        return Snapshot(
            self.current,
            self.frequency,
            self.ceiling,
            self.ceiling_until_ms,
            self.backoff_s,
            self.last_good,
            self.last_change_ms,
            tuple(self.restarts_ms),
        )

    def next_step(self, now_ms: int) -> float | None:
        """The next restore frequency, or None when the ceiling/back-off forbids it."""
        lim = self.limits
        if self.frequency >= lim.max_frequency - FREQ_EPS:
            return None
        target = min(self.frequency + lim.step, lim.max_frequency)
        if (
            self.ceiling is not None
            and self.ceiling_until_ms is not None
            and now_ms < self.ceiling_until_ms
            and target >= self.ceiling - FREQ_EPS
        ):
            return None  # the failed frequency waits out its back-off
        return target

    # -- the law's conditions and actions (called by the Machine) -------------

    def _calm(self, r: Reading) -> bool:
        """Neither the critical nor the hot condition holds (computed exactly as Facts does)."""
        temp = r.temp
        if r.overheat or temp is None:
            return False
        lim = self.limits
        if temp >= lim.critical or temp > lim.temp_threshold:
            return False
        vr = r.vr_temp
        return vr is None or vr <= lim.vr_threshold

    def _quiet(self, now_ms: int) -> bool:
        """On a calm poll: True when no LAW row can fire, decided without building Facts.

        Same meaning as ``_first_match`` finding nothing: per ``_quiet_rule``, every row
        of the state needs critical/hot, or the rest also need ``settled``.
        """
        rule = self._quiet_unless_settled[self.state]  # State is a str enum: either key works
        if rule is None:
            return True
        if rule is False:
            return False
        last = self.last_change_ms
        return last is not None and now_ms - last < self.limits.settle * 1000

    def _first_match(self, facts: Facts, calm: bool = False) -> dict | None:
        # On a calm poll the rows that need "critical" or "hot" cannot fire: skip them.
        for row, tests in (self._calm_rows if calm else self._compiled)[self.state]:
            for test in tests:
                if not test(facts):
                    break
            else:
                return row
        return None

    def _act_to_first(self, event) -> None:
        self._set(min(self.limits.first_frequency, self.frequency))

    def _act_to_second(self, event) -> None:
        self._set(min(self.limits.second_frequency, self.frequency))
        if self._facts.critical:
            temp = self._facts.temp
            self._alarm(
                "critical: "
                + ("firmware overheat trip" if self._reading_overheat else f"temp {temp:g} °C")
            )

    def _act_to_floor(self, event) -> None:
        self._set(self.limits.critical_floor)
        temp = self._facts.temp
        what = "firmware overheat trip" if temp is None else f"temp {temp:g} °C"
        self._alarm(
            f"critical at SECOND_FREQUENCY ({what}): dropping to "
            f"TEMPCTL_CRITICAL_FLOOR {self.limits.critical_floor:g} MHz"
        )

    def _act_back_off(self, event) -> None:
        failed = self.frequency
        self.backoff_s = min(
            MAX_BACKOFF_S,
            self.backoff_s * 2 if self.backoff_s else self.limits.stable_timeframe * 3600,
        )
        self.ceiling = failed
        self.ceiling_until_ms = self._now + int(self.backoff_s * 1000)
        self._set(self.last_good)

    def _act_step_up(self, event) -> None:
        target = self.next_step(self._now)
        if target is None:  # entered RECOVERING but the ceiling holds: wait there
            self._record()
            return
        self.last_good = self.frequency
        self._set(target, raised=True)

    def _act_hold(self, event) -> None:
        self.ceiling = self.ceiling_until_ms = None
        self.backoff_s = 0.0
        self.last_good = None
        self._record()

    # Machine conditions (_cond_<fact>, added below the class) read the per-poll facts,
    # already checked by _first_match, so they only keep the Machine's bookkeeping honest.

    # -- helpers ---------------------------------------------------------------

    @property
    def _reading_overheat(self) -> bool:
        return bool(self._facts and self._facts._r.overheat)

    def _set(self, target: float | None, raised: bool = False) -> None:
        lim = self.limits
        if target is None:
            target = self.frequency
        # Safety: never above MAX, never below SECOND except the documented floor.
        target = max(min(target, lim.max_frequency), lim.lowest)
        self.raised = raised
        if abs(target - self.frequency) > FREQ_EPS:
            self._decision.commands.extend(self._commands_for(target, self._fired["reason"]))
            self.frequency = target
            self.last_change_ms = self._now
        self._record()

    def _record(self) -> None:
        f = self._facts
        # One row per poll: when start-up reconciliation already changed state on this
        # poll, the law's change extends that row, so no transition is ever lost.
        prev = self._decision.transition
        from_state = prev.from_state if prev else self._from_state.value
        reason = f"{prev.reason}; {self._fired['reason']}" if prev else self._fired["reason"]
        self._decision.transition = Transition(
            from_state=from_state,
            to_state=self.current.value,
            reason=reason,
            frequency=self.frequency,
            temp=f.temp if f else None,
            ceiling=self.ceiling,
            ceiling_until_ms=self.ceiling_until_ms,
            backoff_s=self.backoff_s,
            last_good=self.last_good,
        )

    def _alarm(self, message: str) -> None:
        self._decision.events.append(Event("alarm", message, level="alarm", origin="tempctl"))

    def _commands_for(self, target: float, reason: str, attempt: int = 1) -> list[Command]:
        cmds = [Command("set_frequency", reason, target, attempt)]
        if self._restart_wanted():
            if self._restart_allowed(self._now):
                self.restarts_ms.append(self._now)
                cmds.append(Command("restart", f"apply {target:g} MHz ({self.limits.apply})"))
            else:
                self._decision.events.append(
                    Event(
                        "restart",
                        "restart needed to apply the frequency but "
                        f"TEMPCTL_MAX_RESTARTS_PER_HOUR={self.limits.max_restarts_per_hour} reached",
                        level="warning",
                        origin="tempctl",
                    )
                )
        return cmds

    def _restart_wanted(self) -> bool:
        apply = self.limits.apply
        return apply == "restart" or (apply == "auto" and not self.live_capable)

    live_capable = True  # set by the driver from axeos.capabilities(); default: live

    def _restart_allowed(self, now_ms: int) -> bool:
        hour_ago = now_ms - 3_600_000
        self.restarts_ms = [t for t in self.restarts_ms if t > hour_ago]
        return len(self.restarts_ms) < self.limits.max_restarts_per_hour

    def _restore(self, snap: Snapshot) -> None:
        if snap.frequency is not None:
            self.frequency = snap.frequency
        self.ceiling, self.ceiling_until_ms = snap.ceiling, snap.ceiling_until_ms
        self.backoff_s, self.last_good = snap.backoff_s, snap.last_good
        self.last_change_ms = snap.last_change_ms
        self.restarts_ms = list(snap.restarts_ms)

    # -- observation: who changed what ------------------------------------------

    def _observe(self, r: Reading, now_ms: int, d: Decision) -> None:
        self._now = now_ms
        mac, host = r.mac, r.hostname
        if mac or host:
            ident = (mac, host)
            if self.identity is not None and ident != self.identity:
                d.events.append(
                    Event(
                        "identity",
                        f"a different device answers: "
                        f"{_fmt_ident(self.identity)} -> {_fmt_ident(ident)}",
                        level="alarm",
                        origin="device",
                    )
                )
            self.identity = ident
        if r.uptime_s is not None:
            if self.uptime_s is not None and r.uptime_s < self.uptime_s:
                origin = "tempctl" if self.restart_requested_ms is not None else "device"
                d.events.append(
                    Event(
                        "reboot",
                        f"device rebooted (uptime {self.uptime_s} s -> {r.uptime_s} s)",
                        level="info" if origin == "tempctl" else "warning",
                        origin=origin,
                    )
                )
                self.restart_requested_ms = None
            self.uptime_s = r.uptime_s
        if (
            self.restart_requested_ms is not None
            and now_ms - self.restart_requested_ms > RESTART_CONFIRM_MS
        ):
            d.events.append(
                Event(
                    "restart",
                    "restart not confirmed: uptime did not drop (not retried)",
                    level="warning",
                    origin="tempctl",
                )
            )
            self.restart_requested_ms = None
        if r.overheat and not self.tripped and r.frequency is not None:
            self.trip_mhz = r.frequency
        self.tripped = r.overheat
        if r.frequency is None:
            return
        if not self.started:
            self._reconcile(r, now_ms, d)
            return
        if self.limits.dry_run:
            return  # the device never changes in dry run; the law follows its own intent
        observed = r.frequency
        if self.pending is not None:
            if abs(observed - self.pending) <= FREQ_EPS:
                self.pending = None
                return
            if observed < self.pending and self._firmware_penalty(observed):
                # the firmware's overheat recovery overwrote our change with a lower value:
                # accept it, don't fight it upwards
                self.pending = None
                self._adopt(observed, now_ms, d, origin="firmware")
                return
            self.pending_polls += 1
            if self.pending_polls < VERIFY_POLLS:
                return
            if self.pending_attempt <= VERIFY_RETRIES:
                attempt = self.pending_attempt + 1
                d.events.append(
                    Event(
                        "verify",
                        f"device reports {observed:g} MHz, not "
                        f"{self.pending:g}: re-sending (attempt {attempt})",
                        level="warning",
                        origin="tempctl",
                    )
                )
                d.commands.append(
                    Command("set_frequency", "read-back mismatch", self.pending, attempt)
                )
                self.pending = None
                return
            d.events.append(
                Event(
                    "alarm",
                    f"frequency {self.pending:g} MHz not applied after "
                    f"{self.pending_attempt} attempts; device stays at "
                    f"{observed:g} MHz",
                    level="alarm",
                    origin="tempctl",
                )
            )
            self.pending = None
            self.refused_at = observed
            return
        if abs(observed - self.frequency) <= FREQ_EPS:
            self.refused_at = None
        elif self.refused_at is None or abs(observed - self.refused_at) > FREQ_EPS:
            self.refused_at = None
            self._adopt(observed, now_ms, d, origin=self._who(r, observed))

    def _firmware_penalty(self, observed: float) -> bool:
        """A value the firmware's overheat handling writes (axeos-api.md §9.2): F - 100 MHz
        after a v2.11+ trip (F = the setting when it tripped), 50 MHz latched on v2.1.9-v2.10."""
        return (
            any(
                f is not None and abs(observed - (f - 100)) <= FREQ_EPS
                for f in (self.frequency, self.trip_mhz)
            )
            or abs(observed - 50) <= FREQ_EPS
        )

    def _who(self, r: Reading, observed: float) -> str:
        # Anything but the firmware's own overheat handling came from a person.
        return "firmware" if r.overheat or self._firmware_penalty(observed) else "user"

    def _adopt(self, observed: float, now_ms: int, d: Decision, origin: str | None) -> None:
        """Someone else set the frequency: log who, and work from the new value."""
        lim = self.limits
        if origin:
            d.events.append(
                Event(
                    "frequency_change",
                    f"frequency changed by {origin}: {self.frequency:g} -> {observed:g} MHz",
                    level="warning",
                    origin=origin,
                    frequency_from=self.frequency,
                    frequency_to=observed,
                )
            )
        self.frequency = observed
        self.last_change_ms = now_ms
        self.raised = False
        if observed > lim.max_frequency + FREQ_EPS:
            self._force(
                now_ms,
                d,
                State.NORMAL if self.current is State.NORMAL else self.current,
                lim.max_frequency,
                f"device at {observed:g} MHz, above MAX_FREQUENCY",
            )

    def _reconcile(self, r: Reading, now_ms: int, d: Decision) -> None:
        """First reading of a run: compare the device with the restored state."""
        lim, observed = self.limits, r.frequency
        self.started = True
        state = self.current
        if not self.restored:
            if observed >= lim.max_frequency - FREQ_EPS:
                self.frequency = observed
                reason = "start: no history, device at or above MAX_FREQUENCY"
                self._force(now_ms, d, State.NORMAL, min(observed, lim.max_frequency), reason)
            else:
                self.frequency = observed
                self.last_change_ms = now_ms  # judge this level for a settle period first
                self._force(
                    now_ms,
                    d,
                    State.RECOVERING,
                    observed,
                    f"start: no history, device at {observed:g} MHz below MAX_FREQUENCY",
                )
            return
        expected = self.frequency
        if abs(observed - expected) <= FREQ_EPS:
            d.events.append(
                Event("reconcile", f"resumed {state.value} at {observed:g} MHz", origin="daemon")
            )
            return
        if observed > expected and state is not State.NORMAL:
            # Rebooted into a higher setting or raised by hand while throttled: re-apply.
            d.events.append(
                Event(
                    "reconcile",
                    f"device at {observed:g} MHz but {state.value} "
                    f"holds {expected:g} MHz: re-applying",
                    level="warning",
                    origin="daemon",
                )
            )
            self.frequency = observed
            self._force(now_ms, d, state, expected, f"reconcile: re-apply {expected:g} MHz")
            return
        d.events.append(
            Event(
                "reconcile",
                f"device at {observed:g} MHz, log says {expected:g} "
                "MHz: adopting the device's value",
                level="warning",
                origin="daemon",
            )
        )
        self.frequency = observed
        self.last_change_ms = now_ms
        if observed > lim.max_frequency + FREQ_EPS:
            self._force(
                now_ms,
                d,
                state,
                lim.max_frequency,
                f"device at {observed:g} MHz, above MAX_FREQUENCY",
            )
        elif state is State.NORMAL and observed < lim.max_frequency - FREQ_EPS:
            self._force(
                now_ms,
                d,
                State.RECOVERING,
                observed,
                f"start: device at {observed:g} MHz below MAX_FREQUENCY",
            )

    def _force(self, now_ms: int, d: Decision, state: State, target: float, reason: str) -> None:
        """A state/frequency change outside the per-poll law (start-up, safety clamp)."""
        lim = self.limits
        from_state = self.current
        target = max(min(target, lim.max_frequency), min(lim.lowest, target))
        if state is not from_state:
            self.machine.set_state(state)
        if abs(target - self.frequency) > FREQ_EPS:
            self._decision, self._fired, self._now = d, {"reason": reason}, now_ms
            d.commands.extend(self._commands_for(target, reason))
            self._decision = self._fired = None
            self.frequency = target
            self.last_change_ms = now_ms
        d.transition = Transition(
            from_state.value,
            state.value,
            reason,
            self.frequency,
            None,
            self.ceiling,
            self.ceiling_until_ms,
            self.backoff_s,
            self.last_good,
        )


def _quiet_rule(rows: list[dict]) -> bool | None:
    """For ``Controller._quiet``: None when every row needs "critical" or "hot"; True when the
    rest all need "settled" too; False when some row could fire on a calm poll anyway."""
    calm = [r for r in rows if not {"critical", "hot"} & set(r["conditions"])]
    if not calm:
        return None
    return all("settled" in r["conditions"] for r in calm)


def _condition(fact: str):
    def cond(self: Controller, event) -> bool:
        return getattr(self._facts, fact)

    cond.__name__ = f"_cond_{fact}"
    return cond


# The Machine's conditions, as real methods: a class-level __getattr__ would make every
# attribute read on a Controller ~3x slower (CPython cannot specialise it), and replay
# reads them ~10^5 times a second.
for _fact in CONDITIONS:
    setattr(Controller, f"_cond_{_fact}", _condition(_fact))


def _as_list(x) -> list:
    return x if isinstance(x, list) else [x]


def _fmt_ident(ident: tuple[str | None, str | None]) -> str:
    mac, host = ident
    return f"{host or '?'} ({mac or 'no MAC'})"
