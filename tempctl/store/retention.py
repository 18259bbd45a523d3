"""Retention: fold raw readings older than TEMPCTL_RETENTION_DAYS into 1-minute rows.

``prune`` moves each minute of old raw readings into one ``readings_1m`` row per
device (count, valid count, mean and max temperature, max VR temperature, max
frequency as the readings_minute view has it, mean hashrate/power/fan) and deletes
the raw rows, in ONE transaction: a crash leaves either both or neither, so nothing
is lost or counted twice. Transitions, commands, their results and events are never
touched. Readings flagged with the firmware's overheat trip stay raw (rare, and they
are the rows an investigation wants).

Idempotent: once folded, raw rows are gone, so a second run finds nothing. Raw rows
of an already folded minute (a minute split between two daemon batches, an import)
are merged into the existing row: counts added, maxima kept, means weighted by the
valid readings (exact, since an invalid reading carries no values), never duplicated.

The daemon's stable-window query reads raw rows only, so the horizon never comes
closer than ``min_keep_ms`` (a day, or twice the longest STABLE_TIMEFRAME).

Replay over folded history (``folded_readings``): each minute row becomes ``n``
readings spread evenly over its minute, the ``n - n_valid`` invalid ones first. The
last one carries the minute's max temperature and max VR temperature, the others a
value chosen so the mean is the stored mean. Count, mean, max and cadence survive
(so the window's gap rule, 3 x CHECK_INTERVAL, sees no new holes); the order inside
the minute does not. The hottest reading goes last, so a stable streak can only
start later than it really did (folding never makes a replay restore early).
tests/test_retention.py replays a day both ways: the same decisions (states and
frequencies), each within a minute of the original. The replay must merge these with the
raw rows still kept (the overheat rows, and everything newer than the horizon) in time
order.
"""

from __future__ import annotations

import logging
import sqlite3
from collections.abc import Iterator
from dataclasses import dataclass

from tempctl.core.reading import Reading

logger = logging.getLogger("tempctl")

DAY_MS = 86_400_000
MINUTE_MS = 60_000
MIN_KEEP_MS = DAY_MS
# Rows per daemon transaction: ~30 ms of the loop in a 250-device log (5 ms per 1000
# rows measured, see benchmarks/window_bench.py growth()); one batch a second folds
# 18 M rows an hour, 40x what 250 devices at 5 s write.
DAEMON_BATCH_ROWS = 5_000

# Per device, by index seeks: the ids of its oldest and newest raw reading before the
# cutoff. Readings are appended in time order, so between the smallest and largest of
# these ids lie (almost) only old rows: folding by rowid range reads and deletes whole
# pages in order, where a per-device range would touch every page of an interleaved
# fleet log (measured: 10x slower with 250 devices).
_FIRST_OLD = (
    "SELECT id FROM readings WHERE device = ? AND ts_ms < ? AND overheat = 0 ORDER BY ts_ms LIMIT 1"
)
_LAST_OLD = (
    "SELECT id FROM readings WHERE device = ? AND ts_ms < ? AND overheat = 0 "
    "ORDER BY ts_ms DESC LIMIT 1"
)

# Weighted merge when the minute already exists (see the module docstring). In the
# DO UPDATE clause bare column names are the stored row, ``excluded`` the new one.
_FOLD = """
INSERT INTO readings_1m (device, minute_ms, n, n_valid, temp_avg, temp_max, vr_temp_max,
                         frequency, hashrate_avg, power_avg, fan_avg)
SELECT device, (ts_ms / 60000) * 60000, count(*), sum(valid), avg(temp), max(temp),
       max(vr_temp), max(frequency), avg(hashrate), avg(power), avg(fan)
FROM readings
WHERE id >= :lo AND id < :hi AND ts_ms < :cutoff AND overheat = 0
GROUP BY device, ts_ms / 60000
ON CONFLICT (device, minute_ms) DO UPDATE SET
  n = n + excluded.n,
  n_valid = n_valid + excluded.n_valid,
  temp_avg = CASE WHEN temp_avg IS NULL THEN excluded.temp_avg
                  WHEN excluded.temp_avg IS NULL THEN temp_avg
                  ELSE (temp_avg * n_valid + excluded.temp_avg * excluded.n_valid)
                       / (n_valid + excluded.n_valid) END,
  temp_max = max(coalesce(temp_max, excluded.temp_max), coalesce(excluded.temp_max, temp_max)),
  vr_temp_max = max(coalesce(vr_temp_max, excluded.vr_temp_max),
                    coalesce(excluded.vr_temp_max, vr_temp_max)),
  frequency = max(coalesce(frequency, excluded.frequency),
                  coalesce(excluded.frequency, frequency)),
  hashrate_avg = coalesce((hashrate_avg * n_valid + excluded.hashrate_avg * excluded.n_valid)
                          / nullif(n_valid + excluded.n_valid, 0),
                          hashrate_avg, excluded.hashrate_avg),
  power_avg = coalesce((power_avg * n_valid + excluded.power_avg * excluded.n_valid)
                       / nullif(n_valid + excluded.n_valid, 0), power_avg, excluded.power_avg),
  fan_avg = coalesce((fan_avg * n_valid + excluded.fan_avg * excluded.n_valid)
                     / nullif(n_valid + excluded.n_valid, 0), fan_avg, excluded.fan_avg)
"""
_DELETE = "DELETE FROM readings WHERE id >= :lo AND id < :hi AND ts_ms < :cutoff AND overheat = 0"


@dataclass(frozen=True)
class PruneSummary:
    cutoff_ms: int  # raw readings before this were folded
    folded: int  # raw readings removed (now in readings_1m)
    minutes: int  # readings_1m rows written or merged
    devices: int  # devices that had something to fold
    done: bool  # False when max_rows stopped early: call again
    dry_run: bool = False


def horizon_ms(days: float, now_ms: int, min_keep_ms: int = MIN_KEEP_MS) -> int:
    """The cutoff: ``days`` back (never less than ``min_keep_ms``), on a minute boundary."""
    keep = max(int(days * DAY_MS), min_keep_ms)
    return (now_ms - keep) // MINUTE_MS * MINUTE_MS


def min_keep_ms(settings) -> int:
    """Raw history the stable window needs: a day, or twice the longest STABLE_TIMEFRAME."""
    hours = [settings.for_device(d).stable_timeframe for d in settings.devices]
    longest = max(hours + [settings.stable_timeframe])
    return max(MIN_KEEP_MS, int(2 * longest * 3_600_000))


def prune(
    eventlog,
    days: float,
    now_ms: int,
    *,
    max_rows: int | None = None,
    min_keep_ms: int = MIN_KEEP_MS,
    dry_run: bool = False,
) -> PruneSummary:
    """Fold raw readings older than ``days`` into ``readings_1m``, in one transaction.

    ``eventlog`` is a ``tempctl.store.eventlog.Log``, which opens the transaction. With ``max_rows``
    the oldest rows go first and the transaction stops after about that many, so the
    daemon never holds the write lock for long; ``done`` says whether everything up to
    the horizon was folded. ``dry_run`` rolls back and only reports.
    """
    if days <= 0:
        raise ValueError("retention days must be > 0")
    cutoff = horizon_ms(days, now_ms, min_keep_ms)
    budget = max_rows
    folded = minutes = devices = 0
    done = False
    # The fold is one INSERT ... SELECT ... ON CONFLICT merge: plain SQL, as sqlite-utils has
    # no upsert from a query (its upsert_all would bring every row through Python).
    with eventlog.batch(commit=not dry_run) as conn:
        # The append-only trigger lets DELETE through only while this row says '1';
        # it is part of this transaction, so a rollback restores the guard too.
        conn.execute(
            "INSERT INTO meta (key, value) VALUES ('pruning', '1') "
            "ON CONFLICT (key) DO UPDATE SET value = '1'"
        )
        while budget is None or budget > 0:
            span = _old_ids(conn, cutoff)
            if span is None:
                done = True
                break
            lo, hi, n_devices = span
            devices = max(devices, n_devices)
            while lo <= hi and (budget is None or budget > 0):
                end = hi + 1 if budget is None else min(hi + 1, lo + budget)
                params = {"lo": lo, "hi": end, "cutoff": cutoff}
                minutes += conn.execute(_FOLD, params).rowcount
                folded += conn.execute(_DELETE, params).rowcount
                if budget is not None:
                    budget -= end - lo
                lo = end
        if not done and budget is not None and budget <= 0:
            done = _old_ids(conn, cutoff) is None
        conn.execute("UPDATE meta SET value = '0' WHERE key = 'pruning'")
    return PruneSummary(cutoff, folded, minutes, devices, done, dry_run)


def _old_ids(conn: sqlite3.Connection, cutoff: int) -> tuple[int, int, int] | None:
    """(smallest id, largest id, devices) of the raw readings to fold, or None."""
    ids: list[int] = []
    devices = 0
    for device in _devices(conn):
        first = conn.execute(_FIRST_OLD, (device, cutoff)).fetchone()
        if first is None:
            continue
        devices += 1
        ids.append(first[0])
        ids.append(conn.execute(_LAST_OLD, (device, cutoff)).fetchone()[0])
    return (min(ids), max(ids), devices) if ids else None


def _devices(conn: sqlite3.Connection) -> Iterator[str]:
    """Distinct devices by index seeks (a DISTINCT would scan the whole index)."""
    row = conn.execute("SELECT min(device) FROM readings").fetchone()
    while row is not None and row[0] is not None:
        yield row[0]
        row = conn.execute(
            "SELECT min(device) FROM readings WHERE device > ?", (row[0],)
        ).fetchone()


class Retention:
    """The daemon's maintenance job: ``(period_s, Retention(days, ...))``.

    Runs a full pass once a day, in batches of ``batch_rows`` (one short transaction
    per call, so the control loop is never held for long) until it has caught up;
    calls in between return at once.
    """

    def __init__(
        self,
        days: float,
        *,
        min_keep_ms: int = MIN_KEEP_MS,
        batch_rows: int = DAEMON_BATCH_ROWS,
        every_ms: int = DAY_MS,
    ):
        self.days = days
        self.min_keep_ms = min_keep_ms
        self.batch_rows = batch_rows
        self.every_ms = every_ms
        self.next_ms: int | None = None  # None: start at the first call
        self.pass_folded = 0
        self._failed: str | None = None
        self.__name__ = "retention"

    def __call__(self, eventlog, now_ms: int) -> PruneSummary | None:
        if self.next_ms is not None and now_ms < self.next_ms:
            return None
        try:
            s = prune(
                eventlog, self.days, now_ms, max_rows=self.batch_rows, min_keep_ms=self.min_keep_ms
            )
        except sqlite3.Error as exc:  # locked by a reader's long transaction, disk full...
            if self._failed != str(exc):
                logger.warning("retention: cannot prune now (%s); will retry", exc)
            self._failed = str(exc)
            return None
        self._failed = None
        self.pass_folded += s.folded
        if s.done:
            if self.pass_folded:
                logger.info(
                    "retention: folded %d readings older than %g days into 1-minute rows",
                    self.pass_folded,
                    self.days,
                )
            self.pass_folded = 0
            self.next_ms = now_ms + self.every_ms
        else:
            self.next_ms = now_ms  # more to do: the next call continues
        return s


def folded_readings(
    conn: sqlite3.Connection, device: str, since_ms: int | None = None, until_ms: int | None = None
) -> Iterator[Reading]:
    """Readings rebuilt from ``readings_1m`` for replay, in time order (module docstring)."""
    rows = conn.execute(
        "SELECT minute_ms, n, n_valid, temp_avg, temp_max, vr_temp_max, frequency, "
        "hashrate_avg, power_avg, fan_avg FROM readings_1m "
        "WHERE device = ? AND minute_ms >= ? AND minute_ms < ? ORDER BY minute_ms",
        (
            device,
            since_ms if since_ms is not None else -(2**62),
            until_ms if until_ms is not None else 2**62,
        ),
    )
    for minute, n, n_valid, avg, tmax, vr_max, freq, hashrate, power, fan in rows:
        n = max(n, 1)
        step = MINUTE_MS / n
        if n_valid > 1 and avg is not None and tmax is not None:
            rest = (n_valid * avg - tmax) / (n_valid - 1)
        else:
            rest = tmax
        for i in range(n):
            ts = minute + int(step * (i + 0.5))
            if i < n - n_valid:
                yield Reading(device, ts, frequency=freq, error="folded: invalid reading")
                continue
            last = i == n - 1
            yield Reading(
                device,
                ts,
                temp=tmax if last else rest,
                vr_temp=vr_max if last else None,
                frequency=freq,
                hashrate=hashrate,
                power=power,
                fan_pct=fan,
            )
