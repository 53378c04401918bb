"""Training NeuMF two ways: as the paper's user/item model, and as the ranker.

- ``fit_neumf``: the paper's setting (user, item; 4 uniform negatives per positive),
  optionally pretraining GMF and MLP before fusing them.
- ``fit_ranker``: NeuMF as a reranker of SASRec candidates: the true next item against
  hard negatives drawn from SASRec's own top candidates, with the session embedding and
  the retrieval score as inputs, exactly what it sees when serving. The examples are the
  last ``holdout`` items of each training sequence, scored by a second SASRec trained
  without them: on items it was trained on, SASRec's scores are over-confident, and a
  ranker trained on those learns to trust them too much (measured: it lost to SASRec).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, replace
from typing import Any

import keras
import numpy as np

from model.data import LeaveLastOut
from model.fitting import EpochCallback, TrainResult, fit_with_early_stopping
from model.pipeline import PipelineScorer
from model.ranking.neumf import NeuMF, fuse_pretrained, start_from_score
from model.retrieval.index import ItemIndex
from model.retrieval.training import SASRecConfig, SASRecScorer, fit_sasrec
from model.sampling import SeenItems
from model.weights import copy_weights


@dataclass(frozen=True)
class NeuMFConfig:
    gmf_dim: int = 32
    mlp_layers: tuple[int, ...] = (64, 32, 16)
    negatives: int = 4
    epochs: int = 30
    batch_size: int = 1024
    learning_rate: float = 1e-3
    pretrain: bool = False
    eval_every: int = 2
    patience: int = 3
    unknown_user_rate: float = 0.05  # share of examples trained as the unknown user (id 0)
    candidates: int = 100            # ranker: retrieval depth it reranks
    holdout: int = 5                 # ranker: items per user held out of the retriever for it
    seed: int = 42

    def to_dict(self) -> dict[str, object]:
        return asdict(self)


def _compile(model: NeuMF, lr: float) -> NeuMF:
    model.compile(optimizer=keras.optimizers.Adam(lr),
                  loss=keras.losses.BinaryCrossentropy(from_logits=True))
    return model


def _drop_users(users: np.ndarray, rate: float, rng: np.random.Generator) -> np.ndarray:
    return np.where(rng.random(len(users)) < rate, 0, users)


class NeuMFScorer:
    """Scores every item for each user with a user/item NeuMF."""

    name = "neumf"

    def __init__(self, model: NeuMF) -> None:
        self.model = model

    def score(self, users: np.ndarray, histories: list[np.ndarray]) -> np.ndarray:
        n = self.model.num_items + 1
        u = np.repeat(users, n).astype("int32")
        i = np.tile(np.arange(n), len(users)).astype("int32")
        logits = self.model.predict_on_batch({"user": u, "item": i})
        return keras.ops.convert_to_numpy(logits).reshape(len(users), n)


def fit_neumf(split: LeaveLastOut, cfg: NeuMFConfig = NeuMFConfig(),
              on_epoch: EpochCallback | None = None) -> TrainResult:
    keras.utils.set_random_seed(cfg.seed)
    rng = np.random.default_rng(cfg.seed)
    seqs = split.sequences
    users = np.repeat(np.arange(1, seqs.num_users + 1), [len(h) for h in split.train])
    items = np.concatenate(split.train)
    seen = SeenItems(split.train, seqs.num_items)

    def epoch_data(epoch: int) -> tuple[dict[str, np.ndarray], np.ndarray]:
        neg = seen.sample(users - 1, cfg.negatives, rng).ravel()
        u = np.concatenate([users, np.repeat(users, cfg.negatives)])
        return ({"user": _drop_users(u, cfg.unknown_user_rate, rng),
                 "item": np.concatenate([items, neg])},
                np.concatenate([np.ones(len(items)), np.zeros(len(neg))]).astype("float32"))

    def train(branch: str, lr: float, model: NeuMF | None = None) -> TrainResult:
        model = model or NeuMF(seqs.num_users, seqs.num_items, cfg.gmf_dim, cfg.mlp_layers,
                               branch=branch)
        return fit_with_early_stopping(
            _compile(model, lr), epoch_data, NeuMFScorer(model), split, epochs=cfg.epochs,
            eval_every=cfg.eval_every, patience=cfg.patience, batch_size=cfg.batch_size,
            on_epoch=on_epoch)

    if not cfg.pretrain:
        return train("both", cfg.learning_rate)
    gmf = train("gmf", cfg.learning_rate).model
    mlp = train("mlp", cfg.learning_rate).model
    return train("both", cfg.learning_rate / 10, fuse_pretrained(gmf, mlp))


def ranker_examples(histories: list[np.ndarray], sasrec: SASRecScorer, index: ItemIndex,
                    cfg: NeuMFConfig, rng: np.random.Generator) -> dict[str, np.ndarray]:
    """For the last ``cfg.holdout`` positions of each history: the true next item and
    hard negatives from the retriever's candidates, with session and score features."""
    users, prefixes, targets = [], [], []
    for u, h in enumerate(histories, start=1):
        for t in range(max(1, len(h) - cfg.holdout), len(h)):
            users.append(u), prefixes.append(h[:t]), targets.append(h[t])
    users_a, targets_a = np.asarray(users), np.asarray(targets)
    sessions = sasrec.embed(prefixes).astype("float32")
    scores, ids = index.search(sessions, cfg.candidates, exclude=prefixes)
    table = keras.ops.convert_to_numpy(sasrec.model.item_embeddings())
    pos_scores = np.einsum("bd,bd->b", sessions, table[targets_a])
    # Hard negatives: drawn from the candidate list, never the true next item.
    pick = rng.integers(0, cfg.candidates, size=(len(users), cfg.negatives))
    neg_ids = np.take_along_axis(ids, pick, 1)
    neg_scores = np.take_along_axis(scores, pick, 1)
    valid = (neg_ids != targets_a[:, None]) & (neg_ids > 0)
    k = cfg.negatives
    return {
        "user": np.concatenate([users_a, np.repeat(users_a, k)[valid.ravel()]]),
        "item": np.concatenate([targets_a, neg_ids.ravel()[valid.ravel()]]),
        "session": np.concatenate([sessions, np.repeat(sessions, k, 0)[valid.ravel()]]),
        "score": np.concatenate([pos_scores, neg_scores.ravel()[valid.ravel()]]).reshape(-1, 1),
        "label": np.concatenate([np.ones(len(users)), np.zeros(int(valid.sum()))]),
    }


def fit_ranker(split: LeaveLastOut, sasrec: SASRecScorer, index: ItemIndex,
               sasrec_cfg: SASRecConfig, sasrec_epochs: int, cfg: NeuMFConfig = NeuMFConfig(),
               on_epoch: EpochCallback | None = None, init: NeuMF | None = None) -> TrainResult:
    """Train the reranker for ``sasrec`` (trained with ``sasrec_cfg`` for ``sasrec_epochs``);
    ``init`` warm-starts it from another ranker's weights."""
    keras.utils.set_random_seed(cfg.seed)
    rng = np.random.default_rng(cfg.seed)
    seqs = split.sequences
    shorter = replace(split, train=[h[:-cfg.holdout] if len(h) > cfg.holdout + 1 else h[:1]
                                    for h in split.train])
    retriever = fit_sasrec(shorter, replace(sasrec_cfg, epochs=max(sasrec_epochs, 1),
                                            eval_every=10**6, patience=10**6)).model
    retriever_index = ItemIndex.build(keras.ops.convert_to_numpy(retriever.item_embeddings()))
    data = ranker_examples(split.train, SASRecScorer(retriever), retriever_index, cfg, rng)
    labels = data.pop("label").astype("float32")
    model = _compile(start_from_score(NeuMF(
        seqs.num_users, seqs.num_items, cfg.gmf_dim, cfg.mlp_layers,
        session_dim=data["session"].shape[1], use_score=True)), cfg.learning_rate)
    if init is not None:
        copy_weights(model, init)

    def epoch_data(epoch: int) -> tuple[dict[str, Any], np.ndarray]:
        return {**data, "user": _drop_users(data["user"], cfg.unknown_user_rate, rng)}, labels

    return fit_with_early_stopping(model, epoch_data,
                                   PipelineScorer(sasrec, index, model, cfg.candidates,
                                                  exclude_seen=False), split,
                                   epochs=cfg.epochs, eval_every=cfg.eval_every,
                                   patience=cfg.patience, batch_size=cfg.batch_size,
                                   on_epoch=on_epoch)
