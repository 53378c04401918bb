"""The retrieve-then-rerank pipeline, in its two forms side by side: a change to one
belongs next to the other.

- ``PipelineScorer`` (Keras): the retriever (SASRec) embeds the session, FAISS returns
  ``candidates`` items, the ranker (NeuMF) reorders them. The offline protocols, the
  ranker's early stopping and the trainer's gate score this.
- ``ServingBundle`` (NumPy): the same computation over exported weights, for the stream
  workers: encoder (``model.retrieval.encoder``, incremental per user), item index,
  ranker (``model.ranking.scorer``) and the id maps behind one call per micro-batch,
  ``recommend(users, sessions, k)``. No Keras call on this path. Sessions arrive as
  external item ids; items the model has never seen are skipped, and a session with none
  it knows gets ``None`` (the caller serves popularity). Each piece is tested equal to
  its Keras model.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass

import keras
import numpy as np

from model.data import IdMap
from model.ranking.neumf import NeuMF
from model.ranking.scorer import NumpyNeuMF, export_neumf
from model.retrieval.encoder import IncrementalEncoder, NumpySASRec, SessionCache, export_sasrec
from model.retrieval.index import IndexConfig, ItemIndex
from model.retrieval.sasrec import SASRec
from model.retrieval.training import SASRecScorer


class PipelineScorer:
    """SASRec retrieves ``candidates`` items, NeuMF reorders them; the rest keep their
    SASRec order below. ``ServingBundle`` computes the same in NumPy for the workers.

    ``exclude_seen`` drops the user's history from the candidates (what a live feed
    wants). The offline protocol masks history itself but keeps a held-out item the user
    had seen before, so for evaluation history stays in and the depth grows by its length.
    """

    name = "pipeline"

    def __init__(self, sasrec: SASRecScorer, index: ItemIndex, ranker: NeuMF,
                 candidates: int = 100, exclude_seen: bool = True) -> None:
        self.sasrec, self.index, self.ranker, self.candidates = sasrec, index, ranker, candidates
        self.exclude_seen = exclude_seen
        self.table = keras.ops.convert_to_numpy(sasrec.model.item_embeddings())

    @classmethod
    def of(cls, sasrec: SASRec, ranker: NeuMF, candidates: int = 100,
           exclude_seen: bool = True) -> PipelineScorer:
        """From two trained models, e.g. a champion loaded from the registry."""
        index = ItemIndex.build(keras.ops.convert_to_numpy(sasrec.item_embeddings()))
        return cls(SASRecScorer(sasrec), index, ranker, candidates, exclude_seen)

    def rerank(self, users: np.ndarray, sessions: np.ndarray,
               histories: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
        """(ranker scores, item ids), each [batch, depth], best first."""
        if self.exclude_seen:
            scores, ids = self.index.search(sessions, self.candidates, exclude=histories)
        else:
            depth = self.candidates + max((len(h) for h in histories), default=0)
            scores, ids = self.index.search(sessions, min(depth, self.index.num_items))
        k = ids.shape[1]
        logits = self.ranker.predict_on_batch({
            "user": np.repeat(users, k).astype("int32"), "item": ids.ravel().astype("int32"),
            "session": np.repeat(sessions, k, axis=0), "score": scores.reshape(-1, 1)})
        ranked = keras.ops.convert_to_numpy(logits).reshape(ids.shape)
        ranked = np.where(ids > 0, ranked, -np.inf)
        order = np.argsort(-ranked, axis=1, kind="stable")
        return np.take_along_axis(ranked, order, 1), np.take_along_axis(ids, order, 1)

    def score(self, users: np.ndarray, histories: list[np.ndarray]) -> np.ndarray:
        sessions = self.sasrec.embed(histories)
        full = sessions @ self.table.T
        ranked, ids = self.rerank(users, sessions, histories)
        # Candidates sit above every other item, in the ranker's order.
        top = full.max(axis=1, keepdims=True) + 1.0
        rows = np.arange(len(users))[:, None]
        rank_bonus = np.linspace(1.0, 0.0, ids.shape[1])[None, :] * (ids > 0)
        full[rows, ids] = np.where(ids > 0, top + rank_bonus, full[rows, ids])
        return full



def limit_threads(threads: int) -> None:
    """Cap the compute threads of NumPy's BLAS and FAISS's OpenMP in this process.

    A worker serves micro-batches on one core; spare BLAS and OpenMP threads spin after
    each call and compete with the event loop and the broker (one thread each halved the
    model path's cost per event: docs/BENCHMARKS.md, "Streaming worker"). More throughput
    comes from more workers and partitions.
    """
    import faiss
    import threadpoolctl

    threadpoolctl.threadpool_limits(threads)
    faiss.omp_set_num_threads(threads)


@dataclass(frozen=True)
class Recommendation:
    items: list[str]
    scores: list[float]


class ServingBundle:
    """``cached_users`` bounds the per-user encoder caches kept in memory (least recently
    used go first); a user without a usable cache is encoded from their session items."""

    def __init__(self, encoder: NumpySASRec, index: ItemIndex, ranker: NumpyNeuMF | None,
                 users: IdMap, items: IdMap, version: str, candidates: int = 100,
                 cached_users: int = 100_000) -> None:
        self.encoder, self.index, self.ranker = encoder, index, ranker
        self.users, self.items, self.version, self.candidates = users, items, version, candidates
        self.incremental = IncrementalEncoder(encoder)
        self.cached_users = cached_users
        self.caches: OrderedDict[str, SessionCache] = OrderedDict()

    def _encode(self, users: list[str], histories: list[np.ndarray]) -> np.ndarray:
        """Session embeddings, stepping each user's cache by the newest item when the cache
        holds the rest of the session, else rebuilding it. A user twice in one batch is
        stepped in rounds, in order."""
        out = np.zeros((len(users), self.encoder.items.shape[1]), np.float32)
        rounds: list[list[int]] = []
        seen: dict[str, int] = {}
        for row, user in enumerate(users):
            k = seen.get(user, 0)
            seen[user] = k + 1
            if k == len(rounds):
                rounds.append([])
            rounds[k].append(row)
        for rows in rounds:
            caches = []
            for row in rows:
                user, hist = users[row], histories[row].tolist()
                cache = self.caches.pop(user, None)
                n = len(cache.items) if cache is not None else 0
                if cache is None or cache.items != hist[len(hist) - 1 - n:len(hist) - 1] or not n:
                    cache = self.incremental.prefill(hist[:-1])
                self.caches[user] = cache
                caches.append(cache)
            out[rows] = self.incremental.step(caches, np.array([histories[r][-1] for r in rows]))
        while len(self.caches) > self.cached_users:
            self.caches.popitem(last=False)
        return out

    @classmethod
    def from_models(cls, sasrec: SASRec, ranker: NeuMF | None, users: IdMap, items: IdMap,
                    version: str, index_cfg: IndexConfig = IndexConfig(),
                    candidates: int = 100) -> ServingBundle:
        encoder = export_sasrec(sasrec)
        return cls(encoder, ItemIndex.build(encoder.items, index_cfg),
                   export_neumf(ranker) if ranker is not None else None, users, items,
                   version, candidates)

    def recommend(self, users: Sequence[str], sessions: Sequence[Sequence[str]], k: int = 10,
                  exclude_seen: bool = True, timings: dict[str, float] | None = None
                  ) -> list[Recommendation | None]:
        """Lists for a micro-batch; ``timings``, when given, receives the seconds spent in
        each stage (encode, retrieve, rank)."""
        clock = _Stopwatch(timings)
        histories = [np.array([i for i in (self.items.get(x) for x in s) if i], dtype=np.int64)
                     for s in sessions]
        known = [r for r, h in enumerate(histories) if len(h)]
        out: list[Recommendation | None] = [None] * len(histories)
        if not known:
            return out
        hist = [histories[r] for r in known]
        emb = self._encode([users[r] for r in known], hist)
        clock.lap("encode")
        depth = self.candidates if self.ranker is not None else k
        scores, ids = self.index.search(emb, depth, exclude=hist if exclude_seen else None)
        clock.lap("retrieve")
        if self.ranker is not None:
            user_ids = np.array([self.users.get(users[r]) for r in known], dtype=np.int32)
            logits = self.ranker.score(user_ids, ids, emb, np.where(ids > 0, scores, 0))
            scores = np.where(ids > 0, logits, -np.inf)
        order = np.argsort(-scores, axis=1, kind="stable")[:, :k]
        for row, r in enumerate(known):
            top = [c for c in order[row] if ids[row, c] > 0]
            out[r] = Recommendation([self.items.ids[ids[row, c] - 1] for c in top],
                                    [float(scores[row, c]) for c in top])
        clock.lap("rank")
        return out


class _Stopwatch:
    """Adds the seconds since the last lap to ``into[stage]``; does nothing without ``into``."""

    def __init__(self, into: dict[str, float] | None) -> None:
        self.into, self.last = into, time.perf_counter()

    def lap(self, stage: str) -> None:
        if self.into is not None:
            now = time.perf_counter()
            self.into[stage] = self.into.get(stage, 0.0) + now - self.last
            self.last = now
