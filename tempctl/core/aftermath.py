"""After the firmware's own overheat trip: give back what it took, once the chip is cool.

v2.11+ recovers by itself but leaves F−100 MHz, V−100 mV, autofan off and the fan at
100 % for good, and each further trip takes another 100 (axeos-api.md §9.2, §14;
power_management_task.c). On a Gamma a second trip can ask the TPS546 for less than
its 1.0 V minimum, and the core stays unpowered: 0 hashrate, HTTP still answering
(vcore.c, TPS546.c; open PR #1790). v2.1.9-v2.10 latch at 50 MHz / 1.0 V with
``overheat_mode`` = 1 until someone writes (§9.2).

tempctl remembers the settings of the last representative reading before a trip
(``evidence.exclusion``: never one taken during the v2.14+ trip ramp-down, which shows
autofan already off), persisted as a ``trip`` event, and once the chip is readable and
cool restores autofan, the fan and the core voltage the user had; the law then climbs
the frequency back. The frequency is never restored here. A setting the user changed
after the trip (a voltage or fan that is neither what the firmware left nor what the
user had) is theirs and is not restored. TEMPCTL_RESTORE_AFTER_TRIP=false turns this off.

A second trip within an hour of the last one is not undone: the cooling got worse and
the firmware's step-down is the last protection (an alarm says so). A core the trip left
unpowered (below the regulator's minimum) reads -1: it is re-powered at that minimum,
not at the voltage that tripped, and never after a second trip within the hour.
"""

from __future__ import annotations

import json

from tempctl.core import evidence
from tempctl.core.decision import Command, Decision, Event
from tempctl.core.limits import FREQ_EPS
from tempctl.core.reading import Reading

__all__ = ["check", "clear_latch", "dumps", "init", "loads", "note_trip"]

REGULATOR_MIN_MV = 1000  # TPS546 refuses lower setpoints (vcore.c ≈ l.74, TPS546.c ≈ l.1028)
MAX_ATTEMPTS = 3
LATCH_CONFIRM_MS = 120_000
REPEAT_TRIP_MS = 3_600_000  # a second trip this soon after the last one is not undone
# A trip's cool-down and recovery take ~30-60 s (axeos-api.md §9.2); the frequency it
# leaves, seen this soon after the flag, is the same trip.
SAME_TRIP_MS = 300_000
FAN_TOLERANCE = 5.0  # % duty: the fan reads back within this of a set duty
MV_TOLERANCE = 5


def init(c) -> None:
    c.before_trip = None  # {"core_voltage", "autofan", "fan", "trips_ms", "held"}
    c.last_settings = None
    c.left = None  # the settings the trip left (the first reading after it)
    c.in_trip = False
    c.trips_ms = []  # recent firmware trips, for "a second trip within the hour"
    c.trip_left_mhz = None  # the frequency the last trip left
    c.last_temp = None  # the last valid die reading
    c.restore_attempts = 0
    c.restore_sent_ms = None
    c.restore_sent = None  # the fields last sent, to tell them from the user's
    c.latch_cleared_ms = None


def dumps(c) -> str | None:
    return json.dumps(c.before_trip, sort_keys=True) if c.before_trip else None


def loads(c, text: str | None) -> None:
    try:
        data = json.loads(text) if text else None
    except ValueError:
        data = None
    c.before_trip = data if isinstance(data, dict) else None
    trips = c.before_trip.get("trips_ms") if c.before_trip else None
    c.trips_ms = [int(t) for t in trips if isinstance(t, int)] if isinstance(trips, list) else []


def _settings(r: Reading) -> dict:
    autofan = None if r.autofan is None else bool(r.autofan)
    return {"core_voltage": r.core_voltage, "autofan": autofan, "fan": r.fan_pct}


def note_trip(
    c, d: Decision, now_ms: int, edge: bool = True, left_mhz: float | None = None
) -> None:
    """The firmware's trip handling showed: remember the settings of the last representative
    reading before it. Called on the trip signature (``edge``: its first poll), and on the
    frequency the trip leaves (F - 100 MHz, 400 MHz, or 50 MHz latched; observe.py), which
    a poller sees even when it missed the brief trip itself: a v2.15 Gamma recovers within
    seconds of a 127 °C sensor glitch, and without this its V - 100 mV stayed for good and
    a second trip stalled the core."""
    last = c.trips_ms[-1] if c.trips_ms else None
    # a second 100 MHz step while the flag stayed up: the chip tripped again between polls
    again = left_mhz is not None and c.trip_left_mhz is not None and left_mhz < c.trip_left_mhz - 50
    c.trip_left_mhz = None if edge else left_mhz
    if not edge and not again and last is not None and now_ms - last < SAME_TRIP_MS:
        return  # the frequency this trip left, or its later polls
    c.trips_ms = [t for t in c.trips_ms if now_ms - t < REPEAT_TRIP_MS] + [now_ms]
    c.left = None
    repeat = len(c.trips_ms) > 1
    if c.before_trip is None and c.last_settings:
        c.before_trip = dict(c.last_settings)
    if c.before_trip is None:
        return  # nothing known to restore
    c.before_trip["trips_ms"] = list(c.trips_ms)
    if repeat and not c.before_trip.get("held"):
        c.before_trip["held"] = True
        minutes = (now_ms - c.trips_ms[-2]) / 60_000
        d.events.append(
            Event(
                "alarm",
                f"cooling got worse: a second firmware overheat trip {minutes:.0f} min after "
                "the last; the settings it took away are not restored (its step-down is the "
                "last protection)",
                level="alarm",
                origin="tempctl",
            )
        )
    c.restore_attempts, c.restore_sent_ms = 0, None
    d.events.append(Event("trip", "before trip " + dumps(c), level="warning", origin="firmware"))


def check(c, r: Reading, now_ms: int, d: Decision) -> None:
    if r.overheat:
        note_trip(c, d, now_ms, edge=not c.in_trip)
        c.in_trip = True
        return
    c.in_trip = False
    if getattr(r, "fault", None):
        return
    if r.temp is not None:
        c.last_temp = r.temp
    if c.before_trip is None:
        if r.hashrate and evidence.exclusion(r) is None:
            c.last_settings = _settings(r)  # representative readings only (evidence.py)
        return
    if c.left is None:
        c.left = _settings(r)
    if r.temp is None and not _stalled(r):
        return  # unreadable: nothing is restored
    _restore(c, r, now_ms, d)


def _user_changed(c, r: Reading, before: dict, d: Decision) -> None:
    """A setting that is neither what the trip left nor what the user had, nor what was
    restored: the user set it after the trip. It is theirs: forget it here."""
    left, sent = c.left or {}, c.restore_sent or {}
    mv, lv, bv = r.core_voltage, left.get("core_voltage"), before.get("core_voltage")
    changed = []
    if mv is not None and lv is not None and mv < lv - MV_TOLERANCE:
        left["core_voltage"] = lv = mv  # only the firmware steps it down (another trip)
    if bv is not None and mv is not None and lv is not None:
        ours = (lv, bv, sent.get("coreVoltage"))
        if all(v is None or abs(mv - v) > MV_TOLERANCE for v in ours):
            before.pop("core_voltage")
            changed.append(f"core voltage {mv} mV")
    fan, lf = r.fan_pct, left.get("fan")
    user_fan = (
        _off(r.autofan)
        and _off(left.get("autofan"))
        and fan is not None
        and lf is not None
        and abs(fan - lf) > FAN_TOLERANCE
        and (before.get("fan") is None or abs(fan - before["fan"]) > FAN_TOLERANCE)
        and "manualFanSpeed" not in sent
    )
    if user_fan and ("autofan" in before or "fan" in before):
        before.pop("autofan", None)
        before.pop("fan", None)
        changed.append(f"fan {fan:g} %")
    if changed:
        d.events.append(
            Event(
                "trip",
                f"set after the trip by the user, kept: {', '.join(changed)}",
                origin="user",
            )
        )
        # the log's latest trip event is what a restart restores: what is left to restore
        d.events.append(Event("trip", "before trip " + dumps(c), origin="tempctl"))


def _restore(c, r: Reading, now_ms: int, d: Decision) -> None:
    lim, before = c.limits, c.before_trip
    if not before.get("held"):
        _user_changed(c, r, before, d)
    bv, ba, bfan = before.get("core_voltage"), before.get("autofan"), before.get("fan")
    stalled = _stalled(r)
    cool = r.temp is not None and r.temp <= lim.temp_threshold - lim.hysteresis and not r.overheat
    want: dict = {}
    if before.get("held"):
        if stalled:
            _stall_alarm(
                c,
                r,
                d,
                "after a second overheat trip within the hour: not re-powered "
                "(the cooling got worse); needs a person",
            )
        elif cool:
            # the firmware's settings are the new normal: the next trip restores to them
            d.events.append(
                Event("trip", "settings left as the second trip put them", origin="tempctl")
            )
            c.before_trip, c.restore_attempts = None, 0
        return
    if stalled and (c.last_temp is None or c.last_temp > lim.temp_threshold):
        # the die was hot when last read and cannot be read now: not re-powered blind
        last = "unknown" if c.last_temp is None else f"{c.last_temp:g} °C"
        _stall_alarm(
            c,
            r,
            d,
            f"after an overheat trip and its die cannot be read (last reading "
            f"{last}): not re-powered blind; needs a person",
        )
        return
    if stalled:
        # re-power at the least the regulator gives: never at the voltage that tripped
        want["coreVoltage"] = REGULATOR_MIN_MV
    elif cool:
        if ba and _off(r.autofan):
            want["autofanspeed"] = 1
        elif _off(ba) and bfan is not None and r.fan_pct is not None and r.fan_pct > bfan + 5:
            want["manualFanSpeed"] = int(round(bfan))
        if bv and r.core_voltage is not None and r.core_voltage < bv - 5:
            want["coreVoltage"] = int(bv)
    if not want:
        if cool and (c.restore_attempts or _restored(r, before)):
            d.events.append(Event("trip", "settings before the trip are back", origin="tempctl"))
            c.before_trip, c.restore_attempts = None, 0
        return
    if not lim.restore_after_trip:
        if stalled:
            _stall_alarm(
                c,
                r,
                d,
                f"(below the regulator's {REGULATOR_MIN_MV} mV): not restoring "
                "(TEMPCTL_RESTORE_AFTER_TRIP=false)",
            )
        return
    if c.restore_sent_ms is not None and now_ms - c.restore_sent_ms < lim.settle * 1000:
        return  # give the last attempt time to show
    if c.restore_attempts >= MAX_ATTEMPTS:
        d.events.append(
            Event(
                "alarm",
                f"could not restore {want} after the trip "
                f"({MAX_ATTEMPTS} attempts): needs a person",
                level="alarm",
                origin="tempctl",
            )
        )
        c.before_trip, c.restore_attempts = None, 0
        return
    c.restore_attempts += 1
    c.restore_sent_ms, c.restore_sent = now_ms, dict(want)
    why = (
        f"stalled: {r.core_voltage} mV is below the regulator minimum"
        if stalled
        else "restore the settings the firmware's trip took away"
    )
    d.commands.append(Command("set_fields", why, fields=tuple(sorted(want.items()))))


def _stall_alarm(c, r: Reading, d: Decision, why: str) -> None:
    """Once per stall: the core is unpowered and tempctl leaves it so."""
    if c.restore_attempts == 0:
        c.restore_attempts = 1
        d.events.append(
            Event(
                "alarm",
                f"device stalled at {r.core_voltage} mV {why}",
                level="alarm",
                origin="tempctl",
            )
        )


def _off(flag) -> bool:
    """autofan known to be off (a logged reading has 0/1, a live one False/True)."""
    return flag is not None and not flag


def _stalled(r: Reading) -> bool:
    """0 hashrate with a set voltage below what the regulator can give (axeos-api.md §14)."""
    return (
        r.hashrate is not None
        and r.hashrate <= 0
        and r.core_voltage is not None
        and r.core_voltage < REGULATOR_MIN_MV
    )


def _restored(r: Reading, before: dict) -> bool:
    bv, ba = before.get("core_voltage"), before.get("autofan")
    return (ba is None or r.autofan == ba) and (bv is None or (r.core_voltage or 0) >= bv - 5)


def clear_latch(c) -> None:
    """v2.1.9-v2.10: the trip latched at 50 MHz and the chip is cool. Write what the law
    judges safe (SECOND_FREQUENCY, at most the floor..MAX range), clear the flag, and
    restart once within the restart budget (never while critical: the row needs cool)."""
    lim, now = c.limits, c._now
    if c.latch_cleared_ms is not None and now - c.latch_cleared_ms < LATCH_CONFIRM_MS:
        c._record()
        return
    if c.latch_cleared_ms is not None:
        c._alarm("the latched overheat trip did not clear after a restart: needs a person")
        c.latch_cleared_ms = now + 24 * 3_600_000  # no loop
        c._record()
        return
    before = c.before_trip or c.last_settings or {}
    fields = {"overheat_mode": 0}
    if before.get("core_voltage"):
        fields["coreVoltage"] = int(before["core_voltage"])
    if before.get("autofan") is not None:
        fields["autofanspeed"] = 1 if before["autofan"] else 0
    target = lim.clamp(lim.second_frequency)
    if not c._restart_allowed(now):
        c._alarm(
            "latched overheat trip: a restart is needed to clear it but "
            f"TEMPCTL_MAX_RESTARTS_PER_HOUR={lim.max_restarts_per_hour} is spent"
        )
        c._record()
        return
    c.restarts_ms.append(now)
    reason = c._fired.reason
    c._decision.commands.extend(
        [
            Command("set_fields", reason, fields=tuple(sorted(fields.items()))),
            Command("set_frequency", reason, target),
            Command("restart", "clear the latched overheat trip"),
        ]
    )
    if abs(target - c.frequency) > FREQ_EPS:
        c.frequency, c.last_change_ms = target, now
    c.latch_cleared_ms = now
    c.before_trip = None
    c._record()
