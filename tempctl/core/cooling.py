"""When the cooling, not the frequency, decides the die temperature.

Two cases the law meets that frequency alone cannot fix:

* **Critical at or below the floor.** Firmware trips can leave the device below
  TEMPCTL_MIN_FREQUENCY (each takes 100 MHz, axeos-api.md §9.2). The law never commands
  below the floor (the driver refuses it too) and never raises on a critical reading, so
  it keeps the firmware's lower frequency, and says once per episode (not every poll)
  that the cooling got worse: the firmware's own trip is the last protection left.
* **The fan PID holds the die above TEMP_THRESHOLD.** With autofan on and ``temptarget``
  at or above the threshold (the API allows 35–66 °C), the PID slows the fan until the
  die sits at ``temptarget`` whatever the frequency, as long as the fan has headroom.
  Throttling then only slows the fan (the law rode to the floor with the die at 65 °C
  and the fan at 27 %). Such a reading is *fan-held*: the law judges the frequency by
  what the fan at 100 % would hold (``model.highest`` does that under autofan), and says
  once what the setting does. ``temptarget`` is not in the log, so the controller reads
  its effect: autofan on, the fan below saturation, the die above the threshold.

And one alarm from the observed facts: the model's effective ambient (the die with no
load, ``model.ambient``) rising WORSE_C within WORSE_WINDOW_S. No room warms that fast
(the model clamps a room's trend at 10 °C/h; the scenarios' largest 15-min rise is
0.84 °C); a failing fan or heatsink does it within minutes (+12 °C in 5 min when the
cooling loses a third, tests/test_real_failures.py).
"""

from __future__ import annotations

from tempctl.core.decision import Event
from tempctl.core.limits import FREQ_EPS, Limits
from tempctl.core.reading import Reading

__all__ = ["below_floor", "fan_held", "note_fan_held", "watch"]

WORSE_C = 4.0
WORSE_WINDOW_S = 900.0  # at real-time settle; scaled with TEMPCTL_SETTLE like the rest
WORSE_REPEAT_MS = 6 * 3_600_000  # the alarm is said again at most this often

FAN_HEADROOM_PCT = 90.0  # % duty: below this the PID could still cool harder
# AUTOFAN_SATURATED in model.py is 98; a margin below it, so a PID on its way up is
# not taken for one holding its set-point.
FAN_HELD_BELOW_C = 1.0  # a temptarget just under the threshold (63 vs 63 - margin) too


def below_floor(c) -> bool:
    """Critical (or the trip) with the device below the floor: keep the firmware's lower
    frequency, alarm once per episode. True when that is the case (the row's action)."""
    lim, f = c.limits, c.frequency
    if f > lim.lowest + FREQ_EPS:
        c._notes.discard("below_floor")
        return False
    if "below_floor" not in c._notes:
        c._notes.add("below_floor")
        where = "at" if f >= lim.lowest - FREQ_EPS else "below"
        c._alarm(
            f"cooling got worse: critical ({c._what()}) at {f:g} MHz, {where} the floor "
            f"(TEMPCTL_MIN_FREQUENCY {lim.lowest:g} MHz): tempctl cannot go lower, keeps "
            "this frequency (a firmware trip's lower one too) and never raises while "
            "critical; the firmware's own trip is the last protection: check the fan and "
            "heatsink"
        )
    c._record()
    return True


def fan_held(r: Reading, lim: Limits) -> bool:
    """The PID holds this die above the threshold with headroom left (see the module)."""
    return (
        lim.law == "model"
        and bool(r.autofan)  # a logged reading has 0/1
        and r.fan_pct is not None
        and r.fan_pct < FAN_HEADROOM_PCT
        and r.temp is not None
        and lim.temp_threshold - FAN_HELD_BELOW_C <= r.temp < lim.critical
        and not r.overheat
        and (r.vr_temp is None or r.vr_temp <= lim.vr_threshold)
    )


def note_fan_held(c, r: Reading, d) -> None:
    """Say once (per episode) what a temptarget at or above the threshold does."""
    if "fan_held" in c._notes:
        return
    c._notes.add("fan_held")
    d.events.append(
        Event(
            "note",
            f"autofan holds the die at {r.temp:g} °C with the fan at {r.fan_pct:g} %: its "
            f"temptarget is at or above TEMP_THRESHOLD ({c.limits.temp_threshold:g} °C), so "
            "the fan slows down rather than cool it below that, whatever the frequency. "
            "tempctl keeps the highest frequency the fan at 100 % holds under the threshold "
            "and does not throttle against the fan; set temptarget below TEMP_THRESHOLD to "
            "keep the die under it",
            level="warning",
            origin="tempctl",
        )
    )


def watch(c, now_ms: int, d) -> None:
    """Alarm when the effective ambient jumps: the cooling got worse (see the module).

    The estimator may take a sudden rise into the °C/W at once (model.cooling), which
    leaves the effective ambient where it was: its die jumps count toward WORSE_C too."""
    model = c.model
    jumps = c.cooling_jumps
    if model.cooling is not None and model.cooling[0] > (jumps[-1][0] if jumps else -1):
        if model.cooling[1] > 1:
            jumps.append((model.cooling[0], model.cooling[2]))
    while jumps and now_ms - jumps[0][0] > WORSE_WINDOW_S * c.time_scale * 1000:
        jumps.pop(0)
    jumped = sum(j for _, j in jumps)
    amb = model.ambient() if c.limits.law == "model" and model.ready else None
    hist = c.ambient_seen
    if amb is None or model.params is not c.ambient_params:
        # a relearned °C/W or k moves the effective ambient by itself (5 °C in the week
        # scenario at hour 164): compare only estimates from the same parameters
        hist.clear()
        c.ambient_params = model.params
    window_ms = WORSE_WINDOW_S * c.time_scale * 1000
    if amb is not None:
        hist.append((now_ms, amb))
    while hist and now_ms - hist[0][0] > window_ms:
        hist.pop(0)
    low_ms, low = min(hist, key=lambda h: h[1]) if hist else (now_ms, amb)
    rise = (amb - low if amb is not None else 0.0) + jumped
    last = c.worse_alarm_ms
    if rise < WORSE_C or (last is not None and now_ms - last < WORSE_REPEAT_MS):
        return
    c.worse_alarm_ms = now_ms
    since = min([low_ms] + [t for t, _ in jumps])
    d.events.append(
        Event(
            "alarm",
            f"cooling got worse: at {c.frequency:g} MHz the die runs {rise:.1f} °C hotter "
            f"than {(now_ms - since) / 60_000:.0f} min ago at the same settings, as if the "
            "room had warmed that much; no room warms that fast: check the fan and "
            "heatsink. tempctl throttles to what the cooling holds now",
            level="alarm",
            origin="tempctl",
        )
    )
