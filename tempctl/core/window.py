"""The stable-timeframe check, two ways with one meaning.

The daemon asks SQLite (``WINDOW_SQL``) so readings logged before a restart
count. Replay and simulation, which feed hundreds of thousands of readings a
second, keep the same summary incrementally (``StableWindow``). A property test
(tests/test_window.py) holds the two to identical results.

Definition, for one device at time ``now`` with window W and gap limit G:
the valid readings with ts in (now-W-G, now] are examined in time order. A row
*breaks the streak* if it comes more than G after the previous valid row, or
its temp is above TEMP_THRESHOLD, or its vr_temp is above TEMPCTL_VR_THRESHOLD.
A reading flagged with the firmware's overheat trip breaks it too, even with
no valid temperature. Under the model law a reading that is not evidence (``evidence.py``:
booting, not hashing, ramping) breaks it too.
The streak starts at the latest breaking row (else the first row examined);
if the newest valid row is older than G, the streak is empty (a dead sensor
never looks cool). ``held_ms`` is the same streak with no temperature test (the model law
asks its filtered die for that part: single noisy readings above the threshold are expected
when aiming just below it). Temperatures of rows in (now-W, now] are summed in integer
milli-°C so the average test is exact on both sides.
"""

from __future__ import annotations

from collections import deque

from tempctl.core.evidence import BOOT_GRACE_S, RAMP_TOLERANCE
from tempctl.core.limits import Limits, WindowStats

WINDOW_SQL = """
WITH w AS (
  SELECT ts_ms, temp, vr_temp, overheat,
         :strict AND (uptime_s < :boot OR hashrate <= 0
                      OR abs(actual_frequency - frequency) > :ramp) AS suspect,
         ts_ms - LAG(ts_ms) OVER (ORDER BY ts_ms, id) AS dt
  FROM readings
  WHERE device = :device AND ts_ms > :lo AND ts_ms <= :now AND (valid = 1 OR overheat = 1)
)
SELECT
  max(CASE WHEN dt > :gap OR temp > :thr OR vr_temp > :vr OR overheat = 1 OR suspect
      THEN ts_ms END),
  min(ts_ms),
  max(ts_ms),
  count(CASE WHEN ts_ms > :start AND temp IS NOT NULL THEN 1 END),
  coalesce(sum(CASE WHEN ts_ms > :start THEN CAST(temp * 1000 + 0.5 AS INTEGER) END), 0),
  max(CASE WHEN dt > :gap OR vr_temp > :vr OR overheat = 1 OR suspect THEN ts_ms END)
FROM w
"""


def milli(temp: float) -> int:
    """°C -> integer milli-°C, rounding as WINDOW_SQL's CAST(x*1000 + 0.5) does."""
    return int(temp * 1000 + 0.5)


def _stats(
    now: int,
    gap: int,
    last_bad: int | None,
    first: int | None,
    last: int | None,
    count: int,
    sum_mc: int,
    last_break: int | None = None,
) -> WindowStats:
    if first is None or now - last > gap:
        return WindowStats(0, count, sum_mc, 0)
    since = first if last_bad is None else max(last_bad, first)
    held = first if last_break is None else max(last_break, first)
    return WindowStats(now - since, count, sum_mc, now - held)


def query_window(conn, device: str, now_ms: int, limits: Limits) -> WindowStats:
    """The stable-window summary from the persisted log (an sqlite3 connection)."""
    w, g = limits.window_ms, limits.gap_ms
    row = conn.execute(
        WINDOW_SQL,
        {
            "device": device,
            "now": now_ms,
            "lo": now_ms - w - g,
            "start": now_ms - w,
            "gap": g,
            "thr": limits.temp_threshold,
            "vr": limits.vr_threshold,
            "strict": int(limits.law == "model"),
            "boot": BOOT_GRACE_S,
            "ramp": RAMP_TOLERANCE,
        },
    ).fetchone()
    last_bad, first, last, count, sum_mc, last_break = row
    return _stats(now_ms, g, last_bad, first, last, count or 0, sum_mc or 0, last_break)


class StableWindow:
    """Incremental twin of ``query_window`` for one device. Add readings in time order."""

    __slots__ = (
        "limits",
        "_w",
        "_g",
        "_thr",
        "_vr",
        "_recent",
        "_older",
        "_sum",
        "_n",
        "_prev",
        "_last_bad",
        "_last_break",
        "_strict",
    )

    def __init__(self, limits: Limits):
        self.limits = limits
        self._w, self._g = limits.window_ms, limits.gap_ms
        self._thr, self._vr = limits.temp_threshold, limits.vr_threshold
        self._recent: deque[tuple[int, int | None]] = deque()  # (ts, milli-°C) in (now-W, now]
        self._older: deque[int] = deque()  # ts in (now-W-G, now-W]
        self._sum = 0
        self._n = 0
        self._prev: int | None = None
        self._last_bad: int | None = None
        self._last_break: int | None = None  # as _last_bad, with no temperature test
        self._strict = limits.law == "model"

    def add(
        self,
        ts_ms: int,
        temp: float | None,
        vr_temp: float | None,
        overheat: bool = False,
        suspect: bool = False,
    ) -> None:
        """``suspect``: not evidence (``suspect()``); only the model law's window counts it."""
        if temp is None and not overheat:
            return  # invalid readings are holes, nothing more
        prev = self._prev
        if (
            overheat
            or (suspect and self._strict)
            or (prev is not None and ts_ms - prev > self._g)
            or (vr_temp is not None and vr_temp > self._vr)
        ):
            self._last_bad = self._last_break = ts_ms
        elif temp > self._thr:
            self._last_bad = ts_ms
        self._prev = ts_ms
        if temp is None:  # an overheat row: breaks the streak, counts for coverage only
            self._recent.append((ts_ms, None))
            return
        mc = int(temp * 1000 + 0.5)
        self._recent.append((ts_ms, mc))
        self._sum += mc
        self._n += 1

    def stats(self, now_ms: int) -> WindowStats:
        start, lo = now_ms - self._w, now_ms - self._w - self._g
        recent, older = self._recent, self._older
        while recent and recent[0][0] <= start:
            ts, mc = recent.popleft()
            if mc is not None:
                self._sum -= mc
                self._n -= 1
            older.append(ts)
        while older and older[0] <= lo:
            older.popleft()
        first = older[0] if older else (recent[0][0] if recent else None)
        last = recent[-1][0] if recent else (older[-1] if older else None)
        last_bad = self._last_bad if self._last_bad is not None and self._last_bad > lo else None
        brk = self._last_break if self._last_break is not None and self._last_break > lo else None
        return _stats(now_ms, self._g, last_bad, first, last, self._n, self._sum, brk)


def suspect(uptime_s, hashrate, frequency, actual_frequency) -> bool:
    """The SQL's ``suspect`` column for one reading (the evidence rules the window applies)."""
    return (
        (uptime_s is not None and uptime_s < BOOT_GRACE_S)
        or (hashrate is not None and hashrate <= 0)
        or (
            frequency is not None
            and actual_frequency is not None
            and abs(actual_frequency - frequency) > RAMP_TOLERANCE
        )
    )
