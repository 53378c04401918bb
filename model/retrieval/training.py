"""Training the retriever (SASRec) on sequences, and the scorer that serves a trained
SASRec to the offline protocols and the harness."""

from __future__ import annotations

from dataclasses import asdict, dataclass

import keras
import numpy as np

from model.data import LeaveLastOut, pad_left
from model.fitting import EpochCallback, TrainResult, fit_with_early_stopping
from model.retrieval.sasrec import LOSSES, SASRec
from model.sampling import SeenItems
from model.weights import copy_weights


@dataclass(frozen=True)
class SASRecConfig:
    max_len: int = 50
    dim: int = 64
    blocks: int = 2
    heads: int = 1
    dropout: float = 0.2
    learning_rate: float = 1e-3
    batch_size: int = 128
    epochs: int = 200
    # "softmax" (default): cross-entropy against `negatives` items per sequence; "bce": SASRec's
    # original loss, 1 negative per position. On ml-latest-small after 40 epochs, softmax
    # reached full-ranking NDCG@10 0.049 vs 0.029 for bce (docs/BENCHMARKS.md).
    loss: str = "softmax"
    negatives: int = 100
    max_windows: int = 8
    eval_every: int = 5
    patience: int = 4          # evaluations without improvement before stopping
    seed: int = 42

    def __post_init__(self) -> None:
        if self.loss not in LOSSES:
            raise ValueError(f"loss must be one of {sorted(LOSSES)}. Received: {self.loss!r}")

    def to_dict(self) -> dict[str, object]:
        return asdict(self)


class SASRecScorer:
    """Scores all items for a batch of histories: session embedding · item table."""

    name = "sasrec"

    def __init__(self, model: SASRec, batch_size: int = 256) -> None:
        self.model = model
        self.max_len = model.max_len
        self.batch_size = batch_size

    def embed(self, histories: list[np.ndarray]) -> np.ndarray:
        seq = np.stack([pad_left(h, self.max_len) for h in histories])
        out = [keras.ops.convert_to_numpy(self.model.encode(seq[i:i + self.batch_size]))
               for i in range(0, len(seq), self.batch_size)]
        return np.concatenate(out)

    def score(self, users: np.ndarray, histories: list[np.ndarray]) -> np.ndarray:
        sessions = self.embed(histories)  # builds the model on first use
        return sessions @ keras.ops.convert_to_numpy(self.model.item_embeddings()).T


def training_arrays(histories: list[np.ndarray], max_len: int,
                    max_windows: int = 8) -> tuple[np.ndarray, ...]:
    """(rows, seq, pos): inputs items[:-1], targets items[1:], left-padded to ``max_len``.

    A history longer than ``max_len`` is cut into up to ``max_windows`` consecutive
    windows ending at its newest item, so long histories train on more than their tail
    while attention stays O(max_len^2).
    """
    rows, seqs, targets = [], [], []
    for r, h in enumerate(histories):
        end, windows = len(h), 0
        while end >= 2 and windows < max_windows:
            window = h[max(0, end - max_len - 1):end]
            windows += 1
            rows.append(r)
            seqs.append(pad_left(window[:-1], max_len))
            targets.append(pad_left(window[1:], max_len))
            end -= max_len
    return np.asarray(rows, dtype=np.int64), np.stack(seqs), np.stack(targets)


def fit_sasrec(split: LeaveLastOut, cfg: SASRecConfig = SASRecConfig(),
               on_epoch: EpochCallback | None = None, init: SASRec | None = None) -> TrainResult:
    """Train (early stopping on validation full NDCG@10); ``init`` warm-starts from another
    model's weights (``model.weights``), the starting point early stopping also scores."""
    keras.utils.set_random_seed(cfg.seed)
    rng = np.random.default_rng(cfg.seed)
    rows, seq, pos = training_arrays(split.train, cfg.max_len, cfg.max_windows)
    seen = SeenItems(split.train, split.sequences.num_items)
    model = SASRec(split.sequences.num_items, cfg.max_len, cfg.dim, cfg.blocks, cfg.heads,
                   cfg.dropout)
    if init is not None:
        model({"seq": seq[:1], "pos": pos[:1], "neg": np.ones((1, 1), "int64")})
        copy_weights(model, init)
    model.compile(optimizer=keras.optimizers.Adam(cfg.learning_rate, beta_2=0.98),
                  loss=LOSSES[cfg.loss])
    mask = (pos > 0).astype("float32")

    def epoch_data(epoch: int) -> tuple[dict[str, np.ndarray], np.ndarray]:
        if cfg.loss == "bce":
            neg = seen.sample(np.repeat(rows, cfg.max_len), 1, rng)
            neg = neg.reshape(len(rows), cfg.max_len, 1)
        else:
            neg = seen.sample(rows, cfg.negatives, rng)
        return {"seq": seq, "pos": pos, "neg": neg}, mask

    return fit_with_early_stopping(model, epoch_data, SASRecScorer(model), split,
                                   epochs=cfg.epochs, eval_every=cfg.eval_every,
                                   patience=cfg.patience, batch_size=cfg.batch_size,
                                   on_epoch=on_epoch)
