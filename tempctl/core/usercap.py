"""A frequency a person lowers by hand (AxeOS) is a cap tempctl keeps (issue 23.8).

With TEMPCTL_USER_CAP=keep (the default) a lower setting made by a user becomes the
highest frequency tempctl sets from then on: the law works under it exactly as under a
lower MAX_FREQUENCY (``Controller.limits`` is the run's limits with ``max_frequency`` at
the cap; the floor never rises because of it). The cap lasts until the user sets the
frequency again in AxeOS (a higher value raises it, MAX_FREQUENCY or more lifts it) or,
with TEMPCTL_USER_CAP_HOURS > 0, until that many hours after it was set. With
TEMPCTL_USER_CAP=off tempctl works from the new value and climbs back (tempctl 0.2).

Changes made by the firmware (its overheat recovery) are never a cap: ``observe._who``
decides who made a change. The cap is event-sourced: a ``user_cap`` event whose
``frequency_to`` is the cap (NULL when lifted), read back by ``store.eventlog.restore``.
"""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime

from tempctl.core.decision import Event
from tempctl.core.limits import FREQ_EPS

__all__ = ["apply", "check", "describe", "init", "narrow", "note", "text", "user_set"]

HOUR_MS = 3_600_000


def init(c) -> None:
    """``c.limits`` is the run's limits here; the cap only ever narrows a copy of them."""
    c.base_limits = c.limits
    c.user_cap = None  # MHz
    c.user_cap_ms = None  # when it was set (seen)


def apply(c, mhz: float | None, set_ms: int | None) -> None:
    """Hold ``mhz`` as the cap (None: no cap). No event: restore and the callers below."""
    c.user_cap, c.user_cap_ms = mhz, (set_ms if mhz is not None else None)
    narrow(c)


def narrow(c) -> None:
    """``c.limits``: the run's, under the user's cap and the power cap (powercap.py)."""
    base = lim = c.base_limits
    mhz = c.user_cap
    if mhz is not None:
        # A cap under tempctl's floor pins the range to it: never raise towards the floor.
        floor = min(base.lowest, mhz)
        lim = replace(
            base,
            max_frequency=min(mhz, base.max_frequency),
            min_frequency=floor,
            critical_floor=floor,
        )
    power = getattr(c, "power_mhz", None)
    if power is not None:  # never below the floor: the power cap is no reason to stall
        # the floor stays the run's: TEMPCTL_MIN_FREQUENCY=0 derives it from MAX_FREQUENCY
        top = max(min(power, lim.max_frequency), lim.lowest)
        lim = replace(lim, max_frequency=top, min_frequency=lim.lowest)
    c.limits = lim


def note(c) -> str:
    """The tail of a user's ``frequency_change`` event: what tempctl does about it."""
    if c.base_limits.user_cap == "off":
        return (
            "; TEMPCTL_USER_CAP=off: tempctl works from it and climbs back towards "
            "MAX_FREQUENCY when the threshold allows"
        )
    return ""


def user_set(c, observed: float, now_ms: int, d) -> None:
    """A person set ``observed`` in AxeOS (``c.frequency`` is still the old value)."""
    base = c.base_limits
    if base.user_cap == "off":
        return
    lowered = observed < c.frequency - FREQ_EPS
    if not lowered and c.user_cap is None:
        return  # a raise with no cap in force: nothing to keep
    if observed >= base.max_frequency - FREQ_EPS:
        _lift(c, now_ms, d, f"raised to {observed:g} MHz in AxeOS at {_when(now_ms)}", "user")
        return
    apply(c, observed, now_ms)
    d.events.append(
        Event(
            "user_cap",
            f"{describe(c)}: tempctl keeps the frequency at or below it {_until(c)} "
            "(TEMPCTL_USER_CAP=off climbs back instead)",
            level="info",
            origin="user",
            frequency_to=observed,
        )
    )


def check(c, r, now_ms: int, d) -> None:
    """Before each reading is judged: the cap's hours are up, TEMPCTL_USER_CAP is off now, or
    (first reading of a run) the device is above the cap: set higher while tempctl was
    stopped, which only a person does (the firmware only ever lowers it)."""
    cap = c.user_cap
    if cap is None:
        return
    base = c.base_limits
    hours = base.user_cap_hours
    if base.user_cap == "off":
        _lift(c, now_ms, d, "no longer kept: TEMPCTL_USER_CAP=off", "tempctl")
    elif hours > 0 and now_ms - c.user_cap_ms >= hours * HOUR_MS:
        _lift(c, now_ms, d, f"expired after {hours:g} h (TEMPCTL_USER_CAP_HOURS)", "tempctl")
    elif not c.started and r.frequency is not None and r.frequency > cap + FREQ_EPS:
        user_set(c, r.frequency, now_ms, d)


def describe(c) -> str | None:
    """'user cap 450 MHz, set in AxeOS at 2026-12-07 20:10:00 UTC' (status, events)."""
    if c.user_cap is None:
        return None
    return text(c.user_cap, c.user_cap_ms)


def text(mhz: float, set_ms: int) -> str:
    return f"user cap {mhz:g} MHz, set in AxeOS at {_when(set_ms)}"


def _lift(c, now_ms: int, d, why: str, origin: str) -> None:
    old = c.user_cap
    apply(c, None, None)
    d.events.append(
        Event(
            "user_cap",
            f"user cap {old:g} MHz lifted: {why}; tempctl works up to MAX_FREQUENCY "
            f"{c.limits.max_frequency:g} MHz again",
            level="info",
            origin=origin,
            frequency_from=old,
        )
    )


def _until(c) -> str:
    hours = c.base_limits.user_cap_hours
    if hours > 0:
        until = _when(c.user_cap_ms + int(hours * HOUR_MS))
        return f"until {until} (TEMPCTL_USER_CAP_HOURS={hours:g})"
    return "until it is raised in AxeOS"


def _when(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, UTC).strftime("%Y-%m-%d %H:%M:%S UTC")
