"""Who decides the frequency in a simulation: tempctl, the original script, or nobody.

Each policy is a generator driven by ``tempctl.sim.simulate``: it acts on a simulated
device at the current (fake) time and yields how many seconds to sleep before it
acts again. Everything it reads and sends goes to a sink (the SQLite log, or
nowhere), in the daemon's log format.

* ``tempctl``  - the Controller, driven poll by poll exactly as ``daemon.py`` does, with
  the law the settings select (TEMPCTL_LAW).
* ``levels``   - the same with TEMPCTL_LAW=levels: the fixed FIRST/SECOND levels of issue 4,
  kept for comparison with the model law (issue 12).
* ``seed``     - a port of the script tempctl descends from (``seed:S`` polls every S s).
* ``fixed:MHZ``- set MHZ once, then only watch.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Iterator
from dataclasses import replace
from typing import Protocol

from tempctl.core.controller import Command, Controller, Decision, Limits
from tempctl.core.driver import Driver
from tempctl.core.reading import Reading
from tempctl.core.window import StableWindow, suspect
from tempctl.device import capabilities, parse_info, reading_capabilities


class Device(Protocol):
    """What a policy may do to the (simulated) device; see ``simulate.SimDevice``."""

    name: str
    t: float  # seconds since the start of the simulation

    def ts_ms(self) -> int: ...
    def info(self) -> dict | None: ...
    def read(self) -> Reading: ...
    def set_frequency(self, mhz: float) -> tuple[str, int | None, str | None]: ...
    def set_fields(self, fields: dict) -> tuple[str, int | None, str | None]: ...
    def restart(self) -> tuple[str, int | None, str | None]: ...


class Sink(Protocol):
    def reading(self, r: Reading) -> None: ...
    def decision(
        self, device: str, ts_ms: int, d: Decision
    ) -> list[tuple[int | None, Command]]: ...
    def result(
        self,
        command_id: int | None,
        ts_ms: int,
        outcome: str,
        status: int | None = None,
        error: str | None = None,
    ) -> None: ...
    def event(self, device: str, ts_ms: int, kind: str, message: str, **kw) -> None: ...


class NullSink:
    """Keeps nothing: for runs without --db (tune, quick comparisons)."""

    def reading(self, r: Reading) -> None:
        pass

    def decision(self, device, ts_ms, d):
        return [(None, c) for c in d.commands]

    def result(self, command_id, ts_ms, outcome, status=None, error=None) -> None:
        pass

    def event(self, device, ts_ms, kind, message, **kw) -> None:
        pass


class Policy:
    """Base: a name, a state label for reports/plots, and ``run(device)``."""

    spec: str = ""
    state: str = "NORMAL"
    poll_s: float = 5.0

    def run(self, dev: Device) -> Iterator[float]:
        raise NotImplementedError


class CommandFailed(Exception):
    """A simulated device refused or dropped a command (what axeos.Client would raise)."""

    kind = "failed"

    def __init__(self, status: int | None, error: str | None):
        super().__init__(error or "failed")
        self.status = status


class SimActuator:
    """core.driver.Actuator over a simulated device's (outcome, status, error) answers."""

    def __init__(self, dev: Device):
        self.dev = dev

    def _check(self, answer: tuple[str, int | None, str | None]) -> None:
        outcome, status, error = answer
        if outcome != "ok":
            raise CommandFailed(status, error)

    def set_frequency(self, mhz: float) -> None:
        self._check(self.dev.set_frequency(mhz))

    def set_fields(self, fields) -> None:
        self._check(self.dev.set_fields(fields))

    def restart(self) -> None:
        self._check(self.dev.restart())


class TempctlPolicy(Policy):
    """The daemon's per-poll sequence through the same ``Driver``, minus threads and HTTP:
    read -> log -> step -> log the decision -> carry out -> log the outcomes -> feed back.

    Commands are answered at once (latency 0), so their results carry the poll's
    timestamp; ``tempctl replay --check`` re-drives such a log to the same decisions.
    """

    def __init__(self, settings, name: str, sink: Sink, snapshot=None, spec: str = "tempctl"):
        self.spec = spec
        self.name = name
        self.sink = sink
        self.settings = settings  # what the run row records (replay re-reads it)
        self.limits = Limits.from_settings(settings)
        self.poll_s = float(settings.check_interval)
        self.driver = Driver(Controller(self.limits, name, snapshot=snapshot), reading_capabilities)
        self.ctl = self.driver.controller
        self.window = StableWindow(self.limits)

    @property
    def state(self) -> str:
        return self.ctl.current.value

    def run(self, dev: Device) -> Iterator[float]:
        actuator = SimActuator(dev)
        while True:
            self.poll(dev, actuator)
            yield self.poll_s

    def poll(self, dev: Device, actuator: SimActuator | None = None) -> None:
        r = dev.read()
        window, sink, driver = self.window, self.sink, self.driver
        sink.reading(r)
        ts = r.ts_ms
        window.add(
            ts,
            r.temp,
            r.vr_temp,
            r.overheat,
            suspect(r.uptime_s, r.hashrate, r.frequency, r.actual_frequency),
        )
        decision = driver.step(r, window=lambda: window.stats(ts))
        if not decision:
            return
        jobs = sink.decision(self.name, ts, decision)
        if not jobs:
            return
        outcomes = driver.carry_out(jobs, actuator or SimActuator(dev))
        for o in outcomes:
            sink.result(o.command_id, ts, o.outcome, o.status, o.error)
        follow = driver.results(outcomes, ts)
        if follow:
            sink.decision(self.name, ts, follow)


class SeedPolicy(Policy):
    """The algorithm of WhiteyCookie/Bitaxe-Temperature-Control, bitaxe_temperature_control.py
    @ e200a579 (the script tempctl descends from; shared/reference/peers.md §0), re-expressed.

    Its quirks are kept on purpose, because this is the baseline:
    * a hot reading (> TEMP_THRESHOLD) sets max(SECOND_FREQUENCY, FIRST_FREQUENCY - 50) whenever
      its *belief* is above SECOND_FREQUENCY, so with 490/400 it re-sends 440 MHz and restarts
      the miner on every hot reading, and never reaches SECOND_FREQUENCY;
    * every PATCH is followed by POST /api/system/restart (~20 s without hashing on a Gamma);
    * step-up: +25 MHz up to a hard-coded 575 MHz when temp < 64 °C (hard-coded), more than
      1 h after the last change (hard-coded), and the mean of the last 3600 // CHECK_INTERVAL
      samples is <= TEMP_THRESHOLD; the history is in memory and starts empty;
    * the temperature is used raw: the -1 a rebooting Gamma reports counts as a cool sample;
    * its belief of the frequency starts at 575 whatever the device runs;
    * a failed GET is retried 3 times with 1, 2 and 4 s sleeps, so its schedule drifts;
      after correcting a frequency above 575 it polls again at once (``continue``).
    TEMP_THRESHOLD, FIRST_FREQUENCY and SECOND_FREQUENCY come from the settings (the same
    environment names); CHECK_INTERVAL is the simulation's poll interval unless ``seed:S``.
    """

    MAX_FREQUENCY = 575
    STABLE_S = 3600.0
    TEMP_INCREASE_THRESHOLD = 64
    RETRIES = 3

    def __init__(self, settings, name: str, sink: Sink, check_interval: float):
        self.spec = (
            "seed" if check_interval == settings.check_interval else f"seed:{check_interval:g}"
        )
        self.name = name
        self.sink = sink
        self.threshold = settings.temp_threshold
        self.first = settings.first_frequency
        self.second = settings.second_frequency
        self.poll_s = float(check_interval)
        self.state = "NORMAL"

    def run(self, dev: Device) -> Iterator[float]:
        current = self.MAX_FREQUENCY
        last_adjustment = dev.t
        history: deque[float] = deque(maxlen=int(self.STABLE_S // self.poll_s))
        while True:
            info = None
            for attempt in range(self.RETRIES):
                body = self._get(dev)
                if body is not None:
                    info = body if "temp" in body and "frequency" in body else None
                    break
                yield 2**attempt  # exponential back-off, also after the last attempt
            if info is not None:
                temperature, frequency = info["temp"], info["frequency"]
                if frequency > self.MAX_FREQUENCY:
                    ok = yield from self._patch(dev, self.MAX_FREQUENCY, "above MAX_FREQUENCY")
                    if ok:
                        self._restart(dev)
                        current, last_adjustment = self.MAX_FREQUENCY, dev.t
                        self.state = "NORMAL"
                        yield 0.05  # `continue`: polls again at once (one request's time)
                        continue
                history.append(temperature)
                if temperature > self.threshold:
                    if current > self.second:
                        new = max(self.second, self.first - 50)
                        ok = yield from self._patch(dev, new, "temperature above threshold")
                        if ok:
                            self._restart(dev)
                            current, last_adjustment = new, dev.t
                            self.state = "THROTTLED"
                elif (
                    temperature < self.TEMP_INCREASE_THRESHOLD
                    and dev.t - last_adjustment > self.STABLE_S
                    and len(history) >= self.STABLE_S // self.poll_s
                    and sum(history) / len(history) <= self.threshold
                    and current < self.MAX_FREQUENCY
                ):
                    new = min(current + 25, self.MAX_FREQUENCY)
                    ok = yield from self._patch(dev, new, "temperature stable")
                    if ok:
                        self._restart(dev)
                        current, last_adjustment = new, dev.t
                        self.state = "NORMAL" if new >= self.MAX_FREQUENCY else "RECOVERING"
            yield self.poll_s

    def _get(self, dev: Device) -> dict | None:
        body = dev.info()
        self.sink.reading(dev.read() if body is None else _reading(dev, body))
        return body

    def _patch(self, dev: Device, mhz: float, reason: str):
        for attempt in range(self.RETRIES):
            cid = self._command(
                dev, Command("set_frequency", f"seed: {reason}", float(mhz), attempt + 1)
            )
            outcome, status, error = dev.set_frequency(mhz)
            self.sink.result(cid, dev.ts_ms(), outcome, status, error)
            if outcome == "ok":
                return True
            yield 2**attempt
        return False

    def _restart(self, dev: Device) -> None:
        cid = self._command(dev, Command("restart", "seed: restart after every PATCH"))
        outcome, status, error = dev.restart()
        self.sink.result(cid, dev.ts_ms(), outcome, status, error)

    def _command(self, dev: Device, cmd: Command) -> int | None:
        return self.sink.decision(self.name, dev.ts_ms(), Decision(commands=[cmd]))[0][0]


class FixedPolicy(Policy):
    """Set one frequency at the start (restarting if the firmware needs it), then only watch."""

    def __init__(self, settings, name: str, sink: Sink, mhz: float):
        self.spec = f"fixed:{mhz:g}"
        self.name = name
        self.sink = sink
        self.mhz = mhz
        self.poll_s = float(settings.check_interval)
        self.state = "FIXED"

    def run(self, dev: Device) -> Iterator[float]:
        body = dev.info()
        self.sink.reading(dev.read() if body is None else _reading(dev, body))
        if body is not None and abs(float(body.get("frequency", 0)) - self.mhz) > 0.5:
            cid = self.sink.decision(
                self.name,
                dev.ts_ms(),
                Decision(
                    commands=[Command("set_frequency", f"fixed at {self.mhz:g} MHz", self.mhz)]
                ),
            )[0][0]
            outcome, status, error = dev.set_frequency(self.mhz)
            self.sink.result(cid, dev.ts_ms(), outcome, status, error)
            if (
                outcome == "ok"
                and not capabilities(body.get("version"), body.get("ASICModel")).live_frequency
            ):
                cid = self.sink.decision(
                    self.name,
                    dev.ts_ms(),
                    Decision(commands=[Command("restart", f"apply {self.mhz:g} MHz")]),
                )[0][0]
                self.sink.result(cid, dev.ts_ms(), *dev.restart())
        while True:
            yield self.poll_s
            self.sink.reading(dev.read())


def _reading(dev: Device, body: dict) -> Reading:
    return parse_info(body, dev.name, dev.ts_ms())


def device_name(spec: str) -> str:
    return "sim-" + spec.replace(":", "-")


def parse_spec(spec: str) -> tuple[str, float | None]:
    """'tempctl' | 'levels' | 'seed' | 'seed:S' | 'fixed:MHZ' -> (kind, number), or ValueError."""
    kind, _, arg = spec.strip().partition(":")
    kind = kind.lower()
    if kind in ("tempctl", "levels") and not arg:
        return kind, None
    if kind in ("seed", "fixed"):
        if kind == "seed" and not arg:
            return kind, None
        try:
            value = float(arg)
        except ValueError:
            value = math.nan
        if not (value > 0 and math.isfinite(value)):
            what = "seconds" if kind == "seed" else "MHz"
            raise ValueError(f"{spec}: expected {kind}:<{what} > 0>")
        return kind, value
    raise ValueError(
        f"{spec}: unknown policy (use tempctl, levels, seed, seed:SECONDS or fixed:MHZ)"
    )


def canonical(spec: str, check_interval: float) -> str:
    """The name a spec reports under: 'seed:5' with 5 s polling is just 'seed'."""
    kind, value = parse_spec(spec)
    if value is None or (kind == "seed" and value == check_interval):
        return kind
    return f"{kind}:{value:g}"


def make_policy(spec: str, settings, sink: Sink, snapshot=None) -> Policy:
    kind, value = parse_spec(spec)
    if kind == "tempctl":
        return TempctlPolicy(settings, device_name("tempctl"), sink, snapshot=snapshot)
    if kind == "levels":  # the law of tempctl 0.1 (issue 4), for side-by-side comparison
        levels = replace(settings, law="levels")
        return TempctlPolicy(levels, device_name("levels"), sink, snapshot=snapshot, spec="levels")
    if kind == "seed":
        interval = value if value is not None else float(settings.check_interval)
        policy = SeedPolicy(settings, "", sink, interval)
        policy.name = device_name(policy.spec)
        return policy
    return FixedPolicy(settings, device_name(f"fixed:{value:g}"), sink, value)


__all__ = [
    "FixedPolicy",
    "NullSink",
    "Policy",
    "SeedPolicy",
    "TempctlPolicy",
    "canonical",
    "device_name",
    "make_policy",
    "parse_spec",
]
