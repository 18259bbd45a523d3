"""One device's controller: readings in, decisions out. No I/O, no clock, no randomness.

The daemon, `tempctl replay` and `tempctl simulate` drive this same object through
``tempctl.core.driver.Driver``. Time is whatever the caller passes in, so a recorded
run replays to the identical decisions.

The law is a table in ``law.py`` (``MODEL``, or ``LEVELS`` for logs of tempctl 0.1).
One evaluator decides: ``_first_match`` picks the first row whose facts all hold, and
the ``transitions`` Machine fires exactly that row (one trigger per row, no conditions
of its own), running the row's action. What the controller observes about the device
(who changed what, read-back, reboots, identity) is ``observe.py``; start-up
reconciliation is ``reconcile.py``; restoring the settings a firmware trip took away is
``aftermath.py``.
"""

from __future__ import annotations

from collections.abc import Callable

from transitions import Machine

from tempctl.core import aftermath, cooling, observe, powercap, stuck, usercap
from tempctl.core.decision import Command, Decision, Event, Snapshot, State, Transition
from tempctl.core.law import CEILING_LIFT_C, LAWS, Facts, Row, is_critical, is_hot, margin_c
from tempctl.core.limits import FREQ_EPS, PLL_STEP, Limits, WindowStats
from tempctl.core.model import ModelParams, ThermalModel, prior_for
from tempctl.core.reading import Reading

# Re-exported: most callers import these from here.
__all__ = [
    "FREQ_EPS",
    "Command",
    "Controller",
    "Decision",
    "Event",
    "LAW",
    "Limits",
    "Snapshot",
    "State",
    "Transition",
    "WindowStats",
]

LAW = LAWS["levels"]  # the issue-4 table, for old callers and the README diagram of it

MAX_BACKOFF_S = 24 * 3600.0
RISING_LOOKAHEAD_S = 300.0  # a throttle while the room warms aims for the ambient this far ahead
# Lowest frequencyOptions entry per ASIC (axeos-api.md §7): below it the firmware's UI warns.
LOWEST_OPTION = {
    "BM1370": 400.0,
    "BM1368": 400.0,
    "BM1366": 400.0,
    "BM1397": 400.0,
    "BM1372": 327.0,
    "BM1373": 327.0,
}


class Controller:
    """One device's thermal controller. Pure: every input arrives as an argument."""

    def __init__(self, limits: Limits, device: str = "device", snapshot: Snapshot | None = None):
        self.limits = limits  # the run's, or narrowed by a user's cap (usercap.py)
        self.device = device
        self.rows: tuple[Row, ...] = LAWS[limits.law]
        self.frequency: float = limits.max_frequency  # what tempctl believes the device runs
        self.last_change_ms: int | None = None
        self.ceiling: float | None = None
        self.ceiling_until_ms: int | None = None
        self.backoff_s: float = 0.0
        self.last_good: float | None = None
        self.raised = False  # the last change was a restore step not yet proven
        self.restarts_ms: list[int] = []
        self.live_capable = True  # set by the driver from the device's capabilities
        self.trip_latches = False  # v2.1.9-v2.10: the firmware's trip latches (driver sets it)
        self.time_scale = limits.settle / 180.0 if limits.settle > 0 else 1.0
        self.model = ThermalModel(prior_for(None), self.time_scale)
        self.model_asic: str | None = None
        self.horizon_s = limits.settle + limits.check_interval
        self._notes: set[str] = set()  # one-per-episode notices already given
        self._now = 0
        self._budget_warned_ms: int | None = None
        self.ambient_seen: list[tuple[int, float]] = []  # cooling.watch
        self.cooling_jumps: list[tuple[int, float]] = []  # cooling.watch: model.cooling's
        self.ambient_params = None
        self.worse_alarm_ms: int | None = None
        self.relearned_ms: int | None = None  # the cooling jump the law climbed on (law.py)
        self._clip_restored = False  # restored stamps not yet clipped to the first poll
        observe.init(self)
        aftermath.init(self)
        usercap.init(self)
        powercap.init(self)
        self.machine = Machine(
            model=self,
            states=list(State),
            initial=snapshot.state if snapshot else State.NORMAL,
            transitions=[
                dict(
                    trigger=f"row_{i}", source=list(r.source), dest=r.dest, after=f"_act_{r.action}"
                )
                for i, r in enumerate(self.rows)
            ],
            auto_transitions=False,
            queued=True,
            model_attribute="state",
        )
        # Per-state candidate rows, their facts as property getters (no name lookups).
        self._compiled = {
            s: [
                (i, r, tuple(getattr(Facts, c).fget for c in r.when))
                for i, r in enumerate(self.rows)
                if s in r.source
            ]
            for s in State
        }
        # Fast path for calm polls (neither critical nor hot, by law.is_critical/is_hot):
        # rows that need either cannot fire; if the rest all need "settled", an unsettled
        # calm poll fires nothing. Derived from the table, pinned by tests/test_law.py.
        self._calm_rows = {
            s: [(i, r, t) for i, r, t in rows if not {"critical", "hot"} & set(r.when)]
            for s, rows in self._compiled.items()
        }
        self._quiet_unless_settled = {
            s: (None if not rows else all("settled" in r.when for _, r, _ in rows))
            for s, rows in self._calm_rows.items()
        }
        self._facts: Facts | None = None
        self._fired: Row | None = None
        self._decision: Decision | None = None
        self._from_state = State.NORMAL
        self.restored = snapshot is not None
        self.voltage_table = snapshot.voltage if snapshot else None  # the driver's governor
        if snapshot:
            self._restore(snapshot)

    # -- public ----------------------------------------------------------------------------

    @property
    def current(self) -> State:
        return State(self.state) if not isinstance(self.state, State) else self.state

    def step(
        self, reading: Reading, now_ms: int, window: Callable[[], WindowStats] | None = None
    ) -> Decision:
        """Judge one poll. ``window`` is called only when the law needs the stable check."""
        decision = Decision()
        self._now = now_ms
        if self._clip_restored:
            self._clip_future(now_ms)
        observe.observe(self, reading, now_ms, decision)
        if not self.started:
            return decision
        cooling.watch(self, now_ms, decision)
        if reading.fault:
            # mining stopped, not an overheat: never command on it (issue 16.2)
            observe.fault_note(self, reading.fault, decision)
            return decision
        if reading.valid:
            self._notes.discard("fault")
        # Invalid readings never move the law on their own; the firmware's overheat flag is
        # a signal of its own and does. Without a (plausible) frequency there is nothing a
        # change could be relative to.
        if self.sensor_stuck and reading.temp is not None:
            # not evidence: the law may only take the device down (the sensor_stuck row)
            if self.frequency > self.limits.lowest + FREQ_EPS:
                self._law(reading, now_ms, window, decision)
            reading = stuck.invalid(reading)
        if cooling.fan_held(reading, self.limits):
            cooling.note_fan_held(self, reading, decision)
        powercap.watch(self, reading, now_ms, decision)  # may lower limits.max_frequency
        if (reading.valid and reading.frequency is not None) or reading.overheat:
            self._law(reading, now_ms, window, decision)
        aftermath.check(self, reading, now_ms, decision)  # a stalled core reads -1 too
        return decision

    def _law(self, reading: Reading, now_ms: int, window, decision: Decision) -> None:
        calm = not is_critical(reading, self.limits) and not is_hot(reading, self.limits)
        if calm and self._quiet(now_ms):
            return
        facts = Facts(self, reading, now_ms, window)
        found = self._first_match(facts, calm)
        if found is not None:
            i, row = found
            self._facts, self._fired, self._decision = facts, row, decision
            self._from_state = self.current
            getattr(self, f"row_{i}")()
            self._facts = self._fired = self._decision = None

    def rejudge(self, reading: Reading, window, decision: Decision) -> None:
        """The law once more at this poll (driver.py: after the governor's revert, which the
        model already knows): what held before held at the old voltage, and a back-off
        goes no higher than what the model predicts holds at the new one."""
        if self.last_good is not None and self.model.ready:
            self.last_good = min(self.last_good, self.throttle_target())
        self._law(reading, self._now, window, decision)

    def command_result(
        self, command: Command, ok: bool, now_ms: int, error: str | None = None
    ) -> Decision:
        """Feed back what happened to a command (the daemon, or replay from the log)."""
        return observe.command_result(self, command, ok, now_ms, error)

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
            self.model.params.to_json(),
            self.identity,
            aftermath.dumps(self),
            user_cap=self.user_cap,
            user_cap_ms=self.user_cap_ms,
            power_cap=self.power_mhz,
        )

    def reset(self) -> None:
        """A different device answers at this address: start over as with no history."""
        powercap.init(self)
        usercap.apply(self, None, None)  # another device's owner set no cap for this one
        lim = self.limits  # the state stays until reconcile moves it (the chain stays whole)
        self.frequency = lim.max_frequency
        self.last_change_ms = self.ceiling = self.ceiling_until_ms = self.last_good = None
        self.backoff_s = 0.0
        self.raised = False
        self.restored = False
        self.model = ThermalModel(prior_for(self.model_asic), self.time_scale)
        self._notes.clear()
        observe.init(self, keep_identity=True)
        aftermath.init(self)

    # -- what the law asks of the model -----------------------------------------------------

    def predicted(self, freq: float, horizon_s: float = 0.0) -> float | None:
        if self.limits.law != "model":
            return None
        return self.model.predict(freq, horizon_s)

    def lookahead_s(self) -> float:
        """How far ahead a throttle looks: past the settle, and further while the room warms."""
        rising = RISING_LOOKAHEAD_S * self.time_scale if self.model.slope() > 0 else 0.0
        return self.horizon_s + rising

    def throttle_target(self, temp: float | None = None) -> float:
        """Highest frequency predicted to hold TEMP_THRESHOLD - margin, at least one PLL step
        below the current one, never below the floor. Without a model yet: the old levels."""
        lim, f = self.limits, self.frequency
        target = None
        if lim.law == "model" and self.model.ready:
            ahead = self.lookahead_s()
            # Already above the threshold: aim lower by the excess, so that the fast part of
            # the drop (about half of it within seconds) brings the die under at once.
            excess = max(0.0, temp - lim.temp_threshold) if temp is not None else 0.0
            aim = lim.temp_threshold - margin_c(self.model, self.horizon_s) - excess
            target = self.model.highest(aim, lim.lowest, f, ahead)
        if target is None:
            if f > lim.first_frequency + FREQ_EPS:
                target = lim.first_frequency
            elif f > lim.second_frequency + FREQ_EPS:
                target = lim.second_frequency
            else:
                target = f - lim.step
        return lim.clamp(min(target, f - PLL_STEP))

    def climb_target(self, now_ms: int) -> float | None:
        """The next frequency up, predicted to hold TEMP_THRESHOLD - margin: steps of at most
        TEMPCTL_STEP, finer near the limit; None when nothing higher is predicted safe."""
        lim, f = self.limits, self.frequency
        if f >= lim.max_frequency - FREQ_EPS:
            return None
        if lim.law == "model" and self.model.ready:
            aim = lim.temp_threshold - margin_c(self.model, self.horizon_s)
            volts = powercap.volts(self)  # a raise brings its voltage first: the pair (f, V)
            up = self.model.highest(aim, f, lim.max_frequency, self.horizon_s, volts=volts)
            up = min(up, f + lim.step)
        else:
            facts = self._facts
            if facts is not None and not facts.cool:
                return None
            up = min(f + lim.step, lim.max_frequency)
        if self._ceiling_binds(now_ms) and up >= self.ceiling - FREQ_EPS:
            up = self.ceiling - PLL_STEP
        return up if up >= f + PLL_STEP - FREQ_EPS else None

    def _ceiling_binds(self, now_ms: int) -> bool:
        """A failed step's ceiling holds for its back-off; under the model law it lifts
        early once the model predicts that frequency CEILING_LIFT_C under the aim: the
        room has cooled since it failed (often by one noisy reading just over the
        threshold), and waiting out hours of back-off in a cooling room loses hash."""
        if not self._ceiling_holds(now_ms):
            return False
        if self.limits.law != "model" or not self.model.ready:
            return True
        pred = self.model.predict(self.ceiling, self.horizon_s, powercap.volts(self))
        aim = self.limits.temp_threshold - margin_c(self.model, self.horizon_s)
        return pred is None or pred > aim - CEILING_LIFT_C

    def next_step(self, now_ms: int) -> float | None:
        """The levels law's next restore frequency, or None when the ceiling forbids it."""
        lim = self.limits
        if self.frequency >= lim.max_frequency - FREQ_EPS:
            return None
        target = min(self.frequency + lim.step, lim.max_frequency)
        if self._ceiling_holds(now_ms) and target >= self.ceiling - FREQ_EPS:
            return None  # the failed frequency waits out its back-off
        return target

    def explain(self) -> str:
        """What the law is doing, in words (tempctl status, the dashboard)."""
        return observe.explain(self)

    # -- evaluation ------------------------------------------------------------------------------

    def _ceiling_holds(self, now_ms: int) -> bool:
        return (
            self.ceiling is not None
            and self.ceiling_until_ms is not None
            and now_ms < self.ceiling_until_ms
        )

    def _quiet(self, now_ms: int) -> bool:
        """On a calm poll: True when no row can fire, decided without building Facts."""
        rule = self._quiet_unless_settled[self.state]  # State is a str enum: either key works
        if rule is None:
            return True
        if rule is False:
            return False
        last = self.last_change_ms
        return last is not None and now_ms - last < self.limits.settle * 1000

    def _first_match(self, facts: Facts, calm: bool = False) -> tuple[int, Row] | None:
        for i, row, tests in (self._calm_rows if calm else self._compiled)[self.state]:
            for test in tests:
                if not test(facts):
                    break
            else:
                return i, row
        return None

    # -- actions (run by the Machine for the row _first_match picked) ------------------------

    def _act_to_first(self) -> None:
        self._set(min(self.limits.first_frequency, self.frequency))

    def _act_to_second(self) -> None:
        self._ceiling_if_raised()
        self._set(min(self.limits.second_frequency, self.frequency))
        if self._facts.critical:
            self._alarm("critical: " + self._what())

    def _act_to_floor(self) -> None:
        self._set(self.limits.lowest)
        self._alarm(
            f"critical at SECOND_FREQUENCY ({self._what()}): dropping to "
            f"the floor (TEMPCTL_MIN_FREQUENCY) {self.limits.lowest:g} MHz"
        )

    def _act_to_safe(self) -> None:
        if cooling.below_floor(self):
            return
        self._ceiling_if_raised()
        self._set(min(self._facts.target, self.limits.second_frequency))
        self._alarm("critical: " + self._what())

    def _act_to_lowest(self) -> None:
        self._set(self.limits.lowest)

    def _act_to_max(self) -> None:
        self._set(self.limits.max_frequency)  # a power ceiling came down (powercap.py)

    def _act_throttle(self) -> None:
        self._ceiling_if_raised()  # over right after a step up: that frequency failed
        self._set(self._facts.target)
        observe.predicted_note(self)

    def _act_clear_latch(self) -> None:
        aftermath.clear_latch(self)

    def _act_back_off(self) -> None:
        failed = self.frequency
        self.backoff_s = min(
            MAX_BACKOFF_S,
            self.backoff_s * 2 if self.backoff_s else self.limits.stable_timeframe * 3600,
        )
        self.ceiling = failed
        self.ceiling_until_ms = self._now + int(self.backoff_s * 1000)
        self._set(self.last_good)

    def _act_step_up(self) -> None:
        target = self.next_step(self._now)
        if target is None:  # entered RECOVERING but the ceiling holds: wait there
            self._record()
            return
        self.last_good = self.frequency
        self._set(target, raised=True)

    def _act_climb_relearned(self) -> None:
        self.relearned_ms = self.model.cooling[0]  # once per jump of the cooling
        self._act_climb()

    def _act_climb(self) -> None:
        target = self.climb_target(self._now)
        self.last_good = self.frequency
        self._set(target, raised=True)
        observe.predicted_note(self)

    def _act_resume(self) -> None:
        self._record()  # the state only: the climb rows of RECOVERING take it from here

    def _act_hold(self) -> None:
        self.ceiling = self.ceiling_until_ms = None
        self.backoff_s = 0.0
        self.last_good = None
        self._record()

    # -- helpers ---------------------------------------------------------------------------------

    def _what(self) -> str:
        temp = self._facts.temp
        return (
            "firmware overheat trip"
            if self._facts._r.overheat or temp is None
            else f"temp {temp:g} °C"
        )

    def _ceiling_if_raised(self) -> None:
        """Critical right after a restore step: that frequency failed too (issue 13.11)."""
        if self._facts.just_raised:
            self.backoff_s = min(
                MAX_BACKOFF_S,
                self.backoff_s * 2 if self.backoff_s else self.limits.stable_timeframe * 3600,
            )
            self.ceiling = self.frequency
            self.ceiling_until_ms = self._now + int(self.backoff_s * 1000)

    def _set(self, target: float | None, raised: bool = False) -> None:
        lim, f = self.limits, self.frequency
        target = lim.clamp(f if target is None else target)
        facts = self._facts
        if target > f + FREQ_EPS and facts.no_raise:
            target = f  # a hot or critical reading never raises the frequency (issue 13.1)
        self.raised = raised
        if abs(target - f) > FREQ_EPS:
            cmds = self._commands_for(target, self._fired.reason, raise_=target > f)
            if cmds:
                self._decision.commands.extend(cmds)
                self._note_levels(f, target)
                self.frequency = target
                self.last_change_ms = self._now
                if not lim.dry_run:
                    self.model.note_change(self._now, target)
            else:
                self.raised = False
        self._record()

    def _note_levels(self, old: float, new: float) -> None:
        """Once per episode: below SECOND_FREQUENCY, and below the firmware's option list."""
        lim = self.limits
        if new < lim.second_frequency - FREQ_EPS:
            if "floor" not in self._notes and not powercap.below_second(self):
                self._notes.add("floor")
                amb = self.model.ambient()
                at = f" ({amb:.1f} °C effective ambient)" if amb is not None else ""
                self._decision.events.append(
                    Event(
                        "floor",
                        f"SECOND_FREQUENCY cannot hold TEMP_THRESHOLD at this ambient{at}: "
                        f"going to {new:g} MHz (floor {lim.lowest:g})",
                        level="alarm",
                        origin="tempctl",
                    )
                )
        else:
            self._notes.discard("floor")
        lowest = LOWEST_OPTION.get((self.model_asic or "").upper())
        if lowest is not None and new < lowest - FREQ_EPS and "option" not in self._notes:
            self._notes.add("option")
            self._decision.events.append(
                Event(
                    "note",
                    f"{new:g} MHz is below the lowest frequencyOptions entry ({lowest:g}) of "
                    f"{self.model_asic}: the firmware accepts it (1-65535, axeos-api.md §5.2)",
                    origin="tempctl",
                )
            )

    def _record(self) -> None:
        f = self._facts
        # One row per poll: when start-up reconciliation already changed state on this
        # poll, the law's change extends that row, so no transition is ever lost.
        prev = self._decision.transition
        from_state = prev.from_state if prev else self._from_state.value
        reason = f"{prev.reason}; {self._fired.reason}" if prev else self._fired.reason
        self._decision.transition = Transition(
            from_state,
            self.current.value,
            reason,
            self.frequency,
            f.temp if f else None,
            self.ceiling,
            self.ceiling_until_ms,
            self.backoff_s,
            self.last_good,
        )

    def _alarm(self, message: str) -> None:
        self._decision.events.append(Event("alarm", message, level="alarm", origin="tempctl"))

    def _commands_for(
        self, target: float, reason: str, attempt: int = 1, raise_: bool = False
    ) -> list[Command]:
        """The commands that apply ``target``; [] when it cannot be applied (then the change
        is not believed: issue 13.9). A raise never spends the last restart of the hour,
        which stays for a throttle."""
        cmds = [Command("set_frequency", reason, target, attempt)]
        if self._restart_wanted():
            spare = 1 if raise_ else 0
            if self._restart_allowed(self._now, spare):
                self.restarts_ms.append(self._now)
                cmds.append(Command("restart", f"apply {target:g} MHz ({self.limits.apply})"))
            else:
                warned = self._budget_warned_ms
                if warned is None or self._now - warned >= 900_000:
                    self._budget_warned_ms = self._now
                    self._decision.events.append(
                        Event(
                            "restart",
                            f"{target:g} MHz needs a restart to apply but "
                            f"TEMPCTL_MAX_RESTARTS_PER_HOUR={self.limits.max_restarts_per_hour} "
                            + ("leaves none spare for a throttle" if raise_ else "is reached")
                            + ": not sent",
                            level="warning",
                            origin="tempctl",
                        )
                    )
                return []
        return cmds

    def _restart_wanted(self) -> bool:
        apply = self.limits.apply
        return apply == "restart" or (apply == "auto" and not self.live_capable)

    def _restart_allowed(self, now_ms: int, spare: int = 0) -> bool:
        hour_ago = now_ms - 3_600_000
        self.restarts_ms = [t for t in self.restarts_ms if t > hour_ago]
        return len(self.restarts_ms) + spare < self.limits.max_restarts_per_hour

    def _clip_future(self, now_ms: int) -> None:
        """Stamps restored from a run whose clock was ahead (issue 13.12) count as of the
        first poll: a bogus future change must not hold off settling or spend restarts. Done
        here, not in restore, so the daemon and replay clip at the same instant (23.4)."""
        self._clip_restored = False
        if self.last_change_ms is not None:
            self.last_change_ms = min(self.last_change_ms, now_ms)
        self.restarts_ms = [min(t, now_ms) for t in self.restarts_ms]
        if self.user_cap_ms is not None:
            self.user_cap_ms = min(self.user_cap_ms, now_ms)

    def _restore(self, snap: Snapshot) -> None:
        self._clip_restored = True
        if snap.frequency is not None:
            self.frequency = snap.frequency
        self.ceiling, self.ceiling_until_ms = snap.ceiling, snap.ceiling_until_ms
        self.backoff_s, self.last_good = snap.backoff_s, snap.last_good
        self.last_change_ms = snap.last_change_ms
        self.restarts_ms = list(snap.restarts_ms)
        if snap.model:
            params = ModelParams.from_json(snap.model, self.model.params)
            self.model = ThermalModel(params, self.time_scale)
            self.model.f = self.frequency
        self.model.warm(snap.recent, self.limits.temp_threshold)
        if snap.identity:
            self.identity = tuple(snap.identity)
        aftermath.loads(self, snap.before_trip)
        self.power_mhz = snap.power_cap  # usercap.narrow applies it
        usercap.narrow(self)
        if snap.user_cap is not None:
            usercap.apply(self, snap.user_cap, snap.user_cap_ms)
            # set in AxeOS after the last transition (a NORMAL device has none for it)
            self.frequency = min(self.frequency, snap.user_cap)
