"""Drive the daemon's controller (``TempctlPolicy``) against the emulated firmware with a
scheduled failure: an injected clock, no HTTP, every row logged to a real SQLite file so
``replay --check`` can re-drive it (tests/test_real_failures.py)."""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass, field, replace

from tempctl.config import Settings, config_dict, validate
from tempctl.offline.replay import check
from tempctl.sim.faults import FaultyDevice
from tempctl.sim.plant import Plant
from tempctl.sim.policies import make_policy
from tempctl.sim.scenario import Faults, Scenario
from tempctl.sim.simulate import SIM_EPOCH_MS, LogSink, SimDevice, SimFirmware
from tempctl.store.eventlog import Log

POLL_S = 30.0
TRUTH_S = 10.0


@dataclass
class Run:
    fw: SimFirmware
    dev: FaultyDevice
    policy: object
    db: str
    die: list[tuple[float, float]] = field(default_factory=list)  # (t_s, true die °C)
    mhz: list[tuple[float, float]] = field(default_factory=list)  # (t_s, PLL MHz)

    def poll_until(self, t_end: float, actions=()) -> None:
        """Poll every POLL_S up to t_end; ``actions``: (t_s, fn(fw)) done at their time."""
        todo = sorted(actions, key=lambda a: a[0])
        t = self.fw.t
        while t <= t_end + 1e-9:
            while todo and todo[0][0] <= t:
                at, fn = todo.pop(0)
                self.fw.advance(at)
                fn(self.fw)
            self.fw.advance(t)
            self.policy.poll(self.dev)
            for k in range(1, int(POLL_S / TRUTH_S)):
                self.fw.advance(t + k * TRUTH_S)
                self.die.append((self.fw.t, self.fw.plant.die_c))
                self.mhz.append((self.fw.t, self.fw.actual_mhz))
            t += POLL_S
        self.policy.sink.flush()

    def rows(self, sql: str, *args) -> list[tuple]:
        self.policy.sink.flush()
        with sqlite3.connect(self.db) as conn:
            return conn.execute(sql, args).fetchall()

    def events(self, kind: str | None = None) -> list[tuple[int, str, str]]:
        """(seconds since start, kind, message) of the device's events."""
        rows = self.rows(
            "SELECT ts_ms, kind, message FROM events WHERE device = ? ORDER BY id",
            self.policy.name,
        )
        return [((ts - SIM_EPOCH_MS) / 1000.0, k, m) for ts, k, m in rows if kind in (None, k)]

    def replay_ok(self) -> bool:
        self.policy.sink.flush()
        with sqlite3.connect(self.db) as conn:
            result = check(conn)
        assert result.runs >= 1
        return result.divergence is None


def start(
    scenario: Scenario,
    tmp_path,
    settings: Settings | None = None,
    *,
    cooling=(),
    stuck_s: float | None = None,
    seed: int = 0,
) -> Run:
    settings = validate(replace(settings or Settings(), check_interval=POLL_S, devices=()))
    db = str(tmp_path / "failure.db")
    log = Log(db)
    sink = LogSink(log)
    policy = make_policy("tempctl", settings, sink)
    config = dict(config_dict(settings), policy="tempctl", scenario=scenario.name, seed=seed)
    log.start_run(config, {"policy": "simulate"}, kind="simulation", ts_ms=SIM_EPOCH_MS)
    fw = SimFirmware(scenario, seed=seed)
    dev = FaultyDevice(
        SimDevice(fw, policy.name, SIM_EPOCH_MS), Faults(""), seed, cooling=cooling, stuck_s=stuck_s
    )
    return Run(fw, dev, policy, db)


def oracle_mhz(scenario: Scenario, settings: Settings, ambient: float, scale: float = 1.0):
    """The highest frequency on a 1 MHz grid whose true steady die holds the threshold (fan
    at 100 % for autofan), with the plant's cooling scaled by ``scale``."""
    from tempctl.sim.firmware import plant_params

    plant = Plant(plant_params(scenario.asic), ambient)
    plant.cooling_scale = scale
    fan = scenario.fan_pct if scenario.fan_mode == "fixed" else 100.0
    best = 50.0
    for f in range(50, int(settings.max_frequency) + 1):
        if (
            plant.steady_die(float(f), scenario.core_voltage_mv, ambient, fan)
            <= settings.temp_threshold
        ):
            best = float(f)
    return best
