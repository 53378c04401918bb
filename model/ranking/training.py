"""Training NeuMF two ways: as the paper's user/item model, and as the ranker.

- ``fit_neumf``: the paper's setting (user, item; 4 uniform negatives per positive),
  optionally pretraining GMF and MLP before fusing them.
- ``fit_ranker``: NeuMF as the multi-task reranker of SASRec candidates: the candidate
  lists it reranks when serving, with every input it reads there
  (``model.ranking.inputs``), cross-fitted so each list is scored by a SASRec that never
  saw it (``cross_fitted_examples``).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field, replace
from typing import Any

import keras
import numpy as np

from model.content import ContentSpec, carry_numeric_rows
from model.data import LeaveLastOut, Sequences, Side
from model.evaluation.protocols import evaluate
from model.features import HEAD_WEIGHTS, TASK_WEIGHTS, TASKS, FeatureSpec
from model.fitting import (
    EpochCallback,
    TrainResult,
    fit_with_early_stopping,
    predict_rows,
    start_training,
)
from model.pipeline import PipelineScorer
from model.ranking.inputs import RECENT_ITEMS, Candidates, candidate_lists
from model.ranking.neumf import (
    ID_TABLES,
    NeuMF,
    fuse_pretrained,
    start_from_score,
    start_given,
)
from model.retrieval.index import ItemIndex
from model.retrieval.training import SASRecConfig, SASRecScorer, fit_sasrec
from model.sampling import SeenItems
from model.weights import copy_weights

log = logging.getLogger("streamrec.train")


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
    lists_per_user: int = 20         # ranker: training lists per user (newest positions)
    context: bool = True             # ranker: the newest event's context features
    id_l2: float = 0.0               # ranker: L2 on user and item embeddings
    session: bool = True             # ranker: the session embedding as an input
    content: bool = True             # ranker: item content, when the log has a catalogue
    id_dropout: float = 0.3          # ranker: share of items trained on content alone
    given_epochs: int = 20           # ranker: epochs fitting the conditional heads alone
    # ranker: a history's newest items its seen-before features read, as a worker's
    # sessions keep them (STREAMREC_SESSION_MAX_ITEMS); 0: all
    seen_window: int = 50
    # Ranker heads: conversion is dropped when the log has no conversion; the losses sum
    # with task_weights; served scores combine the heads with head_weights.
    tasks: tuple[str, ...] = TASKS
    task_weights: Mapping[str, float] = field(default_factory=lambda: dict(TASK_WEIGHTS))
    head_weights: Mapping[str, float] = field(default_factory=lambda: dict(HEAD_WEIGHTS))
    seed: int = 42

    def to_dict(self) -> dict[str, object]:
        return asdict(self)


def _compile(model: NeuMF, lr: float, loss: Any = None) -> NeuMF:
    model.compile(optimizer=keras.optimizers.Adam(lr),
                  loss=loss or keras.losses.BinaryCrossentropy(from_logits=True))
    return model


EMPTY = -1.0  # a list label's next column at an empty slot (``ranker_examples``)


@keras.saving.register_keras_serializable(package="streamrec")
class ListwiseLoss(keras.losses.Loss):
    """The multi-task ranker's joint loss over lists of ``width`` candidates (rows of
    ``width`` consecutive examples): the ``next`` head (column 0) by softmax cross-entropy
    of the true item against the list, the loss SASRec itself trains with, so a ranker
    started from the retrieval score starts calibrated; every other head, conditional
    (``NeuMF(conditional=True)``), by binary cross-entropy on the true item alone: whether
    the next interaction, being with this item, converted. Heads are summed with fixed
    ``weights``.

    A slot labelled ``EMPTY`` in column 0 (no candidate: id 0, which serving drops) is
    left out of the softmax. Counted as a negative, it held a third of the softmax's mass
    at the ranker's start on a toy log, and pulled on weights for a slot never served."""

    def __init__(self, width: int, weights: list[float], **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.width, self.weights = int(width), [float(w) for w in weights]

    def call(self, y_true: Any, y_pred: Any) -> Any:
        ops = keras.ops
        tasks = len(self.weights)
        y_true = ops.reshape(ops.cast(y_true, "float32"), (-1, self.width, tasks))
        y_pred = ops.reshape(y_pred, (-1, self.width, tasks))
        hits = ops.maximum(y_true[..., 0], 0.0)
        logits = ops.where(y_true[..., 0] == EMPTY, -1e9, y_pred[..., 0])
        ce = -ops.sum(hits * ops.log_softmax(logits, axis=1), axis=1)
        loss = self.weights[0] * ce / ops.maximum(ops.sum(hits, axis=1), 1.0)
        if tasks > 1:
            bce = ops.binary_crossentropy(y_true[..., 1:], y_pred[..., 1:], from_logits=True)
            given = ops.sum(hits[..., None] * bce, axis=1) / ops.maximum(
                ops.sum(hits, axis=1, keepdims=True), 1.0)
            loss = loss + ops.sum(given * ops.convert_to_tensor(self.weights[1:]), axis=-1)
        return loss

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "width": self.width, "weights": self.weights}


def _drop_users(users: np.ndarray, rate: float, rng: np.random.Generator,
                width: int = 1) -> np.ndarray:
    """``users`` with each run of ``width`` rows (one list's candidates) trained as the
    unknown user (0) at ``rate``: a new user is scored as user 0 on every candidate, so a
    list is dropped whole, not candidate by candidate."""
    dropped = np.repeat(rng.random(len(users) // width) < rate, width)
    return np.where(dropped, 0, users)


class NeuMFScorer:
    """Scores every item for each user with a user/item NeuMF."""

    name = "neumf"

    def __init__(self, model: NeuMF) -> None:
        self.model = model

    def score(self, users: np.ndarray, histories: list[np.ndarray],
              side: Side | None = None) -> np.ndarray:
        n = self.model.num_items + 1
        u = np.repeat(users, n).astype("int32")
        i = np.tile(np.arange(n), len(users)).astype("int32")
        return predict_rows(self.model, {"user": u, "item": i}).reshape(len(users), n)


def fit_neumf(split: LeaveLastOut, cfg: NeuMFConfig = NeuMFConfig(),
              on_epoch: EpochCallback | None = None) -> TrainResult:
    start_training(cfg.seed)
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


def ranker_examples(seqs: Sequences, histories: list[np.ndarray], sasrec: SASRecScorer,
                    index: ItemIndex, cfg: NeuMFConfig) -> tuple[Candidates, np.ndarray]:
    """For the newest ``cfg.lists_per_user`` positions of each history (scored by a
    retriever that never saw that history), the candidate list the pipeline would rerank
    there (``candidate_lists``: the retriever's ``cfg.candidates`` nearest unseen items
    and the user's newest items), with every ranker feature. Returns the lists and their
    labels [lists, width, 2]: next (1 for the true item, ``EMPTY`` for a slot without a
    candidate) and conversion (1 when the true item's event converted).

    The lists are whole, as served: a ranker trained on a few sampled negatives learned
    to tell the answer from far candidates, which the retrieval score already does, and
    lost validation NDCG from its starting point (docs/BENCHMARKS.md, issue #14). A
    position whose true item is not among its candidates makes no list: nothing in it
    could be ranked right."""
    users, lengths = [], []
    for u, h in enumerate(histories, start=1):
        for t in range(max(1, len(h) - cfg.lists_per_user), len(h)):
            users.append(u), lengths.append(t)
    users_a = np.asarray(users)
    prefixes = [histories[u - 1][:t] for u, t in zip(users, lengths)]
    targets = np.array([histories[u - 1][t] for u, t in zip(users, lengths)])
    side = seqs.side(users_a, lengths)
    sessions = sasrec.embed(prefixes, side).astype("float32")
    table = keras.ops.convert_to_numpy(sasrec.model.item_embeddings())
    scores, ids = candidate_lists(index, table, sessions, prefixes, cfg.candidates,
                                  RECENT_ITEMS, cfg.seen_window)
    hits = ids == targets[:, None]
    keep = hits.any(axis=1)
    found = Candidates.build(seqs.spec, users_a, sessions, ids, scores, prefixes, side,
                             window=cfg.seen_window)
    labels = np.stack([np.where(ids > 0, hits, EMPTY),
                       hits & seqs.labels(users_a, lengths)[:, None]], axis=-1)
    return found.rows(keep), labels[keep].astype("float32")


def cross_fit_shortfall(train: list[np.ndarray]) -> str | None:
    """Why ``cross_fitted_examples`` cannot run on these training histories, or None: each
    half of the users (every other one) trains a retriever, which needs a history of two
    items. A log of one heavy user among one-visit users failed there, after the main
    retriever had trained, with an error that blamed every user."""
    for fold in (0, 1):
        if not any(len(h) >= 2 for h in train[fold::2]):
            return ("the ranker's training lists come from two retrievers, each trained on "
                    "every other user, and one of those halves has no user with two "
                    "training items")
    return None


def cross_fitted_examples(split: LeaveLastOut, sasrec_cfg: SASRecConfig, sasrec_epochs: int,
                          cfg: NeuMFConfig) -> tuple[Candidates, np.ndarray]:
    """The ranker's training lists, cross-fitted: users split in two halves, a retriever
    trained on each half scores the other half's histories, so every list carries the
    scores of a retriever that never saw it, as at serving time.

    Scores of a retriever on its own training items are over-confident, and a ranker
    trained on them learns to trust them too much (measured on REES46: validation NDCG@10
    0.376 -> 0.27). Holding out each user's newest items instead left a few lists per user
    (1,780 on REES46), too few: the ranker memorised them and lost on validation."""
    half = np.arange(len(split.train)) % 2
    parts = []
    for fold in (0, 1):
        others = [h if half[i] != fold else h[:0] for i, h in enumerate(split.train)]
        retriever = fit_sasrec(replace(split, train=others), replace(
            sasrec_cfg, epochs=sasrec_epochs, eval_every=10**6, patience=10**6)).model
        index = ItemIndex.build(keras.ops.convert_to_numpy(retriever.item_embeddings()))
        mine = [h if half[i] == fold else h[:0] for i, h in enumerate(split.train)]
        parts.append(ranker_examples(split.sequences, mine, SASRecScorer(retriever), index,
                                     cfg))
    return (Candidates.concat([p[0] for p in parts]),
            np.concatenate([p[1] for p in parts]))


def fit_ranker(split: LeaveLastOut, sasrec: SASRecScorer, index: ItemIndex,
               sasrec_cfg: SASRecConfig, sasrec_epochs: int, cfg: NeuMFConfig = NeuMFConfig(),
               on_epoch: EpochCallback | None = None, init: NeuMF | None = None) -> TrainResult:
    """Train the reranker for ``sasrec`` (trained with ``sasrec_cfg`` for ``sasrec_epochs``);
    ``init`` warm-starts it from another ranker's weights.

    The cross-fitted lists come from retrievers trained from scratch, for ``sasrec_epochs``
    when ``sasrec`` was too, else (``init``: a warm start, whose best epoch counts from the
    champion's weights, 1 or 2 in a refit) for as many as ``init``'s own folds took."""
    start_training(cfg.seed)
    rng = np.random.default_rng(cfg.seed)
    seqs = split.sequences
    spec = sasrec.model.encoder.content_spec  # the folds train in the mode "auto" kept,
    fold_cfg = replace(sasrec_cfg, dropout=sasrec.model.encoder.dropout,  # at its dropout
                       **({"content_mode": spec.mode} if spec else {}))
    fold_epochs = getattr(init, "fold_epochs", 0) or max(sasrec_epochs, 1)
    found, labels = cross_fitted_examples(split, fold_cfg, fold_epochs, cfg)
    tasks = cfg.tasks if labels[..., 1].any() else ("next",)
    width = labels.shape[1]
    content = seqs.content if cfg.content else None
    model = NeuMF(seqs.num_users, seqs.num_items, cfg.gmf_dim, cfg.mlp_layers,
                  session_dim=found.sessions.shape[1] if cfg.session else 0, use_score=True,
                  context_dim=found.context.shape[1] if cfg.context else 0,
                  categories=found.categories.shape[1] if cfg.context else 0,
                  buckets=seqs.spec.buckets, pair_dim=found.pair.shape[-1], tasks=tasks,
                  features=seqs.spec.to_dict(), id_l2=cfg.id_l2,
                  content=content.spec.to_dict() if content is not None else None,
                  id_dropout=cfg.id_dropout if content is not None else 0.0, wide=True,
                  conditional=True, fold_epochs=fold_epochs, seen_window=cfg.seen_window)
    labels = labels[..., :len(tasks)]
    rates = labels[labels[..., 0] > 0][:, 1:].mean(axis=0)  # of the true items
    model = _compile(start_given(start_from_score(model), rates), cfg.learning_rate,
                     ListwiseLoss(width, [cfg.task_weights.get(t, 1.0) for t in tasks]))
    known = (0, 0)  # the users and items a warm start brought trained rows for
    if init is not None:
        skipped = copy_weights(model, init)
        if cfg.context and FeatureSpec.from_dict(init.features or {}).layout != seqs.spec.layout:
            model.forget_context()
            log.warning("warm start: the ranker started from read other context keys or "
                        "buckets than these settings; its context weights are not carried")
        if content is not None and init.content:
            carry_numeric_rows(model.item_content, content.spec.numeric, init.item_content,
                               ContentSpec.from_dict(init.content).numeric)
        if not any(table in path for path in skipped for table in ID_TABLES):
            known = (init.num_users, init.num_items)
    # After a warm start too: a champion's columns no list sets never trained here either.
    if cfg.context and (unused := model.silence_unused_context(found.context)):
        log.info("context columns no training list sets, weighed 0: %s", unused)
    if cfg.context and (unused_rows := model.silence_unused_categories(found.categories)):
        log.info("category buckets no training list reads, zeroed: %d", unused_rows)
    if content is not None:
        model.set_content(content)

    def epoch_data(epoch: int) -> tuple[dict[str, Any], np.ndarray]:
        """Lists in a fresh order, each kept whole (fit does not shuffle)."""
        order = rng.permutation(len(labels))
        data = found.rows(order).flat(model)
        return ({**data, "user": _drop_users(data["user"], cfg.unknown_user_rate, rng, width)},
                labels[order].reshape(-1, len(tasks)))

    served = PipelineScorer(sasrec, index, model, cfg.candidates, exclude_seen=False,
                            head_weights=cfg.head_weights)
    result = fit_with_early_stopping(model, epoch_data, served, split, epochs=cfg.epochs,
                                     eval_every=cfg.eval_every, patience=cfg.patience,
                                     batch_size=max(cfg.batch_size // width, 1) * width,
                                     on_epoch=on_epoch, shuffle=False)
    reset = model.forget_untrained(found.users, found.ids, *known)
    log.info("ids no training list held, reset: %d users (to the unknown user), %d items", *reset)
    refit_given(model, found, labels, cfg.given_epochs)
    # The served score weighs the refit conversion head in, and the order is chosen after
    # it, so the figure early stopping kept belongs to another model: validation is
    # reported as served.
    best_valid = choose_order(served, split)
    seen = choose_seen(served, split)
    log.info("live lists %s the session's items: validation full NDCG@10 %.4f with them, "
             "%.4f without", "hold" if model.recommends_seen else "leave out", seen["with"],
             seen["without"])
    return replace(result, best_valid=best_valid)


def choose_order(served: PipelineScorer, split: LeaveLastOut) -> dict:
    """Set ``served.ranker.retrieval_order`` to the order among unseen items with the
    higher validation full NDCG@10 (the retriever's when level: it needs no learning) and
    return that order's validation figures.

    Chosen on validation, not fixed: the ranker's own order there was below SASRec's on
    REES46 and DIGINETICA (seed 42), yet validation prefers it on ml-latest-small at seed
    2 (docs/BENCHMARKS.md); a log we have not seen decides for itself."""
    figures = {}
    for keep in (True, False):
        served.ranker.retrieval_order = keep
        figures[keep] = evaluate(served, split, "valid")
    served.ranker.retrieval_order = bool(figures[True]["full"]["NDCG@10"]
                                         >= figures[False]["full"]["NDCG@10"])
    return figures[served.ranker.retrieval_order]


def choose_seen(served: PipelineScorer, split: LeaveLastOut) -> dict[str, float]:
    """Set ``served.ranker.recommends_seen``: whether a live list should hold the user's
    own items (``STREAMREC_RECS_EXCLUDE_SEEN=auto``), by validation full NDCG@10 as such a
    list scores. With them, the history stays among the candidates (``keep_history``);
    without, a target the user met before cannot be listed. Left out when level.

    A fixed default cannot suit both kinds of log: on REES46 half the next items repeat
    one of the user's, and leaving the session's items out dropped test full NDCG@10 from
    0.43 to about 0.03; on MovieLens nobody rates a film twice, so listing seen items only
    takes slots (docs/BENCHMARKS.md, issue #14). Returns both figures."""
    figures = {
        "with": evaluate(served.excluding_seen(False), split, "valid",
                         keep_history=True)["full"]["NDCG@10"],
        "without": evaluate(served.excluding_seen(True), split, "valid")["full"]["NDCG@10"]}
    served.ranker.recommends_seen = bool(figures["with"] > figures["without"])
    return figures


def refit_given(model: NeuMF, found: Candidates, labels: np.ndarray, epochs: int,
                learning_rate: float = 1e-2) -> None:
    """Fit the conditional heads alone, on the frozen bottom, on the true items of the
    lists ``found`` (``labels`` [lists, width, tasks], as ``fit_ranker`` trains with).

    Joint training ends where the next head's validation peaks (REES46: epoch 2), too
    early for heads that learn from one example per list. On the fixed features they are
    a logistic regression of a few dozen weights. On REES46 (seed 42) this took the
    conversion head's converts AUC from 0.796 to 0.833 (docs/BENCHMARKS.md, issue #14)."""
    lists, positions = np.nonzero(labels[..., 0] > 0)
    if not model.conditional or not epochs or not len(lists):
        return
    x = model.given_features(found.at(lists, positions).flat(model))
    head = keras.Sequential([keras.Input((x.shape[1],)), model.given])
    head.compile(optimizer=keras.optimizers.Adam(learning_rate),
                 loss=keras.losses.BinaryCrossentropy(from_logits=True))
    head.fit(x, labels[lists, positions, 1:len(model.tasks)].astype("float32"),
             batch_size=256, epochs=epochs, verbose=0)
