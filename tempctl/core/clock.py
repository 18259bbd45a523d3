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
from collections.abc import Callable

DAY_MS = 86_400_000
# How far the log's newest stamp may be ahead of the wall clock and still anchor a start.
# A Pi without RTC restores its clock from fake-hwclock (saved hourly), so it starts a
# little behind its last stamps; a stamp days ahead is a run whose clock was wrong.
ANCHOR_MAX_AHEAD_MS = DAY_MS


def anchor(
    wall_ms: int,
    last_ms: int | None,
    last_plausible_ms: int | None,
    max_ahead_ms: int = ANCHOR_MAX_AHEAD_MS,
) -> tuple[int | None, str | None]:
    """The ``not_before_ms`` a new run's SystemClock starts from, and a note for the log.

    ``last_ms`` is the log's newest stamp, ``last_plausible_ms`` its newest stamp not
    more than ``max_ahead_ms`` after ``wall_ms``. A few future rows among plausible ones
    are a run whose clock was wrong: they are ignored, or every later run would carry their
    offset. When every row is far ahead, the wall clock itself is behind (no RTC, no NTP
    yet): stamps continue after the last row, so they never go backwards.
    """
    if last_ms is None or last_ms <= wall_ms + max_ahead_ms:
        return last_ms, None
    ahead = _days(last_ms - wall_ms)
    if last_plausible_ms is not None:
        return last_plausible_ms, (
            f"the log has rows stamped up to {ahead} ahead of the wall clock (a run with a "
            "wrong clock); ignored: stamps follow the wall clock"
        )
    return last_ms, (
        f"the wall clock is {ahead} behind every row in the log (no RTC or NTP yet?); "
        "stamps continue after the log's last row"
    )


def _days(ms: int) -> str:
    return f"{ms / DAY_MS:.1f} days" if ms >= DAY_MS else f"{ms / 3_600_000:.1f} h"


class SystemClock:
    """Wall clock at start plus monotonic time since. ``wall`` and ``monotonic`` are the
    time sources (seconds), injectable for tests that step the wall clock."""

    def __init__(
        self,
        not_before_ms: int | None = None,
        *,
        wall: Callable[[], float] = time.time,
        monotonic: Callable[[], float] = time.monotonic,
    ):
        self._wall, self._mono = wall, monotonic
        self._mono0 = monotonic()
        self._wall0 = int(wall() * 1000)
        if not_before_ms is not None:
            self.start_after(not_before_ms)

    def wall_ms(self) -> int:
        return int(self._wall() * 1000)

    def start_after(self, not_before_ms: int) -> None:
        """A clock that went backwards across a restart (a Pi without RTC) must not stamp
        rows before the ones already logged (see ``anchor`` for the bound)."""
        self._wall0 = max(self._wall0, not_before_ms + 1)

    def monotonic(self) -> float:
        return self._mono()

    def now_ms(self) -> int:
        return self._wall0 + int((self._mono() - self._mono0) * 1000)

    def skew_ms(self) -> int:
        return self.wall_ms() - self.now_ms()

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
