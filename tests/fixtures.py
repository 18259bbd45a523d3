"""A realistic tempctl log, built once, for the Datasette tests and for people.

Two Gammas polled every 30 s for a day that crosses UTC midnight, with a daemon
restart in the middle. The readings are synthetic (ambient curve + a linear
frequency term + seeded noise) but every transition, command and event is real
``Controller`` output: each reading is appended with ``tempctl.store.eventlog.Log`` and
judged with the stable window read back from that log, as tempctl/daemon.py does.

What happens:
- garage (TEMP_THRESHOLD 63): a heat wave throttles it; restore steps overheat
  twice (back-off, ceiling) before it is back at MAX_FREQUENCY.
- office (threshold override 60): someone lowers it to 550 MHz by hand at 09:00;
  the heat throttles it (its first set_frequency fails with HTTP 500), it recovers
  to MAX_FREQUENCY, and a warm spell at 19:15 throttles it again: the log ends with
  office THROTTLED_1 part-way through its stable window.

Write it for a look in Datasette:  python -m tests.fixtures out.db && tempctl ui --db out.db
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass, field
from pathlib import Path

import click

from tempctl.config import Device, Settings, config_dict
from tempctl.core.controller import Command, Controller, Limits
from tempctl.core.reading import Reading
from tempctl.store.eventlog import Log

HOUR_MS = 3_600_000
START_MS = 1_752_523_200_000  # 2025-07-14 20:00:00 UTC
POLL_MS = 30_000
# (start, end) of each daemon run: a 5-minute restart gap at 06:00 the next morning.
RUNS = (
    (START_MS, START_MS + 10 * HOUR_MS),
    (START_MS + 10 * HOUR_MS + 300_000, START_MS + 24 * HOUR_MS),
)
USER_CHANGE_MS = START_MS + 13 * HOUR_MS  # 09:00 UTC: office set to 550 MHz by hand
FAIL_FIRST_COMMAND = "office"  # its first set_frequency answers HTTP 500
GHS_PER_MHZ = 2.04 * 0.96  # BM1370: 2040 small cores (axeos-api.md §10), ~96 % of expected

SETTINGS = Settings(
    devices=(
        Device("garage", "http://127.0.0.1:4001"),
        Device("office", "http://127.0.0.1:4002", overrides={"temp_threshold": 60.0}),
    ),
    # The office's user change (USER_CHANGE_MS) is climbed back from, as tempctl 0.2 did
    # (the UI tests' figures come from that day); tests/test_user_cap.py covers "keep".
    user_cap="off",
)


def _bump(hour: float, start: float, peak: float, end: float, height: float) -> float:
    """A smooth rise from ``start`` to ``peak`` and fall to ``end`` (hours since START)."""
    if hour <= start or hour >= end:
        return 0.0
    x = (hour - start) / (peak - start) if hour < peak else (end - hour) / (end - peak)
    return height * (1 - math.cos(math.pi * x)) / 2


def ambient(device: str, hour: float) -> float:
    """°C around the miner, by hours since START (20:00 UTC)."""
    if device == "garage":
        return 21.0 + _bump(hour, 11, 15, 19, 10.0)  # a heat wave 07:00-15:00 UTC
    # the afternoon heat, then a warm spell at 19:15 that throttles it again just before the end
    return 19.0 + _bump(hour, 13, 16.5, 20, 8.0) + _bump(hour, 23.2, 23.4, 23.6, 3.5)


@dataclass
class Plant:
    """A fake Bitaxe: its temperature follows ambient and frequency; it obeys PATCHes."""

    name: str
    rng: random.Random
    frequency: float = 575.0
    uptime_s: int = 86_400
    fail_next: bool = False

    def read(self, ts_ms: int, poll: int) -> Reading:
        hour = (ts_ms - START_MS) / HOUR_MS
        self.uptime_s += POLL_MS // 1000
        if poll % 347 == 5:  # now and then the device does not answer
            return Reading(self.name, ts_ms, error="timeout: no answer within 5 s")
        temp = ambient(self.name, hour) + 28.0 + 0.06 * (self.frequency - 400)
        temp = round(temp + self.rng.gauss(0, 0.25), 2)
        hashrate = round(self.frequency * GHS_PER_MHZ * self.rng.uniform(0.97, 1.03), 1)
        return Reading(
            self.name,
            ts_ms,
            temp=temp,
            vr_temp=round(temp + 6 + self.rng.gauss(0, 0.3), 1),
            frequency=self.frequency,
            actual_frequency=self.frequency,
            core_voltage=1150,
            core_voltage_actual=1144,
            hashrate=hashrate,
            power=round(11 + 0.018 * self.frequency, 2),
            fan_pct=round(min(100, temp + 10), 1),
            fan_rpm=int(min(100, temp + 10) * 60),
            uptime_s=self.uptime_s,
            version="v2.15.0",
            asic_model="BM1370",
            raw_temp=temp,
        )

    def apply(self, cmd: Command) -> tuple[str, int | None, str | None]:
        """(outcome, HTTP status, error) of a PATCH, as the AxeOS client would report it."""
        if self.fail_next:
            self.fail_next = False
            return "failed", 500, "http: 500 Internal Server Error"
        if cmd.kind == "set_frequency":
            self.frequency = cmd.frequency
        return "ok", 200, None


@dataclass
class FixtureLog:
    """The written log plus what the controller did, for the tests' expectations."""

    path: Path
    devices: tuple[str, ...]
    limits: dict[str, Limits]
    final: dict[str, tuple[str, float]] = field(default_factory=dict)  # state, MHz
    transitions: list[tuple[str, int, str, str, float]] = field(default_factory=list)
    failed_commands: list[int] = field(default_factory=list)
    last_reading_ms: dict[str, int] = field(default_factory=dict)
    first_reading_ms: dict[str, int] = field(default_factory=dict)
    temps: dict[str, list[tuple[int, float]]] = field(default_factory=dict)  # valid readings
    ghs_per_mhz: dict[str, list[float]] = field(default_factory=dict)  # hashrate / frequency
    set_frequency_commands: int = 0


def build_log(path: str | Path) -> FixtureLog:
    """Write the fixture log to ``path`` (a new file) and return what went into it."""
    path = Path(path)
    if path.exists():
        raise FileExistsError(f"{path} exists; the fixture writes a new log")
    limits = {d.name: Limits.from_settings(SETTINGS.for_device(d)) for d in SETTINGS.devices}
    out = FixtureLog(
        path,
        tuple(limits),
        limits,
        temps={d: [] for d in limits},
        ghs_per_mhz={d: [] for d in limits},
    )
    plants = {d: Plant(d, random.Random(i)) for i, d in enumerate(limits)}
    plants[FAIL_FIRST_COMMAND].fail_next = True
    log = Log(path)
    try:
        poll = 0
        for start, end in RUNS:
            log.start_run(config_dict(SETTINGS), {"devices": "fixture"}, ts_ms=start)
            controllers = {
                d: Controller(lim, d, snapshot=log.restore(d)) for d, lim in limits.items()
            }
            log.transaction(
                [
                    log.event_op(
                        d,
                        start,
                        "log",
                        "start: "
                        + (
                            f"restored {c.current.value} at {c.frequency:g} MHz"
                            if c.restored
                            else "no history for this device"
                        ),
                        origin="daemon",
                    )
                    for d, c in controllers.items()
                ]
            )
            for ts in range(start, end, POLL_MS):
                if ts == USER_CHANGE_MS:
                    plants["office"].frequency = 550.0  # a person, in the AxeOS web UI
                for d, ctl in controllers.items():
                    _poll(log, ctl, plants[d], ts, poll, out)
                poll += 1
            log.transaction([log.event_op(None, end, "log", "stop", origin="daemon")])
            out.final = {d: (c.current.value, c.frequency) for d, c in controllers.items()}
    finally:
        log.close()
    return out


def _poll(log: Log, ctl: Controller, plant: Plant, ts: int, poll: int, out: FixtureLog) -> None:
    """One poll of one device, in the daemon's order: reading, decision, commands, results."""
    d = plant.name
    r = plant.read(ts, poll)
    log.transaction([log.reading_op(r)])
    out.first_reading_ms.setdefault(d, ts)
    out.last_reading_ms[d] = ts
    if r.valid:
        out.temps[d].append((ts, r.temp))
        out.ghs_per_mhz[d].append(r.hashrate / r.frequency)
    decision = ctl.step(r, ts, window=lambda: log.window(d, ts, ctl.limits))
    ops, jobs = log.decision_ops(d, ts, decision)
    if ops:
        log.transaction(ops)
    t = decision.transition
    if t is not None:
        out.transitions.append((d, ts, t.from_state, t.to_state, t.frequency))
    done = ts + 150  # the PATCH answered 150 ms later
    for cid, cmd in jobs:
        out.set_frequency_commands += cmd.kind == "set_frequency"
        outcome, status, error = plant.apply(cmd)
        if outcome == "failed":
            out.failed_commands.append(cid)
        ops = [log.result_op(cid, done, outcome, status=status, error=error, latency_ms=150.0)]
        follow = ctl.command_result(cmd, outcome == "ok", done, error)
        if follow:
            ops += log.decision_ops(d, done, follow)[0]
        log.transaction(ops)


@click.command()
@click.argument("db_path", type=click.Path(dir_okay=False, path_type=Path))
def main(db_path: Path) -> None:
    """Write the fixture log to DB_PATH (which must not exist yet).

    \b
    Example:
        python -m tests.fixtures /tmp/fixture.db && tempctl ui --db /tmp/fixture.db
    """
    info = build_log(db_path)
    for d, (state, freq) in info.final.items():
        click.echo(
            f"{d}: {state} at {freq:g} MHz, {sum(1 for t in info.transitions if t[0] == d)}"
            " transitions"
        )
    click.echo(f"wrote {db_path}")


if __name__ == "__main__":
    main()
