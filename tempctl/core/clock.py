"""Clocks: schedule on monotonic time, stamp on wall time.

``SystemClock.now_ms()`` is the wall clock at start plus monotonic time since,
so stamps never go backwards or jump within a run even when NTP steps the wall
clock (settle times and the stable window stay right). ``skew_ms()`` reports
how far the real wall clock has moved away, for the log. ``FakeClock`` drives
tests, replay and simulation: its ``sleep`` only moves time forward.
"""

from __future__ import annotations

import threading
import time


class SystemClock:
    def __init__(self, not_before_ms: int | None = None):
        self._mono0 = time.monotonic()
        wall = int(time.time() * 1000)
        # A clock that went backwards across a restart (a Pi without RTC) must not
        # stamp rows before the ones already logged.
        self._wall0 = max(wall, not_before_ms + 1) if not_before_ms is not None else wall

    def monotonic(self) -> float:
        return time.monotonic()

    def now_ms(self) -> int:
        return self._wall0 + int((time.monotonic() - self._mono0) * 1000)

    def skew_ms(self) -> int:
        return int(time.time() * 1000) - self.now_ms()

    def wait(self, seconds: float, stop: threading.Event) -> bool:
        """Sleep up to ``seconds``; True when ``stop`` was set meanwhile."""
        return stop.wait(max(0.0, seconds))


class FakeClock:
    def __init__(self, start_ms: int = 1_700_000_000_000):
        self._t = start_ms / 1000.0
        self._start = start_ms

    def monotonic(self) -> float:
        return self._t

    def now_ms(self) -> int:
        return int(round(self._t * 1000))

    def skew_ms(self) -> int:
        return 0

    def advance(self, seconds: float) -> None:
        self._t += seconds

    def wait(self, seconds: float, stop: threading.Event) -> bool:
        if stop.is_set():
            return True
        self._t += max(0.0, seconds)
        return stop.is_set()
