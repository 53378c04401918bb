"""The dashboard's live figures, computed from the lists the workers publish.

Every list carries the triggering event's send time, its own publish time, its model
version and the event's item, so one pass over the flow gives throughput, latency
percentiles, the model in service (and when it changed), and online HR@10: was the
event's item in the list this user was shown before it (the prequential protocol of the
demo's report, judged by the same ``model.evaluation`` functions, here over a sliding
window of events).
"""

from __future__ import annotations

from collections import OrderedDict, deque
from dataclasses import dataclass, field

import numpy as np

from model.evaluation.metrics import hit_rate
from model.evaluation.protocols import prequential_rank
from streams.messages import RecommendationList, sent_before, shows_over

HR_K = 10  # only the first HR_K items shown are kept: a rank beyond them is a miss anyway


@dataclass
class LiveStats:
    window_s: float = 10.0
    max_users: int = 200_000  # users whose last list is remembered for online HR
    max_judged: int = 10_000  # online HR over this many most recent judged events
    arrivals: deque[tuple[float, float | None]] = field(default_factory=deque)
    ranks: deque[float] = field(default_factory=deque)  # prequential, newest last
    # each user's list as shown, its first HR_K item ids and its event's send time: what
    # their next event judges (plain strings: a list kept as objects, a list and its
    # items, is a dozen objects per user for every full collection to walk)
    shown: OrderedDict[str, tuple[list[str], int | None]] = field(default_factory=OrderedDict)
    model_version: str | None = None
    last_swap_us: int | None = None
    # champion versions seen within the window: (published_us of the first list of their
    # current run, monotonic seconds it began, and of the last); the run that began last
    # (by this clock, not the workers') is in service
    runs: dict[str | None, tuple[int, float, float]] = field(default_factory=dict)

    def observe(self, rec: RecommendationList, now_s: float) -> None:
        """One published list, seen at ``now_s`` (monotonic seconds)."""
        sent, published = rec.sent_us, rec.published_us
        latency_ms = (published - sent) / 1000 if sent and published else None
        self.arrivals.append((now_s, latency_ms))
        self._forget(now_s)
        # The champion's lists only: an experiment's variants alternate versions, and each
        # list would read as a swap (held-back users' lists carry no tag).
        if rec.path == "model" and rec.experiment is None:
            self._serving(rec.model_version, published or 0, now_s)
        before = self.shown.pop(rec.user_id, None)
        if before is not None and sent_before(rec.sent_us, before[1]):  # an event answered
            self.shown[rec.user_id] = before  # again (a worker took over its partition):
            return  # judged when first answered, never shown over the newer list
        if before is not None and rec.event_item_id is not None:
            self.ranks.append(prequential_rank(before[0], rec.event_item_id))
            if len(self.ranks) > self.max_judged:
                self.ranks.popleft()
        self.shown[rec.user_id] = ([i.item_id for i in rec.items[:HR_K]], rec.sent_us) \
            if shows_over(rec.items, None if before is None else before[0]) else before
        if len(self.shown) > self.max_users:
            self.shown.popitem(last=False)

    def _serving(self, version: str | None, published_us: int, now_s: float) -> None:
        """The version in service is the one whose run of lists began last: during a
        rolling swap (each worker loads on its own), or beside a worker whose swap was
        refused, lists of two versions alternate, and each one read as a swap. A version
        unseen for ``window_s`` that comes back (a rollback) begins a new run."""
        run = self.runs.get(version)
        if run is None or now_s - run[2] > self.window_s:
            run = (published_us, now_s, now_s)
        self.runs[version] = (*run[:2], now_s)
        for gone in [v for v, run in self.runs.items() if now_s - run[2] > self.window_s]:
            del self.runs[gone]
        newest = max(self.runs, key=lambda v: self.runs[v][1])
        if newest != self.model_version:
            if self.model_version is not None:
                self.last_swap_us = self.runs[newest][0]
            self.model_version = newest

    def _forget(self, now_s: float) -> None:
        while self.arrivals and self.arrivals[0][0] < now_s - self.window_s:
            self.arrivals.popleft()

    def snapshot(self, now_s: float) -> dict:
        self._forget(now_s)
        latencies = [lat for _, lat in self.arrivals if lat is not None]
        pcts = (np.percentile(latencies, [50, 95, 99]).round(2).tolist() if latencies
                else [None] * 3)
        return {
            "window_s": self.window_s,
            "lists_per_s": round(len(self.arrivals) / self.window_s, 2),
            "latency_ms": dict(zip(("p50", "p95", "p99"), pcts)),
            "model_version": self.model_version,
            "last_swap_us": self.last_swap_us,
            "online_hr10": (round(hit_rate(np.asarray(self.ranks), HR_K), 4) if self.ranks
                            else None),
            "judged": len(self.ranks),
        }


@dataclass
class RateOf:
    """Per-second rate of a growing total (the dead-letter topic's size), from two reads."""

    last: tuple[float, int] | None = None
    rate: float | None = None

    def update(self, total: int, now_s: float) -> None:
        if self.last is not None and now_s > self.last[0]:
            self.rate = round((total - self.last[1]) / (now_s - self.last[0]), 2)
        self.last = (now_s, total)
