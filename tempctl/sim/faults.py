"""A scenario's request faults for `tempctl simulate`, where there is no HTTP.

``FaultyDevice`` wraps a simulated device (``simulate.SimDevice``) and gives a policy
what the daemon would see when the emulator injects a fault (``tempctl.sim.emulator``):
the same fault names, the same per-route lists drawn in the same order, the same
effects on the firmware model (a -1/0/127 sensor value is read by the firmware too, so
127 trips it, axeos-api §10; ``reboot`` crash-reboots it), and the errors the AxeOS
client raises, as the daemon logs them (``"<kind>: <message>"``, daemon/loop.py).

The draws differ from the emulator's in one way, on purpose: they are a function of
(seed, route, 10 s slot of simulated time, n-th request in the slot), not of a request
counter. Policies that poll at the same times then meet the same faults, so a comparison
of policies is not a comparison of luck. Time spent in a timeout is not simulated (the
poll's timestamp stands), and the client's retries are not either: a faulted request is
one failed request.

``cooling`` schedules a failure of the cooling itself (a failing fan or heatsink): from
each (seconds, scale) on, the plant's thermal resistance is multiplied by ``scale``
(``Plant.cooling_scale``) while the fan duty the firmware reports stays what it was.
It takes effect at the first request at or after its time. ``stuck_s``: from then on
the reported ``temp`` stays at the value it had then (a stuck sensor; the firmware's own
trip still sees the true one, as a second sensor would).
"""

from __future__ import annotations

import math
import random
from collections import Counter

from tempctl.core.reading import Reading
from tempctl.device import parse_info
from tempctl.sim.emulator import INFO_FAULTS, PATCH_FAULTS, RESTART_FAULTS, parse_faults
from tempctl.sim.firmware import RESET_PANIC
from tempctl.sim.scenario import Faults

SLOT_S = 10.0  # fault draws are keyed by this slot of simulated time
SENSOR_VALUES = (("sensor_m1", -1.0), ("sensor_0", 0.0), ("sensor_127", 127.0))
INFO = "GET /api/system/info"
PATCH = "PATCH /api/system"
RESTART = "POST /api/system/restart"
DROPPED = "connection closed or reset by the device"


class FaultyDevice:
    """A ``policies.Device`` whose requests fail as the scenario's [faults] say."""

    def __init__(
        self,
        dev,
        faults: Faults,
        seed: int,
        cooling: tuple[tuple[float, float], ...] = (),
        stuck_s: float | None = None,
    ):
        self.dev = dev
        self.cooling = tuple(sorted(cooling))
        self.stuck_s = stuck_s
        self.stuck_temp: float | None = None
        self.fw = dev.fw
        self.name = dev.name
        self.spec = parse_faults(faults.requests)
        self.seed = seed
        self.injected_trips = 0  # firmware overheat trips the injected faults caused
        self.applied: Counter[str] = Counter()  # fault name -> requests it hit
        self._slots: dict[str, tuple[int, int]] = {}  # route -> (slot, requests in it)
        self._failed: tuple[float, Reading] | None = None

    @property
    def t(self) -> float:
        return self.dev.t

    @property
    def changes(self) -> int:
        return self.dev.changes

    @property
    def first_cut_t(self) -> float | None:
        return self.dev.first_cut_t

    def ts_ms(self) -> int:
        return self.dev.ts_ms()

    # -- the draws ---------------------------------------------------------------------------

    def _roll(self, route: str, names: tuple[str, ...]) -> set[str]:
        """One number per fault of the route, in the emulator's order (emulator._roll)."""
        slot = math.floor(self.fw.t / SLOT_S)
        last, n = self._slots.get(route, (slot, -1))
        n = n + 1 if last == slot else 0
        self._slots[route] = (slot, n)
        rng = random.Random(f"faults:{self.seed}:{route}:{slot}:{n}")
        active = {name for name in names if rng.random() < self.spec.p(name)}
        self.applied.update(active)
        return active

    def _trip_counted(self, action) -> None:
        before = self.fw.overheat_trips
        action()
        self.injected_trips += self.fw.overheat_trips - before

    def _common(self, active: set[str], what: str) -> str | None:
        """The faults that end a request early (emulator._common_faults): its error, or None."""
        if "timeout" in active:
            return f"timeout: {what}: read timeout after 5 s"
        if "5xx" in active:
            return f"bad_response: {what}: HTTP 500 'Internal Server Error' (after retries)"
        if "reboot" in active:
            self.fw.crash(RESET_PANIC)
            return f"unreachable: {what}: {DROPPED}"
        if "overheat" in active:
            self._trip_counted(self.fw.force_overheat)
            if not self.fw.reachable():  # latched firmware crash-reboots at once (§9.2)
                return f"unreachable: {what}: {DROPPED}"
        return None

    # -- the requests ------------------------------------------------------------------------

    def _cooling(self) -> None:
        scale_cooling(self.fw.plant, self.cooling, self.fw.t)

    def _get(self) -> tuple[dict | None, Reading]:
        """One GET /api/system/info: the body a policy would parse (or None) and the reading."""
        self._cooling()
        if not self.fw.reachable():
            return None, self.dev.read()
        active = self._roll("info", INFO_FAULTS)
        error = self._common(active, INFO)
        if error is None:
            for name, value in SENSOR_VALUES:
                if name in active:
                    self._trip_counted(lambda v=value: self.fw.inject_temp(v))
            if not self.fw.reachable():
                error = f"unreachable: {INFO}: {DROPPED}"
            elif "truncated" in active:
                error = f"bad_response: {INFO}: truncated JSON"
            elif "malformed" in active:
                error = f"bad_response: {INFO}: not JSON"
        if error is not None:
            return None, Reading(self.name, self.ts_ms(), error=error)
        body = self.fw.info()
        if self.stuck_s is not None and self.fw.t >= self.stuck_s:
            if self.stuck_temp is None:
                self.stuck_temp = body.get("temp")
            body["temp"] = self.stuck_temp
        for name, value in SENSOR_VALUES:
            if name in active:
                body["temp"] = value  # also while booting, when the firmware ignores the sensor
        return body, parse_info(body, self.name, self.ts_ms())

    def info(self) -> dict | None:
        body, reading = self._get()
        # the seed port logs a failed GET through read(): it is the same request
        self._failed = (self.t, reading) if body is None else None
        return body

    def read(self) -> Reading:
        if self._failed is not None and self._failed[0] == self.t:
            reading, self._failed = self._failed[1], None
            return reading
        return self._get()[1]

    def set_frequency(self, mhz: float) -> tuple[str, int | None, str | None]:
        return self._patch(lambda: self.dev.set_frequency(mhz))

    def set_fields(self, fields: dict) -> tuple[str, int | None, str | None]:
        return self._patch(lambda: self.dev.set_fields(fields))

    def _patch(self, send) -> tuple[str, int | None, str | None]:
        """One PATCH /api/system, with the PATCH faults (the emulator's, for any body)."""
        if not self.fw.reachable():
            return send()
        active = self._roll("patch", PATCH_FAULTS)
        error = self._common(active, PATCH)
        if error is not None:
            return "failed", 500 if error.startswith("bad_response") else None, error
        if "patch_400" in active:
            self.fw.patches += 1
            return "failed", 400, f"rejected: {PATCH}: HTTP 400 'Wrong API input'"
        return send()

    def restart(self) -> tuple[str, int | None, str | None]:
        if not self.fw.reachable():
            return self.dev.restart()
        active = self._roll("restart", RESTART_FAULTS)
        error = self._common(active, RESTART)
        if error is None and "restart_fail" in active:
            error = (
                f"bad_response: {RESTART}: HTTP 500 'Internal Server Error'"
                if random.Random(f"restart_fail:{self.seed}:{self.fw.t}").random() < 0.5
                else f"timeout: {RESTART}: read timeout after 5 s"
            )
        if error is not None:
            return "failed", 500 if error.startswith("bad_response") else None, error
        return self.dev.restart()


def scale_cooling(plant, schedule: tuple[tuple[float, float], ...], t_s: float) -> None:
    """Set the plant's ``cooling_scale`` to the last scheduled (time, scale) at or before t_s."""
    for at_s, scale in schedule:
        if at_s <= t_s + 1e-9:
            plant.cooling_scale = float(scale)


__all__ = ["SLOT_S", "FaultyDevice", "scale_cooling"]
