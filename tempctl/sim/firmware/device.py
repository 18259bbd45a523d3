"""One emulated Bitaxe: the pieces of the firmware model composed into a device.

No HTTP, no wall clock, no threads: ``Firmware.advance(t)`` moves device time,
``info()``/``patch()``/``restart()`` answer as the given firmware generation would.
``tempctl.sim.emulator`` puts HTTP around it; the thermal physics is ``tempctl.sim.plant``.
Every behaviour cites the team's reference (shared/reference/axeos-api.md, "§n"), which
was read out of bitaxeorg/ESP-Miner.

Simplifications (documented, not hidden):
* Versions between the five template generations use the nearest older template
  (tempctl/data/bodies) minus keys that are newer than the version.
* WiFi, shares and best-difficulty stay at template values (shares only count up).
* The BM1397 thermal derating of v2.0-v2.1.8 is not modelled (§9.1).
"""

from __future__ import annotations

import functools
import math
from dataclasses import replace
from typing import TYPE_CHECKING

from tempctl.sim.firmware.boards import BOARDS, plant_params
from tempctl.sim.firmware.bodies import mac_from_seed, make_template
from tempctl.sim.firmware.cjson import dumps
from tempctl.sim.firmware.fan import linear_fan, pid_for
from tempctl.sim.firmware.ramp import Ramp
from tempctl.sim.firmware.settings import SettingsMixin
from tempctl.sim.firmware.states import (
    BOOT_MHZ,
    BOOTING,
    COOLDOWN,
    DOWN,
    MINING,
    PAUSED,
    RESET_PANIC,
    RESET_POWER_ON,
    RESET_SOFTWARE,
    RESTART_TEXT,
    STOPPED,
)
from tempctl.sim.firmware.stats import StatsRing
from tempctl.sim.firmware.stops import RESUME_S, StopsMixin
from tempctl.sim.firmware.telemetry import AVERAGES, Sample, TelemetryMixin
from tempctl.sim.firmware.trip import OverheatMixin
from tempctl.sim.firmware.versions import loop_period_s, version_of
from tempctl.sim.plant import Plant
from tempctl.sim.stability import Stability

if TYPE_CHECKING:  # only the Scenario interface is used (fields + ambient(t))
    from tempctl.sim.scenario import Scenario

__all__ = ["Firmware"]

RESTART_REPLY_S = 1.0  # §6: handler waits 1 s after replying, then esp_restart()
PAUSE_FAN_PCT = 30.0  # §3 / §9.4: paused, and (v2.14+) no pool reachable (§14)

# Sub-stepping: fine steps keep PID/trip timing right; coarse steps make hour jumps cheap once the
# device sits at equilibrium (the plant's discretisation is exact, so only the fan loop needs care).
FINE_S = 0.5
COARSE_S = 10.0
FAN_QUANTUM_PCT = 0.25  # duty steps fed to the plant: the PWM register is coarse anyway, and it
# keeps the plant's cached transition matrices hot (a cache miss costs ~1 ms)
INITIAL_UPTIME_S = 3600.0  # a fresh emulator has been mining for an hour
SHARES_PER_GH_S = 1e9 / (1000 * 2**32)  # shares at pool difficulty 1000, per GH/s and second


@functools.lru_cache(maxsize=256)
def _ema_weights(dt: float) -> tuple[float, tuple[float, ...]]:
    """EMA weights for a step of ``dt``: the slow hashRate lag, then the rolling averages
    (sub-steps repeat a few lengths, so the exponentials are cached)."""
    return 1.0 - math.exp(-dt / 60.0), tuple(1.0 - math.exp(-dt / tau) for tau, _ in AVERAGES)


class Firmware(OverheatMixin, TelemetryMixin, SettingsMixin, StopsMixin):
    """One emulated Bitaxe. Deterministic: same seed + same call sequence -> same bodies.

    ``version_label`` is what ``version`` shows (e.g. "virtual" or a git hash) while the
    device behaves as ``firmware``: self-built firmware does not always report a release.
    """

    def __init__(
        self,
        scenario: Scenario,
        *,
        firmware: str | None = None,
        asic: str | None = None,
        seed: int = 0,
        ambient_offset_c: float = 0.0,
        start_s: float = 0.0,
        restart_downtime_s: float = 7.0,
        boot_s: float = 8.0,
        hostname: str = "bitaxe",
        mac: str | None = None,
        version_label: str | None = None,
    ):
        self.scenario = scenario
        version_text = firmware or scenario.firmware
        self.v = version_of(version_text)
        self.version = version_text if version_text.startswith("v") else "v" + version_text
        if version_label is not None:
            self.version = version_label
        # the board's calibration, with the scenario's [plant] overrides on top
        self.params = scenario.plant_params(plant_params(asic or scenario.asic))
        key = (self.params.asic, self.params.chips)
        if key not in BOARDS:
            raise ValueError(f"no board for {self.params.chips} x {self.params.asic}")
        self.board = BOARDS[key]
        if self.params.sensors is not None:
            self.board = replace(self.board, two_sensors=self.params.sensors == 2)
        self._cooling_loss = list(scenario.cooling_loss)  # [(t_s, fraction)], in time order
        if self.board.asic in ("BM1372", "BM1373") and self.v < (2, 15, 0):
            raise ValueError(
                f"{self.board.asic} needs firmware v2.15.0 or later (ESP-Miner master)"
            )
        self.seed = seed
        self.ambient_offset_c = ambient_offset_c
        self.ambient_shift_c = 0.0  # changed at run time through the emulator's control API
        self.restart_downtime_s = restart_downtime_s
        self.boot_s = boot_s
        self.template = make_template(
            self.v,
            self.board,
            version_text=self.version,
            hostname=hostname,
            mac=mac or mac_from_seed(seed),
        )
        self.pretty = self.v < (2, 14, 0)  # §2: compact JSON from v2.14
        self.live_frequency = self._live_frequency()
        self.loop_period_s = loop_period_s(self.v)
        self.auto_recovery = self.v >= (2, 11, 0)  # §9.2

        # NVS settings (§4.1 "cfg")
        self.nvs_mhz = float(scenario.frequency_mhz)
        self.nvs_mv = int(scenario.core_voltage_mv)
        self.autofan = scenario.fan_mode == "auto"
        self.manual_fan = float(scenario.fan_pct) if not self.autofan else 100.0
        self.min_fan = float(scenario.fan_pct) if self.autofan else 25.0
        self.temptarget = float(scenario.temptarget_c)
        self.overheat_mode = 0
        self.stats_frequency = 0
        self.hostname = hostname
        self.extra_settings: dict[str, object] = {}

        # conditions outside the chip (§14): set by the emulator's fault knobs
        self.pool_down = False
        self.power_fault: str | None = None
        self.hardware_fault: str | None = None

        # live state: mining for INITIAL_UPTIME_S already, plant and fan at equilibrium
        self.t = float(start_s)
        self.phase = MINING
        self.actual_mhz = self.nvs_mhz  # PLL now
        self.target_mhz = self.nvs_mhz  # what the power loop last programmed
        self.applied_mv = self._regulator(self.nvs_mv, 0)
        self.boot_t = self.t - INITIAL_UPTIME_S
        self.reset_reason = RESET_POWER_ON
        self.restarts = 0
        self.patches = 0
        self.overheat_trips = 0
        self.trip_times: list[float] = []  # device seconds of each overheat trip
        self._ramp: Ramp | None = None
        self._after_ramp: str | None = None  # "off": Vcore off once a stop ramp reaches 50 MHz
        self._reboot_at: float | None = None
        self._reboot_reason = RESET_SOFTWARE
        self._up_at: float | None = None
        self._asic_at: float | None = None
        self._apply_at: float | None = None
        self._cool_check_at: float | None = None
        self._cool_checks = 0
        self._trip_setting: tuple[float, int] | None = None
        self._frozen_hashrate: float | None = None
        self.stats = StatsRing()
        self.stability = Stability(self.params.asic, seed, self.params.chips)  # issue 21.1
        self._pid = pid_for(self.v)
        amb = self._ambient(self.t)
        self.plant = Plant(
            self.params,
            amb,
            seed=seed,
            freq_mhz=self.actual_mhz,
            core_mv=self.applied_mv,
            fan_pct=self.manual_fan,
        )
        self.fan_pct = self._initial_fan(amb)
        self.plant.settle(
            freq_mhz=self.actual_mhz,
            core_mv=self.applied_mv,
            fan_pct=self._plant_fan(),
            ambient_c=amb,
        )
        self._pid.reset(self.fan_pct, self.plant.die_c)
        expected = self._expected_true()
        self._hr_slow = expected
        # EMAs that started from 0 at boot (info() divides the start-up bias back out)
        self._hr_avg_age = INITIAL_UPTIME_S
        self._hr_avg = {
            tau: expected * (1.0 - math.exp(-INITIAL_UPTIME_S / tau)) for tau, _ in AVERAGES
        }
        self.shares = INITIAL_UPTIME_S * expected * SHARES_PER_GH_S
        self.sample = Sample()
        self._last_vr_refresh = self.t
        self._take_sample()

    def _initial_fan(self, amb: float) -> float:
        if not self.autofan:
            return self.manual_fan
        if self.v >= (2, 7, 0):
            return self._equilibrium_fan(amb)
        fan = 50.0  # <= v2.6 linear curve: iterate to its fixed point
        for _ in range(20):
            temp = self.plant.steady_die(self.actual_mhz, self.applied_mv, amb, fan)
            fan = float(round(linear_fan(self.v, temp)))
        return fan

    def _plant_fan(self) -> float:
        return round(self.fan_pct / FAN_QUANTUM_PCT) * FAN_QUANTUM_PCT

    # -- capabilities by version (§5.3, §9) --------------------------------------------------

    def _live_frequency(self) -> bool:
        """§5.3: can a new frequency be applied without a restart?"""
        if self.v < (2, 2, 0):
            return False
        if self.board.asic == "BM1397":
            return self.v >= (2, 12, 0)
        return True

    # -- time --------------------------------------------------------------------------------

    def _ambient(self, t: float) -> float:
        return self.scenario.ambient(max(0.0, t)) + self.ambient_offset_c + self.ambient_shift_c

    def ambient_c(self) -> float:
        return self._ambient(self.t)

    def advance(self, t_s: float) -> None:
        """Move device time forward to ``t_s`` (plant seconds); earlier times are ignored."""
        while self.t < t_s - 1e-9:
            self._substep(self._next_stop(t_s))

    def _next_stop(self, t_end: float) -> float:
        """End of the next sub-step: on a fixed grid (so step lengths repeat and the plant's
        cache hits), never past an event, a ramp step or ``t_end``."""
        t = self.t
        if self._ramp is not None:
            stop = self._ramp.next_step_time(t)
        else:
            grid = COARSE_S if self._quiescent() else FINE_S
            stop = (math.floor(t / grid + 1e-9) + 1) * grid
        for e in (self._reboot_at, self._up_at, self._asic_at, self._apply_at, self._cool_check_at):
            if e is not None and t + 1e-9 < e < stop:
                stop = e
        if self._cooling_loss and t + 1e-9 < self._cooling_loss[0][0] < stop:
            stop = self._cooling_loss[0][0]
        return min(stop, t_end)

    def _quiescent(self) -> bool:
        """Nothing fast going on: the plant sits at equilibrium for the current fan duty."""
        if self.phase != MINING or self._ramp is not None:
            return False
        amb = self._ambient(self.t)
        steady = self.plant.steady_die(self.actual_mhz, self.applied_mv, amb, self._plant_fan())
        if abs(self.plant.die_c - steady) > 0.3 or steady > 73.0 or self.plant.vr_c > 100.0:
            return False  # moving, or settling close to a trip: keep the trip timing right
        if not self.autofan or self.v < (2, 7, 0):
            return True  # a fixed duty, or the <= v2.6 static curve
        err = self.plant.die_c - self.temptarget
        return (
            abs(err) < 0.3
            or (err > 0 and self.fan_pct >= 100.0)
            or (err < 0 and self.fan_pct <= self._min_fan())
        )

    def _substep(self, stop: float) -> None:
        dt = stop - self.t
        amb = self._ambient(self.t + dt / 2)
        running = self._hashing()
        if dt > FINE_S + 1e-9 and self.autofan and self.phase == MINING and self.v >= (2, 7, 0):
            # coarse step at equilibrium: the PID would sit at the duty that holds temptarget
            self.fan_pct = self._equilibrium_fan(amb)
            self._pid.reset(self.fan_pct, self.sample.temp)
        else:
            self.fan_pct = self._fan_duty(dt)
        self.plant.step(
            dt,
            freq_mhz=self.actual_mhz if running else 0.0,
            core_mv=self.applied_mv if running else 0,
            fan_pct=self._plant_fan(),
            ambient_c=amb,
            running=running,
        )
        self._account(dt, running)
        self.t = stop
        if self._ramp is not None:
            self.actual_mhz = self._ramp.value(self.t)
            if self.t >= self._ramp.end - 1e-9:
                self.actual_mhz = self._ramp.target
                self._ramp = None
                self._ramp_done()
        self._run_events()
        if self.t >= self._next_sample_at - 1e-9:
            self._take_sample()
        if self.stats_frequency > 0:
            self._record_stats()

    @property
    def stalled(self) -> bool:
        """§14: set up to mine, but the regulator refused the voltage: no core power."""
        return self.phase == MINING and self.applied_mv <= 0

    def _hashing(self) -> bool:
        if self.phase == MINING:
            return self.applied_mv > 0
        # v2.14+ overheat/pause: ramps to 50 MHz first, still hashing, then Vcore off (§9.2 step 2)
        return self.phase in (COOLDOWN, PAUSED) and self._ramp is not None

    def _account(self, dt: float, running: bool) -> None:
        true_hr = self._true_hr = self._expected_true() if running else 0.0
        # <= v2.10: nonce-count estimate over ~2 min (§4.1 hashRate): a slow lag
        a_slow, a_avg = _ema_weights(dt)
        self._hr_slow += a_slow * (true_hr - self._hr_slow)
        self._hr_avg_age += dt
        avg = self._hr_avg
        for (tau, value), a in zip(avg.items(), a_avg):
            avg[tau] = value + a * (true_hr - value)
        if not self.pool_down:  # no pool, no shares
            self.shares += true_hr * SHARES_PER_GH_S * dt

    def _expected_true(self) -> float:
        return (
            self.actual_mhz
            * self.board.small_cores
            * self.board.chips
            / 1000.0
            * self.params.hash_efficiency
            * self.stability.hash_factor(self.actual_mhz, self.applied_mv)
        )

    # -- events ------------------------------------------------------------------------------

    def _run_events(self) -> None:
        t = self.t + 1e-9
        while self._cooling_loss and t >= self._cooling_loss[0][0]:
            # a scheduled failure: this share of the cooling is gone, the duty reads the same
            self.plant.cooling_scale = 1.0 / (1.0 - self._cooling_loss.pop(0)[1])
        if self._reboot_at is not None and t >= self._reboot_at:
            self._go_down(self._reboot_reason)
        if self._up_at is not None and t >= self._up_at:
            self._up_at = None
            self.phase = BOOTING
            self._asic_at = self.t + self.boot_s
        if self._asic_at is not None and t >= self._asic_at:
            self._asic_at = None
            self._asic_init()
        if self._apply_at is not None and t >= self._apply_at:
            self._apply_at = None
            self._pickup_settings()
        if self._cool_check_at is not None and t >= self._cool_check_at:
            self._cooldown_check()

    def _go_down(self, reason: str) -> None:
        self._reboot_at = None
        self._apply_at = self._asic_at = self._cool_check_at = None
        self._ramp = None
        self._after_ramp = None
        self.phase = DOWN
        self.restarts += 1
        self.reset_reason = reason
        self.boot_t = self.t
        self._up_at = self.t + self.restart_downtime_s
        self.actual_mhz = self.target_mhz = BOOT_MHZ  # PLL idles at 50 (§4.1 actualFrequency)
        self.applied_mv = 0  # the core rail is off until the ASIC init sets it again
        self.sample = Sample(temp=-1.0, temp2=self._no_temp2(), core_mv=0.0)
        self._frozen_hashrate = None
        self._hr_slow = 0.0
        self._hr_avg = dict.fromkeys(self._hr_avg, 0.0)
        self._hr_avg_age = 0.0
        self.shares = 0.0
        self.stats.clear()
        if self._trip_setting is not None and self.auto_recovery:
            self._trip_setting = None  # a reboot ends the cool-down; NVS keeps overheat_mode

    def _asic_init(self) -> None:
        """ASIC up: read NVS, set the voltage, ramp from 50 MHz (§6).

        §14: the TPS546 refuses a setpoint below its minimum (main/power/vcore.c ~l.74,
        TPS546.c ~l.1028-1030); the rail was off, so it stays off and the device stalls.
        (estimate) The firmware does not notice: it ramps ``actualFrequency`` to the setting
        and reports the expected hashrate, but the chip hashes nothing and reads -1.
        """
        self._frozen_hashrate = None
        self._next_sample_at = self.t
        if self._stop_reason() is not None:
            self._stop_mining()
            return
        self.phase = MINING
        self.applied_mv = self._regulator(self.nvs_mv, self.applied_mv)
        self.actual_mhz = BOOT_MHZ
        self.target_mhz = self.nvs_mhz
        self._start_ramp(BOOT_MHZ, self.nvs_mhz)

    def _start_ramp(self, start: float, target: float) -> None:
        self._ramp = Ramp(start, target, self.t)
        if self._ramp.steps == 0:
            self._ramp = None
            self.actual_mhz = target
            self._ramp_done()

    def _ramp_done(self) -> None:
        if self._after_ramp == "off":
            self._after_ramp = None
            self.actual_mhz = BOOT_MHZ  # §4.1 actualFrequency: 50 while paused or stopped
            self.applied_mv = 0  # §9.2 step 2: then Vcore off

    def _regulator(self, wanted_mv: int, current_mv: int) -> int:
        """§10: a setting outside the regulator window is stored but not applied."""
        lo, hi = self.board.vcore_mv
        return wanted_mv if lo <= wanted_mv <= hi else current_mv

    def _next_loop_tick(self) -> float:
        p = self.loop_period_s
        k = math.floor((self.t - self.boot_t) / p + 1e-9) + 1
        return self.boot_t + k * p

    def _schedule_pickup(self) -> None:
        if self.phase != MINING or not self.live_frequency:
            return  # restart-needed firmware reads NVS at the next boot
        at = self._next_loop_tick()
        if self._ramp is not None:
            at = max(at, self._ramp.end)  # the power loop is blocked during a ramp (§4.3)
        self._apply_at = at if self._apply_at is None else min(self._apply_at, at)

    def _pickup_settings(self) -> None:
        if self.phase != MINING:
            return
        if self._ramp is not None:  # a ramp started meanwhile (boot); try again after it
            self._apply_at = self._ramp.end
            return
        # §5.3: voltage in one step first, then the frequency ramp
        was_off = self.applied_mv <= 0
        self.applied_mv = self._regulator(self.nvs_mv, self.applied_mv)
        if was_off and self.applied_mv > 0:  # a valid voltage ends a stall: ramp up from 50
            self.target_mhz = self.nvs_mhz
            self._start_ramp(BOOT_MHZ, self.nvs_mhz)
            return
        if self.nvs_mhz != self.target_mhz:
            start = self.actual_mhz
            if (2, 2, 0) <= self.v < (2, 6, 0) and self.board.asic != "BM1368":
                start = 56.25  # §5.3: the shared BM1368 ramp starts from 56.25 MHz on other chips
            self.target_mhz = self.nvs_mhz
            self._start_ramp(start, self.nvs_mhz)

    # -- fan -----------------------------------------------------------------------------------

    def _min_fan(self) -> float:
        if self.v >= (2, 10, 0):
            return self.min_fan
        return 15.0 if self.v < (2, 8, 0) else 25.0  # §9.4 fixed minimum before v2.10

    def _fan_duty(self, dt: float) -> float:
        if self.phase == DOWN:
            return self.fan_pct
        if self.phase == COOLDOWN:
            return 100.0
        if self.phase == PAUSED:
            return PAUSE_FAN_PCT
        if self.phase == STOPPED and self.pool_down and self.v >= (2, 14, 0):
            return PAUSE_FAN_PCT  # §14: fan_controller_task.c ~l.75-76 forces 30 % without a pool
        if not self.autofan:
            return self.manual_fan
        s = self.sample
        temp = max(s.temp, s.temp2) if self.v >= (2, 14, 0) else s.temp
        invalid = temp <= 0 if self.v >= (2, 14, 0) else temp < 0
        if self.phase == BOOTING or invalid:
            return 100.0 if (2, 11, 0) <= self.v < (2, 13, 0) else 70.0  # §9.4 invalid temp
        if self.v < (2, 7, 0):
            return float(round(linear_fan(self.v, temp)))
        return self._pid.update(temp, self.temptarget, dt, self._min_fan(), 100.0)

    def _equilibrium_fan(self, amb: float) -> float:
        """Fan duty that holds ``temptarget`` at steady state (used for coarse steps only)."""
        lo, hi = self._min_fan(), 100.0

        def temp_at(fan: float) -> float:
            return self.plant.steady_die(self.actual_mhz, self.applied_mv, amb, fan)

        if temp_at(hi) >= self.temptarget:
            return hi
        if temp_at(lo) <= self.temptarget:
            return lo
        for _ in range(30):
            mid = (lo + hi) / 2
            if temp_at(mid) > self.temptarget:
                lo = mid
            else:
                hi = mid
            if hi - lo < 0.01:
                break
        return (lo + hi) / 2

    # -- reachability, restart, crash -----------------------------------------------------------

    def reachable(self) -> bool:
        """False while rebooting (the HTTP server is down: connection refused)."""
        return self.phase != DOWN

    def restart(self) -> tuple[int, str, bytes]:
        """POST /api/system/restart (§6). Status 0 = the connection drops without a reply."""
        if self._reboot_at is None:
            self._reboot_at = self.t + RESTART_REPLY_S
            self._reboot_reason = RESET_SOFTWARE
        if self.v <= (2, 1, 5):
            return 0, "", b""
        if self.v >= (2, 13, 0):
            reply = dumps({"message": RESTART_TEXT}, pretty=self.pretty)
            return 200, "application/json", reply.encode()
        ctype = "text/plain" if self.v >= (2, 12, 0) else "text/html"
        return 200, ctype, RESTART_TEXT.encode()

    def crash(self, reason: str = RESET_PANIC) -> None:
        """A spontaneous reboot (panic, brown-out): down now, back after the downtime."""
        if self.phase != DOWN:
            self._go_down(reason)

    # -- pause / resume (v2.14+, §3) -----------------------------------------------------------

    def pause(self) -> bool:
        if self.v < (2, 14, 0) or self.phase != MINING:
            return False
        self.phase = PAUSED
        self._apply_at = None
        self._after_ramp = "off"
        self.target_mhz = BOOT_MHZ
        self._start_ramp(self.actual_mhz, BOOT_MHZ)
        return True

    def resume(self) -> bool:
        if self.v < (2, 14, 0) or self.phase != PAUSED:
            return False
        self.phase = BOOTING
        self._ramp = None
        self._after_ramp = None
        self._asic_at = self.t + RESUME_S
        return True

    # -- for the emulator's control API and tests ----------------------------------------------

    def state(self) -> dict:
        return {
            "plant_time_s": self.t,
            "phase": self.phase,
            "reachable": self.reachable(),
            "die_c": self.plant.die_c,
            "vr_c": self.plant.vr_c,
            "power_w": self.plant.power_w,
            "ambient_c": self._ambient(self.t),
            "frequency_mhz": self.nvs_mhz,
            "actual_mhz": self.actual_mhz,
            "core_mv": self.nvs_mv,
            "applied_mv": self.applied_mv,
            "stalled": self.stalled,
            "stop_reason": self._stop_reason() if self.phase == STOPPED else None,
            "fan_pct": self.fan_pct,
            "autofan": self.autofan,
            "running": self._hashing(),
            "overheat_mode": self.overheat_mode,
            "restarts": self.restarts,
            "patches": self.patches,
            "overheat_trips": self.overheat_trips,
            "version": self.version,
            "asic": self.board.asic,
            "board": self.board.device_model,
        }
