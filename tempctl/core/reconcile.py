"""The first reading of a run: compare the device with the state restored from the log.

Also the one way to change state and frequency outside the per-poll law (``force``):
start-up, and the safety clamp when someone sets the device above MAX_FREQUENCY.
"""

from __future__ import annotations

from dataclasses import dataclass

from tempctl.core.decision import Decision, Event, State, Transition
from tempctl.core.law import is_critical, is_hot
from tempctl.core.limits import FREQ_EPS
from tempctl.core.reading import Reading

__all__ = ["force", "outside_reason", "reconcile"]


@dataclass(frozen=True, slots=True)
class _Fired:
    reason: str


def reconcile(c, r: Reading, now_ms: int, d: Decision) -> None:
    lim, observed = c.limits, r.frequency
    c.started = True
    state = c.current
    if not c.restored:
        c.frequency = observed
        if observed >= lim.max_frequency - FREQ_EPS:
            force(
                c,
                r,
                now_ms,
                d,
                State.NORMAL,
                observed,
                "start: no history, device at or above MAX_FREQUENCY",
            )
        else:
            c.last_change_ms = now_ms  # judge this level for a settle period first
            force(
                c,
                r,
                now_ms,
                d,
                State.RECOVERING,
                observed,
                f"start: no history, device at {observed:g} MHz below MAX_FREQUENCY",
            )
        return
    expected = c.frequency
    outside = observed > lim.max_frequency + FREQ_EPS or observed < lim.lowest - FREQ_EPS
    if abs(observed - expected) <= FREQ_EPS:
        if outside:  # e.g. MAX_FREQUENCY lowered since: down on the first poll (issue 13.6)
            force(c, r, now_ms, d, state, observed, "start: " + outside_reason(observed, lim))
            return
        d.events.append(
            Event("reconcile", f"resumed {state.value} at {observed:g} MHz", origin="daemon")
        )
        return
    if observed > expected and state is not State.NORMAL:
        # Rebooted into a higher setting or raised by hand while throttled: re-apply.
        d.events.append(
            Event(
                "reconcile",
                f"device at {observed:g} MHz but {state.value} holds {expected:g} MHz: re-applying",
                level="warning",
                origin="daemon",
            )
        )
        c.frequency = observed
        force(c, r, now_ms, d, state, expected, f"reconcile: re-apply {expected:g} MHz")
        return
    d.events.append(
        Event(
            "reconcile",
            f"device at {observed:g} MHz, log says {expected:g} MHz: adopting the device's value",
            level="warning",
            origin="daemon",
        )
    )
    c.frequency = observed
    c.last_change_ms = now_ms
    if outside:
        force(c, r, now_ms, d, state, observed, outside_reason(observed, lim))
    elif state is State.NORMAL and observed < lim.max_frequency - FREQ_EPS:
        force(
            c,
            r,
            now_ms,
            d,
            State.RECOVERING,
            observed,
            f"start: device at {observed:g} MHz below MAX_FREQUENCY",
        )


def outside_reason(observed: float, lim) -> str:
    if observed > lim.max_frequency:
        return f"device at {observed:g} MHz, above MAX_FREQUENCY"
    return f"device at {observed:g} MHz, below the floor {lim.lowest:g} MHz"


def force(
    c, r: Reading | None, now_ms: int, d: Decision, state: State, target: float, reason: str
) -> None:
    """A state/frequency change outside the per-poll law. ``target`` goes through the one
    clamp (``Limits.clamp``), and a hot or critical reading never raises the frequency."""
    lim = c.limits
    from_state = c.current
    target = lim.clamp(target)
    hot = r is not None and (is_hot(r, lim) or is_critical(r, lim)) and (r.valid or r.overheat)
    if hot and target > c.frequency:
        target = c.frequency
    if state is not from_state:
        c.machine.set_state(state)
    if abs(target - c.frequency) > FREQ_EPS:
        c._decision, c._fired, c._now = d, _Fired(reason), now_ms
        cmds = c._commands_for(target, reason, raise_=target > c.frequency)
        c._decision = c._fired = None
        if cmds:
            d.commands.extend(cmds)
            c.frequency = target
            c.last_change_ms = now_ms
            if not lim.dry_run:
                c.model.note_change(now_ms, target)
    d.transition = Transition(
        from_state.value,
        state.value,
        reason,
        c.frequency,
        None,
        c.ceiling,
        c.ceiling_until_ms,
        c.backoff_s,
        c.last_good,
    )
