"""Appending to the log without ever holding up control (issue 13.8).

The daemon's statements come in groups (a reading; a decision: transition, events and
command intents), each with its ids already assigned by ``Log``. ``Writer.write`` commits
a group at once when the database lets it within ``BUSY_TIMEOUT_S``; otherwise the group
joins an in-memory backlog, and the backlog is tried again once per ``retry_s`` (never
on every call, so a locked database costs the loop at most one short wait a second).
Groups are committed in order and whole, so what is in the file is always a prefix of
what was assigned: ids stay without holes, and a SIGKILL loses only the unwritten tail,
whose ids the next start assigns again.

Errors that pass (locked, busy, disk full, I/O error) keep the rows for later. A statement
the database refuses for good (a constraint, a value it cannot store) is dropped with an
error line, and the rest of its group and of the backlog are written: one bad row never
blocks the others. Its id is then missing, which the error line explains.
"""

from __future__ import annotations

import logging
import sqlite3
import time
from collections import deque
from collections.abc import Callable, Iterable

logger = logging.getLogger("tempctl")

BACKLOG_LIMIT = 200_000  # statements kept while the database refuses writes
BUSY_TIMEOUT_S = 0.05  # longest wait for another writer's lock, per attempt
RETRY_S = 1.0  # the backlog is tried again this often
BATCH_STATEMENTS = 5_000  # backlog statements per transaction when catching up

Op = tuple[str, tuple]
# Refused for good: retrying the same statement gives the same answer.
PERMANENT = (
    sqlite3.IntegrityError,
    sqlite3.DataError,
    sqlite3.ProgrammingError,
    sqlite3.InterfaceError,
    OverflowError,
    TypeError,
    ValueError,
)


class Writer:
    """The one writer of a ``Log``: commits statement groups, keeps them when it cannot."""

    def __init__(
        self,
        eventlog,
        *,
        limit: int = BACKLOG_LIMIT,
        retry_s: float = RETRY_S,
        busy_timeout_s: float = BUSY_TIMEOUT_S,
        monotonic: Callable[[], float] = time.monotonic,
    ):
        self.eventlog = eventlog
        self.limit = limit
        self.retry_s = retry_s
        self.monotonic = monotonic
        self.backlog: deque[list[Op]] = deque()
        self.pending = 0  # statements in the backlog
        self.dropped = 0  # statements dropped because the backlog was full
        self.refused = 0  # statements the database refused for good
        self.error: str | None = None  # why the backlog exists
        self._next_try = 0.0
        self.set_busy_timeout(busy_timeout_s)

    def set_busy_timeout(self, seconds: float) -> None:
        self.eventlog.conn.execute(f"PRAGMA busy_timeout = {int(seconds * 1000)}")

    def write(self, ops: Iterable[Op]) -> None:
        """Commit ``ops`` as one group now, or keep them for later; never raises for I/O."""
        group = list(ops)
        if group:
            self.backlog.append(group)
            self.pending += len(group)
            self._trim()
        if self.backlog and (self.error is None or self.monotonic() >= self._next_try):
            self.flush()

    def flush(self) -> bool:
        """Try to write the whole backlog now; True when nothing is left."""
        delayed = self.pending if self.error is not None else 0
        while self.backlog:
            batch, size = [], 0
            while self.backlog and (not batch or size + len(self.backlog[0]) <= BATCH_STATEMENTS):
                g = self.backlog.popleft()
                batch.append(g)
                size += len(g)
            try:
                self._commit(batch)
            except sqlite3.Error as exc:
                self.backlog.extendleft(reversed(batch))
                if self.error != str(exc):
                    logger.error(
                        "cannot write the log (%s); control goes on, rows are kept in memory", exc
                    )
                self.error = str(exc)
                self._next_try = self.monotonic() + self.retry_s
                return False
            self.pending -= size
        if self.error is not None:
            logger.warning("database writable again: %d delayed statements written", delayed)
            self.error = None
        return True

    def _commit(self, batch: list[list[Op]]) -> None:
        conn = self.eventlog.conn
        conn.execute("BEGIN IMMEDIATE")
        try:
            for group in batch:
                for sql, params in group:
                    try:
                        conn.execute(sql, params)
                    except PERMANENT as exc:
                        self.refused += 1
                        logger.error(
                            "log row dropped, the database refuses it (%s): %s",
                            exc,
                            _describe(sql, params),
                        )
            conn.execute("COMMIT")
        except BaseException:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            raise

    def _trim(self) -> None:
        while self.pending > self.limit and len(self.backlog) > 1:
            g = self.backlog.popleft()
            self.pending -= len(g)
            self.dropped += len(g)


def _describe(sql: str, params: tuple) -> str:
    """'readings id 12' for an INSERT: which row is missing."""
    table = sql.split("INTO", 1)[-1].split("(", 1)[0].strip() if "INTO" in sql else sql[:40]
    return f"{table} id {params[0]}" if params else table


__all__ = ["BACKLOG_LIMIT", "Writer"]
