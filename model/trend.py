"""What is popular right now: each item's share of recent activity, for the ranker.

Retrieval reads the session, not the calendar, so it cannot tell this week's hit from
last year's. An item's share of all events, each event weighted down by its age with a
half-life, can: on ml-latest-small, adding the log share (half-life 7 days) to SASRec's
scores lifted validation NDCG@10 from 0.068 to 0.083 (docs/BENCHMARKS.md, issue #14).
Several half-lives are kept, from an hour to a month, and the ranker weighs them: which
one matters depends on the log.

``ItemTrend`` is the state, as the serving bundle keeps it: events go in as they come
(``observe``) and the candidates' features come out (``features``). ``TrendLog`` gives
the same features offline for lists at past times, by running one ``ItemTrend`` through a
log in time order, so training and serving share the arithmetic (tested equal).
Only events before a list's time count: the event being answered is added after.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from model.data import Sequences

HALF_LIVES_MS = (3_600_000.0, 86_400_000.0, 604_800_000.0, 2_592_000_000.0)  # 1 h, 1 d, 7 d, 30 d
TREND_FEATURES = len(HALF_LIVES_MS)
_RESCALE_AT = 500.0  # half-lives past the origin before weights are rescaled (2^500 is finite)


class ItemTrend:
    """Decayed event counts per item and half-life. An event at ``t`` weighs
    2^((t - origin) / half-life), so counts never decay in place; shares are ratios, so
    the origin cancels, and it moves forward (rescaling the counts) before weights
    overflow."""

    def __init__(self, num_items: int, half_lives_ms: Sequence[float] = HALF_LIVES_MS) -> None:
        self.half_lives = np.asarray(half_lives_ms, np.float64)
        self.counts = np.zeros((len(self.half_lives), num_items + 1))  # row h, column id
        self.totals = np.zeros(len(self.half_lives))
        self.origin_ms: float | None = None
        self.scale = num_items  # a share times this: 1 for an item of average popularity

    def observe(self, ids: np.ndarray, times_ms: np.ndarray) -> None:
        """Count events of items ``ids`` (dense, 0 = unknown: not counted) at ``times_ms``;
        ids beyond the table (items this model does not know) and events without a time
        (0) are not counted either."""
        ids, times = np.asarray(ids, np.int64), np.asarray(times_ms, np.float64)
        keep = (ids > 0) & (ids < self.counts.shape[1]) & (times > 0)
        ids, times = ids[keep], times[keep]
        if not len(ids):
            return
        if self.origin_ms is None:
            self.origin_ms = float(times.min())
        newest = float(times.max())
        if (newest - self.origin_ms) / self.half_lives.min() > _RESCALE_AT:
            factor = np.exp2(-(newest - self.origin_ms) / self.half_lives)
            self.counts *= factor[:, None]
            self.totals *= factor
            self.origin_ms = newest
        weights = np.exp2((times[None, :] - self.origin_ms) / self.half_lives[:, None])
        for row, w in enumerate(weights):
            np.add.at(self.counts[row], ids, w)
        self.totals += weights.sum(axis=1)

    def widen(self, num_items: int) -> None:
        """Room for items up to ``num_items`` (new items start with no events)."""
        if num_items + 1 > self.counts.shape[1]:
            grown = np.zeros((len(self.half_lives), num_items + 1))
            grown[:, :self.counts.shape[1]] = self.counts
            self.counts = grown

    def features(self, ids: np.ndarray) -> np.ndarray:
        """[*ids.shape, half-lives]: log(1 + share × items) / 5 per half-life, where share
        is the item's part of the decayed events (0 for items never seen, 1 for one as
        popular as an item would be if all were alike, among the items the model was
        trained with); ids past the table read 0."""
        ids = np.asarray(ids, np.int64)
        known = np.where(ids < self.counts.shape[1], ids, 0)
        with np.errstate(invalid="ignore", divide="ignore"):
            share = self.counts[:, known] / self.totals.reshape(-1, *([1] * ids.ndim))
        share = np.where(np.isfinite(share), share, 0.0)
        out = np.log1p(share * self.scale) / 5.0
        return np.moveaxis(out, 0, -1).astype(np.float32)

    # ---- storage: the state a model is exported with, as of its training log's end -----
    def to_dict(self) -> dict[str, Any]:
        seen = np.flatnonzero(self.counts.any(axis=0))
        return {"half_lives_ms": self.half_lives.tolist(), "items": self.counts.shape[1] - 1,
                "scale": self.scale,
                "origin_ms": self.origin_ms, "ids": seen.tolist(),
                "counts": self.counts[:, seen].tolist(), "totals": self.totals.tolist()}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any], num_items: int | None = None) -> ItemTrend:
        """The stored state; ``num_items`` widens the table for a model that knows more
        items than the state does (new items start at 0)."""
        out = cls(int(d["items"]), d["half_lives_ms"])
        out.scale = int(d["scale"])
        out.counts[:, np.asarray(d["ids"], np.int64)] = np.asarray(d["counts"]).reshape(
            len(out.half_lives), -1)
        out.totals = np.asarray(d["totals"], np.float64)
        out.origin_ms = d["origin_ms"]
        out.widen(num_items or 0)
        return out


class TrendLog:
    """A log's events in time order, to give lists at past times their trend features."""

    def __init__(self, items: np.ndarray, times_ms: np.ndarray, num_items: int) -> None:
        order = np.argsort(times_ms, kind="stable")
        self.items, self.times = np.asarray(items)[order], np.asarray(times_ms)[order]
        self.num_items = num_items

    def features(self, now_ms: np.ndarray, ids: np.ndarray) -> np.ndarray:
        """[lists, width, half-lives]: ``ItemTrend.features`` of each list's candidates
        ``ids`` [lists, width] as of its time ``now_ms`` [lists], counting the events
        strictly before it."""
        trend = ItemTrend(self.num_items)
        out = np.zeros((*ids.shape, len(trend.half_lives)), np.float32)
        done = 0
        for row in np.argsort(now_ms, kind="stable"):
            upto = int(np.searchsorted(self.times, now_ms[row], side="left"))
            trend.observe(self.items[done:upto], self.times[done:upto])
            done = max(done, upto)
            out[row] = trend.features(ids[row])
        return out

    def state(self) -> ItemTrend:
        """The trend after every event of the log: what a model trained on it serves from."""
        trend = ItemTrend(self.num_items)
        trend.observe(self.items, self.times)
        return trend


def trend_log(seqs: Sequences) -> TrendLog:
    """Every event of ``seqs``, each user's and at every position: lists at a time count
    only the events before it, whoever made them."""
    empty = np.zeros(0, np.int64)
    return TrendLog(np.concatenate([empty, *seqs.by_user]),
                    np.concatenate([empty, *seqs.times]), seqs.num_items)
