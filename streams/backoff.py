"""When to try again after a failure: one rule for every retry in the stream.

Used by the hot swap (a champion that failed to load is tried again) and by the worker's
Redis writes (a circuit breaker: after a failure, micro-batches skip Redis for a while
instead of each waiting out a timeout, which throttled a worker to about 256 events/s
against a Redis that dropped packets).
"""

from __future__ import annotations

import time
from collections.abc import Callable


class Backoff:
    """Not before ``first_s`` after a failure, doubling with each failure in a row up to
    ``most_s``; a success, or a fresh start, clears it."""

    def __init__(self, first_s: float, most_s: float,
                 clock: Callable[[], float] = time.monotonic) -> None:
        if not 0 < first_s <= most_s:
            raise ValueError(f"need 0 < first_s <= most_s. Received: {first_s}, {most_s}")
        self.first_s, self.most_s, self.clock = first_s, most_s, clock
        self.delay, self.until = first_s, float("-inf")

    def ready(self) -> bool:
        return self.clock() >= self.until

    def failed(self) -> None:
        self.until = self.clock() + self.delay
        self.delay = min(self.delay * 2, self.most_s)

    def succeeded(self) -> None:
        self.delay, self.until = self.first_s, float("-inf")
