"""The live scorecard: how well tempctl controls each device, over 24 h and since start.

A daemon observer. Per device it keeps two ``core.tally`` tallies of the readings the
daemon logs: ``Rolling`` over the newest reading's five-minute slot (UTC) and the 287
before it (23 h 55 min to 24 h),
and a ``Tally`` since this daemon started. Figures (``KEYS``, both ``_24h`` and ``_start``):

- minutes and °C·min above TEMP_THRESHOLD, and the largest excess;
- frequency changes the device showed (any origin) and the firmware's own trips
  (``is_trip``);
- hash against the best the learned model says the device could have done: an
  *estimate* (``core.tally.best_frequency``), over the readings that hash;
- J/TH.

Each reading stands for the time since the previous one, at most
``max(3 x CHECK_INTERVAL, 1 s)`` (a hole in the log is not time at the last temperature).
The 24 h window survives a restart: from a device's first poll it is read back from the
log on a thread of its own (raw readings; retention keeps at least a day of them). The
threshold, MAX_FREQUENCY and CHECK_INTERVAL are those this daemon runs with, applied to the
whole window. The Datasette query ``scorecard`` (tempctl/ui/metadata.yaml) gives the
same figures from the log; tests/test_scorecard.py checks that they agree.

``values(device)`` is the contract the metrics exporter and the MQTT bridge read
(from their own threads: a lock keeps each answer consistent).
"""

from __future__ import annotations

import json
import logging
import sqlite3
import threading
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

from tempctl.core.limits import FREQ_EPS
from tempctl.core.model import AUTOFAN_SATURATED, P0_SHARE
from tempctl.core.modelparams import FAN_EXP, FAN_REF, FAN_STILL, PRIORS, prior_for
from tempctl.core.tally import SCORECARD_KEYS, Rolling, Tally, best_frequency
from tempctl.store.eventlog import open_read_only

logger = logging.getLogger("tempctl")

STEP_MS = 300_000  # the window moves in five-minute slots (UTC)
WINDOW_STEPS = 288  # 24 h
PERIODS = ("24h", "start")
KEYS = tuple(f"{k}_{p}" for p in PERIODS for k in SCORECARD_KEYS)


class ScorecardSource(Protocol):
    """What the metrics exporter and the MQTT bridge read: ``KEYS`` -> value (None = not
    known yet, e.g. J/TH before any hash)."""

    def values(self, device: str) -> dict[str, float | None]: ...


def gap_s(check_interval: float) -> float:
    """The longest interval one reading stands for."""
    return max(3.0 * check_interval, 1.0)


@dataclass(slots=True)
class Sample:
    """The columns of a reading the scorecard reads (from a Reading or a log row)."""

    ts_ms: int
    valid: bool
    temp: float | None
    frequency: float | None
    hashrate: float | None
    power: float | None
    fan: float | None
    autofan: bool | None
    overheat: bool
    fault: str | None
    asic: str | None

    @classmethod
    def of(cls, r) -> Sample:
        return cls(
            r.ts_ms,
            r.valid,
            r.temp,
            r.frequency,
            r.hashrate,
            r.power,
            r.fan_pct,
            r.autofan,
            bool(r.overheat),
            r.fault,
            r.asic_model,
        )


@dataclass(slots=True)
class Track:
    """The previous frequency the device showed, to tell a change."""

    frequency: float | None = None

    def changed(self, s: Sample) -> bool:
        if s.frequency is None:
            return False
        prev, self.frequency = self.frequency, s.frequency
        return prev is not None and abs(s.frequency - prev) > FREQ_EPS


def is_trip(kind: str, origin: str | None) -> bool:
    """The firmware's overheat handling showed: it set the frequency itself (F - 100 MHz
    on v2.11+, 50 MHz latched before; axeos-api.md §9.2). The overheat flag cannot tell:
    v2.14+ never shows it (§9.3)."""
    return kind == "frequency_change" and origin == "firmware"


@dataclass
class Card:
    threshold: float
    max_frequency: float
    gap_s: float
    r: float | None = None  # °C/W from the newest logged model event; None = the prior
    day: Rolling = field(init=False)
    start: Tally = field(init=False)
    day_track: Track = field(default_factory=Track)
    start_track: Track = field(default_factory=Track)
    pending: list | None = None  # live readings kept while the history is read

    def __post_init__(self):
        self.day = Rolling(self.threshold, WINDOW_STEPS, STEP_MS, max_gap_s=self.gap_s)
        self.start = Tally(threshold=self.threshold, max_gap_s=self.gap_s)

    def best_hashrate(self, s: Sample) -> float | None:
        if not (
            s.valid
            and not s.overheat
            and s.fault is None
            and (s.frequency or 0) > 0
            and (s.power or 0) > 0
            and (s.hashrate or 0) > 0
        ):
            return None
        r = self.r if self.r is not None else prior_for(s.asic).r
        f = best_frequency(
            s.temp, s.power, s.frequency, s.fan, s.autofan, r, self.threshold, self.max_frequency
        )
        return s.hashrate * f / s.frequency

    def add(self, s: Sample, trips: int = 0, *, live: bool = True) -> None:
        values = {
            "temp": s.temp,
            "hashrate": s.hashrate,
            "power": s.power,
            "best_hashrate": self.best_hashrate(s),
        }
        self.day.add(s.ts_ms, changed=self.day_track.changed(s), trips=trips, **values)
        if live:
            self.start.add(s.ts_ms, **values)
            self.start.frequency_changes += self.start_track.changed(s)
            self.start.trips += trips

    def live(self, s: Sample, trips: int, models: list[str]) -> None:
        """A polled reading with the model events and trips its decision logged."""
        for m in models:
            self.note_model(m)
        self.add(s, trips)
        if self.pending is not None:
            self.pending.append((s, trips, models))

    def note_model(self, message: str) -> None:
        self.r = model_r(message)  # unreadable: the prior, as the SQL does

    def values(self) -> dict[str, float | None]:
        out = {}
        for period, fig in (("24h", self.day.scorecard()), ("start", self.start.scorecard())):
            out.update({f"{k}_{period}": v for k, v in fig.items()})
        return out


def model_r(message: str) -> float | None:
    """R (°C/W) from a ``model`` event's message (``... model={json}``)."""
    try:
        return float(json.loads(message.partition("model=")[2])["r"])
    except (ValueError, TypeError, KeyError):
        return None


class Scorecard:
    """Daemon observer; ``values(device)`` for the exporters.

    ``connect``: opens a read connection to the log; None = no history (the window starts
    empty). The 24 h history is read on a thread of its own from each device's first poll
    (a day at 5 s polls is 17,000 readings, about 0.4 s): until it is in, that device's
    figures cover this run only; then the window is rebuilt from the history and the live
    readings seen meanwhile, and the figures are those of the log.
    """

    def __init__(self, connect: Callable[[], sqlite3.Connection] | None = None):
        self.connect = connect
        self._cards: dict[str, Card] = {}
        self._lock = threading.Lock()
        self._loading: list[Future] = []
        self._loader = (
            None
            if connect is None
            else ThreadPoolExecutor(max_workers=1, thread_name_prefix="tempctl-scorecard")
        )

    @classmethod
    def for_log(cls, db: str | Path) -> Scorecard:
        return cls(lambda: open_read_only(str(db)))

    # -- observer hooks (daemon main thread: no I/O, no waiting) -------------------------

    def on_reading(self, device, reading, decision) -> None:
        models, trips = [], 0
        for e in decision.events if decision else ():
            if e.kind == "model":
                models.append(e.message)
            trips += is_trip(e.kind, e.origin)
        s = Sample.of(reading)
        with self._lock:
            card = self._cards.get(device.name)
            if card is None:
                lim = device.limits
                card = Card(lim.temp_threshold, lim.max_frequency, gap_s(lim.check_interval))
                self._cards[device.name] = card
                if self._loader is not None:
                    card.pending = []
                    job = self._loader.submit(self._load, device.name, card, s.ts_ms)
                    self._loading.append(job)
            card.live(s, trips, models)

    def on_result(self, device, command, outcome, error) -> None:
        pass

    def values(self, device: str) -> dict[str, float | None]:
        with self._lock:
            card = self._cards.get(device)
            return card.values() if card is not None else dict.fromkeys(KEYS)

    def devices(self) -> list[str]:
        with self._lock:
            return sorted(self._cards)

    def settle(self, timeout: float | None = None) -> None:
        """Wait until every history asked for is in (tests, benchmarks)."""
        wait(list(self._loading), timeout=timeout)

    def close(self) -> None:
        if self._loader is not None:
            self._loader.shutdown(wait=False, cancel_futures=True)

    # -- the history (loader thread) ------------------------------------------------------

    def _load(self, name: str, live: Card, first_ms: int) -> None:
        """The window before ``first_ms`` from the log, then the live readings since."""
        card = Card(live.threshold, live.max_frequency, live.gap_s)
        lo = (first_ms // STEP_MS - WINDOW_STEPS + 1) * STEP_MS
        try:
            conn = self.connect()
            try:
                rows, events, prime = history(conn, name, lo, first_ms)
            finally:
                conn.close()
        except Exception as exc:  # noqa: BLE001 - the window covers this run only; control goes on
            logger.warning("scorecard: %s: no history read from the log (%s)", name, exc)
            with self._lock:
                live.pending = None
            return
        last_ts, last_f, last_model = prime
        card.day_track = Track(last_f)
        if last_model:
            card.note_model(last_model)
        if last_ts is not None:
            card.day.tally.add(last_ts)  # the previous reading: the first one's interval
        i = 0
        for s in rows:
            trips = 0
            while i < len(events) and events[i][0] <= s.ts_ms:
                _, kind, origin, message = events[i]
                if kind == "model":
                    card.note_model(message)
                trips += is_trip(kind, origin)
                i += 1
            card.add(s, trips, live=False)
        for _, kind, _, message in events[i:]:
            if kind == "model":
                card.note_model(message)
        with self._lock:
            # since start too: the live card judged its readings with the prior's R
            for s, trips, models in live.pending:
                card.live(s, trips, models)
            live.pending = None
            self._cards[name] = card


_COLUMNS = "ts_ms, valid, temp, frequency, hashrate, power, fan, autofan, overheat, fault, asic"


def history(conn: sqlite3.Connection, device: str, lo: int, hi: int):
    """Readings of ``device`` in [lo, hi), its model and frequency-change events there, and
    what came before lo: (last reading's time, last frequency, last model event)."""
    rows = [
        Sample(ts, bool(v), t, f, h, p, fan, None if af is None else bool(af), bool(oh), fa, a)
        for ts, v, t, f, h, p, fan, af, oh, fa, a in conn.execute(
            f"SELECT {_COLUMNS} FROM readings WHERE device = ? AND ts_ms >= ? AND ts_ms < ? "
            "ORDER BY ts_ms, id",
            (device, lo, hi),
        )
    ]
    events = conn.execute(
        "SELECT ts_ms, kind, origin, message FROM events WHERE device = ? "
        "AND kind IN ('model', 'frequency_change') AND ts_ms >= ? AND ts_ms < ? "
        "ORDER BY ts_ms, id",
        (device, lo, hi),
    ).fetchall()

    def one(sql: str):
        row = conn.execute(sql, (device, lo)).fetchone()
        return row[0] if row else None

    before = "device = ? AND ts_ms < ?"
    prime = (
        one(f"SELECT max(ts_ms) FROM readings WHERE {before}"),
        one(
            f"SELECT frequency FROM readings WHERE {before} AND frequency IS NOT NULL "
            "ORDER BY ts_ms DESC, id DESC LIMIT 1"
        ),
        one(
            f"SELECT message FROM events WHERE {before} AND kind = 'model' "
            "ORDER BY ts_ms DESC, id DESC LIMIT 1"
        ),
    )
    return rows, events, prime


def sql_fragments() -> dict[str, str]:
    """The constants the Datasette query ``scorecard`` shares with this module and
    ``core``, as SQL (``ui.server.render_metadata`` pastes them in): one source for both."""
    cases = " ".join(f"WHEN '{k}' THEN {v!r}" for k, v in sorted(PRIORS.items()))
    fan = "min(max(coalesce(fan, 100.0), 0.0), 100.0)"
    return {
        "__PRIOR_R__": f"CASE upper(coalesce(asic, '')) {cases} ELSE {prior_for(None).r!r} END",
        "__FAN_SCALE__": f"pow({FAN_REF + FAN_STILL!r} / ({fan} + {FAN_STILL!r}), {FAN_EXP!r})",
        "__DYNAMIC_SHARE__": repr(1.0 - P0_SHARE),
        "__AUTOFAN_SATURATED__": repr(AUTOFAN_SATURATED),
        "__FREQ_EPS__": repr(FREQ_EPS),
        "__STEP_MS__": str(STEP_MS),
        "__WINDOW_STEPS__": str(WINDOW_STEPS),
    }


__all__ = ["KEYS", "Scorecard", "ScorecardSource", "gap_s", "history", "sql_fragments"]
