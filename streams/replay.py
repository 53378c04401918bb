"""Replay an interaction log into Kafka in event-time order, at full speed or paced.

Each record carries its wall-clock send time in the ``sent_us`` header, so consumers
downstream can measure send-to-publish latency.
"""

from __future__ import annotations

import itertools
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from streams.events import Event
from streams.producer import EventProducer, sent_at_header
from streams.readers import Rejected


@dataclass
class ReplaySummary:
    read: int = 0
    sent: int = 0
    dead_lettered: int = 0
    delivered: int = 0
    failed: int = 0
    seconds: float = 0.0

    @property
    def events_per_s(self) -> float:
        return self.sent / self.seconds if self.seconds > 0 else 0.0


def pacing_delay(index: int, ts_ms: int, first_ts_ms: int, elapsed_s: float,
                 rate: float | None, time_scale: float | None) -> float:
    """Seconds to wait before sending record ``index`` (0 = send now).

    ``rate``: at most that many records per second. ``time_scale``: event time runs that
    many times faster than wall time (1 = real time). With both, the slower one wins.
    """
    due = 0.0
    if rate:
        due = index / rate
    if time_scale:
        due = max(due, (ts_ms - first_ts_ms) / 1000.0 / time_scale)
    return max(0.0, due - elapsed_s)


def _report(summary: ReplaySummary, producer: EventProducer, start: float,
            on_progress: Callable[[ReplaySummary], None]) -> None:
    summary.seconds = time.perf_counter() - start
    stats = producer.refresh_stats()
    summary.delivered, summary.failed = stats.delivered, stats.failed
    on_progress(summary)


def replay(source: Iterable[Event | Rejected], producer: EventProducer, *,
           rate: float | None = None, time_scale: float | None = None, limit: int | None = None,
           on_progress: Callable[[ReplaySummary], None] | None = None,
           progress_every: int = 2000) -> ReplaySummary:
    """Send ``source`` (already in event-time order) and return what happened."""
    if rate is not None and rate <= 0:
        raise ValueError(f"rate must be > 0 events/s, got {rate}")
    if time_scale is not None and time_scale <= 0:
        raise ValueError(f"time_scale must be > 0, got {time_scale}")
    summary = ReplaySummary()
    paced = bool(rate or time_scale)
    first_ts: int | None = None
    start = time.perf_counter()
    try:
        for record in itertools.islice(source, limit):
            if on_progress is not None and summary.read and summary.read % progress_every == 0:
                _report(summary, producer, start, on_progress)  # dead letters move it too
            summary.read += 1
            if isinstance(record, Rejected):
                producer.dead_letter(record.raw, record.error)
                summary.dead_lettered += 1
                continue
            if paced:
                first_ts = record.ts if first_ts is None else first_ts
                wait = pacing_delay(summary.sent, record.ts, first_ts,
                                    time.perf_counter() - start, rate, time_scale)
                if wait > 0:
                    time.sleep(wait)
            if not producer.send(record, headers=[sent_at_header()]):
                summary.dead_lettered += 1  # past the size limit once written
                continue
            summary.sent += 1
            if paced and summary.sent == 1:
                # A new idempotent producer needs ~0.3-0.5 s for its producer id; records sent
                # meanwhile wait that long (the p99 it cost: docs/BENCHMARKS.md, "Streaming
                # worker"). Deliver the first one, then start the pace.
                producer.flush()
                start = time.perf_counter()
    finally:  # a reader error or Ctrl-C still delivers what was sent
        producer.close()
    summary.seconds = time.perf_counter() - start
    summary.delivered, summary.failed = producer.stats.delivered, producer.stats.failed
    return summary
