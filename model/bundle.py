"""The serving bundle: everything a stream worker needs to turn sessions into lists.

Encoder (NumPy over exported SASRec weights), item index (FAISS), NeuMF reranker and the
id maps, behind one call per micro-batch: ``recommend(users, sessions, k)``. The reranker
is a Keras model, called once per micro-batch (never per event). Sessions arrive as
external item ids; items the model has never seen are skipped, and a session with none
it knows gets ``None`` (the caller serves popularity).
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass

import keras
import numpy as np

from model.data import IdMap
from model.neumf import NeuMF
from model.retrieval import IndexConfig, ItemIndex
from model.sasrec import SASRec
from model.serving import IncrementalEncoder, NumpySASRec, SessionCache, export_sasrec


@dataclass(frozen=True)
class Recommendation:
    items: list[str]
    scores: list[float]


class ServingBundle:
    """``cached_users`` bounds the per-user encoder caches kept in memory (least recently
    used go first); a user without a usable cache is encoded from their session items."""

    def __init__(self, encoder: NumpySASRec, index: ItemIndex, ranker: NeuMF | None,
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
        return cls(encoder, ItemIndex.build(encoder.items, index_cfg), ranker, users, items,
                   version, candidates)

    def recommend(self, users: Sequence[str], sessions: Sequence[Sequence[str]], k: int = 10,
                  exclude_seen: bool = True) -> list[Recommendation | None]:
        histories = [np.array([i for i in (self.items.get(x) for x in s) if i], dtype=np.int64)
                     for s in sessions]
        known = [r for r, h in enumerate(histories) if len(h)]
        out: list[Recommendation | None] = [None] * len(histories)
        if not known:
            return out
        hist = [histories[r] for r in known]
        emb = self._encode([users[r] for r in known], hist)
        depth = self.candidates if self.ranker is not None else k
        scores, ids = self.index.search(emb, depth, exclude=hist if exclude_seen else None)
        if self.ranker is not None:
            user_ids = np.array([self.users.get(users[r]) for r in known], dtype=np.int32)
            logits = self.ranker.predict_on_batch({
                "user": np.repeat(user_ids, depth), "item": ids.ravel().astype(np.int32),
                "session": np.repeat(emb, depth, axis=0), "score": scores.reshape(-1, 1)})
            scores = np.where(ids > 0, keras.ops.convert_to_numpy(logits).reshape(ids.shape),
                              -np.inf)
        order = np.argsort(-scores, axis=1, kind="stable")[:, :k]
        for row, r in enumerate(known):
            top = [c for c in order[row] if ids[row, c] > 0]
            out[r] = Recommendation([self.items.ids[ids[row, c] - 1] for c in top],
                                    [float(scores[row, c]) for c in top])
        return out
