"""The control laws as data: one table per law, read top to bottom, first match wins.

Each row names the states it may fire from, the state it leads to, the facts that
must all hold (``Facts`` properties, computed at most once per poll) and the action
that picks the new frequency (``Controller._act_<action>``). ``MODEL`` is the law of
tempctl 0.2 (targets from the learned device model, ``model.py``); ``LEVELS`` is the
law of tempctl 0.1 (fixed FIRST/SECOND levels, +STEP restores), kept so that old logs
replay to the same decisions and for side-by-side comparison.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from tempctl.core.cooling import fan_held
from tempctl.core.decision import State
from tempctl.core.limits import FREQ_EPS, PLL_STEP, Limits, WindowStats
from tempctl.core.reading import Reading

__all__ = [
    "CEILING_LIFT_C",
    "LAWS",
    "LEVELS",
    "MODEL",
    "Facts",
    "Row",
    "is_critical",
    "is_hot",
    "margin_c",
]

N, T1, T2, R = State.NORMAL, State.THROTTLED_1, State.THROTTLED_2, State.RECOVERING
ALL = (N, T1, T2, R)

MARGIN_C = 0.2  # before the filter has a reading (the model is not ready then either)
MARGIN_Z = 2.5  # model targets aim this many sds below TEMP_THRESHOLD: of the die estimate
# and of its wander until a change has settled (``margin_c``), so a quiet sensor costs little
# hash and a noisy one does not flap; 2.5 sd puts ~0.6 % of outcomes above their aim
ACT_NOW_C = 1.0  # this far above the threshold, act before the last change has settled
CEILING_LIFT_C = 1.0  # a failed step's ceiling lifts once predicted this far under the aim


@dataclass(frozen=True, slots=True)
class Row:
    source: tuple[State, ...]
    dest: State
    when: tuple[str, ...]  # Facts properties that must all be true
    action: str
    reason: str


def row(source, dest, when, action, reason) -> Row:
    src = tuple(source) if isinstance(source, (tuple, list)) else (source,)
    return Row(src, dest, tuple(when), action, reason)


LEVELS: tuple[Row, ...] = (
    # At or above TEMPCTL_CRITICAL, or the firmware's own overheat trip: straight to SECOND.
    row((N, T1, R), T2, ["critical"], "to_second", "critical"),
    row(
        T2,
        T2,
        ["critical", "settled", "floor_available"],
        "to_floor",
        "still critical at SECOND_FREQUENCY",
    ),
    row(T2, T2, ["critical", "above_second"], "to_second", "critical"),
    # Above TEMP_THRESHOLD (or the VR above TEMPCTL_VR_THRESHOLD).
    row(N, T1, ["hot", "above_first"], "to_first", "above threshold"),
    row(N, T2, ["hot"], "to_second", "above threshold, already at or below FIRST_FREQUENCY"),
    row(T1, T2, ["hot", "settled"], "to_second", "still above threshold after settling"),
    # Overheated right after a restore step: back to the last frequency that held.
    row(R, R, ["hot", "just_raised"], "back_off", "overheated after a restore step"),
    row(R, T1, ["hot", "settled", "above_first"], "to_first", "above threshold while recovering"),
    row(R, T2, ["hot", "settled"], "to_second", "above threshold while recovering"),
    # Above a power ceiling (TEMPCTL_POWER_LIMIT, the budget: powercap.py): down to it, in the
    # same state; under a ceiling that rose, NORMAL restores by STEP as after a throttle.
    *(row(s, s, ["over_power_cap", "settled"], "to_max", "above the power cap") for s in ALL),
    row(
        N,
        R,
        ["power_capped", "below_max", "settled", "cool", "can_step"],
        "step_up",
        "below MAX_FREQUENCY under a power cap that rose",
    ),
    # Stable for STABLE_TIMEFRAME (a query over the persisted log): start restoring.
    row((T1, T2), R, ["settled", "stable"], "step_up", "stable for STABLE_TIMEFRAME"),
    row(R, N, ["at_max", "settled", "not_hot"], "hold", "restored to MAX_FREQUENCY"),
    row(R, R, ["cool", "settled", "can_step"], "step_up", "cool after settling"),
)

MODEL: tuple[Row, ...] = (
    # A latched trip (v2.1.9-v2.10: 50 MHz until someone writes, axeos-api.md §9.2), now cool.
    row(ALL, T2, ["latched_cool"], "clear_latch", "latched overheat trip, chip cool again"),
    # The sensor repeats one value while the power says the die moved (stuck.py): its
    # readings are not evidence, and nothing says how hot the die is: the floor is the
    # level chosen to hold the threshold in any room (README "Choosing a floor").
    row(
        ALL,
        T2,
        ["sensor_stuck", "settled", "above_lowest"],
        "to_lowest",
        "temperature sensor stuck while the power moves: to the floor",
    ),
    # At or above TEMPCTL_CRITICAL, or the firmware's trip: down at once, never up.
    row(ALL, T2, ["critical", "critical_due"], "to_safe", "critical"),
    # Overheated right after a predicted-safe step: back to what held, remember the ceiling.
    row(R, R, ["hot", "just_raised"], "back_off", "overheated after a restore step"),
    # Above TEMP_THRESHOLD, or predicted to be over it before a change could settle:
    # to the highest frequency the model predicts holds the threshold (minus a margin).
    row(
        ALL,
        T2,
        ["over", "act_now", "target_below_second"],
        "throttle",
        "SECOND_FREQUENCY cannot hold TEMP_THRESHOLD at this ambient",
    ),
    row(ALL, T1, ["over", "act_now"], "throttle", "above threshold"),
    # Above a power ceiling (TEMPCTL_POWER_LIMIT, the budget: powercap.py): down to it.
    row(ALL, N, ["above_max", "settled"], "to_max", "above the power cap"),
    # NORMAL below MAX: the firmware's trip left F - 100 MHz (or a user lowered it), and
    # NORMAL has no way up of its own; judge the new level like a start below MAX.
    row(
        N,
        R,
        ["below_max", "settled", "not_hot"],
        "resume",
        "below MAX_FREQUENCY while NORMAL (set by the firmware or a user): climbing again",
    ),
    # The cooling got worse (a jump the model took into its °C/W) and the throttle's step
    # has taught the model since: climb on its prediction at once, once per jump, instead
    # of waiting STABLE_TIMEFRAME at the level the throttle picked before it had relearned.
    row(
        (T1, T2),
        R,
        ["settled", "relearned", "headroom"],
        "climb_relearned",
        "the model relearned the cooling",
    ),
    # Held for STABLE_TIMEFRAME (evidence only, a query over the persisted log): climb.
    row((T1, T2), R, ["settled", "stable", "headroom"], "climb", "stable for STABLE_TIMEFRAME"),
    row(R, N, ["at_max", "settled", "not_hot"], "hold", "restored to MAX_FREQUENCY"),
    row(R, R, ["settled", "headroom", "not_hot"], "climb", "predicted to hold the threshold"),
)

LAWS: dict[str, tuple[Row, ...]] = {"levels": LEVELS, "model": MODEL}


# -- predicates shared by Facts and the controller's fast path --------------------------------


def margin_c(model, horizon_s: float) -> float:
    """How far below TEMP_THRESHOLD the model law aims: from the estimate's uncertainty by
    the time a change has settled (``horizon_s``)."""
    sd = model.sd(horizon_s)
    return MARGIN_C if sd is None else MARGIN_Z * sd


def is_critical(r: Reading, lim: Limits) -> bool:
    return r.overheat or (r.temp is not None and r.temp >= lim.critical)


def is_hot(r: Reading, lim: Limits) -> bool:
    if r.temp is None:  # only reached with the firmware overheat flag set
        return True
    if r.vr_temp is not None and r.vr_temp > lim.vr_threshold:
        return True
    # a die the fan PID holds at its temptarget is judged by the model instead (cooling.py)
    return r.temp > lim.temp_threshold and not fan_held(r, lim)


class Facts:
    """The conditions of one poll, computed lazily and at most once each."""

    __slots__ = (
        "_c",
        "_r",
        "_now",
        "_window",
        "_stable",
        "_target",
        "_over",
        "temp",
        "vr",
        "die",
        "_filtered",
    )

    def __init__(
        self, controller, reading: Reading, now_ms: int, window: Callable[[], WindowStats] | None
    ):
        self._c = controller
        self._r = reading
        self._now = now_ms
        self._window = window
        self._stable: bool | None = None
        self._target: float | None = None
        self._over: bool | None = None  # two MODEL rows test it; the prediction is the cost
        self.temp = reading.temp
        self.vr = reading.vr_temp
        # The law's temperature. Under the model law: the filtered die (estimator.py), in
        # which a lone reading far from the prediction waits for a second one; critical
        # readings act on their own regardless (``critical``). While the model is not
        # updating (no power or voltage in the readings) the reading itself, as in tempctl 0.1.
        m = controller.model
        est = None
        if (
            controller.limits.law == "model"
            and m.updating
            and m.last_ts == now_ms
            and reading.temp is not None
        ):
            est = m.die_now(now_ms)
        self._filtered = est is not None
        self.die = est if self._filtered else reading.temp

    # -- temperature ------------------------------------------------------------------------

    @property
    def critical(self) -> bool:
        return is_critical(self._r, self._c.limits)

    @property
    def hot(self) -> bool:
        lim = self._c.limits
        if not self._filtered:
            return is_hot(self._r, lim)
        if self.vr is not None and self.vr > lim.vr_threshold:
            return True
        return self.die > lim.temp_threshold and not fan_held(self._r, lim)

    @property
    def no_raise(self) -> bool:
        """A hot or critical reading never raises the frequency (issue 13.1): the reading
        itself counts here, not only the estimate; it costs a poll's delay, never a change."""
        return self.hot or self.critical or is_hot(self._r, self._c.limits)

    @property
    def not_hot(self) -> bool:
        return not self.hot

    @property
    def cool(self) -> bool:
        lim = self._c.limits
        return (
            self.die is not None
            and self.die <= lim.temp_threshold - lim.hysteresis
            and not self.hot
        )

    @property
    def over(self) -> bool:
        """Above the threshold now, or predicted above it by the time a change settles."""
        if self._over is None:
            c = self._c
            if self.hot:
                self._over = True
            elif fan_held(self._r, c.limits):
                # what the fan at 100 % would hold: is the frequency above that?
                ok = c.model.highest(
                    c.limits.temp_threshold, c.limits.lowest, c.frequency, c.lookahead_s()
                )
                self._over = ok is not None and ok < c.frequency - FREQ_EPS
            else:
                pred = c.predicted(c.frequency, c.lookahead_s())
                self._over = pred is not None and pred > c.limits.temp_threshold
        return self._over

    @property
    def act_now(self) -> bool:
        c = self._c
        if self.settled or c.current is State.NORMAL:
            return True
        return self.die is not None and self.die > c.limits.temp_threshold + ACT_NOW_C

    @property
    def critical_due(self) -> bool:
        """Critical: at most SECOND_FREQUENCY at once; lower only once that has settled."""
        return self.above_second or self.settled

    @property
    def relearned(self) -> bool:
        """A jump of the cooling for the worse within STABLE_TIMEFRAME, not yet climbed on,
        and the model has finished learning from the steps since (model.cooling)."""
        c = self._c
        m, lim = c.model, c.limits
        cool = m.cooling
        return (
            lim.law == "model"
            and cool is not None
            and cool[1] > 1
            and cool[0] != c.relearned_ms
            and self._now - cool[0] < lim.window_ms
            and not m.learning
            and m.ready
        )

    @property
    def sensor_stuck(self) -> bool:
        return self._c.sensor_stuck

    @property
    def latched_cool(self) -> bool:
        c = self._c
        return (
            c.trip_latches
            and self._r.overheat
            and self.temp is not None
            and self.temp <= c.limits.temp_threshold - c.limits.hysteresis
        )

    # -- frequency ----------------------------------------------------------------------------

    @property
    def settled(self) -> bool:
        c = self._c
        return c.last_change_ms is None or self._now - c.last_change_ms >= c.limits.settle * 1000

    @property
    def floor_available(self) -> bool:
        lim = self._c.limits
        return lim.lowest < lim.second_frequency and self._c.frequency > lim.lowest + FREQ_EPS

    @property
    def above_lowest(self) -> bool:
        return self._c.frequency > self._c.limits.lowest + FREQ_EPS

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
    def above_max(self) -> bool:
        return self._c.frequency > self._c.limits.max_frequency + FREQ_EPS

    @property
    def below_max(self) -> bool:
        return not self.at_max

    @property
    def over_power_cap(self) -> bool:
        """Above a power ceiling (only a power cap narrows MAX under the levels law)."""
        return self._c.power_mhz is not None and self.above_max

    @property
    def power_capped(self) -> bool:
        """TEMPCTL_POWER_LIMIT, or a share of TEMPCTL_POWER_BUDGET, applies to this device."""
        c = self._c
        return c.base_limits.power_limit > 0 or c.power_share is not None

    @property
    def just_raised(self) -> bool:
        c = self._c
        return c.last_good is not None and c.frequency > c.last_good + FREQ_EPS and c.raised

    @property
    def can_step(self) -> bool:
        return self._c.next_step(self._now) is not None

    @property
    def target(self) -> float:
        """Where a throttle goes: the model's pick, never above the current frequency."""
        if self._target is None:
            self._target = self._c.throttle_target(self.die)
        return self._target

    @property
    def target_below_second(self) -> bool:
        return self.target < self._c.limits.second_frequency - FREQ_EPS

    @property
    def headroom(self) -> bool:
        """The model predicts at least one PLL step more still holds the threshold."""
        up = self._c.climb_target(self._now)
        return up is not None and up >= self._c.frequency + PLL_STEP - FREQ_EPS

    @property
    def stable(self) -> bool:
        if self._stable is None:
            c = self._c
            lim = c.limits
            if self._window is None:
                self._stable = False
            elif lim.law == "levels":
                self._stable = self._window().ok(lim)
            else:
                # Held: no unrepresentative or missing reading and no reading above the
                # threshold (the window: it counts readings from before a restart), or, as
                # single noisy readings over it are expected when aiming just below it, the
                # filtered die never above it (the model) for STABLE_TIMEFRAME; all of it after
                # the last change had settled (readings within settle of a change are not
                # evidence of the new level). No average test: the aim is just below on purpose.
                ws = self._window()
                since = None if c.last_change_ms is None else c.last_change_ms + lim.settle * 1000
                held = ws.stable_ms >= lim.window_ms or (
                    ws.held_ms >= lim.window_ms and c.model.calm_ms(self._now) >= lim.window_ms
                )
                self._stable = (
                    ws.count > 0 and held and (since is None or self._now - since >= lim.window_ms)
                )
        return self._stable
