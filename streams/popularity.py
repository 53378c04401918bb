"""Recent popularity with exponential time decay, for users the model cannot serve yet.

Counts decay with a half-life in event time, so yesterday's hits fade and a new item
rises within minutes. Every item is counted, including items the model has never seen:
popularity is the one path that can recommend them. Updates are O(1): scores are kept
in a growing time frame (weight 2^(t / half_life)) and renormalised only when they would
overflow. Items whose whole count has decayed below one event ``FORGET_HALF_LIVES``
half-lives old are forgotten, each time the table doubles, and past ``MOST_ITEMS`` the
least popular half is: client-chosen item ids must not grow a worker's memory for ever.
"""

from __future__ import annotations

import heapq
import math
from collections.abc import Iterable
from dataclasses import dataclass, field

FORGET_HALF_LIVES = 50  # 2^-50 of one new event: no list of k would reach such an item
# The most items counted at once: past it the least popular half is forgotten. Decay alone
# bounds the table by the ids of ~50 hours, and a flood of random ids (a client's bug, an
# attack) at 100/s grew it to millions, with every batch's ranking a pass over them all.
MOST_ITEMS = 100_000
# The largest count a seed takes: far above any worker's decayed count of real events. A
# finite 1e303 (a foreign or corrupt record) overflowed its wire score, and every batch
# that listed it raised; the worker exited and seeded from it again at each restart.
MOST_SEEDED = 1e12


@dataclass
class DecayedPopularity:
    half_life_ms: float = 3_600_000.0
    scores: dict[str, float] = field(default_factory=dict)
    origin_ms: int | None = None
    newest_ms: int | None = None  # the newest event counted: the default "now" of ``top``
    # The best items, best first, as of the last ``add``: every user a micro-batch serves
    # by popularity reads it, instead of a pass over every item each (40 ms at 100k items).
    _ranked: list[tuple[float, str]] | None = field(default=None, init=False, repr=False,
                                                    compare=False)
    _prune_at: int = field(default=1024, init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if self.half_life_ms <= 0:
            raise ValueError(f"half_life_ms must be > 0, got {self.half_life_ms}")

    def _weight(self, ts_ms: int) -> float:
        if self.origin_ms is None:
            self.origin_ms = ts_ms
        exponent = (ts_ms - self.origin_ms) / self.half_life_ms
        if exponent > 500:  # keep weights finite: move the origin, rescale what we hold
            factor = 2.0 ** -exponent
            self.scores = {k: v * factor for k, v in self.scores.items()}
            self.origin_ms, exponent = ts_ms, 0.0
        return 2.0 ** exponent

    def add(self, item_id: str, ts_ms: int, weight: float = 1.0) -> None:
        w = weight * self._weight(ts_ms)  # first: it may rescale the scores we then read
        self.scores[item_id] = self.scores.get(item_id, 0.0) + w
        self._ranked = None
        self.newest_ms = ts_ms if self.newest_ms is None else max(self.newest_ms, ts_ms)
        if len(self.scores) >= self._prune_at:
            self._forget()

    def seed(self, counts: Iterable[tuple[str, float]], ts_ms: int, age_ms: float = 0.0
             ) -> None:
        """Start from ``counts``, another worker's decayed counts ``age_ms`` old, as if
        counted at ``ts_ms``: they fade by their age first, so a record from hours ago
        weighs next to nothing. A count that is no positive number up to ``MOST_SEEDED``
        (a record written by another version, or corrupt) is skipped."""
        fade = 2.0 ** (-max(age_ms, 0.0) / self.half_life_ms)
        for item, count in counts:
            if isinstance(count, int | float) and 0 < count <= MOST_SEEDED:
                self.add(item, ts_ms, count * fade)

    def _forget(self) -> None:
        """Drop the items decayed past ``FORGET_HALF_LIVES``; the next pass waits until the
        table has doubled, so each update pays O(1) for it on average."""
        assert self.origin_ms is not None and self.newest_ms is not None
        floor = 2.0 ** ((self.newest_ms - self.origin_ms) / self.half_life_ms - FORGET_HALF_LIVES)
        kept = {k: v for k, v in self.scores.items() if v >= floor}
        if len(kept) >= MOST_ITEMS:
            kept = dict(heapq.nlargest(MOST_ITEMS // 2, kept.items(), key=lambda kv: kv[1]))
        self.scores = kept
        self._prune_at = max(1024, min(2 * len(kept), MOST_ITEMS))

    def top(self, k: int, exclude: Iterable[str] = (), now_ms: int | None = None
            ) -> list[tuple[str, float]]:
        """The k most popular items (decayed counts as of ``now_ms``, default: last event)."""
        if self.origin_ms is None or self.newest_ms is None:
            return []
        banned = set(exclude)
        best = [p for p in self._best(k + len(banned)) if p[1] not in banned][:k]
        now = self.newest_ms if now_ms is None else now_ms
        scale = math.pow(2.0, -(now - self.origin_ms) / self.half_life_ms)
        return [(item, score * scale) for score, item in best]

    def _best(self, n: int) -> list[tuple[float, str]]:
        """The ``n`` best (score, item) pairs, best first (ties: the greater id), from the
        ranking kept since the last ``add`` when it holds that many."""
        ranked = self._ranked
        if ranked is None or (len(ranked) < n and len(ranked) < len(self.scores)):
            ranked = heapq.nlargest(max(n, 64), ((s, i) for i, s in self.scores.items()))
            self._ranked = ranked
        return ranked[:n]
