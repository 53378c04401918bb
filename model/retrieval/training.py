"""Training the retriever (SASRec) on sequences, and the scorer that serves a trained
SASRec to the offline protocols and the harness."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import asdict, dataclass, replace

import keras
import numpy as np

from model.content import MODES, carry_numeric_rows
from model.data import LeaveLastOut, Side, item_counts, pad_left
from model.fitting import EpochCallback, TrainResult, fit_with_early_stopping, start_training
from model.retrieval.sasrec import LOSSES, SASRec
from model.sampling import SeenItems
from model.weights import copy_weights

log = logging.getLogger("streamrec.train")
CONTENT_MODES = (*MODES, "auto")  # "auto": a training choice between the model's modes
SPARSE_EVENTS = 20  # training events a user, on average, at most which a log is sparse


@dataclass(frozen=True)
class SASRecConfig:
    max_len: int = 50
    dim: int = 64
    blocks: int = 2
    heads: int = 1
    # None: by the log (``log_dropout``): 0.5 on sparse logs, 0.2 on dense ones
    dropout: float | None = None
    learning_rate: float = 1e-3
    batch_size: int = 128
    epochs: int = 200
    # "softmax" (default): cross-entropy of each target against `negatives` sampled items;
    # "bce": SASRec's original loss, 1 negative per position. On ml-latest-small after 40
    # epochs, softmax reached full-ranking NDCG@10 0.049 vs 0.029 for bce (docs/BENCHMARKS.md).
    loss: str = "softmax"
    negatives: int = 1024
    # Softmax negatives pooled over the batch (``sasrec._pooled_logits``): each sequence
    # draws negatives / batch_size items and every sequence's draws serve the whole batch.
    # Against 100 per sequence, full NDCG@10 rose on all three logs measured, for 1.2-1.9x
    # the training time; 1,000 per sequence did as well, at 2.3-3.7x (docs/BENCHMARKS.md,
    # "Negatives pooled over the batch"). False: `negatives` for each sequence.
    pool_negatives: bool = True
    max_windows: int = 8
    # Event types: embedded per position when True; and each target weighs in the loss by
    # its type (code order of ``FeatureSpec.event_types``, unknown first). The default
    # counts a purchase twice a view; empty weighs all alike.
    event_types: bool = True
    type_weights: tuple[float, ...] = (1.0, 1.0, 1.0, 1.5, 2.0)
    # Item content, when the sequences carry a catalogue (``Sequences.content``), used as
    # ``content_mode`` says (``model.retrieval.sasrec``): "map" fits content onto the
    # trained id embeddings, "sum" makes every item id + content, dropping ids with
    # probability ``id_dropout`` in training; "auto" trains both and keeps the one with
    # the better validation NDCG@10 (``_best_content_mode``).
    content: bool = True
    content_mode: str = "auto"
    id_dropout: float = 0.3
    eval_every: int = 5
    patience: int = 4          # evaluations without improvement before stopping
    # A fresh model is not stopped before this many optimizer steps, or half its epochs
    # where that is fewer (a log of a few hundred windows would train to the cap):
    # on ml-latest-small (14 steps an epoch) validation peaked at epoch 5 with a popularity-
    # like model, dipped to epoch 15 and passed that peak only at epoch 30, after patience
    # had stopped the run at epoch 25 (seed 2: full NDCG@10 0.010 against 0.045-0.050 for
    # seeds 42 and 1)
    min_steps: int = 1_000
    seed: int = 42

    def __post_init__(self) -> None:
        if self.loss not in LOSSES:
            raise ValueError(f"loss must be one of {sorted(LOSSES)}. Received: {self.loss!r}")
        if self.content_mode not in CONTENT_MODES:
            raise ValueError(f"content_mode must be one of {CONTENT_MODES}. "
                             f"Received: {self.content_mode!r}")
        # each would otherwise fail deep in training (a division by zero, an empty stack)
        # or train nothing (no negative: the loss is 0; patience 0 stops at the floor)
        for name in ("epochs", "batch_size", "negatives", "max_windows", "eval_every",
                     "patience"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1. Received: {name}={getattr(self, name)}")

    def pool_draws(self, batch_size: int) -> int:
        """Items each sequence draws when pooled: enough for `negatives` per batch."""
        return -(-self.negatives // batch_size)

    def to_dict(self) -> dict[str, object]:
        return asdict(self)


class SASRecScorer:
    """Scores all items for a batch of histories: session embedding · item table."""

    name = "sasrec"

    def __init__(self, model: SASRec, batch_size: int = 256) -> None:
        self.model = model
        self.max_len = model.max_len
        self.batch_size = batch_size

    def embed(self, histories: list[np.ndarray], side: Side | None = None) -> np.ndarray:
        """Session embeddings; ``side`` gives the event types (unknown without it)."""
        seq = np.stack([pad_left(h, self.max_len) for h in histories])
        types = (np.stack([pad_left(t, self.max_len) for t in side.types]) if side is not None
                 else np.zeros_like(seq))
        b = self.batch_size
        out = [keras.ops.convert_to_numpy(self.model.encode(seq[i:i + b], types[i:i + b]))
               for i in range(0, len(seq), b)]
        return np.concatenate(out)

    def score(self, users: np.ndarray, histories: list[np.ndarray],
              side: Side | None = None) -> np.ndarray:
        sessions = self.embed(histories, side)  # builds the model on first use
        return sessions @ keras.ops.convert_to_numpy(self.model.item_embeddings()).T


def training_arrays(histories: list[np.ndarray], max_len: int, max_windows: int = 8,
                    types: list[np.ndarray] | None = None) -> tuple[np.ndarray, ...]:
    """(rows, seq, pos, seq_types, pos_types): inputs items[:-1], targets items[1:], and
    the event types of each, left-padded to ``max_len`` (types 0 without ``types``).

    A history longer than ``max_len`` is cut into up to ``max_windows`` consecutive
    windows ending at its newest item, so long histories train on more than their tail
    while attention stays O(max_len^2).
    """
    types = types if types is not None else [np.zeros_like(h) for h in histories]
    rows, seqs, targets, seq_types, target_types = [], [], [], [], []
    for r, (h, t) in enumerate(zip(histories, types)):
        end, windows = len(h), 0
        while end >= 2 and windows < max_windows:
            start = max(0, end - max_len - 1)
            window, kinds = h[start:end], t[start:end]
            windows += 1
            rows.append(r)
            seqs.append(pad_left(window[:-1], max_len))
            targets.append(pad_left(window[1:], max_len))
            seq_types.append(pad_left(kinds[:-1], max_len))
            target_types.append(pad_left(kinds[1:], max_len))
            end -= max_len
    if not rows:
        raise ValueError("no user's training history holds two items, so there is no next "
                         "item to learn (an evaluated user needs four events: two to train "
                         "on, one to validate, one to test)")
    return (np.asarray(rows, dtype=np.int64), np.stack(seqs), np.stack(targets),
            np.stack(seq_types), np.stack(target_types))


def target_weights(pos: np.ndarray, pos_types: np.ndarray,
                   type_weights: tuple[float, ...]) -> np.ndarray:
    """The loss weight of each target position: 0 on padding, else its type's weight
    (1 for types past the end of ``type_weights``)."""
    table = np.ones(max(int(pos_types.max(initial=0)) + 1, len(type_weights)), np.float32)
    table[:len(type_weights)] = type_weights
    return np.where(pos > 0, table[pos_types], 0.0).astype("float32")


def pooled_negatives(rows: np.ndarray, seen: SeenItems, draws: int, batch_size: int,
                     rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """(pool [N, draws], pool_seen [N, batch_size * draws]) for rows in the order fit
    batches them: each row's draws (none it has met), and for each row, which of its
    batch's draws it has met anywhere in its history (``sasrec._pooled_logits``). A
    training row is a window of at most ``max_len`` items, so its own items alone would let
    the older part of a long history, and its later windows, count as its negatives. A
    short last batch has fewer draws: the rest of its marks stay set."""
    pool = seen.sample(rows, draws, rng)
    marks = np.ones((len(rows), batch_size * draws), bool)
    for start in range(0, len(rows), batch_size):
        batch = slice(start, start + batch_size)
        drawn = pool[batch].reshape(-1)
        marks[batch, :len(drawn)] = seen.among(rows[batch], drawn)
    return pool, marks


def log_dropout(train: Sequence[np.ndarray]) -> float:
    """SASRec's dropout for a log whose training histories are ``train``: 0.5 where users
    average at most ``SPARSE_EVENTS`` events, 0.2 above, as the SASRec paper chose for its
    sparse logs (Amazon, Steam: 9-11 events a user) and for MovieLens-1M (163). Measured
    here (docs/BENCHMARKS.md): 0.5 lifted full NDCG@10 on four logs of 4-9 events a user
    (+3.5% to +20%); on ml-latest-small (165) the two are level within noise."""
    # users without training events (a cross-fitting fold's others, a champion's users
    # absent from a round's log) would thin the mean
    lengths = [len(h) for h in train if len(h)]
    mean = float(np.mean(lengths)) if lengths else 0.0
    dropout = 0.5 if mean <= SPARSE_EVENTS else 0.2
    log.info("retriever dropout %.1f: %.1f training events a user", dropout, mean)
    return dropout


def fit_sasrec(split: LeaveLastOut, cfg: SASRecConfig = SASRecConfig(),
               on_epoch: EpochCallback | None = None, init: SASRec | None = None) -> TrainResult:
    """Train (early stopping on validation full NDCG@10); ``init`` warm-starts from another
    model's weights (``model.weights``), the starting point early stopping also scores.
    The model's config holds the dropout it trained with (``log_dropout`` when unset)."""
    if cfg.dropout is None:
        cfg = replace(cfg, dropout=log_dropout(split.train))
    seqs = split.sequences
    if cfg.content_mode == "auto" and cfg.content and seqs.content is not None:
        return _best_content_mode(split, cfg, on_epoch, init)
    start_training(cfg.seed)
    rng = np.random.default_rng(cfg.seed)
    types = [t[:len(h)] for t, h in zip(seqs.types, split.train)]
    rows, seq, pos, seq_types, pos_types = training_arrays(split.train, cfg.max_len,
                                                           cfg.max_windows, types)
    seen = SeenItems(split.train, seqs.num_items)
    content = seqs.content if cfg.content else None
    model = SASRec(seqs.num_items, cfg.max_len, cfg.dim, cfg.blocks, cfg.heads, cfg.dropout,
                   num_types=seqs.spec.num_types if cfg.event_types else 0,
                   content=replace(content.spec, mode=cfg.content_mode).to_dict()
                   if content is not None else None,
                   id_dropout=cfg.id_dropout if content is not None else 0.0,
                   event_types=seqs.spec.event_types if cfg.event_types else ())
    model({"seq": seq[:1], "types": seq_types[:1], "pos": pos[:1],
           "neg": np.ones((1, 1), "int64")})
    if init is not None:
        copy_weights(model, init)
        if content is not None and init.encoder.content_spec is not None:
            carry_numeric_rows(model.encoder.content_encoder, content.spec.numeric,
                               init.encoder.content_encoder, init.encoder.content_spec.numeric)
    if content is not None:
        model.encoder.set_content(content)
    model.compile(optimizer=keras.optimizers.Adam(cfg.learning_rate, beta_2=0.98),
                  loss=LOSSES[cfg.loss])
    mask = target_weights(pos, pos_types, cfg.type_weights)

    def epoch_data(epoch: int) -> tuple[dict[str, np.ndarray], np.ndarray]:
        # shuffled here, batched in this order by fit: a pooled row's mask reads its batch
        order = rng.permutation(len(rows))
        x = {"seq": seq[order], "types": seq_types[order], "pos": pos[order]}
        if cfg.loss == "bce":
            x["neg"] = seen.sample(np.repeat(rows[order], cfg.max_len), 1, rng).reshape(
                len(rows), cfg.max_len, 1)
        elif cfg.pool_negatives:
            x["pool"], x["pool_seen"] = pooled_negatives(
                rows[order], seen, cfg.pool_draws(cfg.batch_size), cfg.batch_size, rng)
        else:
            x["neg"] = seen.sample(rows[order], cfg.negatives, rng)
        return x, mask[order]

    steps = max(len(rows) // cfg.batch_size, 1)  # an epoch's (whole batches)
    floor = 0 if init is not None else min(-(-cfg.min_steps // steps), cfg.epochs // 2)
    result = fit_with_early_stopping(model, epoch_data, SASRecScorer(model), split,
                                     epochs=cfg.epochs, eval_every=cfg.eval_every,
                                     patience=cfg.patience, batch_size=cfg.batch_size,
                                     on_epoch=on_epoch, min_epochs=floor, shuffle=False)
    if content is not None and cfg.content_mode == "map":
        # Validation stays scored before the mapping, on purpose: the items it places were
        # met only as held-out targets, and those met only as test targets are, at the
        # validation stage, items from users' future. Validation read the placement as a
        # loss on REES46 (-1 to -3%) where the test gained (+2 to +6%; docs/BENCHMARKS.md,
        # "Items training never met"): scored after it, ``auto`` would judge ``map`` so.
        # Weighted by training interactions: content maps onto the items users meet.
        result.model.fit_content_map(item_weights=item_counts(split.train, seqs.num_items)[1:],
                                     learned=learned_by(init, seqs.num_items))
    return result


def learned_by(init: SASRec | None, num_items: int) -> np.ndarray | None:
    """[num_items] whether the warm start ``init`` met each item: its items but those it
    had placed by content alone. Without it, every item the champion learned from events
    now past the topic's retention read as never met: its id vector was replaced by its
    content's, and serving labelled it ``content``."""
    if init is None:
        return None
    known = np.zeros(num_items, bool)
    known[:min(init.encoder.num_items, num_items)] = True
    unmet = np.asarray(init.unmet_items, np.int64)
    known[unmet[(unmet >= 1) & (unmet <= num_items)] - 1] = False
    return known


def _best_content_mode(split: LeaveLastOut, cfg: SASRecConfig,
                       on_epoch: EpochCallback | None, init: SASRec | None) -> TrainResult:
    """Both content modes trained, the better on validation full NDCG@10 kept (ties keep
    ``map``, which ranks trained items by their ids alone).

    Neither wins everywhere (docs/BENCHMARKS.md, issue #20): where items sharing a genre
    or a category are far apart in taste, ``sum`` lifts the wrong ones (ml-latest-small
    -21%), and where content words tell items apart it helps (Amazon Scientific). Which
    one a log is, only its own validation split says; the price is a second training."""
    results = {mode: fit_sasrec(split, replace(cfg, content_mode=mode), on_epoch, init)
               for mode in MODES}
    scores = {mode: r.valid_ndcg10 or 0.0 for mode, r in results.items()}
    kept = "sum" if scores["sum"] > scores["map"] else "map"
    log.info("content modes on validation (full NDCG@10): map %.4f, sum %.4f; keeping %s",
             scores["map"], scores["sum"], kept)
    return replace(results[kept], seconds=sum(r.seconds for r in results.values()))
