"""What the controller learns from each reading before the law runs.

Who changed the frequency (tempctl, the firmware's overheat handling, or a person),
whether our last change was applied (read-back verification, with ``actualFrequency``
where the firmware has it), reboots and restart confirmation, the device's identity,
and the thermal model's evidence (``evidence.py`` says which readings count).
"""

from __future__ import annotations

import json
from dataclasses import replace

from tempctl.core import aftermath, evidence, powercap, reconcile, stuck, usercap
from tempctl.core.decision import Command, Decision, Event, State
from tempctl.core.limits import FREQ_EPS, PLL_STEP
from tempctl.core.model import ModelParams, ThermalModel, prior_for
from tempctl.core.reading import Reading

__all__ = ["command_result", "explain", "init", "observe", "predicted_note"]

VERIFY_RETRIES = 2  # PATCH re-sent at most twice when the read-back disagrees, then an alarm
VERIFY_POLLS = 2  # polls a read-back may lag before it counts as a mismatch
RAMP_POLLS = 2  # more polls for the PLL to reach a setting the device already shows
RESTART_CONFIRM_MS = 120_000  # uptime must drop within this long after a restart request


def init(c, keep_identity: bool = False) -> None:
    c.uptime_s = None
    if not keep_identity:
        c.identity = None
    c.started = False
    c.pending = None  # read-back verification of the last set_frequency
    c.pending_attempt = 0
    c.pending_polls = 0
    # Where the device stayed after refusing or ignoring a change through every re-send:
    # not adopted again, or the law would send the same change every poll (a loop).
    c.refused_at = None
    # The setting when the firmware's overheat trip was first seen: its recovery writes
    # that minus 100 MHz, overwriting any PATCH made during the cool-down (§9.2 step 6).
    c.trip_mhz = None
    c.tripped = False
    c.restart_requested_ms = None
    c.identity_logged = False
    stuck.init(c)


def observe(c, r: Reading, now_ms: int, d: Decision) -> None:
    _identity(c, r, d)
    _uptime(c, r, now_ms, d)
    if r.overheat and not c.tripped and r.frequency is not None:
        c.trip_mhz = r.frequency
    c.tripped = r.overheat
    usercap.check(c, r, now_ms, d)  # expired, switched off, or raised while we were stopped
    if r.frequency is not None:
        if not c.started:
            reconcile.reconcile(c, r, now_ms, d)
        elif not c.limits.dry_run:  # in dry run the device never changes; the law follows intent
            _verify(c, r, now_ms, d)
    # a stuck sensor's readings teach the model nothing (stuck.py)
    if not stuck.check(c, r, now_ms, d) and c.limits.law == "model":
        _feed_model(c, r, now_ms, d)


def _identity(c, r: Reading, d: Decision) -> None:
    mac, host = r.mac, r.hostname
    if not (mac or host):
        return
    ident = (mac, host)
    if c.identity is not None and ident != tuple(c.identity):
        d.events.append(
            Event(
                "identity",
                f"a different device answers: {_fmt(c.identity)} -> "
                f"{_fmt(ident)}; starting over with no history for it",
                level="alarm",
                origin="device",
            )
        )
        c.reset()
        c.identity, c.identity_logged = ident, False
    if c.identity is None:
        c.identity = ident
    if not c.identity_logged:
        # persisted, so a swap across a daemon restart is seen too (issue 13.5)
        c.identity_logged = True
        d.events.append(
            Event(
                "device",
                "identity " + json.dumps({"mac": mac, "hostname": host}, sort_keys=True),
                origin="device",
            )
        )


def _uptime(c, r: Reading, now_ms: int, d: Decision) -> None:
    if r.uptime_s is not None:
        if c.uptime_s is not None and r.uptime_s < c.uptime_s:
            origin = "tempctl" if c.restart_requested_ms is not None else "device"
            d.events.append(
                Event(
                    "reboot",
                    f"device rebooted (uptime {c.uptime_s} s -> {r.uptime_s} s)",
                    level="info" if origin == "tempctl" else "warning",
                    origin=origin,
                )
            )
            c.restart_requested_ms = None
            c.model.forget_transient()
        c.uptime_s = r.uptime_s
    if c.restart_requested_ms is not None and now_ms - c.restart_requested_ms > RESTART_CONFIRM_MS:
        d.events.append(
            Event(
                "restart",
                "restart not confirmed: uptime did not drop (not retried)",
                level="warning",
                origin="tempctl",
            )
        )
        c.restart_requested_ms = None


def _verify(c, r: Reading, now_ms: int, d: Decision) -> None:
    observed = r.frequency
    if c.pending is not None:
        # v2.14+: actualFrequency is the PLL's truth during a ramp (axeos-api.md §4.1); it only
        # says something while the chip hashes (a trip's cool-down or a boot holds it at 50).
        live = r.actual_frequency
        if live is not None and evidence.exclusion(r) in ("tripped", "booting", "not hashing"):
            live = None
        setting_ok = abs(observed - c.pending) <= FREQ_EPS
        if setting_ok and (live is None or abs(live - c.pending) <= PLL_STEP / 2):
            c.pending = None
            return
        if observed < c.pending and _firmware_penalty(c, observed):
            # the firmware's overheat recovery overwrote our change with a lower value:
            # accept it, don't fight it upwards
            c.pending = None
            adopt(c, r, observed, now_ms, d, origin="firmware")
            return
        c.pending_polls += 1
        if c.pending_polls < VERIFY_POLLS + (RAMP_POLLS if setting_ok else 0):
            return
        shown = observed if live is None or abs(observed - c.pending) > FREQ_EPS else live
        if c.pending_attempt <= VERIFY_RETRIES:
            attempt = c.pending_attempt + 1
            d.events.append(
                Event(
                    "verify",
                    f"device reports {shown:g} MHz, not "
                    f"{c.pending:g}: re-sending (attempt {attempt})",
                    level="warning",
                    origin="tempctl",
                )
            )
            d.commands.append(Command("set_frequency", "read-back mismatch", c.pending, attempt))
            c.pending = None
            return
        d.events.append(
            Event(
                "alarm",
                f"frequency {c.pending:g} MHz not applied after "
                f"{c.pending_attempt} attempts; device stays at {shown:g} MHz",
                level="alarm",
                origin="tempctl",
            )
        )
        c.pending = None
        # Not adopted back either (refused_at): the law would send the same change every
        # poll, a loop. Changes that cannot be applied at all are not sent (_commands_for).
        c.refused_at = observed
        return
    if abs(observed - c.frequency) <= FREQ_EPS:
        c.refused_at = None
    elif c.refused_at is None or abs(observed - c.refused_at) > FREQ_EPS:
        c.refused_at = None
        adopt(c, r, observed, now_ms, d, origin=_who(c, r, observed))


def _firmware_penalty(c, observed: float) -> bool:
    """A value the firmware's overheat handling writes (axeos-api.md §9.2): F - 100 MHz
    after a v2.11+ trip (F = the setting when it tripped), or 400 MHz when F - 100 would
    be 100 or less; 50 MHz latched on v2.1.9-v2.10."""
    return (
        any(
            f is not None and abs(observed - after_trip_mhz(f)) <= FREQ_EPS
            for f in (c.frequency, c.trip_mhz)
        )
        or abs(observed - 50) <= FREQ_EPS
    )


def after_trip_mhz(f: float) -> float:
    """What v2.11+ writes after a trip at F (power_management_task.c, axeos-api.md §9.2)."""
    return f - 100 if f - 100 > 100 else 400.0


def _who(c, r: Reading, observed: float) -> str:
    # Anything but the firmware's own overheat handling came from a person.
    return "firmware" if r.overheat or _firmware_penalty(c, observed) else "user"


def adopt(c, r: Reading, observed: float, now_ms: int, d: Decision, origin: str | None) -> None:
    """Someone else set the frequency: log who, and work from the new value (a user's lower
    value is kept as a cap unless TEMPCTL_USER_CAP=off: usercap.py)."""
    if origin:
        d.events.append(
            Event(
                "frequency_change",
                f"frequency changed by {origin}: {c.frequency:g} -> {observed:g} MHz"
                + (usercap.note(c) if origin == "user" else ""),
                level="warning",
                origin=origin,
                frequency_from=c.frequency,
                frequency_to=observed,
            )
        )
    if origin == "firmware":
        aftermath.note_trip(c, d, now_ms, edge=False, left_mhz=observed)
    elif origin == "user":
        usercap.user_set(c, observed, now_ms, d)
    lim = c.limits
    c.frequency = observed
    c.last_change_ms = now_ms
    c.raised = False
    c.model.note_change(now_ms, observed)
    if observed > lim.max_frequency + FREQ_EPS:
        reconcile.force(
            c, r, now_ms, d, c.current, lim.max_frequency, reconcile.outside_reason(observed, lim)
        )


def _feed_model(c, r: Reading, now_ms: int, d: Decision) -> None:
    if r.asic_model and c.model_asic != r.asic_model:
        first = c.model_asic is None
        c.model_asic = r.asic_model
        if first and c.model.params.steps == 0 and not c.model.ready:
            c.model = ThermalModel(prior_for(r.asic_model), c.time_scale)
    if evidence.exclusion(r) is not None:
        return
    note = c.model.observe(
        now_ms,
        r.temp,
        r.power,
        r.frequency,
        r.core_voltage,
        r.fan_pct,
        r.autofan,
        threshold=c.limits.temp_threshold,
    )
    d.events.extend(c.model.events)
    c.model.events.clear()
    if note:
        d.events.append(model_event(c.model.params, note))


def model_event(params: ModelParams, note: str) -> Event:
    """The learned parameters, as an event the log keeps and ``restore`` reads back."""
    return Event("model", f"{note} model={params.to_json()}", origin="tempctl")


def command_result(c, command: Command, ok: bool, now_ms: int, error: str | None) -> Decision:
    decision = Decision()
    if command.kind == "set_frequency":
        c.pending_attempt = command.attempt
        c.pending_polls = 0
        if ok or c.limits.dry_run:
            c.pending = None if c.limits.dry_run else command.frequency
        else:
            # Not applied (4xx, 5xx, timeout): verified like a change the device ignored,
            # so it is re-sent at most VERIFY_RETRIES times, then an alarm; never a loop.
            c.pending = command.frequency
            decision.events.append(
                Event(
                    "command",
                    f"set_frequency {command.frequency:g} MHz failed: {error}",
                    level="warning",
                    origin="tempctl",
                )
            )
    elif command.kind == "restart":
        if ok:
            c.restart_requested_ms = now_ms
        else:
            decision.events.append(
                Event(
                    "restart",
                    f"restart request failed: {error} (not retried)",
                    level="warning",
                    origin="tempctl",
                )
            )
    elif command.kind == "set_fields" and not ok:
        decision.events.append(
            Event(
                "command",
                f"settings {command.payload} not applied: {error}",
                level="warning",
                origin="tempctl",
            )
        )
    return decision


def explain(c) -> str:
    """The law's current intent in words, e.g. for `tempctl status`."""
    lim, f, m = c.limits, c.frequency, c.model
    state = c.current
    top = "MAX_FREQUENCY" if c.user_cap is None else "the user cap"
    if lim.law != "model" or not m.ready:
        what = {State.NORMAL: f"running at {top}", State.RECOVERING: "restoring"}
        return f"{what.get(state, 'throttled')} at {f:g} MHz"
    trend = m.slope() * 3600  # °C per hour of the log's clock (slope() is per second)
    room = f"effective ambient {m.ambient():.1f} °C (the die with no load), " + (
        "steady" if abs(trend) < 0.05 else f"{trend:+.1f} °C/h"
    )
    if f >= lim.max_frequency - FREQ_EPS:
        return f"running at {top} {f:g} MHz: predicted {m.predict(f):.1f} °C; {room}"
    up = min(lim.max_frequency, f + PLL_STEP)
    pred = m.predict(up, c.horizon_s, powercap.volts(c))
    return (
        f"holding {f:g} MHz: {up:g} predicted {pred:.1f} °C "
        f"(threshold {lim.temp_threshold:g} °C); {room}"
    )


def _fmt(ident) -> str:
    mac, host = ident
    return f"{host or '?'} ({mac or 'no MAC'})"


def predicted_note(c) -> None:
    """Say in the transition why this frequency: what the model predicts for it (moved out
    of controller.py)."""
    pred = c.predicted(c.frequency, c.horizon_s)
    t = c._decision.transition
    if pred is not None and t is not None:
        amb = c.model.ambient()
        c._decision.transition = replace(
            t,
            reason=f"{t.reason}: {c.frequency:g} MHz predicted {pred:.1f} °C "
            f"(effective ambient {amb:.1f} °C)",
        )


def fault_note(c, fault: str, d: Decision) -> None:
    """Mining stopped (not an overheat): say so once per episode."""
    if "fault" in c._notes:
        return
    c._notes.add("fault")
    if fault == "pool_down":
        msg = (
            "mining stopped (pool_down): no pool reachable (the firmware stops the ASIC, "
            "fan at 30 %); not an overheat, nothing to do here"
        )
    else:
        msg = f"mining stopped: {fault} reported by the device; not an overheat, needs a person"
    # the alerter sends its own "fault" alert
    d.events.append(Event("fault", msg, level="warning", origin="device"))
