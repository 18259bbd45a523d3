"""The firmware's automatic fan control (axeos-api.md §9.4; main/tasks/fan_controller_task.c)."""

from __future__ import annotations

from tempctl.sim.firmware.versions import Version

__all__ = ["FanPID", "linear_fan", "pid_for"]


class FanPID:
    """The firmware's fan PID on ``temp`` (reverse-acting: hotter -> more fan).

    Arduino-PID shape as in ESP-Miner: P on error, I clamped to the output limits, D on the
    measurement. Gains are per second, so the emulator may run it at its own sub-step.
    """

    def __init__(self, kp: float, ki: float, kd: float, ema_alpha_100ms: float | None = None):
        self.kp, self.ki, self.kd = kp, ki, kd
        self.ema_alpha = ema_alpha_100ms
        self.integral = 50.0
        self._last: float | None = None
        self._filtered: float | None = None

    def reset(self, output: float, temp: float | None = None) -> None:
        self.integral = output
        self._last = self._filtered = temp

    def update(self, temp: float, target: float, dt: float, lo: float, hi: float) -> float:
        if self.ema_alpha is not None:
            if self._filtered is None:
                self._filtered = temp
            # v2.14+: EMA with alpha 0.2 per 100 ms sample, rescaled to this step length.
            alpha = 1.0 - (1.0 - self.ema_alpha) ** (dt / 0.1)
            self._filtered += alpha * (temp - self._filtered)
            temp = self._filtered
        err = temp - target
        self.integral = min(hi, max(lo, self.integral + self.ki * err * dt))
        deriv = (temp - self._last) / dt if self._last is not None and dt > 0 else 0.0
        self._last = temp
        return min(hi, max(lo, self.kp * err + self.integral + self.kd * deriv))


def pid_for(v: Version) -> FanPID:
    # §9.4 gains: P4/I0.2/D3 (v2.7), P15/I0.2/D3 (v2.8-v2.12), P3/I0.1/D1 (v2.13),
    # P5/I0.1/D2 with EMA 0.2 on max(temp, temp2) (v2.14+)
    if v >= (2, 14, 0):
        return FanPID(5.0, 0.1, 2.0, ema_alpha_100ms=0.2)
    if v >= (2, 13, 0):
        return FanPID(3.0, 0.1, 1.0)
    if v >= (2, 8, 0):
        return FanPID(15.0, 0.2, 3.0)
    return FanPID(4.0, 0.2, 3.0)


def linear_fan(v: Version, temp: float) -> float:
    """<= v2.6 auto-fan curve (§9.4)."""
    lo_pct, lo_c = (20.0, 50.0) if v < (2, 2, 0) else (35.0, 45.0)
    if temp <= lo_c:
        return lo_pct
    return min(100.0, lo_pct + (100.0 - lo_pct) * (temp - lo_c) / (75.0 - lo_c))
