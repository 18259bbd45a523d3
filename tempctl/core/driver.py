"""The per-poll sequence every driver of a Controller shares, said once.

    reading -> Driver.step -> Decision (log it) -> Driver.carry_out(jobs, device)
            -> Outcomes (log them) -> Driver.results -> follow-up Decision (log it)

The daemon runs ``carry_out`` on a worker thread against the HTTP client,
``tempctl simulate`` inline against the simulated firmware, and ``tempctl replay``
skips it and feeds the recorded outcomes to ``results``. The driver owns what they
must agree on: the device's capabilities (live change or restart, or no writing at
all), the last safety check before anything is sent, the order of a change and its
restart, and the one success rule (``Outcome.ok``). It does no I/O itself: the device
is an ``Actuator`` handed in.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any, Protocol

from tempctl.core.controller import Controller
from tempctl.core.decision import Command, Decision, Event, Outcome
from tempctl.core.limits import Limits, WindowStats
from tempctl.core.reading import Reading
from tempctl.core.voltage import Governor, supported

__all__ = ["Actuator", "Capabilities", "Driver", "UnsafeCommand", "check_safe"]

# set_fields may only carry these (aftermath.py), and coreVoltage only in this range (mV):
# the lowest TPS546 setpoint (vcore.c) to the highest voltageOptions entry (axeos-api.md §7).
FIELD_KEYS = frozenset({"coreVoltage", "autofanspeed", "manualFanSpeed", "overheat_mode"})
VOLTAGE_MV = (1000, 1500)


class Actuator(Protocol):
    """What the driver may do to a device. Each call returns the latency in seconds (or None)
    and raises on failure; an exception's ``kind`` and ``status`` attributes are logged."""

    def set_frequency(self, mhz: float) -> float | None: ...
    def set_fields(self, fields: Mapping[str, Any]) -> float | None: ...
    def restart(self) -> float | None: ...


class Capabilities(Protocol):
    live_frequency: bool  # a frequency PATCH applies without a restart
    trip_latches: bool  # the overheat trip latches until someone writes (v2.1.9-v2.10)
    write_refused: str | None  # why tempctl must not write to this device, or None


class UnsafeCommand(Exception):
    kind = "unsafe"


def check_safe(cmd: Command, limits: Limits) -> None:
    """Last line of defence at the edge: never send a frequency outside the allowed range."""
    if cmd.kind == "set_frequency" and not limits.allowed(cmd.frequency):
        raise UnsafeCommand(
            f"refusing to set {cmd.frequency} MHz: outside "
            f"[{limits.lowest:g}, {limits.max_frequency:g}]"
        )
    if cmd.kind == "set_fields":
        body = cmd.payload
        extra = set(body) - FIELD_KEYS
        mv = body.get("coreVoltage")
        if extra or (mv is not None and not VOLTAGE_MV[0] <= mv <= VOLTAGE_MV[1]):
            raise UnsafeCommand(f"refusing to send {body}")


def _voltage_refused(before: Outcome) -> bool:
    return (
        not before.ok
        and before.command.kind == "set_fields"
        and "coreVoltage" in before.command.payload
    )


class Driver:
    """One device's Controller plus the rules every caller shares."""

    def __init__(
        self, controller: Controller, capabilities: Callable[[Reading], Capabilities] | None = None
    ):
        self.controller = controller
        self.limits = controller.limits
        self.name = controller.device
        self._capabilities = capabilities
        self._caps_key: tuple | None = None
        self.write_refused: str | None = None
        lim = self.limits
        self.voltage = (  # issue 21: chooses the core voltage for the law's frequency
            Governor(lim.min_voltage, lim.max_voltage, lim.goal)
            if getattr(lim, "voltage", "off") == "auto"
            else None
        )
        if self.voltage is not None:  # the law and the power cap predict a raise with the
            controller.voltage_for = self.voltage.planned  # voltage it will get (the pair)
        table = getattr(controller, "voltage_table", None)
        if self.voltage is not None and table:
            self.voltage.restore(table)  # learned before a restart (the log's last table)

    def step(self, reading: Reading, window: Callable[[], WindowStats] | None = None) -> Decision:
        """Judge one poll (stamped ``reading.ts_ms``)."""
        ctl = self.controller
        alarm = None
        if self._capabilities is not None and (reading.version or reading.asic_model):
            key = (
                reading.version,
                reading.asic_model,
                reading.firmware_floor,
                reading.actual_frequency is not None,
            )
            if key != self._caps_key:
                self._caps_key = key
                caps = self._capabilities(reading)
                ctl.live_capable = caps.live_frequency
                ctl.trip_latches = getattr(caps, "trip_latches", False)
                refused = caps.write_refused
                if refused and refused != self.write_refused:
                    alarm = Event(
                        "alarm",
                        f"not writing to this device: {refused}",
                        level="alarm",
                        origin="tempctl",
                    )
                self.write_refused = refused
        before = ctl.frequency
        if self.voltage is not None:
            self.voltage.live = supported(reading) is None
        decision = ctl.step(reading, reading.ts_ms, window)
        if self.voltage is not None:
            self.voltage.step(reading, decision, before, ctl.frequency)
            if self.voltage.reverted is not None:
                self._after_revert(reading, window, decision, self.voltage.reverted)
        if alarm is not None:
            decision.events.insert(0, alarm)
        return decision

    def _after_revert(self, reading: Reading, window, decision: Decision, mv: int) -> None:
        """The governor raised the voltage at once on errors (voltage.py) while the law had
        chosen the frequency for the old voltage, often right under the threshold: the model
        learns the move now and the law judges the new pair in this poll, so a throttle goes
        out with the revert instead of a poll later (the die is ~0.5 °C over by then). The
        fall is sent first: a frequency fall is never held back by a refused voltage."""
        ctl = self.controller
        if self.limits.dry_run or decision.transition is not None:
            return
        ctl.model.voltage_set(reading.ts_ms, mv)
        n = len(decision.commands)
        ctl.rejudge(reading, window, decision)
        fall = decision.commands[n:]
        if fall:
            del decision.commands[n:]
            i = next(i for i, c in enumerate(decision.commands) if c.kind == "set_fields")
            decision.commands[i:i] = fall

    def preset(self, jobs: list[tuple[int | None, Command]]) -> list[Outcome] | None:
        """Outcomes known without asking the device (dry run, or a device not written to)."""
        if self.limits.dry_run:
            return [Outcome(cid, c, "dry_run") for cid, c in jobs]
        if self.write_refused:
            return [Outcome(cid, c, "skipped", error=self.write_refused) for cid, c in jobs]
        return None

    def carry_out(self, jobs: list[tuple[int | None, Command]], device: Actuator) -> list[Outcome]:
        """Send the commands in order. A restart only follows a change that was accepted."""
        known = self.preset(jobs)
        if known is not None:
            return known
        out: list[Outcome] = []
        for cid, cmd in jobs:
            if cmd.kind == "restart" and out and not out[-1].ok:
                out.append(
                    Outcome(cid, cmd, "skipped", error="the change before it was not accepted")
                )
                continue
            if cmd.kind == "set_frequency" and out and _voltage_refused(out[-1]):
                # voltage rises before frequency (issue 21): never a raise without it
                out.append(
                    Outcome(cid, cmd, "skipped", error="the voltage it needs was not accepted")
                )
                continue
            try:
                check_safe(cmd, self.limits)
                if cmd.kind == "set_frequency":
                    latency = device.set_frequency(cmd.frequency)
                elif cmd.kind == "set_fields":
                    latency = device.set_fields(cmd.payload)
                else:
                    latency = device.restart()
                out.append(Outcome(cid, cmd, "ok", latency_s=latency))
            except Exception as exc:  # any failure of one device is that command's outcome
                kind = getattr(exc, "kind", type(exc).__name__)
                out.append(
                    Outcome(cid, cmd, "failed", getattr(exc, "status", None), f"{kind}: {exc}")
                )
        return out

    def results(self, outcomes: list[Outcome], now_ms: int) -> Decision:
        """Feed the outcomes back; the follow-up decision (events, re-sends) to log."""
        follow = Decision()
        for o in outcomes:
            follow.extend(self.controller.command_result(o.command, o.ok, now_ms, o.error))
        return follow
