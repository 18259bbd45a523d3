"""A temperature sensor that stopped moving while the chip's power did.

A real reading repeats between the firmware's refreshes and is quantised (0.125 °C on
the EMC2101's external diode, 1 °C on internal sensors; axeos-api.md §10), so a repeated
value alone proves nothing. What does: the same value for STUCK_POLLS polls and at least
STUCK_S, with the fan unchanged, while the power says the die must have moved by at
least STUCK_DT_C. At an unchanged frequency and voltage the power is itself a thermometer
(leakage: P_dyn·leak per °C, model.py), whatever the room does; across a change it is
not (the law lowers the frequency as the room warms, and the die stays put). A frozen
62.375 °C once hid a 71.5 °C die for 6 h.

Then the readings are not evidence (invalid, ``stuck_error``) for as long as the value
stays, an alarm says so, and the law holds: it never climbs on them, and the MODEL row
``sensor_stuck`` takes the device down to the floor (TEMPCTL_MIN_FREQUENCY, the level
chosen to hold the threshold in any room), since nothing tells how hot the die is and
the firmware's own trip reads the same sensor. SECOND_FREQUENCY was not enough: in the
heat wave's 38 °C it left the die at 66 °C. The first different value
ends it. Nothing here is persisted: the run is rebuilt from the readings after a restart.
"""

from __future__ import annotations

from dataclasses import replace
from statistics import median

from tempctl.core.decision import Decision, Event
from tempctl.core.reading import Reading

__all__ = ["STUCK_DT_C", "STUCK_POLLS", "STUCK_S", "check", "init", "invalid"]

STUCK_POLLS = 10
STUCK_S = 600.0  # at real-time settle (TEMPCTL_SETTLE 180 s); scaled with it
STUCK_DT_C = 2.0  # the die must have moved this much by the power (16 EMC2101 steps)
FAN_STILL_PCT = 5.0  # a fan that moved more explains a steady reading (autofan's PID)
ENDS = 5  # readings averaged (median) at each end of the run
DYN_SHARE = 0.72  # 1 - model.P0_SHARE: the dynamic share of board power
LEAK_PER_C = 0.0093  # model.ModelParams.leak (jojo4751 Gammas), if the model has none


def init(c) -> None:
    c.stuck_run = None  # the current run of one value: see _Run
    c.sensor_stuck = False


class _Run:
    """One value's run of polls; the power within each operating point (frequency and
    voltage) of it, since only there is the power a thermometer: across a change the die
    may stay put while the room warms and the law lowers the frequency."""

    __slots__ = ("value", "start_ms", "n", "first", "last", "op", "moved", "fan_lo", "fan_hi")

    def __init__(self, r: Reading, now_ms: int):
        self.value, self.start_ms, self.n, self.moved = r.temp, now_ms, 0, 0.0
        self.op = None
        self.first: list[float] = []
        self.last: list[float] = []
        self.fan_lo = self.fan_hi = r.fan_pct
        self.add(r)

    def add(self, r: Reading) -> None:
        self.n += 1
        op = (r.frequency, r.core_voltage)
        if op != self.op:  # a new operating point: its own thermometer
            self.op, self.first, self.last = op, [], []
        if r.power is not None:
            if len(self.first) < ENDS:
                self.first.append(r.power)
            self.last = (self.last + [r.power])[-ENDS:]
        if r.fan_pct is not None:
            self.fan_lo = r.fan_pct if self.fan_lo is None else min(self.fan_lo, r.fan_pct)
            self.fan_hi = r.fan_pct if self.fan_hi is None else max(self.fan_hi, r.fan_pct)

    def moved_c(self, leak: float) -> float:
        """How far the power says the die moved within one operating point, °C (the most
        of any point of the run)."""
        if len(self.first) >= ENDS and len(self.last) >= ENDS:
            p0, p1 = median(self.first), median(self.last)
            per_c = DYN_SHARE * p0 * leak
            if per_c > 0:
                self.moved = max(self.moved, abs(p1 - p0) / per_c)
        return self.moved


def check(c, r: Reading, now_ms: int, d: Decision) -> bool:
    """Follow the run of equal temperatures; True while the sensor is judged stuck."""
    if r.temp is None or r.overheat or r.fault:
        return c.sensor_stuck and r.temp is not None
    run = c.stuck_run
    if run is None or r.temp != run.value:
        if c.sensor_stuck:
            d.events.append(
                Event(
                    "sensor",
                    f"temperature sensor moving again ({run.value:g} -> {r.temp:g} °C)",
                    origin="device",
                )
            )
        c.stuck_run, c.sensor_stuck = _Run(r, now_ms), False
        return False
    run.add(r)
    if c.sensor_stuck:
        return True
    fan_still = run.fan_lo is None or run.fan_hi - run.fan_lo <= FAN_STILL_PCT
    long_s = STUCK_S * c.time_scale
    if run.n < STUCK_POLLS or now_ms - run.start_ms < long_s * 1000 or not fan_still:
        return False
    moved = run.moved_c(getattr(c.model.params, "leak", LEAK_PER_C))
    if moved < STUCK_DT_C:
        return False
    c.sensor_stuck = True
    minutes = (now_ms - run.start_ms) / 60_000
    d.events.append(
        Event(
            "alarm",
            f"temperature sensor stuck: {run.value:g} °C for {run.n} polls ({minutes:.0f} min) "
            f"while the power says the die moved about {moved:.1f} °C; its readings are not "
            "evidence until it moves, tempctl goes to the floor and does not climb; the "
            "firmware's overheat trip reads the same sensor: check it",
            level="alarm",
            origin="tempctl",
        )
    )
    return True


def invalid(r):
    """The reading with its temperature taken away (a ``Reading``, or the log's tuple)."""
    if hasattr(r, "_replace"):  # store.rows.LoggedReading: valid is a field of its own
        return r._replace(temp=None, valid=0)
    return replace(r, temp=None, error=f"temperature sensor stuck at {r.temp:g} °C")
