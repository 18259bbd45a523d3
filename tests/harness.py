"""A tiny harness: a controller, a device that obeys commands, and the incremental window."""

from __future__ import annotations

from tempctl.core.controller import Controller, Limits, Snapshot
from tempctl.core.reading import Reading
from tempctl.core.window import StableWindow


class Harness:
    def __init__(self, limits: Limits, frequency: float = 575.0, snapshot: Snapshot | None = None):
        self.limits = limits
        self.ctl = Controller(limits, "dev", snapshot=snapshot)
        self.window = StableWindow(limits)
        self.device_freq = frequency
        self.commands: list = []
        self.transitions: list = []
        self.events: list = []
        self.obey = True

    def poll(
        self,
        t_s: float,
        temp: float | None,
        *,
        vr: float | None = None,
        overheat: bool = False,
        uptime: int | None = None,
        frequency: float | None = None,
    ):
        if frequency is not None:
            self.device_freq = frequency
        now = int(round(t_s * 1000))
        r = Reading(
            "dev",
            now,
            temp=temp,
            vr_temp=vr,
            frequency=self.device_freq,
            overheat=overheat,
            uptime_s=uptime,
        )
        self.window.add(now, r.temp, r.vr_temp, r.overheat)
        d = self.ctl.step(r, now, window=lambda: self.window.stats(now))
        self._apply(d, now)
        return d

    def _apply(self, d, now):
        if d.transition:
            self.transitions.append(d.transition)
        self.events.extend(d.events)
        for c in d.commands:
            self.commands.append(c)
            if c.kind == "set_frequency" and self.obey:
                self.device_freq = c.frequency
            follow = self.ctl.command_result(c, True, now)
            self.events.extend(follow.events)

    @property
    def state(self) -> str:
        return self.ctl.current.value
