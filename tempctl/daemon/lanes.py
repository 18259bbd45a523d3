"""Where the daemon's requests run, so devices that answer never wait behind ones that don't.

One FIFO pool of 64 threads let 300 hung miners (they accept a connection and never
answer) hold every thread while healthy polls queued behind them (issue 23 item 1).
Now there are two lanes:

- the *regular* lane runs the polls and commands of every device not known to be
  unresponsive. It may grow to one thread per device, and a device has at most one job
  in flight, so a job never waits in a queue for a thread: a device that stops answering
  holds one thread, its own, until its request's deadline. Threads are made on demand
  and reused, so a fleet that answers runs on a handful.
- the *probe* lane: a device whose last ``PROBE_AFTER`` polls got no complete answer
  within the request's deadline is polled only here, at most ``PROBE_WORKERS`` at a
  time, in turn (first queued, first probed; one place per device). One slow answer (an
  ESP32 busy for seconds, a starved machine) keeps the device on its schedule: it must
  not wait behind a line of long-dead miners. Slots it misses meanwhile count as missed
  polls. Its first answer puts it back in the regular lane.

Every request has a hard overall deadline (device/transport.py), so no hung socket
holds a thread longer than that.
"""

from __future__ import annotations

import resource
from collections import deque
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor

# Hung devices probed at once. Each probe of a hung device holds its thread for the
# request deadline (<= 5 s), so 300 hung devices are each re-probed about every
# 300 / 32 x 5 s = 47 s: how soon one that recovers is back on its schedule.
PROBE_WORKERS = 32
PROBE_AFTER = 2  # polls in a row without an answer in time
FDS_PER_DEVICE = 2  # a keep-alive connection, plus one being replaced


class Lanes:
    def __init__(self, devices: int, probe_workers: int = PROBE_WORKERS):
        self.regular = ThreadPoolExecutor(
            max_workers=max(1, devices), thread_name_prefix="tempctl-io"
        )
        self.probe_workers = max(1, min(probe_workers, devices))
        self.probe = ThreadPoolExecutor(
            max_workers=self.probe_workers, thread_name_prefix="tempctl-probe"
        )
        self.waiting: deque = deque()  # devices waiting for a probe, first queued first
        self.queued: set[str] = set()  # their names (one place per device)
        self.probing: set[Future] = set()

    def submit(self, fn: Callable, *args) -> Future:
        """Run ``fn(*args)`` in the regular lane: at once, on a thread of its own if need be."""
        return self.regular.submit(fn, *args)

    def queue(self, device) -> bool:
        """Put ``device`` in line for a probe; False when it already has a place."""
        if device.name in self.queued:
            return False
        self.queued.add(device.name)
        self.waiting.append(device)
        return True

    def start_probes(self, fn: Callable) -> list[tuple[object, Future]]:
        """Start ``fn(device)`` for the devices first in line, as far as threads are free."""
        started = []
        while self.waiting and len(self.probing) < self.probe_workers:
            d = self.waiting.popleft()
            self.queued.discard(d.name)
            fut = self.probe.submit(fn, d)
            self.probing.add(fut)
            started.append((d, fut))
        return started

    def finished(self, fut: Future) -> None:
        self.probing.discard(fut)

    def shutdown(self) -> None:
        # Threads blocked on a hung device end at their request's deadline.
        for pool in (self.regular, self.probe):
            pool.shutdown(wait=False, cancel_futures=True)


def room_for_sockets(devices: int, base: int = 256) -> int:
    """Raise the soft open-file limit (often 1024) so ``devices`` keep their connections.

    Only up to the hard limit, never down. Returns the soft limit now in force.
    """
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = base + FDS_PER_DEVICE * devices
    if hard != resource.RLIM_INFINITY:
        want = min(want, hard)
    if soft != resource.RLIM_INFINITY and soft < want:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (want, hard))
            soft = want
        except (ValueError, OSError):
            pass
    return soft
