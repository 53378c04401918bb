"""The ranker's candidate lists and its inputs for them, built one way for training, the
offline pipeline, the gate and serving: ``candidate_lists`` chooses the items, and
``Candidates`` holds their features (``flat`` for the Keras model; the NumPy serving path,
``model.pipeline.ServingBundle``, feeds ``NumpyNeuMF`` the same arrays unflattened), so a
feature means the same everywhere (a test holds them equal).
"""

from __future__ import annotations

from dataclasses import dataclass, fields

import numpy as np

from model.data import Side
from model.features import FeatureSpec, pair_features
from model.ranking.neumf import NeuMF
from model.retrieval.index import ItemIndex

RECENT_ITEMS = 20  # a returning user's newest distinct items, added to the candidates


def candidate_lists(index: ItemIndex, table: np.ndarray, sessions: np.ndarray,
                    histories: list[np.ndarray], depth: int, recent: int = 0,
                    window: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """(retrieval scores, item ids), each [batch, depth + recent], best score first: the
    ``depth`` nearest items the user has not met, and, with ``recent``, the user's
    ``recent`` newest distinct items among their newest ``window`` (0: all; a second
    source, for logs where users return to items: retrieval alone ranks them anywhere).
    Sorted by score, so a position is a rank among the candidates wherever this runs.
    Empty slots have id 0 and score -inf."""
    scores, ids = index.search(sessions, depth, exclude=histories)
    if not recent:
        return scores, ids
    back = np.zeros((len(histories), recent), np.int64)
    for row, hist in enumerate(histories):
        newest = _newest_distinct(hist[-window:] if window else hist, recent)
        back[row, :len(newest)] = newest
    own = np.where(back > 0, np.einsum("bd,brd->br", sessions, table[back]), -np.inf)
    scores, ids = np.concatenate([scores, own], 1), np.concatenate([ids, back], 1)
    order = np.argsort(-scores, axis=1, kind="stable")
    return np.take_along_axis(scores, order, 1), np.take_along_axis(ids, order, 1)


def served_scores(found: Candidates, combined: np.ndarray, retrieval_order: bool
                  ) -> np.ndarray:
    """The scores [batch, width] that order ``found``'s lists: ``combined`` (the ranker's
    heads combined, per candidate); empty slots score -inf. With ``retrieval_order``, the
    fresh candidates' scores (those the user has not met) are handed out again in
    retrieval order: the ranker decides where the user's own items go among the fresh
    ones, and the retriever keeps its order among those.

    The ranker learns its order among fresh items from the cross-fitted retrievers'
    lists, and there it ranked next items below SASRec's own order: full NDCG@10 on new
    targets -17% on REES46, -25% on DIGINETICA (docs/BENCHMARKS.md; with the score's
    weight held at 1 it did no better). So ``fit_ranker`` chooses the order on validation
    (``NeuMF.retrieval_order``). With it, a list of fresh items only (a live list that
    leaves the session's items out, ``STREAMREC_RECS_EXCLUDE_SEEN``) is in the retriever's
    order.

    A row holding a NaN keeps its scores as they are: handed out again, a NaN could land
    on an empty slot and leave the list, and a poisoned ranker must be seen serving NaN."""
    valid = found.ids > 0
    ranked = np.where(valid, combined, -np.inf)
    if not retrieval_order:
        return ranked
    fresh = valid & (found.pair[..., 1] == 0)
    best_first = -np.sort(-np.where(fresh, ranked, -np.inf), axis=1)
    nth = np.maximum(np.cumsum(fresh, axis=1) - 1, 0)
    handed = np.where(fresh, np.take_along_axis(best_first, nth, 1), ranked)
    return np.where(np.isnan(ranked).any(axis=1, keepdims=True), ranked, handed)


def _newest_distinct(history: np.ndarray, n: int) -> np.ndarray:
    """Up to ``n`` distinct items of ``history``, newest first."""
    items, first = np.unique(np.asarray(history)[::-1], return_index=True)
    return items[np.argsort(first)][:n]


@dataclass(frozen=True)
class Candidates:
    """Candidate lists [batch, width] with what the ranker reads of each."""

    users: np.ndarray      # [batch] dense user ids (0 = unknown)
    sessions: np.ndarray   # [batch, d] session embeddings
    ids: np.ndarray        # [batch, width] item ids, retrieval order (0 = none)
    scores: np.ndarray     # [batch, width] retrieval scores
    context: np.ndarray    # [batch, spec.dense_dim]: the newest event's features
    categories: np.ndarray  # [batch, keys]: its hashed categorical context
    pair: np.ndarray       # [batch, width, PAIR_FEATURES]

    @classmethod
    def build(cls, spec: FeatureSpec, users: np.ndarray, sessions: np.ndarray,
              ids: np.ndarray, scores: np.ndarray, histories: list[np.ndarray],
              side: Side | None, seen_excluded: bool = False, window: int = 0
              ) -> Candidates:
        """Features from ``side`` (unknown types, times and context without one).
        ``seen_excluded``: the candidates hold none of the history (the serving default),
        so the seen-before features are zero without looking them up. ``window``: the
        seen-before features read each history's newest ``window`` items (0: all), so a
        model trained on whole logs reads what a worker's bounded session holds."""
        n = len(histories)
        if side is None:
            empty = [np.zeros(0, np.int64)] * n
            side = Side(empty, empty, np.full((n, len(spec.numeric)), np.nan),
                        np.zeros((n, len(spec.categorical)), np.int64))
        cut = slice(-window, None) if window else slice(None)
        return cls(users, sessions, ids, np.where(ids > 0, scores, 0.0), side.dense(spec),
                   side.cats, pair_features(ids, [h[:0] if seen_excluded else h[cut]
                                                  for h in histories],
                                            [t[cut] for t in side.types],
                                            [t[cut] for t in side.times],
                                            side.now(), spec.conversion_codes))

    def rows(self, which: np.ndarray) -> Candidates:
        """The lists ``which`` selects (a boolean mask or indices), in that order."""
        return Candidates(self.users[which], self.sessions[which], self.ids[which],
                          self.scores[which], self.context[which], self.categories[which],
                          self.pair[which])

    def at(self, lists: np.ndarray, positions: np.ndarray) -> Candidates:
        """Lists of one candidate each: position ``positions[i]`` of list ``lists[i]``."""
        return Candidates(self.users[lists], self.sessions[lists],
                          self.ids[lists, positions][:, None],
                          self.scores[lists, positions][:, None], self.context[lists],
                          self.categories[lists], self.pair[lists, positions][:, None])

    @classmethod
    def concat(cls, parts: list[Candidates]) -> Candidates:
        """The lists of ``parts``, one after another (all of one width)."""
        return cls(*(np.concatenate([getattr(p, f.name) for p in parts])
                     for f in fields(cls)))

    def flat(self, model: NeuMF) -> dict[str, np.ndarray]:
        """One row per (list, candidate), with the inputs ``model`` was built for."""
        width = self.ids.shape[1]
        out = {"user": np.repeat(self.users, width).astype("int32"),
               "item": self.ids.ravel().astype("int32")}
        if model.session_dim:
            out["session"] = np.repeat(self.sessions, width, axis=0)
        if model.use_score:
            out["score"] = self.scores.reshape(-1, 1).astype("float32")
        if model.context_dim:
            out["context"] = np.repeat(self.context, width, axis=0)
        if model.categories:
            out["categories"] = np.repeat(self.categories, width, axis=0).astype("int32")
        if model.pair_dim:
            # A model trained before a feature was appended reads the ones it knew.
            out["pair"] = self.pair[..., :model.pair_dim].reshape(-1, model.pair_dim)
        return out
