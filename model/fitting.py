"""The training loop every neural model shares: one epoch at a time on fresh examples,
a fixed seed, progress callbacks, and early stopping on validation NDCG@10 (full ranking)."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import keras
import numpy as np

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
    samples_per_s: float = 0.0  # in model.fit, past the first epoch (its trace and compile)

    @property
    def valid_ndcg10(self) -> float | None:
        """The validation full NDCG@10 early stopping kept (None before any evaluation)."""
        return self.best_valid.get("full", {}).get("NDCG@10")


def start_training(seed: int) -> int:
    """Seed every generator, and on the JAX backend with more than one device (GPUs, or
    forced host devices) train data-parallel through Keras' distribution API: each batch
    is split across the devices and the weights are replicated. Returns the device count.

    Call it before building the model: the distribution lays out variables as they are made.
    """
    keras.utils.set_random_seed(seed)
    if keras.backend.backend() != "jax":
        return 1
    devices = keras.distribution.list_devices()
    if len(devices) > 1 and keras.distribution.distribution() is None:
        keras.distribution.set_distribution(keras.distribution.DataParallel(devices=devices))
    return len(devices)


def data_parallel_devices() -> int:
    """How many devices each batch is split across (1 unless ``start_training`` set a
    data-parallel distribution)."""
    if keras.backend.backend() != "jax" or keras.distribution.distribution() is None:
        return 1
    return int(keras.distribution.distribution().device_mesh.devices.size)


def predict_rows(model: keras.Model, inputs: dict[str, np.ndarray]) -> np.ndarray:
    """``predict_on_batch`` for any number of rows: data-parallel, rows must split evenly
    across the devices, so the last row is repeated to fill and the copies are dropped."""
    rows = len(next(iter(inputs.values())))
    fill = -rows % data_parallel_devices()
    if fill:
        inputs = {k: np.concatenate([v, np.repeat(v[-1:], fill, axis=0)]) for k, v in inputs.items()}
    return keras.ops.convert_to_numpy(model.predict_on_batch(inputs))[:rows]


def whole_batches(x: dict[str, Any], y: np.ndarray, batch_size: int, epoch: int,
                  shuffle: bool) -> tuple[dict[str, Any], np.ndarray]:
    """Data-parallel, every batch must split evenly across the devices, so an epoch keeps
    whole batches only: a random subset when shuffled (a different remainder sits out each
    epoch), else the head (consecutive lists stay whole). Unchanged on one device."""
    devices = data_parallel_devices()
    if devices == 1:
        return x, y
    if batch_size % devices:
        raise ValueError(f"batch_size must be a multiple of the {devices} devices training "
                         f"data-parallel. Received: batch_size={batch_size}")
    keep_n = len(y) // batch_size * batch_size or len(y) // devices * devices
    keep = (np.sort(np.random.default_rng(epoch).permutation(len(y))[:keep_n]) if shuffle
            else np.arange(keep_n))
    return {k: v[keep] for k, v in x.items()}, y[keep]


def fit_with_early_stopping(model: keras.Model, epoch_data: Callable[[int], tuple[Any, Any]],
                            scorer: Scorer, split: LeaveLastOut, *, epochs: int, eval_every: int,
                            patience: int, batch_size: int,
                            on_epoch: EpochCallback | None = None,
                            shuffle: bool = True, min_epochs: int = 0) -> TrainResult:
    """Train one epoch at a time on fresh examples (``epoch_data(epoch) -> (x, y)``);
    every ``eval_every`` epochs score validation (full-ranking NDCG@10), keep the best
    weights, stop after ``patience`` evaluations without improvement, and not before
    ``min_epochs`` (a model whose validation dips after its first evaluation before it
    climbs: SASRec from scratch).

    The starting weights are evaluated too (epoch 0), so a model that begins from
    something good (a warm start, a ranker initialised to its retriever's order) never
    ends worse on validation than it started. ``shuffle=False`` keeps the examples in
    the order ``epoch_data`` gives (lists the loss reads as consecutive groups).
    """
    best_score, best_epoch, best_valid, best_weights = -1.0, 0, {}, None
    curve: list[dict[str, float]] = []
    waited, start = 0, time.perf_counter()
    fits: list[tuple[int, float]] = []  # (samples, seconds) of each epoch's model.fit
    for epoch in range(0, epochs + 1):
        point: dict[str, float] = {"epoch": epoch}
        if epoch > 0:
            x, y = whole_batches(*epoch_data(epoch), batch_size, epoch, shuffle)
            t0 = time.perf_counter()
            hist = model.fit(x, y, batch_size=batch_size, epochs=1, verbose=0, shuffle=shuffle)
            fits.append((len(y), time.perf_counter() - t0))
            point["loss"] = float(hist.history["loss"][-1])
        evaluated = epoch % eval_every == 0 or epoch == epochs
        if evaluated:
            valid = evaluate(scorer, split, "valid")
            point.update({"valid_ndcg10": valid["full"]["NDCG@10"],
                          "valid_hr10": valid["full"]["HR@10"],
                          "valid_sampled_ndcg10": valid["sampled"]["NDCG@10"]})
            if valid["full"]["NDCG@10"] > best_score:
                best_score, best_epoch, best_valid = valid["full"]["NDCG@10"], epoch, valid
                best_weights, waited = model.get_weights(), 0
            else:
                waited += 1
        point["seconds"] = time.perf_counter() - start  # wall clock so far: time to a quality
        curve.append(point)
        if on_epoch is not None:
            on_epoch(epoch, point)
        # at an evaluation only: epochs trained after the last one would never be scored
        if evaluated and waited >= patience and epoch >= min_epochs:
            break
    if best_weights is not None:
        model.set_weights(best_weights)
    steady = fits[1:] or fits  # the first fit traces and compiles the step function
    samples, train_s = sum(n for n, _ in steady), sum(t for _, t in steady)
    return TrainResult(model, best_epoch, best_valid, curve, time.perf_counter() - start,
                       samples / train_s if train_s else 0.0)
