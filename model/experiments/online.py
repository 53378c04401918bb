"""Online metrics per variant, from the stream itself.

Each list shown to a user is judged by the user's next interaction (the prequential rule
of ``model.evaluation.protocols.prequential_rank``, so the offline replay, the API's live
figures and experiments agree on what a hit is). Users, not lists, are the unit that was
randomised, so lists of one user are not independent: a ``VariantTally`` keeps running
sums per user, and its summary averages per-user means, with the variance of that mean
over users. Two workers each keep a tally and ``merge`` them; a user seen by both adds up.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np

from model.evaluation.metrics import hit_rate, mrr, ndcg
from model.evaluation.protocols import prequential_rank

DEFAULT_K = 10


def metric_names(k: int = DEFAULT_K) -> tuple[str, ...]:
    """The names under which ``Outcome.as_dict`` reports, in this order."""
    return (f"HR@{k}", f"NDCG@{k}", "MRR")


@dataclass(frozen=True)
class Outcome:
    """One shown list judged by the next interaction. ``rr`` is the reciprocal rank within
    the top ``k`` (0 beyond it or when absent): a list of ``k`` items has no rank beyond."""

    hit: float
    ndcg: float
    rr: float
    k: int = DEFAULT_K

    def as_dict(self) -> dict[str, float]:
        return dict(zip(metric_names(self.k), (self.hit, self.ndcg, self.rr)))


def rank_outcome(rank: float, k: int = DEFAULT_K) -> Outcome:
    """The metrics of one 0-based rank (``inf`` when absent), by ``model.evaluation.metrics``."""
    ranks = np.array([rank], dtype=float)
    return Outcome(hit_rate(ranks, k), ndcg(ranks, k), mrr(ranks, k), k)


def list_outcome(shown: Sequence[str], next_item: str, k: int = DEFAULT_K) -> Outcome:
    """HR@k, NDCG@k and reciprocal rank of ``next_item`` in the first ``k`` of ``shown``."""
    return rank_outcome(prequential_rank(list(shown[:k]), next_item), k)


@dataclass(frozen=True)
class MetricSummary:
    """A metric over users: ``mean`` of per-user means, ``variance`` of that mean
    (sample variance over users / users: NaN below 2 users), ``sd`` across users."""

    users: int
    mean: float
    variance: float

    @property
    def sd(self) -> float:
        return math.sqrt(self.variance * self.users) if self.users > 1 else math.nan

    def interval(self, z: float = 1.959964) -> tuple[float, float]:
        """A fixed-sample interval (95% by default), for display only: it is not valid
        under repeated looks; ``statistics.SequentialTest`` gives the one that is. Normal,
        within [0, 1] where every metric here lies; with no spread among the users (no
        conversion among 400), Wilson's for a proportion at that count, not a point."""
        if self.users and self.variance == 0:
            n, p = self.users, min(max(self.mean, 0.0), 1.0)
            centre, scale = (p + z * z / (2 * n)) / (1 + z * z / n), z / (1 + z * z / n)
            half = scale * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n))
            return max(centre - half, 0.0), min(centre + half, 1.0)
        half = z * math.sqrt(self.variance)
        return max(self.mean - half, 0.0), min(self.mean + half, 1.0)


@dataclass
class VariantTally:
    """Per-user running sums for one variant. ``per_user[user]`` holds, for each metric
    in ``metrics``, the pair (sum, count) flattened: ``[s0, c0, s1, c1, ...]``; counts per
    metric let a list be judged on some metrics only (e.g. a conversion metric)."""

    metrics: tuple[str, ...] = field(default_factory=metric_names)
    lists: int = 0
    per_user: dict[str, list[float]] = field(default_factory=dict)
    # users whose row changed since ``take_changed``: what a worker writes at its next
    # flush, instead of every row it ever held
    changed: set[str] = field(default_factory=set, compare=False, repr=False)

    @property
    def users(self) -> int:
        return len(self.per_user)

    def add(self, user_id: str, values: Mapping[str, float], new_list: bool = True) -> None:
        """Count one list shown to ``user_id`` with its metric ``values`` (a subset of
        ``metrics``, e.g. ``Outcome.as_dict()``); ``new_list`` False adds values judged
        later for a list already counted (a click within the next few events)."""
        unknown = set(values) - set(self.metrics)
        if unknown:
            raise ValueError(f"unknown metrics {sorted(unknown)}; this tally keeps "
                             f"{list(self.metrics)}")
        row = self.per_user.setdefault(user_id, [0.0] * (2 * len(self.metrics)))
        self.changed.add(user_id)
        for i, name in enumerate(self.metrics):
            if name in values:
                row[2 * i] += float(values[name])
                row[2 * i + 1] += 1
        self.lists += new_list

    def take_changed(self) -> dict[str, list[float]]:
        """The rows of the users changed since the last call, and forget them."""
        rows = {user: list(self.per_user[user]) for user in self.changed}
        self.changed.clear()
        return rows

    def merge(self, other: VariantTally) -> VariantTally:
        """A new tally holding both; the same user in both has their sums added."""
        if other.metrics != self.metrics:
            raise ValueError(f"cannot merge tallies of metrics {list(self.metrics)} and "
                             f"{list(other.metrics)}")
        merged = {u: list(row) for u, row in self.per_user.items()}
        for user, row in other.per_user.items():
            mine = merged.setdefault(user, [0.0] * len(row))
            merged[user] = [x + y for x, y in zip(mine, row)]
        return VariantTally(self.metrics, self.lists + other.lists, merged)

    def summary(self) -> dict[str, MetricSummary]:
        """Per metric: the mean over users (each user's own mean over their lists) and its
        variance; users with no value for a metric do not count for it."""
        table = np.asarray(list(self.per_user.values()), dtype=float).reshape(
            len(self.per_user), 2 * len(self.metrics))
        return {name: summarise(table[:, 2 * i], table[:, 2 * i + 1])
                for i, name in enumerate(self.metrics)}

    def to_dict(self, rows: bool = True) -> dict:
        """A plain JSON-able dict (for Redis); ``from_dict`` reads it back. ``rows`` False
        leaves the users' rows out (a worker stores them apart, as they change)."""
        return {"metrics": list(self.metrics), "lists": self.lists,
                "per_user": {u: list(row) for u, row in self.per_user.items()} if rows else {}}

    @classmethod
    def from_dict(cls, data: Mapping) -> VariantTally:
        metrics = tuple(data["metrics"])
        per_user = {str(u): [float(x) for x in row] for u, row in data["per_user"].items()}
        if any(len(row) != 2 * len(metrics) for row in per_user.values()):
            raise ValueError(f"each user's row must hold {2 * len(metrics)} numbers "
                             f"(sum and count per metric of {list(metrics)})")
        return cls(metrics, int(data["lists"]), per_user)


def summarise(sums: np.ndarray, counts: np.ndarray) -> MetricSummary:
    """Per-user ``sums`` and ``counts`` of one metric (aligned arrays) to its summary over
    the users with a count."""
    seen = counts > 0
    means = sums[seen] / counts[seen]
    n = len(means)
    mean = float(means.mean()) if n else math.nan
    variance = float(means.var(ddof=1) / n) if n > 1 else math.nan
    return MetricSummary(n, mean, variance)
