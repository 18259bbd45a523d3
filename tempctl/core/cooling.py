"""When the cooling, not the frequency, decides the die temperature.

Two cases the law meets that frequency alone cannot fix:

* **Critical below the floor.** Firmware trips can leave the device below
  TEMPCTL_MIN_FREQUENCY (each takes 100 MHz, axeos-api.md §9.2). The law never commands
  below the floor and never raises on a critical reading, so it keeps the firmware's
  lower frequency, and says once per episode that the cooling got worse: the firmware's
  own trip is the last protection left.
* **The fan PID holds the die above TEMP_THRESHOLD.** With autofan on and ``temptarget``
  at or above the threshold (the API allows 35–66 °C), the PID slows the fan until the
  die sits at ``temptarget`` whatever the frequency, as long as the fan has headroom.
  Throttling then only slows the fan (the law rode to the floor with the die at 65 °C
  and the fan at 27 %). Such a reading is *fan-held*: the law judges the frequency by
  what the fan at 100 % would hold (``model.highest`` does that under autofan), and says
  once what the setting does. ``temptarget`` is not in the log, so the controller reads
  its effect: autofan on, the fan below saturation, the die above the threshold.
"""

from __future__ import annotations

from tempctl.core.decision import Event
from tempctl.core.limits import FREQ_EPS, Limits
from tempctl.core.reading import Reading

__all__ = ["below_floor", "fan_held", "note_fan_held"]

FAN_HEADROOM_PCT = 90.0  # % duty: below this the PID could still cool harder
# AUTOFAN_SATURATED in model.py is 98; a margin below it, so a PID on its way up is
# not taken for one holding its set-point.


def below_floor(c) -> bool:
    """Critical (or the trip) with the device below the floor: keep the firmware's lower
    frequency, alarm once per episode. True when that is the case (the row's action)."""
    lim, f = c.limits, c.frequency
    if f >= lim.lowest - FREQ_EPS:
        c._notes.discard("below_floor")
        return False
    if "below_floor" not in c._notes:
        c._notes.add("below_floor")
        c._alarm(
            f"cooling got worse: critical ({c._what()}) at {f:g} MHz, below the floor "
            f"(TEMPCTL_MIN_FREQUENCY {lim.lowest:g} MHz) where the firmware's trips left it; "
            "tempctl keeps that lower frequency and never raises while critical; the "
            "firmware's own trip is the last protection: check the fan and heatsink"
        )
    c._record()
    return True


def fan_held(r: Reading, lim: Limits) -> bool:
    """The PID holds this die above the threshold with headroom left (see the module)."""
    return (
        lim.law == "model"
        and r.autofan is True
        and r.fan_pct is not None
        and r.fan_pct < FAN_HEADROOM_PCT
        and r.temp is not None
        and lim.temp_threshold < r.temp < lim.critical
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
