"""The serving bundle: everything a stream worker needs to turn sessions into lists.

Encoder (NumPy over exported SASRec weights), item index (FAISS), NeuMF reranker and the
id maps, behind one call per micro-batch: ``recommend(users, sessions, k)``. The reranker
is a Keras model, called once per micro-batch (never per event). Sessions arrive as
external item ids; items the model has never seen are skipped, and a session with none
it knows gets ``None`` (the caller serves popularity).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import keras
import numpy as np

from model.data import IdMap, pad_left
from model.neumf import NeuMF
from model.retrieval import IndexConfig, ItemIndex
from model.sasrec import SASRec
from model.serving import NumpySASRec, export_sasrec


@dataclass(frozen=True)
class Recommendation:
    items: list[str]
    scores: list[float]


class ServingBundle:
    def __init__(self, encoder: NumpySASRec, index: ItemIndex, ranker: NeuMF | None,
                 users: IdMap, items: IdMap, version: str, candidates: int = 100) -> None:
        self.encoder, self.index, self.ranker = encoder, index, ranker
        self.users, self.items, self.version, self.candidates = users, items, version, candidates

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
        seq = np.stack([pad_left(h, self.encoder.max_len) for h in hist])
        emb = self.encoder.encode(seq)
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
