"""Safety invariants of the controller under random reading streams (hypothesis stateful).

Random valid/invalid readings, firmware overheat flags, devices that ignore
commands, failing commands and clock steps. After every poll:
never above MAX_FREQUENCY; only configured levels, restore steps, back-offs and
the documented critical floor; upward steps only after settling; no law step on
an invalid reading alone; restarts within the hourly limit; and at the end the
whole run replays to identical decisions.
"""

from __future__ import annotations

from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, rule

from tempctl.core.controller import FREQ_EPS, Controller, Limits
from tempctl.core.reading import Reading
from tempctl.core.window import StableWindow

LIM = Limits(
    check_interval=1,
    settle=10,
    stable_timeframe=40 / 3600,
    step=25,
    critical_floor=300,
    apply="auto",
    max_restarts_per_hour=3,
    law="levels",
)


class ControllerMachine(RuleBasedStateMachine):
    @initialize(freq=st.sampled_from([350.0, 400.0, 490.0, 575.0, 650.0]), live=st.booleans())
    def start(self, freq, live):
        self.ctl = Controller(LIM, "d")
        self.ctl.live_capable = live
        self.live = live
        self.win = StableWindow(LIM)
        self.device_freq = freq
        self.now = 0
        self.inputs = []  # what a replay needs: ("poll", reading) / ("result", cmd, ok, now)
        self.outputs = []
        self.restarts = []
        self.obey = True

    def _poll(self, temp, vr=None, overheat=False):
        self.now += 1000
        r = Reading(
            "d", self.now, temp=temp, vr_temp=vr, frequency=self.device_freq, overheat=overheat
        )
        before = self.ctl.frequency
        last_good = self.ctl.last_good
        observed = self.device_freq  # the controller may adopt a change someone else made
        last_change = self.ctl.last_change_ms
        started = self.ctl.started
        self.win.add(r.ts_ms, r.temp, r.vr_temp, r.overheat)
        now = self.now
        d = self.ctl.step(r, now, window=lambda: self.win.stats(now))
        self.inputs.append(("poll", r))
        self.outputs.append(d)
        for c in d.commands:
            if c.kind == "set_frequency":
                f = c.frequency
                assert f <= LIM.max_frequency + FREQ_EPS
                assert f >= LIM.critical_floor - FREQ_EPS
                allowed = {
                    LIM.first_frequency,
                    LIM.second_frequency,
                    LIM.critical_floor,
                    LIM.max_frequency,
                    min(before + LIM.step, LIM.max_frequency),
                    min(observed + LIM.step, LIM.max_frequency),
                }
                if self.ctl.last_good is not None:
                    allowed.add(self.ctl.last_good)
                if self.ctl.user_cap is not None:
                    allowed.add(self.ctl.user_cap)  # a device above a user's cap goes back to it
                if c.attempt > 1 or not started:
                    allowed.add(f)  # read-back retries and start-up reconcile re-send a level
                assert any(abs(f - a) <= FREQ_EPS for a in allowed), (f, before, allowed)
                if f > max(before, observed) + FREQ_EPS and started and c.attempt == 1:
                    assert last_change is None or now - last_change >= LIM.settle * 1000
                if (
                    f < min(before, observed) - FREQ_EPS
                    and f < LIM.second_frequency - FREQ_EPS
                    and f != last_good
                ):  # a back-off may return below SECOND if it started there
                    assert temp is None or temp >= LIM.critical or overheat
            if c.kind == "restart":
                self.restarts.append(now)
        if temp is None and not overheat and started:
            # Only bookkeeping may act on an invalid reading: read-back retries and the
            # clamp of a frequency someone else raised above MAX_FREQUENCY.
            assert d.transition is None or "above MAX" in d.transition.reason, d.transition
            assert all(
                c.attempt > 1 or "above MAX" in c.reason or c.kind == "restart" for c in d.commands
            ), d.commands
        self._results(d)

    def _results(self, d):
        for c in d.commands:
            ok = self.ok_next
            if c.kind == "set_frequency" and ok and self.obey:
                self.device_freq = c.frequency
            self.inputs.append(("result", c, ok, self.now))
            self.outputs.append(self.ctl.command_result(c, ok, self.now))

    ok_next = True

    @rule(
        temp=st.floats(40, 80).map(lambda x: round(x * 8) / 8),
        vr=st.one_of(st.none(), st.floats(40, 100).map(round)),
    )
    def valid(self, temp, vr):
        self._poll(temp, vr)

    @rule(temp=st.floats(55, 62).map(lambda x: round(x, 1)), n=st.integers(1, 40))
    def cool_spell(self, temp, n):
        for _ in range(n):
            self._poll(temp)

    @rule()
    def invalid(self):
        self._poll(None)

    @rule()
    def firmware_trip(self):
        self._poll(None, overheat=True)

    @rule(seconds=st.integers(1, 7200))
    def clock_step(self, seconds):
        self.now += seconds * 1000

    @rule(ok=st.booleans(), obey=st.booleans())
    def device_behaviour(self, ok, obey):
        self.ok_next, self.obey = ok, obey

    @rule(freq=st.sampled_from([375.0, 475.0, 525.0, 600.0]))
    def someone_changes_frequency(self, freq):
        self.device_freq = freq

    @invariant()
    def restarts_within_hourly_limit(self):
        for t in getattr(self, "restarts", []):
            in_hour = [x for x in self.restarts if t <= x < t + 3_600_000]
            assert len(in_hour) <= LIM.max_restarts_per_hour

    def teardown(self):
        if not hasattr(self, "ctl"):
            return
        # Replay the recorded inputs through a fresh controller: identical decisions.
        ctl = Controller(LIM, "d")
        ctl.live_capable = self.live
        win = StableWindow(LIM)
        replayed = []
        for item in self.inputs:
            if item[0] == "poll":
                r = item[1]
                win.add(r.ts_ms, r.temp, r.vr_temp, r.overheat)
                replayed.append(ctl.step(r, r.ts_ms, window=lambda ts=r.ts_ms: win.stats(ts)))
            else:
                _, c, ok, now = item
                replayed.append(ctl.command_result(c, ok, now))
        assert replayed == self.outputs


ControllerMachine.TestCase.settings = settings(
    max_examples=60, stateful_step_count=50, deadline=None
)
TestControllerInvariants = ControllerMachine.TestCase
