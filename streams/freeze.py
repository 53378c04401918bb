"""Ends a worker that wakes from a freeze long enough to have lost its partitions.

A process frozen as a whole (SIGSTOP, a VM pause, a host's suspend, a swap storm) stops
heartbeating. The group hands its partitions to another worker, which restores their
sessions from the changelog and goes on. When the frozen worker wakes, it still holds fetched events and a
micro-batch, and it learns of the rebalance only at its next heartbeat. Meanwhile it went
on processing, and wrote sessions to changelog partitions another worker owned, over that
worker's newer states. `make faults` found 2 and 7 users whose final session differed
after two 15 s freezes each (docs/RELIABILITY.md). Faust's Kafka transactions, which would
fence it, crashed both workers in the same scenario.

``FreezeGuard`` notices the freeze from the clock: a thread ticks every ``tick_s``, and
the per-event step asks ``check()`` before it writes. A gap over ``limit_s`` (half the
session timeout) means the whole process stood still, the ticking thread included: a busy
event loop does not stop it, and Faust heartbeats from a thread of its own. The worker
then exits at once, without a commit or another write, and starts again (the compose
file's restart policy; the fault harness restarts it). Every event it held is redelivered
from the last commit: at least once, as after a kill -9.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable

log = logging.getLogger(__name__)

EXIT_FROZEN = 75  # EX_TEMPFAIL: start me again


def exit_frozen(gap_s: float) -> None:
    """Log why, then leave at once: no ``finally`` may flush a stale write."""
    log.critical("this worker was frozen for %.1f s, long enough to lose its partitions: "
                 "exiting without writing or committing (events are redelivered)", gap_s)
    logging.shutdown()
    os._exit(EXIT_FROZEN)


# Linux's CLOCK_BOOTTIME counts a host's suspend, where CLOCK_MONOTONIC (time.monotonic)
# stops: a guard on the latter would not see a worker that slept through a suspend.
_CLOCK = getattr(time, "CLOCK_BOOTTIME", time.CLOCK_MONOTONIC)


def suspend_aware_clock() -> float:
    """Seconds on a clock that runs through a suspend of the host (see ``_CLOCK``)."""
    return time.clock_gettime(_CLOCK)


class FreezeGuard:
    """``check()`` calls ``on_frozen(gap)`` once the clock shows a gap over ``limit_s``
    since the last tick. Inactive until ``start()`` (which runs the ticking thread), so a
    slow start-up (models, table recovery) is not taken for a freeze."""

    def __init__(self, limit_s: float, tick_s: float = 0.5,
                 clock: Callable[[], float] = suspend_aware_clock,
                 on_frozen: Callable[[float], None] = exit_frozen) -> None:
        self.limit_s, self.tick_s, self.clock, self.on_frozen = limit_s, tick_s, clock, on_frozen
        self.last: float | None = None

    def check(self) -> None:
        """Before a write: the process has not stood still since the last tick."""
        if self.last is not None and (gap := self.clock() - self.last) > self.limit_s:
            self.on_frozen(gap)

    def tick(self) -> None:
        """Check, then move the mark: whichever runs first after a freeze sees the gap."""
        self.check()
        self.last = self.clock()

    def start(self) -> None:
        self.last = self.clock()

        def run() -> None:
            while True:
                time.sleep(self.tick_s)
                self.tick()
        threading.Thread(target=run, name="freeze-guard", daemon=True).start()
