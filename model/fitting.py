"""The training loop every neural model shares: one epoch at a time on fresh examples,
a fixed seed, progress callbacks, and early stopping on validation NDCG@10 (full ranking)."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import keras

from model.data import LeaveLastOut
from model.evaluation.protocols import Scorer, evaluate

EpochCallback = Callable[[int, dict[str, float]], None]


@dataclass
class TrainResult:
    model: keras.Model
    best_epoch: int
    best_valid: dict
    curve: list[dict[str, float]] = field(default_factory=list)
    seconds: float = 0.0
    samples_per_s: float = 0.0



def fit_with_early_stopping(model: keras.Model, epoch_data: Callable[[int], tuple[Any, Any]],
                            scorer: Scorer, split: LeaveLastOut, *, epochs: int, eval_every: int,
                            patience: int, batch_size: int,
                            on_epoch: EpochCallback | None = None,
                            shuffle: bool = True) -> TrainResult:
    """Train one epoch at a time on fresh examples (``epoch_data(epoch) -> (x, y)``);
    every ``eval_every`` epochs score validation (full-ranking NDCG@10), keep the best
    weights, stop after ``patience`` evaluations without improvement.

    The starting weights are evaluated too (epoch 0), so a model that begins from
    something good (a warm start, a ranker initialised to its retriever's order) never
    ends worse on validation than it started. ``shuffle=False`` keeps the examples in
    the order ``epoch_data`` gives (lists the loss reads as consecutive groups).
    """
    best_score, best_epoch, best_valid, best_weights = -1.0, 0, {}, None
    curve: list[dict[str, float]] = []
    waited, samples, train_s, start = 0, 0, 0.0, time.perf_counter()
    for epoch in range(0, epochs + 1):
        point = {"epoch": epoch}
        if epoch > 0:
            x, y = epoch_data(epoch)
            t0 = time.perf_counter()
            hist = model.fit(x, y, batch_size=batch_size, epochs=1, verbose=0, shuffle=shuffle)
            train_s += time.perf_counter() - t0
            samples += len(y)
            point["loss"] = float(hist.history["loss"][-1])
        if epoch % eval_every == 0 or epoch == epochs:
            valid = evaluate(scorer, split, "valid")
            point.update({"valid_ndcg10": valid["full"]["NDCG@10"],
                          "valid_hr10": valid["full"]["HR@10"],
                          "valid_sampled_ndcg10": valid["sampled"]["NDCG@10"]})
            if valid["full"]["NDCG@10"] > best_score:
                best_score, best_epoch, best_valid = valid["full"]["NDCG@10"], epoch, valid
                best_weights, waited = model.get_weights(), 0
            else:
                waited += 1
        curve.append(point)
        if on_epoch is not None:
            on_epoch(epoch, point)
        if waited >= patience:
            break
    if best_weights is not None:
        model.set_weights(best_weights)
    return TrainResult(model, best_epoch, best_valid, curve, time.perf_counter() - start,
                       samples / train_s if train_s else 0.0)
