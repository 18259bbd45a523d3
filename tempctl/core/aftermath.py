"""After the firmware's own overheat trip: give back what it took, once the chip is cool.

v2.11+ recovers by itself but leaves F−100 MHz, V−100 mV, autofan off and the fan at
100 % for good, and each further trip takes another 100 (axeos-api.md §9.2, §14;
power_management_task.c). On a Gamma a second trip can ask the TPS546 for less than
its 1.0 V minimum, and the core stays unpowered: 0 hashrate, HTTP still answering
(vcore.c, TPS546.c; open PR #1790). v2.1.9-v2.10 latch at 50 MHz / 1.0 V with
``overheat_mode`` = 1 until someone writes (§9.2).

tempctl remembers the settings of the last representative reading before a trip
(persisted as a ``trip`` event), and once the chip is cool restores autofan, the fan
and the core voltage the user had; the law then climbs the frequency back. The
frequency is never restored here. TEMPCTL_RESTORE_AFTER_TRIP=false turns this off.
"""

from __future__ import annotations

import json

from tempctl.core.decision import Command, Decision, Event
from tempctl.core.limits import FREQ_EPS
from tempctl.core.reading import Reading

__all__ = ["check", "clear_latch", "dumps", "init", "loads", "note_trip"]

REGULATOR_MIN_MV = 1000  # TPS546 refuses lower setpoints (vcore.c ≈ l.74, TPS546.c ≈ l.1028)
MAX_ATTEMPTS = 3
LATCH_CONFIRM_MS = 120_000


def init(c) -> None:
    c.before_trip = None  # {"core_voltage", "autofan", "fan"} before the last trip
    c.last_settings = None
    c.restore_attempts = 0
    c.restore_sent_ms = None
    c.latch_cleared_ms = None


def dumps(c) -> str | None:
    return json.dumps(c.before_trip, sort_keys=True) if c.before_trip else None


def loads(c, text: str | None) -> None:
    try:
        data = json.loads(text) if text else None
    except ValueError:
        data = None
    c.before_trip = data if isinstance(data, dict) else None


def _settings(r: Reading) -> dict:
    return {"core_voltage": r.core_voltage, "autofan": r.autofan, "fan": r.fan_pct}


def note_trip(c, d: Decision) -> None:
    """The firmware's trip handling showed: remember the settings of the last representative
    reading before it. Called on the trip signature, and on the frequency the trip leaves
    (F - 100 MHz, or 50 MHz latched; observe.py), which a poller sees even when it missed
    the brief trip itself: a v2.15 Gamma recovers within seconds of a 127 °C sensor glitch,
    and without this its V - 100 mV stayed for good and a second trip stalled the core."""
    if c.before_trip is None and c.last_settings:
        c.before_trip = dict(c.last_settings)
        c.restore_attempts, c.restore_sent_ms = 0, None
        d.events.append(
            Event("trip", "before trip " + dumps(c), level="warning", origin="firmware")
        )


def check(c, r: Reading, now_ms: int, d: Decision) -> None:
    if r.overheat:
        note_trip(c, d)
        return
    if getattr(r, "fault", None):
        return
    if r.temp is None:
        # an unpowered core reads -1 too: the stall is the one thing to act on then
        if c.before_trip is not None and _stalled(r):
            _restore(c, r, now_ms, d)
        return
    if c.before_trip is None:
        if r.hashrate and (r.uptime_s is None or r.uptime_s >= 60):
            c.last_settings = _settings(r)
        return
    _restore(c, r, now_ms, d)


def _restore(c, r: Reading, now_ms: int, d: Decision) -> None:
    lim, before = c.limits, c.before_trip
    bv, ba, bfan = before.get("core_voltage"), before.get("autofan"), before.get("fan")
    stalled = _stalled(r)
    cool = r.temp is not None and r.temp <= lim.temp_threshold - lim.hysteresis
    want: dict = {}
    if stalled:
        want["coreVoltage"] = max(int(bv or REGULATOR_MIN_MV), REGULATOR_MIN_MV)
    elif cool:
        if ba and r.autofan is False:
            want["autofanspeed"] = 1
        elif ba is False and bfan is not None and r.fan_pct is not None and r.fan_pct > bfan + 5:
            want["manualFanSpeed"] = int(round(bfan))
        if bv and r.core_voltage is not None and r.core_voltage < bv - 5:
            want["coreVoltage"] = int(bv)
    if not want:
        if not stalled and (c.restore_attempts or _restored(r, before)):
            d.events.append(Event("trip", "settings before the trip are back", origin="tempctl"))
            c.before_trip, c.restore_attempts = None, 0
        return
    if not lim.restore_after_trip:
        if stalled and c.restore_attempts == 0:
            c.restore_attempts = 1
            d.events.append(
                Event(
                    "alarm",
                    f"device stalled at {r.core_voltage} mV (below the "
                    f"regulator's {REGULATOR_MIN_MV} mV): not restoring "
                    "(TEMPCTL_RESTORE_AFTER_TRIP=false)",
                    level="alarm",
                    origin="tempctl",
                )
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
    c.restore_sent_ms = now_ms
    why = (
        f"stalled: {r.core_voltage} mV is below the regulator minimum"
        if stalled
        else "restore the settings the firmware's trip took away"
    )
    d.commands.append(Command("set_fields", why, fields=tuple(sorted(want.items()))))


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
