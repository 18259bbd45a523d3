"""The device's thermal response, learned online from its own readings. Pure: no I/O, no clock.

It is the plant of ``tempctl/sim/plant.py`` (the model ``tempctl fit`` estimates offline),
linearised at the operating point and updated incrementally:

    P  = p0 + k·f·V²·(1 + leak·(T − 60))       board power, W
    T∞ = Ta + s(duty)·R·P                        steady die temperature, °C
    s(duty) = ((100 + 10) / (duty + 10))^0.55    fan effect (mtab3000 autofan fit, plant.py)
    T(t) = T∞ − (1 − share)·ΔT∞·e^(−t/τ)         after a step (the fast part settles in ~1 s)

so dT∞/df = s·R·k·V²·(1 + leak·(T − 60)) / (1 − s·R·k·f·V²·leak). ``R`` (°C/W at 100 % fan)
and ``k`` (W per MHz·V²) are learned from the device's own frequency steps; ``τ`` from the
transient after each step; ``Ta`` (the effective ambient) and its trend from every
representative reading. With autofan below saturation the firmware's PID holds ``temptarget``
(axeos-api.md §9.4), so only the fan-at-100 % response can push the die above it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

from tempctl.core.decision import Event
from tempctl.core.estimator import ACCEPTED, CONFIRMED, DieFilter
from tempctl.core.modelparams import ModelParams, fan_scale, prior_for
from tempctl.core.trend import AmbientTrend

__all__ = ["ModelParams", "ThermalModel", "fan_scale", "prior_for"]

P0_SHARE = 0.28  # static share of board power: Gamma 5.14 W of ~18.4 W at 575 MHz (plant.py)
SMOOTH_S = 90.0  # time constant of the smoothed power
PROCESS_C_PER_SQRT_H = 0.3  # the steady die wanders this much (sd) in an hour beyond the
# trend: the filter's process noise. With it a 0.3 °C sensor gives a ±0.08 °C estimate at 30 s
# polls, a 0.06 °C one ±0.03 °C; and the die may wander ±0.04 °C within a 210 s settle.
STEP_REL_ERR = 0.25  # a step's predicted ΔT∞ is this uncertain (R and k learned to ~±25 %)
PAIR_Z = 2.5  # sds of that a raise's voltage share is judged by (as law.MARGIN_Z)
COOLING_JUMP_C = 1.0  # a confirmed jump this large at unchanged settings is the cooling: no
# room warms 1 °C between two polls (TREND_MAX_C_PER_S is 10 °C/h)
POWER_GATE_W, POWER_GATE_REL = 2.0, 0.5  # a power reading this far from the smoothed one waits
# for a second (a 900 W spike would teach k 4x too high, issue 20)
POWER_MAX_W = 400.0  # no single board draws this; a reading above is the parser's junk
STALE_POLLS = 10  # the model updates again after this many readings with power and voltage
AUTOFAN_SATURATED = 98.0  # % duty: above this the PID has no headroom left
LEARN_MIN_DF = 10.0  # MHz: smaller steps say too little about R and k
LEARN_MIN_DP = 0.6  # W: at ~1.1 °C/W a smaller step moves the die < 0.7 °C (5 of the
# EMC2101's 0.125 °C steps, plant.py), which a warming room's drift swamps: learning from
# the closet's 0.3 W steps drove R to 2.3 °C/W (tests/test_trip_missed.py)
LEARN_GAIN = 0.4  # weight of one step's observation
WHOLE_POLLS = 20  # this many readings in a row in whole degrees: a 1 °C sensor (Supra)


@dataclass(slots=True)
class _Step:
    """A frequency change being watched, to learn R, k and τ from its response."""

    ts_ms: int
    f_from: float
    f_to: float
    t_before: float
    p_before: float
    duty: float | None
    slope: float  # ambient trend at the step, °C/s
    t_pred: float  # predicted ΔT∞
    var_before: float  # the filter's variance of t_before
    base_ms: int = 0  # the first change of a chain of steps too quick to learn one by one
    mv_from: float = 0.0  # the core voltage before it (a raise brings its voltage first)
    n: int = 0
    t_sum: float = 0.0
    p_sum: float = 0.0
    ts_sum: float = 0.0
    transient: tuple[tuple[float, float], ...] = ()


class ThermalModel:
    """One device's learned response. Feed ``observe`` every representative reading.

    ``time_scale`` is TEMPCTL_SETTLE / 180 s: the model's own time constants (smoothing,
    trend window) scale with it, and τ stays below settle / 2 (the user's word that a change
    has shown its effect by then), so compressed-time runs (tests, the demo) behave like
    real time.
    """

    def __init__(self, params: ModelParams, time_scale: float = 1.0):
        self.ts = max(time_scale, 1e-3)
        self.tau_max = 90.0 * self.ts
        # the same bound _learn keeps, so a learned τ survives a restart unchanged
        params = replace(params, tau_s=min(params.tau_s, self.tau_max))
        self.params = params
        self.kf = DieFilter(params.noise_c)  # t_ss: the steady die at the current f
        self.updating = True  # False while readings lack power or voltage (STALE_POLLS)
        self._good_polls = STALE_POLLS
        self._p_held: float | None = None  # a power reading far from the smoothed one
        self.gated = False  # the last reading was held by the filter or the power gate
        self._whole = 0  # readings in a row in whole degrees (a 1 °C sensor: DieFilter floor)
        # (ts, °C/W ratio, die jump °C) of the last jump the cooling made (cooling.watch)
        self.cooling: tuple[int, float, float] | None = None
        self.events: list[Event] = []  # notes for the log, drained by the caller
        self.first_ms: int | None = None  # first reading seen (since a start or a restore)
        self.hot_ms: int | None = None  # last reading whose filtered die was above threshold
        self.p: float | None = None  # smoothed power, W
        self.f: float | None = None
        self.mv: float | None = None
        self.duty: float | None = None
        self.autofan = False
        self.last_ts: int | None = None
        self.change: tuple[int, float] | None = None  # (ts, predicted ΔT∞) of the last change
        self._volt_ts: int | None = None  # when voltage_set last moved the voltage
        self._step: _Step | None = None
        self.trend = AmbientTrend(self.ts)  # the room's, from settled readings (trend.py)
        self._slope: tuple[int, float, float] | None = None  # (version, R, slope())
        # one-entry caches: polls come at a fixed spacing and the fan duty rarely moves
        self._scale_of: tuple[float | None, float] = (None, fan_scale(None))
        self._smooth_of: tuple[float, float] = (-1.0, 0.0)

    # -- what the law asks --------------------------------------------------------------------

    @property
    def t_ss(self) -> float | None:
        return self.kf.x

    def calm_ms(self, now_ms: int) -> int:
        """How long the filtered die has stayed at or below the threshold (0 before any
        reading: a restart starts the count again, which only delays a climb)."""
        if self.first_ms is None:
            return 0
        since = self.first_ms if self.hot_ms is None else max(self.hot_ms, self.first_ms)
        return now_ms - since

    def sd(self, horizon_s: float = 0.0) -> float | None:
        """Standard deviation of the steady-die estimate ``horizon_s`` from now: what the
        filter is unsure of, and what the die may wander by before then (None before the
        first reading)."""
        if self.kf.x is None:
            return None
        wander = max(0.0, self.kf.wander_var)
        return math.sqrt(self.kf.var + self._process_var(horizon_s) + wander)

    def _process_var(self, dt_s: float) -> float:
        return PROCESS_C_PER_SQRT_H**2 * dt_s / (3600.0 * self.ts)

    def die_now(self, ts_ms: int) -> float | None:
        """The filtered die temperature now: the steady estimate minus the lag still to come."""
        x = self.kf.x
        if x is None:
            return None
        if self.change is not None:
            p = self.params
            age = (ts_ms - self.change[0]) / 1000.0
            if 0 <= age < 8 * p.tau_s:
                x -= (1 - p.share) * self.change[1] * math.exp(-age / p.tau_s)
        return x

    @property
    def learning(self) -> bool:
        """A change is being watched to learn from (``_learn``)."""
        return self._step is not None

    @property
    def ready(self) -> bool:
        return (
            self.updating
            and self.t_ss is not None
            and self.p is not None
            and self.f
            and self.mv
            and self.params.k > 0
        )

    def ambient(self) -> float | None:
        """Effective ambient: what T∞ would be with no power."""
        if not self.ready:
            return None
        return self.t_ss - fan_scale(self.duty) * self.params.r * self.p

    def slope(self) -> float:
        """Ambient trend, °C per second (0 until 10 minutes of evidence)."""
        key = (self.trend.version, self.params.r)  # a relearned R re-reads the window
        if self._slope is None or self._slope[:2] != key:
            self._slope = (*key, self.trend.slope(self.params.r))
        return self._slope[2]

    def dt_df(self, duty: float | None = None) -> float:
        """°C of steady die per MHz at the operating point (leakage feedback included)."""
        p = self.params
        v2 = (self.mv / 1000.0) ** 2
        sr = self._scale(self.duty if duty is None else duty) * p.r
        t = self.t_ss
        gain = 1.0 - sr * p.k * self.f * v2 * p.leak
        return sr * p.k * v2 * (1.0 + p.leak * (t - 60.0)) / max(gain, 0.2)

    def _scale(self, duty: float | None) -> float:
        """``fan_scale(duty)``, remembered for the last duty asked about."""
        last, value = self._scale_of
        if duty != last:  # None (no fan reading) is cached too: it means 100 %
            value = fan_scale(duty)
            self._scale_of = (duty, value)
        return value

    def _dv(self, f: float, mv: float, duty: float | None = None) -> float:
        """°C of steady die from moving the core voltage from the present one to ``mv`` at
        ``f`` MHz: the dynamic power k·f·V² scales with V² (same linearisation as dt_df)."""
        p = self.params
        v2, w2 = (self.mv / 1000.0) ** 2, (mv / 1000.0) ** 2
        sr = self._scale(self.duty if duty is None else duty) * p.r
        gain = 1.0 - sr * p.k * self.f * v2 * p.leak
        return sr * p.k * f * (w2 - v2) * (1.0 + p.leak * (self.t_ss - 60.0)) / max(gain, 0.2)

    def predict(self, f: float, horizon_s: float = 0.0, volts=None) -> float | None:
        """Steady die temperature at frequency ``f``, for the ambient ``horizon_s`` from now.

        ``volts``: the voltage a raise to ``f`` brings (the governor's, voltage.py: it rises
        before the frequency, issue 21), so the pair (f, V) is predicted, not f at today's V.
        A fall keeps today's voltage."""
        if not self.ready:
            return None
        mv = volts(f) if volts is not None and f > self.f else None
        extra = 0.0
        drift = self.slope() * horizon_s
        if self.autofan and (self.duty or 0) < AUTOFAN_SATURATED:
            # the PID holds the die where it is until the fan reaches 100 %
            full = self.t_ss - (fan_scale(self.duty) - 1.0) * self.params.r * self.p
            if mv is not None and mv != self.mv:
                extra = self._dv(f, mv, 100.0)
            return max(self.t_ss, full + self.dt_df(100.0) * (f - self.f) + extra) + drift
        if mv is not None and mv != self.mv:
            extra = self._dv(f, mv)
        return self.t_ss + self.dt_df() * (f - self.f) + extra + drift

    def highest(
        self,
        target_c: float,
        lo: float,
        hi: float,
        horizon_s: float = 0.0,
        grid: float = 6.25,
        volts=None,
    ) -> float | None:
        """The highest frequency on the PLL grid in [lo, hi] predicted to hold ``target_c``;
        with ``volts`` (see ``predict``) the highest whose pair (f, V(f)) holds it."""
        top = self._highest(target_c, lo, hi, horizon_s, grid)
        if top is None or volts is None or top <= self.f + 1e-6:
            return top

        def holds(f: float) -> bool:
            # the voltage's share of the step is as uncertain as a step's (STEP_REL_ERR):
            # the law's margin covers the estimate, this covers what the move adds to it
            mv = volts(f)
            extra = abs(self._dv(f, mv)) if mv != self.mv else 0.0
            return self.predict(f, horizon_s, volts) + PAIR_Z * STEP_REL_ERR * extra <= target_c

        if holds(top):
            return top
        # V(f) never falls as f rises (voltage.Governor.need), so neither does the
        # prediction: the highest grid step above f that holds, by bisection
        base = math.floor(self.f / grid + 1e-9) * grid
        a, b = 0, math.ceil((top - base) / grid - 1e-9)  # base + a·grid holds (or is f)
        while b - a > 1:
            m = (a + b) // 2
            if holds(base + m * grid):
                a = m
            else:
                b = m
        return max(lo, min(hi, base + a * grid))

    def _highest(
        self, target_c: float, lo: float, hi: float, horizon_s: float, grid: float
    ) -> float | None:
        if not self.ready:
            return None
        if self.predict(hi, horizon_s) <= target_c:
            return hi
        base = self.predict(self.f, horizon_s)
        autofan = self.autofan and (self.duty or 0) < AUTOFAN_SATURATED
        slope = self.dt_df(100.0 if autofan else None)
        if autofan:
            full = self.t_ss - (fan_scale(self.duty) - 1.0) * self.params.r * self.p
            base = full + self.slope() * horizon_s
        if slope <= 0:
            return lo
        f = self.f + (target_c - base) / slope
        f = math.floor(f / grid + 1e-9) * grid
        return max(lo, min(hi, f))

    # -- learning ---------------------------------------------------------------------------------

    def note_change(self, ts_ms: int, f_to: float) -> None:
        """A frequency change took effect (ours, the firmware's or a user's)."""
        p = self.params
        if self.ready:
            pred = self.dt_df() * (f_to - self.f)
            both = self._volt_ts == ts_ms and self.change is not None and self.change[0] == ts_ms
            self.change = (ts_ms, pred + self.change[1] if both else pred)
            st = self._step
            if both:  # its t_before is a prediction (voltage_set's), not a measured die
                self._step = None
            elif st is not None and st.duty == self.duty and ts_ms - st.ts_ms < 8000 * p.tau_s:
                # the last step has not settled yet (a climb steps every settle period,
                # under the 6 τ a step needs): learn from the whole chain once it has
                self._step = _Step(
                    ts_ms,
                    st.f_from,
                    f_to,
                    st.t_before,
                    st.p_before,
                    st.duty,
                    st.slope,
                    st.t_pred + pred,
                    st.var_before,
                    st.base_ms,
                    st.mv_from,
                )
            else:
                self._step = _Step(
                    ts_ms,
                    self.f,
                    f_to,
                    self.t_ss,
                    self.p,
                    self.duty,
                    self.slope(),
                    pred,
                    self.kf.var,
                    ts_ms,
                    self.mv or 0.0,
                )
            self.kf.shift(pred, STEP_REL_ERR)  # the estimate now stands for the new frequency
            self.p += pred / max(fan_scale(self.duty) * self.params.r, 1e-6) if pred else 0.0
        else:
            self.change, self._step = None, None
            self.kf.reset()  # nothing says where the die goes: start again from readings
        self.f = f_to
        self.trend.new_stretch()

    def _volts_moved(self, mv: float, at: int | None = None) -> None:
        """The core voltage moved (the governor, voltage.py, or a user): like a frequency
        change, the die heads where the new power takes it. Commanded at the last poll (or
        ``at``): with that poll's frequency change it is one step, (f0, V0) -> (f1, V1),
        which ``_learn`` still learns from; alone, it ends a step being watched (its power
        moved under it)."""
        if not self.ready:
            return
        pred = self._dv(self.f, mv)
        if at is None:
            at = self.last_ts if self.last_ts is not None else 0
        st = self._step
        if self.change is not None and self.change[0] >= at:
            at, total = self.change[0], self.change[1] + pred
            if st is not None and st.ts_ms == at:
                st.t_pred += pred
        else:
            total, self._step = pred, None
        self.change = (at, total)
        self.kf.shift(pred, STEP_REL_ERR)
        self.p += pred / max(fan_scale(self.duty) * self.params.r, 1e-6) if pred else 0.0
        self.trend.new_stretch()  # the power moved: a level shift of Ta, not a trend

    def voltage_set(self, ts_ms: int, mv: float) -> None:
        """A voltage command sent at ``ts_ms`` (the governor's revert on errors, driver.py):
        the estimate moves now, so the law judges the new pair in the same poll; a frequency
        change of the same poll adds to it (``note_change``)."""
        if not self.ready or mv == self.mv:
            return
        self._volts_moved(mv, ts_ms)
        self.mv, self._volt_ts = float(mv), ts_ms

    def forget_transient(self) -> None:
        """A reboot or a stop: what was being smoothed no longer holds."""
        self.kf.reset()
        self.p = self._p_held = None
        self.change = self._step = None

    def observe(
        self,
        ts_ms: int,
        temp: float,
        power: float | None,
        freq: float | None,
        mv: float | None,
        duty: float | None,
        autofan: bool | None,
        threshold: float | None = None,
    ) -> str | None:
        """A representative reading. Returns a note when the learned parameters changed.

        Every reading with a frequency feeds the filter; only those with a plausible power
        and voltage keep the model updating, and only readings neither gate held teach it."""
        self.gated = False
        if freq is None:
            return None
        has_power = power is not None and mv is not None and power > 0 and mv > 0
        self._note_updating(ts_ms, has_power)
        p = self.params
        if self.f is None or abs(freq - self.f) > 0.5:
            self.note_change(ts_ms, freq)
        if has_power and self.mv and mv != self.mv:
            self._volts_moved(float(mv))
        if has_power and (mv != self.mv or duty != self.duty):
            self.kf.last = None  # noise pairs only at unchanged settings
        if has_power:
            self.mv, self.duty, self.autofan = float(mv), duty, bool(autofan)
        if has_power and p.k <= 0:  # first reading: the dynamic share of this board's power
            v2 = (mv / 1000.0) ** 2
            self.params = p = replace(
                p, k=(1 - P0_SHARE) * power / (freq * v2 * (1 + p.leak * (temp - 60)))
            )
        # lag-corrected steady-state estimate of this reading
        est, settling = temp, False
        if self.change is not None:
            age = (ts_ms - self.change[0]) / 1000.0
            if age < 8 * p.tau_s:
                est = temp + (1 - p.share) * self.change[1] * math.exp(-age / p.tau_s)
                settling = age < 4 * p.tau_s
        dt = 0.0 if self.last_ts is None else max(0.0, (ts_ms - self.last_ts) / 1000.0)
        self.last_ts = ts_ms
        whole = self._whole
        self._whole = whole + 1 if temp == int(temp) else 0
        if (self._whole >= WHOLE_POLLS) != (whole >= WHOLE_POLLS):
            self.kf.quantised(1.0 if self._whole else 0.0)
        before = self.kf.x
        self.kf.predict(self.slope() * dt, self._process_var(dt))
        status = self.kf.update(est, learn_noise=not settling)
        if self.first_ms is None:
            self.first_ms = ts_ms
        die = self.die_now(ts_ms)
        if threshold is not None and die is not None and die > threshold:
            self.hot_ms = ts_ms
        power_ok = has_power and self._power_plausible(power)
        self.gated = status not in (ACCEPTED, CONFIRMED) or not power_ok
        if not has_power:
            return None
        if power_ok:
            if self.p is None:
                self.p = power
            else:
                last_dt, a = self._smooth_of
                if dt != last_dt:
                    a = 1.0 - math.exp(-dt / (SMOOTH_S * self.ts))
                    self._smooth_of = (dt, a)
                self.p += a * (power - self.p)
        if self.p is None or self.t_ss is None:
            return None
        if status == CONFIRMED:
            return self._jumped(ts_ms, before)
        if not settling:
            self.trend.add(ts_ms / 1000.0, self.t_ss, self._scale(duty) * self.p)
        if self.gated or not self.updating:
            return None  # never learned from: a spike, a junk power value, a stale model
        return self._learn(ts_ms, temp, power) or self.noise_note()

    def warm(self, readings, threshold: float) -> None:
        """Rebuild the filter after a restart from the log's last readings (``Snapshot.recent``:
        (ts_ms, temp, frequency) of representative readings, oldest first), so a restart
        neither forgets what the die was doing nor how long it stayed under the threshold.
        The filter only: the steps among them were learned from in their own run."""
        f_prev = None
        for ts_ms, temp, freq in readings:
            if f_prev is not None and abs(freq - f_prev) > 0.5:
                self.kf.reset()  # a change the model did not predict here: start again
            if self.last_ts is not None:
                dt = max(0.0, (ts_ms - self.last_ts) / 1000.0)
                self.kf.predict(0.0, self._process_var(dt))
            self.kf.update(temp, learn_noise=False)
            self.last_ts, f_prev = ts_ms, freq
            if self.first_ms is None:
                self.first_ms = ts_ms
            if self.kf.x > threshold:
                self.hot_ms = ts_ms
        if f_prev is not None and self.f is not None and abs(self.f - f_prev) > 0.5:
            self.kf.reset()  # the device runs another frequency than the readings show

    def _note_updating(self, ts_ms: int, has_power: bool) -> None:
        """Readings without power or voltage: say once that the model stops updating."""
        self._good_polls = self._good_polls + 1 if has_power else 0
        now = self._good_polls >= STALE_POLLS
        if now == self.updating:
            return
        self.updating = now
        if now:
            msg = "model updating again: readings carry power and coreVoltage"
        else:
            self._step = None
            msg = (
                "model not updating: a reading without a plausible power or coreVoltage; "
                "the law acts on the temperature readings alone until "
                f"{STALE_POLLS} readings in a row carry both"
            )
        self.events.append(Event("note", msg, level="info" if now else "warning", origin="device"))

    def _power_plausible(self, power: float) -> bool:
        """False for a power reading far from the smoothed one, until a second confirms it;
        never for one above POWER_MAX_W, however many agree (a firmware's junk can repeat)."""
        if power > POWER_MAX_W:
            return False
        ref = self.p
        if ref is None:
            return True
        if abs(power - ref) <= max(POWER_GATE_W, POWER_GATE_REL * ref):
            self._p_held = None
            return True
        held = self._p_held
        if held is not None and abs(power - held) <= max(POWER_GATE_W, 0.1 * held):
            self.p, self._p_held = (held + power) / 2, None  # two agree: the power moved
            self._step = None  # a step that straddles it teaches nothing
            return True
        self._p_held = power
        return False

    def _jumped(self, ts_ms: int, before: float | None) -> str | None:
        """Two readings agree the die moved far from the estimate. At unchanged settings and
        fan, faster than any room warms: the cooling changed; the °C/W takes the jump.
        Within 8 τ of a change the jump is that step's own response, missed by the model:
        what the step is watched for (``_learn`` reads the readings, not the filter)."""
        p = self.params
        settled = self.change is None or (ts_ms - self.change[0]) / 1000.0 >= 8 * p.tau_s
        if settled:
            self._step = None
        fixed_fan = not self.autofan or (self.duty or 0) >= AUTOFAN_SATURATED
        if before is None or not settled or not fixed_fan or not self.updating:
            return None
        jump = self.t_ss - before
        if abs(jump) < COOLING_JUMP_C or not self.p:
            return None
        r = min(max(p.r + jump / (self._scale(self.duty) * self.p), p.r / 3), p.r * 3)
        ratio = r / p.r
        self.params = replace(p, r=r)
        self.cooling = (ts_ms, ratio, jump)
        self.trend.reset()  # the window's Ta was the old plant's: the trend starts again
        word = "worse" if ratio > 1 else "better"
        return (
            f"cooling {word}: °C/W x{ratio:.2f} ({p.r:.3f} -> {r:.3f}): the die moved "
            f"{jump:+.1f} °C at unchanged settings, faster than a room warms"
        )

    def noise_note(self) -> str | None:
        """A note when the learned sensor noise drifted 25 % from the persisted one."""
        n, kept = self.kf.noise_c, self.params.noise_c
        if abs(n - kept) <= 0.25 * kept:
            return None
        self.params = replace(self.params, noise_c=round(n, 4))
        return f"learned sensor noise {n:.3f} °C (sd of one reading, was {kept:.3f})"

    def _learn(self, ts_ms: int, temp: float, power: float) -> str | None:
        st = self._step
        if st is None:
            return None
        p = self.params
        age = (ts_ms - st.ts_ms) / 1000.0
        if age < 4 * p.tau_s:
            if len(st.transient) < 24:
                st.transient += ((age, temp),)
            return None
        st.n += 1
        st.t_sum += temp
        st.p_sum += power
        st.ts_sum += (ts_ms - st.base_ms) / 1000.0
        if age < 6 * p.tau_s or st.n < 2:
            return None
        self._step = None
        df = st.f_to - st.f_from
        t_after, p_after = st.t_sum / st.n, st.p_sum / st.n
        d_t = t_after - st.t_before - st.slope * (st.ts_sum / st.n)
        d_p = p_after - st.p_before
        fixed_fan = not self.autofan and st.duty == self.duty
        if abs(df) < LEARN_MIN_DF or abs(d_p) < LEARN_MIN_DP or not fixed_fan:
            return None
        s = fan_scale(self.duty)
        r_obs = min(max(d_t / (s * d_p), p.r / 3), p.r * 3)
        v2 = (self.mv / 1000.0) ** 2
        denom = v2 * (df * (1 + p.leak * (t_after - 60)) + st.f_to * p.leak * d_t)
        if st.mv_from and st.mv_from != self.mv:  # the voltage moved with it: k·(f1V1² - f0V0²)
            w2 = (st.mv_from / 1000.0) ** 2
            denom += st.f_from * (v2 - w2) * (1 + p.leak * (t_after - d_t - 60))
        k_obs = d_p / denom if denom else p.k
        k_obs = min(max(k_obs, p.k / 3), p.k * 3)
        tau = p.tau_s
        taus = []
        tr = st.transient
        for (a1, t1), (a2, t2) in zip(tr, tr[1:]):
            r1, r2 = t1 - t_after, t2 - t_after
            if abs(r1) > 0.25 and r1 * r2 > 0 and 0.05 < r2 / r1 < 0.95 and a2 > a1:
                taus.append((a2 - a1) / -math.log(r2 / r1))
        if taus:
            taus.sort()
            tau = min(max(taus[len(taus) // 2], self.tau_max / 40), self.tau_max)
        # weighted by what the step tells: its expected die change against the noise of
        # the before and after estimates
        sig2 = (s * p.r * d_p) ** 2
        g = LEARN_GAIN * sig2 / (sig2 + st.var_before + self.kf.noise_var / st.n)
        self.params = replace(
            p,
            r=p.r + g * (r_obs - p.r),
            k=p.k + g * (k_obs - p.k),
            tau_s=p.tau_s + g * (tau - p.tau_s),
            steps=p.steps + 1,
        )
        return (
            f"learned from {st.f_from:g} -> {st.f_to:g} MHz: {self.params.r:.3f} °C/W, "
            f"k {self.params.k:.5f} W/(MHz·V²), tau {self.params.tau_s:.0f} s"
        )
