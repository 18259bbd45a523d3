"""Prometheus metrics: a daemon observer plus an HTTP endpoint for Grafana users.

The observer hooks (``on_reading``/``on_result``, called on the daemon's main
thread) only store references and bump counters in plain dicts; every sample is
built at scrape time by a custom collector on the endpoint's own thread, so
metrics cost the control loop next to nothing. The registry is our own (never
prometheus_client's global one), so nothing else leaks into the page and tests
can build as many as they like.

Exposed per device (label ``device``): temperature, VR temperature, TEMP_THRESHOLD,
reported and target frequency, hashrate, power, fan, firmware overheat flag, state (one series
per state, 1 for the current one), seconds in the current state (since tempctl
saw it begin, so it restarts with the daemon), transitions, commands by outcome,
command failures, polls, poll errors, missed polls and the last reading's time; with a
power cap (TEMPCTL_POWER_LIMIT, a share of TEMPCTL_POWER_BUDGET): the watts it holds, the
share, and the frequency ceiling it sets (MAX_FREQUENCY while it does not bind).
Fleet-wide: a histogram of poll lateness, when the daemon records it.
Values of an invalid reading are left out, so graphs show a gap, not a stale value.

With a scorecard (``daemon/scorecard.py``), its figures as ``tempctl_scorecard_*``
gauges, label ``window`` = ``24h`` (the last 24 h, in five-minute slots) or ``start`` (since the
daemon started); a figure not known yet (J/TH before any hash) is left out.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable, Iterator

from prometheus_client import CollectorRegistry, Histogram, start_http_server
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from tempctl.core import powercap
from tempctl.core.controller import State

COMMAND_KINDS = ("set_frequency", "restart")
# Poll lateness (the daemon's Device.lateness_s, when it records it): fine around the
# fleet target of 1 s (issue 8), so "p99 < 1 s" can be read off the le="1.0" bucket.
LATENESS_BUCKETS = (
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    0.75,
    1.0,
    2.5,
    5.0,
    10.0,
)

# (metric, help, scorecard figure): gauges, since a rolling count goes down too
SCORECARD_GAUGES = (
    (
        "tempctl_scorecard_above_threshold_minutes",
        "Minutes above TEMP_THRESHOLD.",
        "above_min",
    ),
    (
        "tempctl_scorecard_above_threshold_celsius_minutes",
        "Degree-minutes above TEMP_THRESHOLD (°C·min).",
        "above_degmin",
    ),
    (
        "tempctl_scorecard_max_excess_celsius",
        "Largest excess over TEMP_THRESHOLD (°C; 0 when never above).",
        "max_excess_c",
    ),
    (
        "tempctl_scorecard_frequency_changes",
        "Frequency changes the device showed (any origin).",
        "changes",
    ),
    (
        "tempctl_scorecard_firmware_trips",
        "The firmware's own overheat trips.",
        "trips",
    ),
    (
        "tempctl_scorecard_hash_estimate_ratio",
        "Hash done / the best the learned model says the device could have done (an estimate).",
        "hash_ratio_est",
    ),
    (
        "tempctl_scorecard_joules_per_terahash",
        "Energy per work (J/TH).",
        "j_per_th",
    ),
)
WINDOWS = ("24h", "start")

# (metric, help, Reading attribute)
_READING_GAUGES = (
    ("tempctl_temperature_celsius", "ASIC temperature of the last reading (°C).", "temp"),
    (
        "tempctl_vr_temperature_celsius",
        "Voltage-regulator temperature of the last reading (°C).",
        "vr_temp",
    ),
    ("tempctl_frequency_mhz", "ASIC frequency the device reports (MHz).", "frequency"),
    ("tempctl_hashrate_ghs", "Hashrate the device reports (GH/s).", "hashrate"),
    ("tempctl_power_watts", "Power the device reports (W).", "power"),
    ("tempctl_fan_percent", "Fan duty the device reports (%).", "fan_pct"),
)


class Metrics(Collector):
    """Daemon observer and Prometheus collector. ``serve()`` starts the endpoint."""

    def __init__(self, *, clock: Callable[[], float] = time.monotonic, scorecard=None):
        self.clock = clock
        self.scorecard = scorecard  # a scorecard.ScorecardSource, or None
        self.registry = CollectorRegistry(auto_describe=False)
        self.registry.register(self)
        self.lateness = Histogram(
            "tempctl_poll_lateness_seconds",
            "How late polls started after their scheduled time (all devices).",
            buckets=LATENESS_BUCKETS,
            registry=self.registry,
        )
        self._devices: dict[str, object] = {}  # name -> daemon.Device (read at scrape time)
        self._since: dict[str, tuple[str, float]] = {}  # name -> (state, clock() it began)
        self._transitions: Counter[tuple[str, str]] = Counter()
        self._commands: Counter[tuple[str, str, str]] = Counter()
        self.server = None
        self._thread = None

    def watch(self, device) -> None:
        """List a daemon.Device before its first poll completes."""
        self._devices.setdefault(device.name, device)

    # -- observer hooks (daemon main thread; must stay cheap) --------------------

    def on_reading(self, device, reading, decision) -> None:
        name = device.name
        self._devices[name] = device
        state = device.controller.current.value
        prev = self._since.get(name)
        if prev is None or prev[0] != state:
            self._since[name] = (state, self.clock())
        t = decision.transition if decision else None
        if t is not None:
            self._transitions[(name, t.to_state)] += 1
        late = getattr(device, "lateness_s", None)
        if late is not None:
            self.lateness.observe(late)

    def on_result(self, device, command, outcome, error) -> None:
        self._devices[device.name] = device
        self._commands[(device.name, command.kind, outcome)] += 1

    # -- the endpoint -------------------------------------------------------------

    def serve(self, host: str = "127.0.0.1", port: int = 0) -> int:
        """Serve /metrics on host:port (0 = a free port) from a daemon thread; returns the port."""
        self.server, self._thread = start_http_server(port, addr=host, registry=self.registry)
        return self.server.server_port

    def close(self) -> None:
        if self.server is not None:
            self.server.shutdown()
            self.server.server_close()
            self.server = None

    # -- the collector (scrape thread) ----------------------------------------------

    def collect(self) -> Iterator[Metric]:
        devices = sorted(self._devices.items())  # a copy, taken at once (the loop may add)
        now = self.clock()
        lab = ["device"]
        gauges = {
            attr: GaugeMetricFamily(name, doc, labels=lab) for name, doc, attr in _READING_GAUGES
        }
        target = GaugeMetricFamily(
            "tempctl_target_frequency_mhz",
            "Frequency tempctl holds the device at (MHz).",
            labels=lab,
        )
        threshold = GaugeMetricFamily(
            "tempctl_temperature_threshold_celsius",
            "TEMP_THRESHOLD the device is held under (°C).",
            labels=lab,
        )
        overheat = GaugeMetricFamily(
            "tempctl_overheat", "1 while the firmware's own overheat trip shows.", labels=lab
        )
        state = GaugeMetricFamily(
            "tempctl_state", "1 for the controller's current state.", labels=["device", "state"]
        )
        in_state = GaugeMetricFamily(
            "tempctl_state_seconds",
            "Seconds in the current state (since tempctl saw it begin).",
            labels=lab,
        )
        last = GaugeMetricFamily(
            "tempctl_last_reading_timestamp_seconds",
            "Time of the last poll, valid or not (Unix seconds).",
            labels=lab,
        )
        power = [
            GaugeMetricFamily(name, doc, labels=lab)
            for name, doc in (
                ("tempctl_power_limit_watts", "Power cap in force (W): the lower of "
                 "TEMPCTL_POWER_LIMIT and the device's budget share."),
                ("tempctl_power_share_watts", "The device's share of TEMPCTL_POWER_BUDGET (W)."),
                ("tempctl_power_ceiling_mhz", "Highest frequency the power cap allows (MHz); "
                 "MAX_FREQUENCY while it does not bind."),
                ("tempctl_power_cap_binding", "1 while the power cap lowers MAX_FREQUENCY."),
            )
        ]  # fmt: skip
        polls = CounterMetricFamily("tempctl_polls", "Polls completed.", labels=lab)
        errors = CounterMetricFamily(
            "tempctl_poll_errors", "Polls without a valid reading.", labels=lab
        )
        missed = CounterMetricFamily(
            "tempctl_missed_polls", "Ticks skipped because the device was still busy.", labels=lab
        )
        transitions = CounterMetricFamily(
            "tempctl_transitions",
            "Firings of the control law, by new state.",
            labels=["device", "to_state"],
        )
        commands = CounterMetricFamily(
            "tempctl_commands", "Commands sent, by outcome.", labels=["device", "kind", "outcome"]
        )
        failures = CounterMetricFamily(
            "tempctl_command_failures", "Commands that failed.", labels=["device", "kind"]
        )
        tr_counts = dict(self._transitions)
        cmd_counts = dict(self._commands)
        for name, d in devices:
            r = d.last_reading
            if r is not None:
                last.add_metric([name], r.ts_ms / 1000)
                overheat.add_metric([name], 1.0 if r.overheat else 0.0)
                for attr, fam in gauges.items():
                    value = getattr(r, attr)
                    if value is not None:
                        fam.add_metric([name], float(value))
            ctl = d.controller
            target.add_metric([name], float(ctl.frequency))
            threshold.add_metric([name], float(d.limits.temp_threshold))
            cap = powercap.shown(ctl)
            if cap is not None:
                values = (cap["watts"], cap["share_w"], cap["mhz"], float(cap["binds"]))
                for fam, v in zip(power, values):
                    if v is not None:
                        fam.add_metric([name], float(v))
            current = ctl.current.value
            for s in State:
                state.add_metric([name, s.value], 1.0 if s.value == current else 0.0)
            since = self._since.get(name)
            if since is not None and since[0] == current:
                in_state.add_metric([name], max(0.0, now - since[1]))
            polls.add_metric([name], d.polls)
            errors.add_metric([name], d.errors)
            missed.add_metric([name], d.missed)
            for s in State:
                transitions.add_metric([name, s.value], tr_counts.get((name, s.value), 0))
            for kind in COMMAND_KINDS:
                failures.add_metric([name, kind], cmd_counts.get((name, kind, "failed"), 0))
        for (name, kind, outcome), n in sorted(cmd_counts.items()):
            commands.add_metric([name, kind, outcome], n)
        cards = self._scorecard([name for name, _ in devices])
        yield GaugeMetricFamily(
            "tempctl_devices", "Devices seen by this daemon.", value=len(devices)
        )
        yield from gauges.values()
        yield from (
            target,
            threshold,
            *power,
            overheat,
            state,
            in_state,
            last,
            polls,
            errors,
            missed,
            transitions,
            commands,
            failures,
            *cards,
        )

    def _scorecard(self, names: list[str]) -> list[Metric]:
        if self.scorecard is None:
            return []
        fams = [
            GaugeMetricFamily(name, doc, labels=["device", "window"])
            for name, doc, _ in SCORECARD_GAUGES
        ]
        for name in names:
            values = self.scorecard.values(name)
            for fam, (_, _, key) in zip(fams, SCORECARD_GAUGES):
                for w in WINDOWS:
                    v = values.get(f"{key}_{w}")
                    if v is not None:
                        fam.add_metric([name, w], float(v))
        return fams
