"""Ranking metrics as small pure functions over the rank of the held-out item.

``rank`` is 0-based: the number of candidates ahead of the held-out item, those scored
above it and, of those scored alike, as many as a random order puts ahead (seeded): each
metric is then the one of an arbitrary order of the ties in expectation. Counted half, as
before, ties were credited at the top (a target tied with one item at the head: HR@1 1
where an order gives 0.5) and all or nothing around K.
Every function takes an array of ranks (one per evaluated user) and returns a mean.
"""

from __future__ import annotations

import numpy as np
from scipy.stats import rankdata


def rank_of_target(target_score: np.ndarray, candidate_scores: np.ndarray,
                   ignore: np.ndarray | None = None, seed: int = 0) -> np.ndarray:
    """Per row: how many candidates come before the target; of the ``t`` scored alike, a
    number drawn uniformly from 0..t (``seed``), the target's place in a random order of
    its ties.

    ``target_score``: shape [n]; ``candidate_scores``: [n, c], excluding the target itself;
    ``ignore`` ([n, c] booleans) marks columns that are not candidates (else give them
    ``-inf``). NaN is a model's failure and never its gain: a NaN target ranks last and a
    NaN candidate beats the target (compared naively, NaN beats nothing and loses to
    nothing, so a NaN target was a perfect hit).
    """
    t = target_score[:, None]
    above = (candidate_scores > t) | np.isnan(candidate_scores)
    ties = candidate_scores == t
    if ignore is not None:
        above, ties = above & ~ignore, ties & ~ignore
    count = candidate_scores.shape[1] if ignore is None else (~ignore).sum(axis=1)
    tied = ties.sum(axis=1)
    ahead = np.random.default_rng(seed).integers(0, tied + 1)  # of the ties
    ranks = (above.sum(axis=1) + ahead).astype(np.float64)
    return np.where(np.isnan(target_score), count, ranks)


def hit_rate(ranks: np.ndarray, k: int) -> float:
    """HR@K: share of users whose held-out item is in the top K."""
    return float(np.mean(ranks < k)) if len(ranks) else 0.0


def ndcg(ranks: np.ndarray, k: int) -> float:
    """NDCG@K with one relevant item: 1 / log2(rank + 2) inside the top K, else 0."""
    if not len(ranks):
        return 0.0
    gains = np.where(ranks < k, 1.0 / np.log2(np.floor(ranks) + 2.0), 0.0)
    return float(np.mean(gains))


def mrr(ranks: np.ndarray, k: int | None = None) -> float:
    """Mean reciprocal rank, optionally cut at K (MRR@K counts 0 beyond K)."""
    if not len(ranks):
        return 0.0
    rr = 1.0 / (np.floor(ranks) + 1.0)
    if k is not None:
        rr = np.where(ranks < k, rr, 0.0)
    return float(np.mean(rr))


def auc(ranks: np.ndarray, num_candidates: int | np.ndarray) -> float:
    """AUC with one positive: share of negatives scored below it, averaged over users.
    A case with no candidate (its user met every other item) has no AUC and is left out;
    NaN when no case has one (no sampled negatives asked for), not the worst AUC, 0."""
    counts = np.broadcast_to(np.asarray(num_candidates, dtype=float), np.shape(ranks))
    has = counts > 0
    if not has.any():
        return float("nan")
    return float(np.mean(1.0 - ranks[has] / counts[has]))


def binary_auc(scores: np.ndarray, labels: np.ndarray) -> float:
    """Probability that a positive scores above a negative (ties count half); NaN when
    either class is empty."""
    labels = np.asarray(labels, bool)
    positives, negatives = int(labels.sum()), int((~labels).sum())
    if not positives or not negatives:
        return float("nan")
    ranks = rankdata(scores)  # 1-based, ties averaged
    return float((ranks[labels].sum() - positives * (positives + 1) / 2)
                 / (positives * negatives))


def coverage(recommended: np.ndarray, num_items: int) -> float:
    """Catalogue coverage: distinct items in all top-K lists / catalogue size."""
    ids = np.unique(recommended[recommended > 0])
    return float(len(ids) / num_items) if num_items else 0.0
