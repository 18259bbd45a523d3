"""What the controller hands back: a transition, commands to send, events to log.

Plain frozen dataclasses: the driver carries them out, the log stores them,
replay compares them.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import Enum
from typing import Any

__all__ = ["Command", "Decision", "Event", "Outcome", "Snapshot", "State", "Transition"]


class State(str, Enum):
    NORMAL = "NORMAL"
    THROTTLED_1 = "THROTTLED_1"
    THROTTLED_2 = "THROTTLED_2"
    RECOVERING = "RECOVERING"


@dataclass(frozen=True, slots=True)
class Command:
    kind: str  # set_frequency | restart | set_fields
    reason: str
    frequency: float | None = None
    attempt: int = 1
    fields: tuple[tuple[str, Any], ...] = ()  # set_fields: the PATCH body, as sorted pairs

    @property
    def payload(self) -> dict[str, Any]:
        if self.kind == "set_frequency":
            return {"frequency": self.frequency}
        return dict(self.fields)


@dataclass(frozen=True, slots=True)
class Outcome:
    """What happened to one command: the daemon's HTTP result, or a recorded one in replay."""

    command_id: int | None
    command: Command
    outcome: str  # ok | failed | skipped | dry_run
    status: int | None = None
    error: str | None = None
    latency_s: float | None = None

    @property
    def ok(self) -> bool:
        """The one success rule: the device took it (or, in a dry run, would have)."""
        return self.outcome in ("ok", "dry_run")


@dataclass(frozen=True, slots=True)
class Transition:
    from_state: str
    to_state: str
    reason: str
    frequency: float | None
    temp: float | None
    ceiling: float | None
    ceiling_until_ms: int | None
    backoff_s: float
    last_good: float | None


@dataclass(frozen=True, slots=True)
class Event:
    kind: str
    message: str
    level: str = "info"
    origin: str | None = None
    frequency_from: float | None = None
    frequency_to: float | None = None


@dataclass(slots=True)
class Decision:
    transition: Transition | None = None
    commands: list[Command] = field(default_factory=list)
    events: list[Event] = field(default_factory=list)

    def __bool__(self) -> bool:
        return bool(self.transition or self.commands or self.events)

    def extend(self, other: Decision) -> None:
        if other.transition is not None:
            self.transition = other.transition
        self.commands.extend(other.commands)
        self.events.extend(other.events)


@dataclass(frozen=True, slots=True)
class Snapshot:
    """What survives a restart: the latest transition row of a device, plus history facts."""

    state: State
    frequency: float | None
    ceiling: float | None = None
    ceiling_until_ms: int | None = None
    backoff_s: float = 0.0
    last_good: float | None = None
    last_change_ms: int | None = None
    restarts_ms: tuple[int, ...] = ()
    model: str | None = None  # the learned thermal model (JSON of model.ModelParams)
    identity: tuple[str | None, str | None] | None = None  # (mac, hostname) last seen
    before_trip: str | None = None  # JSON: settings the user had before a firmware trip
    voltage: str | None = None  # JSON: the voltage governor's learned table (issue 21)
    # (ts_ms, temp, frequency) of the last representative readings, oldest first: the die
    # estimator (estimator.py) is rebuilt from them, so daemon and replay start alike
    recent: tuple[tuple[int, float, float], ...] = ()
    user_cap: float | None = None  # MHz a user lowered the device to (core/usercap.py)
    user_cap_ms: int | None = None  # when tempctl saw it set
    power_cap: float | None = None  # MHz: the power ceiling in force (core/powercap.py)
