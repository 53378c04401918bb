"""Baselines in the same harness: popularity, item-kNN, matrix factorization (implicit ALS).

Each has ``fit(train_histories, num_items)`` and ``score(users, histories)``.
"""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp
from implicit.cpu.als import AlternatingLeastSquares
from threadpoolctl import threadpool_limits

from model.data import Side, item_counts


def _interaction_matrix(histories: list[np.ndarray], num_items: int) -> sp.csr_matrix:
    """Binary [rows, num_items + 1] matrix: row r has a 1 for each item in histories[r]."""
    rows = np.repeat(np.arange(len(histories)), [len(h) for h in histories])
    cols = np.concatenate(histories) if histories else np.empty(0, dtype=np.int64)
    m = sp.csr_matrix((np.ones(len(cols), np.float32), (rows, cols)),
                      shape=(len(histories), num_items + 1))
    m.data[:] = 1.0  # duplicates summed by the constructor count once
    return m


class Popularity:
    """Scores every item by how often it was interacted with in training."""

    name = "popularity"

    def fit(self, histories: list[np.ndarray], num_items: int) -> Popularity:
        self.counts = item_counts(histories, num_items).astype(np.float32)
        return self

    def score(self, users: np.ndarray, histories: list[np.ndarray],
              side: Side | None = None) -> np.ndarray:
        return np.broadcast_to(self.counts, (len(histories), len(self.counts)))


class ItemKNN:
    """Cosine similarity of items over co-occurrence in users' (or sessions') histories;
    a history scores an item by the summed similarity of the item to its last ``window``
    items (all when None)."""

    name = "itemknn"

    def __init__(self, window: int | None = None, shrink: float = 10.0) -> None:
        self.window = window
        self.shrink = shrink

    def fit(self, histories: list[np.ndarray], num_items: int) -> ItemKNN:
        x = _interaction_matrix(histories, num_items)
        co = (x.T @ x).tocsr()
        co.setdiag(0)
        co.eliminate_zeros()
        norms = np.sqrt(np.asarray(x.sum(axis=0)).ravel())
        co = co.tocoo()
        co.data = co.data / (norms[co.row] * norms[co.col] + self.shrink)
        self.sim = co.tocsr()
        self.num_items = num_items
        return self

    def score(self, users: np.ndarray, histories: list[np.ndarray],
              side: Side | None = None) -> np.ndarray:
        recent = [h[-self.window:] if self.window else h for h in histories]
        return np.asarray((_interaction_matrix(recent, self.num_items) @ self.sim).todense())


class ImplicitALS:
    """Matrix factorization for implicit feedback (Hu, Koren & Volinsky 2008), by ALS:
    the ``implicit`` library's CPU solver, confidence 1 + alpha for observed pairs. Scores
    are dot products of user and item factors.
    """

    name = "mf"

    def __init__(self, factors: int = 64, reg: float = 0.1, alpha: float = 20.0,
                 iterations: int = 15, seed: int = 0) -> None:
        self.factors, self.reg, self.alpha, self.iterations, self.seed = (
            factors, reg, alpha, iterations, seed)

    def fit(self, histories: list[np.ndarray], num_items: int) -> ImplicitALS:
        # Its solver parallelises over rows itself; a threaded BLAS under it only contends
        # (the library checks for exactly this when the model is made, and warns).
        with threadpool_limits(1, "blas"):
            # Its confidence is alpha * r; for 0/1 data 1 + alpha is Hu et al.'s 1 + alpha r.
            als = AlternatingLeastSquares(factors=self.factors, regularization=self.reg,
                                          alpha=1.0 + self.alpha, iterations=self.iterations,
                                          calculate_training_loss=False, random_state=self.seed)
            als.fit(_interaction_matrix(histories, num_items), show_progress=False)
        self.als, self.num_items = als, num_items
        self.item_factors = als.item_factors
        return self

    def score(self, users: np.ndarray, histories: list[np.ndarray],
              side: Side | None = None) -> np.ndarray:
        """Each user's factors are solved from the history given, the least squares step
        of ALS with the item factors held: a new session (user 0, as the next-click
        protocol has) has no trained row, and a known user's history may have grown
        since training (the test stage adds the validation item, which SASRec and
        item-kNN read too). The stored rows would have scored both from the past."""
        with threadpool_limits(1, "blas"):
            factors = self.als.recalculate_user(np.arange(len(users)), _interaction_matrix(
                histories, self.num_items))
        return factors @ self.item_factors.T
