"""`tempctl simulate`: policies against the emulated firmware on a fake clock, side by side.

No HTTP and no sleeping: each policy gets its own ``firmware.Firmware`` (the device
model the emulator serves, same scenario and seed), advanced to each poll time. A
policy reads ``Firmware.info()`` through ``axeos.parse_info`` and writes through
``Firmware.patch``/``restart``, so it sees what it would see over HTTP.

Truth is sampled on a fixed grid for the report: the die temperature of the plant
(not the noisy reading), the state the policy was in, and the exact hash work the
firmware did (restarts and ramps included). The oracle is the steady-state bound
``plant.oracle_frequency`` at each grid time: the highest frequency (<= MAX_FREQUENCY)
whose steady die temperature stays at or below the threshold at that ambient.

With ``db`` every policy writes the daemon's log format (its own ``runs`` row of kind
'simulation', device ``sim-<policy>``), so Datasette and ``tempctl replay --check``
work on it.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field, replace
from functools import lru_cache

from tempctl.config import Settings, config_dict, validate
from tempctl.core.reading import Reading
from tempctl.core.tally import Tally
from tempctl.device import parse_info
from tempctl.sim.faults import FaultyDevice
from tempctl.sim.firmware import Firmware, plant_params
from tempctl.sim.plant import oracle_frequency
from tempctl.sim.policies import NullSink, Policy, canonical, make_policy
from tempctl.sim.scenario import Scenario
from tempctl.sim.stability import BASE_ERROR
from tempctl.store.eventlog import Log

PLOT_INSTALL = "pip install 'tempctl[plot]'"  # matplotlib is an extra (pyproject.toml)
SIM_EPOCH_MS = 1_767_225_600_000  # 2026-01-01T00:00:00Z: simulated logs start here
FLUSH_OPS = 20_000  # statements per transaction when writing a simulated log


class PlotUnavailable(Exception):
    """A plot was asked for but matplotlib, the ``plot`` extra, is not installed."""


def require_matplotlib() -> None:
    """Fail before any simulating when the plot cannot be drawn (the base install lacks it)."""
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        raise PlotUnavailable(
            f"the plot needs matplotlib; install it with: {PLOT_INSTALL}"
        ) from None


class SimFirmware(Firmware):
    """The emulator's device, plus the exact hash work it did (GH, since start).

    Its info bodies skip the per-chip hashrate monitor and the rolling averages (they keep
    the template's values): neither parse_info nor a policy reads them, and they were a
    third of the body's cost.
    """

    full_body = False

    def __init__(self, *args, **kwargs):
        self.work_gh = 0.0
        super().__init__(*args, **kwargs)

    def _account(self, dt: float, running: bool) -> None:
        super()._account(dt, running)
        if running:
            self.work_gh += self._true_hr * dt  # the base just computed _expected_true()


class SimDevice:
    """A policy's handle on the firmware: what the AxeOS client would return."""

    def __init__(self, fw: SimFirmware, name: str, epoch_ms: int):
        self.fw = fw
        self.name = name
        self.epoch_ms = epoch_ms
        self.changes = 0  # accepted PATCHes that changed the frequency setting
        self.first_cut_t: float | None = None  # when a PATCH first lowered the setting

    @property
    def t(self) -> float:
        return self.fw.t

    def ts_ms(self) -> int:
        return self.epoch_ms + round(self.fw.t * 1000)

    def info(self) -> dict | None:
        return self.fw.info() if self.fw.reachable() else None

    def read(self) -> Reading:
        body = self.info()
        if body is None:
            # what axeos.Client raises while the device reboots, as the daemon logs it
            return Reading(self.name, self.ts_ms(), error="unreachable: connection refused")
        return parse_info(body, self.name, self.ts_ms())

    def set_frequency(self, mhz: float) -> tuple[str, int | None, str | None]:
        if not self.fw.reachable():
            return "failed", None, "unreachable: connection refused"
        before = self.fw.nvs_mhz
        value = int(mhz) if float(mhz).is_integer() else mhz  # as axeos.Client sends it
        status, _, reply = self.fw.patch(
            json.dumps({"frequency": value}, separators=(",", ":")).encode()
        )
        if status == 200:
            if abs(self.fw.nvs_mhz - before) > 1e-9:
                self.changes += 1
                if self.fw.nvs_mhz < before and self.first_cut_t is None:
                    self.first_cut_t = self.fw.t
            return "ok", 200, None
        if status == 0:
            return "failed", None, "unreachable: connection dropped"
        return "failed", status, f"rejected: HTTP {status} {reply[:200]!r}"

    def set_fields(self, fields: dict) -> tuple[str, int | None, str | None]:
        if not self.fw.reachable():
            return "failed", None, "unreachable: connection refused"
        status, _, reply = self.fw.patch(json.dumps(dict(fields), separators=(",", ":")).encode())
        if status == 200:
            return "ok", 200, None
        if status == 0:
            return "failed", None, "unreachable: connection dropped"
        return "failed", status, f"rejected: HTTP {status} {reply[:200]!r}"

    def restart(self) -> tuple[str, int | None, str | None]:
        if not self.fw.reachable():
            return "failed", None, "unreachable: connection refused"
        status, _, _ = self.fw.restart()
        if status in (0, 200):  # a dropped connection after the POST counts as sent
            return "ok", status or None, None
        return "failed", status, f"HTTP {status}"


class LogSink:
    """Appends a policy's rows to the log in batches (executemany, one transaction each)."""

    def __init__(self, log: Log):
        self.log = log
        self.ops: list[tuple[str, tuple]] = []

    def reading(self, r: Reading) -> None:
        self.ops.append(self.log.reading_op(r))
        if len(self.ops) >= FLUSH_OPS:
            self.flush()

    def decision(self, device, ts_ms, d):
        ops, ids = self.log.decision_ops(device, ts_ms, d)
        self.ops.extend(ops)
        return ids

    def result(self, command_id, ts_ms, outcome, status=None, error=None) -> None:
        self.ops.append(
            self.log.result_op(
                command_id, ts_ms, outcome, status=status, error=error, latency_ms=0.0
            )
        )

    def event(self, device, ts_ms, kind, message, **kw) -> None:
        self.ops.append(self.log.event_op(device, ts_ms, kind, message, **kw))

    def flush(self) -> None:
        if not self.ops:
            return
        conn = self.log.conn
        conn.execute("BEGIN IMMEDIATE")
        try:
            i, ops = 0, self.ops
            while i < len(ops):  # runs of the same statement go in one executemany
                j = i
                while j < len(ops) and ops[j][0] == ops[i][0]:
                    j += 1
                conn.executemany(ops[i][0], [p for _, p in ops[i:j]])
                i = j
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        conn.execute("COMMIT")
        self.ops = []


@dataclass
class Trace:
    """Grid samples of one policy for the plot (hours, die °C, MHz, state)."""

    hours: list[float] = field(default_factory=list)
    temp: list[float] = field(default_factory=list)
    mhz: list[float] = field(default_factory=list)
    state: list[str] = field(default_factory=list)


@dataclass
class Oracle:
    gh_hours: float
    mean_frequency: float
    hours: list[float]
    mhz: list[float]


ORACLE_STEP_S = 60.0  # the room changes slowly; the bound is held for a minute


def grid_step(poll_s: float) -> float:
    return min(poll_s, 10.0)


def oracle(
    scenario: Scenario, settings: Settings, duration_s: float, grid_s: float = ORACLE_STEP_S
) -> Oracle:
    """The steady-state bound every ``grid_s`` (perfect knowledge of the ambient).

    On the scenario's plant ([plant] overrides), and after a scheduled cooling loss on the
    plant that is left. The fan: a fixed duty; under autofan 100 % when ``temptarget`` is at
    or below the threshold (the PID reaches it to hold temptarget), else the minimum duty (the
    PID lets the die warm to temptarget, so only what holds the threshold there counts). On a
    two-sensor board whose temp2 runs hotter, that sensor's true value holds the threshold.
    """
    nominal = scenario.plant_params(plant_params(scenario.asic))
    if scenario.fan_mode == "fixed":
        fan = scenario.fan_pct
    else:
        fan = 100.0 if scenario.temptarget_c <= settings.temp_threshold else scenario.fan_pct
    hot = max(0.0, nominal.temp2_offset_c) if nominal.sensors == 2 else 0.0  # as Plant.hot_c
    losses = scenario.cooling_loss

    @lru_cache(maxsize=65536)
    def best(ambient: float, scale: float) -> float:
        params = nominal
        if scale != 1.0:  # as Plant.cooling_scale does it
            params = replace(nominal, r_c_per_w_fixed=nominal.r_c_per_w_fixed * scale)
        return oracle_frequency(
            params,
            ambient,
            settings.temp_threshold - hot,
            fan,
            scenario.core_voltage_mv,
            settings.max_frequency,
        )

    params = nominal
    # a stable chip still loses its base error share (sim/stability.py), as the policies do
    per_mhz = params.small_cores * params.chips / 1000.0 * params.hash_efficiency
    per_mhz *= 1.0 - BASE_ERROR
    gh_s = mhz_s = 0.0
    hours, mhz = [], []
    t = 0.0
    while t < duration_s - 1e-9:  # each step's bound stands for the step that ends there
        dt = min(grid_s, duration_s - t)
        t += dt
        scale = 1.0
        for at_s, fraction in losses:
            if t > at_s:
                scale = 1.0 / (1.0 - fraction)
        f = best(round(scenario.ambient(t), 3), scale)
        gh_s += f * per_mhz * dt
        mhz_s += f * dt
        hours.append(t / 3600.0)
        mhz.append(f)
    seconds = duration_s
    return Oracle(gh_s / 3600.0, mhz_s / seconds if seconds else 0.0, hours, mhz)


def run_policy(
    scenario: Scenario,
    policy: Policy,
    *,
    threshold: float,
    duration_s: float,
    seed: int,
    epoch_ms: int,
    grid_s: float,
    trace: Trace | None = None,
    progress=None,
    settle_s: float | None = None,
) -> tuple[Tally, SimFirmware, SimDevice | FaultyDevice]:
    """Drive one policy through the scenario; truth is sampled every ``grid_s`` seconds.

    With the scenario's [faults], the policy talks to a ``FaultyDevice`` and the firmware
    crash-reboots at ``reboot_h``. ``settle_s``: measure after the first settle (``Tally``).
    ``progress``: called with 1 per simulated hour (a progress bar's update).
    """
    fw = SimFirmware(scenario, seed=seed)
    dev: SimDevice | FaultyDevice = SimDevice(fw, policy.name, epoch_ms)
    if scenario.faults.requests:
        dev = FaultyDevice(dev, scenario.faults, seed)
    reboots = [t for t in scenario.faults.reboot_s if t <= duration_s]
    tally = Tally(threshold=threshold, settle_s=settle_s)
    gen = policy.run(dev)
    work0, restarts0 = fw.work_gh, fw.restarts
    tally.add(epoch_ms, temp=fw.plant.hot_c, state=policy.state, frequency=fw.actual_mhz)
    last_work = work0
    next_poll, next_grid = 0.0, grid_s
    next_hour = 3600.0
    cut_seen = False
    while True:
        if reboots and reboots[0] <= min(next_poll, next_grid):
            fw.advance(reboots.pop(0))
            fw.crash()  # a spontaneous reboot: brown-out or panic
        elif next_poll <= duration_s and next_poll < next_grid:
            fw.advance(next_poll)
            next_poll = fw.t + next(gen)
            if not cut_seen and dev.first_cut_t is not None:
                cut_seen = True
                tally.start_settle(epoch_ms + round(dev.first_cut_t * 1000))
        elif next_grid <= duration_s + 1e-9:
            fw.advance(next_grid)
            tally.add_work(fw.work_gh - last_work)
            last_work = fw.work_gh
            tally.add(dev.ts_ms(), temp=fw.plant.hot_c, state=policy.state, frequency=fw.actual_mhz)
            if trace is not None:
                trace.hours.append(fw.t / 3600.0)
                trace.temp.append(fw.plant.hot_c)
                trace.mhz.append(fw.actual_mhz)
                trace.state.append(policy.state)
            next_grid += grid_s
            if progress is not None and fw.t >= next_hour - 1e-9:
                progress(1)
                next_hour += 3600.0
        else:
            break
    gen.close()
    tally.restarts = fw.restarts - restarts0
    tally.frequency_changes = dev.changes
    return tally, fw, dev


def simulate(
    scenario: Scenario,
    specs: list[str],
    settings: Settings,
    *,
    days: float | None = None,
    poll_s: float = 5.0,
    seed: int = 0,
    db: str | None = None,
    plot_path: str | None = None,
    threshold: float | None = None,
    progress=None,
) -> dict:
    """Run each policy spec through the scenario; returns the JSON-ready report.

    ``settings`` are the effective settings (defaults + --set); ``poll_s`` becomes
    CHECK_INTERVAL. ``plot_path``: write the PNG there. ``threshold``: the temperature the
    metrics and the oracle are judged against (default TEMP_THRESHOLD); tune keeps it at
    the baseline's so that candidates with other thresholds compare fairly.
    ``progress``: called with 1 per simulated hour of each policy (a progress bar).
    """
    if plot_path:
        require_matplotlib()
    names = [canonical(spec, poll_s) for spec in specs]
    if len(set(names)) != len(names):
        raise ValueError("each --policy may be given once")
    settings = validate(replace(settings, check_interval=float(poll_s), devices=()))
    duration_s = (days * 86400.0) if days else scenario.duration_s
    grid_s = grid_step(poll_s)
    ref = settings.temp_threshold if threshold is None else float(threshold)
    orc = oracle(scenario, replace(settings, temp_threshold=ref), duration_s)
    traces: dict[str, Trace] | None = {} if plot_path else None
    log = Log(db) if db else None
    epoch = SIM_EPOCH_MS
    if log is not None:
        last = log.last_ts()
        if last is not None and last >= epoch:  # append after what is there, on an hour
            epoch = (last // 3_600_000 + 2) * 3_600_000
    report: dict = {
        "scenario": scenario.name,
        "hours": round(duration_s / 3600.0, 4),
        "poll_s": poll_s,
        "seed": seed,
        "threshold": ref,
        "settings": {
            k: v
            for k, v in settings.as_env().items()
            if k
            in (
                "TEMP_THRESHOLD",
                "FIRST_FREQUENCY",
                "SECOND_FREQUENCY",
                "MAX_FREQUENCY",
                "STABLE_TIMEFRAME",
                "TEMPCTL_SETTLE",
                "TEMPCTL_HYSTERESIS",
                "TEMPCTL_STEP",
                "TEMPCTL_CRITICAL",
                "TEMPCTL_APPLY",
                "TEMPCTL_MIN_FREQUENCY",
                "TEMPCTL_LAW",
            )
        },
        "oracle": {
            "gh_hours": round(orc.gh_hours, 3),
            "mean_frequency": round(orc.mean_frequency, 2),
        },
        "policies": {},
        "db": db,
    }
    if scenario.plant or scenario.cooling_loss:  # the [plant] the run was on
        report["plant"] = dict(scenario.plant)
        if scenario.cooling_loss:
            report["plant"]["cooling_loss"] = [
                {"at_h": round(t / 3600.0, 4), "fraction": f} for t, f in scenario.cooling_loss
            ]
    if scenario.faults:
        report["faults"] = {
            "requests": scenario.faults.requests,
            "reboot_h": [round(t / 3600.0, 4) for t in scenario.faults.reboot_s],
        }
    try:
        for spec in specs:
            sink = NullSink() if log is None else LogSink(log)
            policy = make_policy(spec, settings, sink)
            if log is not None:
                snap = log.restore(policy.name) if policy.spec in ("tempctl", "levels") else None
                if snap is not None:
                    policy = make_policy(spec, settings, sink, snapshot=snap)
                config = dict(
                    config_dict(getattr(policy, "settings", settings)),
                    policy=policy.spec,
                    scenario=scenario.name,
                    seed=seed,
                )
                log.start_run(config, {"policy": "simulate"}, kind="simulation", ts_ms=epoch)
                sink.event(
                    policy.name,
                    epoch,
                    "log",
                    f"start: simulation of {scenario.name} with policy {policy.spec}",
                    origin="daemon",
                )
            trace = Trace() if traces is not None else None
            tally, fw, dev = run_policy(
                scenario,
                policy,
                threshold=ref,
                duration_s=duration_s,
                seed=seed,
                epoch_ms=epoch,
                grid_s=grid_s,
                trace=trace,
                progress=progress,
                settle_s=settings.settle,
            )
            if traces is not None:
                traces[policy.spec] = trace
            if log is not None:
                sink.event(None, dev.ts_ms(), "log", "stop", origin="daemon")
                sink.flush()
            result = tally.result(oracle_gh_hours=orc.gh_hours)
            result.update(device=policy.name, firmware_trips=fw.overheat_trips)
            if isinstance(dev, FaultyDevice):
                # trips the injected faults caused (a 127 °C sensor value, "overheat")
                result.update(
                    firmware_trips_injected=dev.injected_trips,
                    faults_applied=dict(sorted(dev.applied.items())),
                )
            report["policies"][policy.spec] = result
    finally:
        if log is not None:
            log.close()
    if plot_path:
        plot(traces, orc, ref, plot_path, title=f"{scenario.name}: {scenario.description}")
    return report


STATE_COLOURS = {
    "NORMAL": "#d9f0d3",
    "THROTTLED_1": "#fee8c8",
    "THROTTLED_2": "#fdbb84",
    "THROTTLED": "#fdbb84",
    "RECOVERING": "#c6dbef",
    "FIXED": "#eeeeee",
}


def plot(
    traces: dict[str, Trace], orc: Oracle | None, threshold: float, path: str, title: str = ""
) -> None:
    """Temperature, threshold, frequency and state bands over time, one panel per policy."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    n = max(1, len(traces))
    fig, axes = plt.subplots(n, 1, figsize=(11, 3.2 * n), sharex=True, squeeze=False)
    for ax, (spec, tr) in zip(axes[:, 0], traces.items()):
        step = max(1, len(tr.hours) // 4000)  # enough points for the eye, a small file
        h, temp, mhz = tr.hours[::step], tr.temp[::step], tr.mhz[::step]
        start = 0
        for i in range(1, len(tr.state) + 1):  # state bands
            if i == len(tr.state) or tr.state[i] != tr.state[start]:
                x0 = tr.hours[start - 1] if start else 0.0
                ax.axvspan(
                    x0, tr.hours[i - 1], color=STATE_COLOURS.get(tr.state[start], "#f0f0f0"), lw=0
                )
                start = i
        ax.plot(h, temp, color="#b2182b", lw=1, label="die temperature (°C)")
        ax.axhline(threshold, color="#b2182b", ls="--", lw=1, label=f"threshold {threshold:g} °C")
        ax.set_ylabel("°C")
        ax.set_title(spec, loc="left", fontsize=10)
        ax2 = ax.twinx()
        ax2.plot(h, mhz, color="#2166ac", lw=1, label="frequency (MHz)")
        if orc is not None:
            s2 = max(1, len(orc.hours) // 4000)
            ax2.plot(
                orc.hours[::s2], orc.mhz[::s2], color="#2166ac", ls=":", lw=1, label="oracle (MHz)"
            )
        ax2.set_ylabel("MHz")
        lines = ax.get_lines() + ax2.get_lines()
        ax.legend(lines, [ln.get_label() for ln in lines], loc="lower left", fontsize=7)
    axes[-1, 0].set_xlabel("hours")
    states = sorted({s for tr in traces.values() for s in tr.state})
    handles = [plt.Rectangle((0, 0), 1, 1, color=STATE_COLOURS.get(s, "#f0f0f0")) for s in states]
    if title:
        fig.suptitle(title, x=0.01, y=0.995, ha="left", fontsize=11)
    fig.legend(
        handles,
        states,
        loc="upper left",
        bbox_to_anchor=(0.01, 0.975),
        ncol=len(states),
        fontsize=7,
        frameon=False,
    )
    fig.tight_layout(rect=(0, 0, 1, 0.95))
    fig.savefig(path, dpi=100)
    plt.close(fig)


def format_report(report: dict) -> str:
    from tempctl.offline.report import table

    oracle_col = {
        "gh_hours": report["oracle"]["gh_hours"],
        "hash_ratio": 1.0,
        "mean_frequency": report["oracle"]["mean_frequency"],
    }
    columns = {"oracle": oracle_col, **report["policies"]}
    head = (
        f"{report['scenario']}: {report['hours']:g} h, poll {report['poll_s']:g} s, "
        f"threshold {report['threshold']:g} °C"
        + (f", log {report['db']}" if report.get("db") else "")
    )
    return head + "\n" + table(columns, threshold=report["threshold"])
