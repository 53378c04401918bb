"""``fit_with_early_stopping``: the loop every model trains in keeps the weights of its best
validation figure, the starting weights included, and stops after ``patience`` looks
without a gain. The validation figures are scripted, so the loop alone is under test."""

from __future__ import annotations

from typing import Any

import keras
import numpy as np
import pytest

import model.fitting as fitting

pytestmark = pytest.mark.keras  # `make test` runs these on TensorFlow and again on JAX


def _fit(monkeypatch: pytest.MonkeyPatch, figures: list[float], epochs: int = 6,
         patience: int = 2, min_epochs: int = 0, eval_every: int = 1
         ) -> tuple[fitting.TrainResult, dict[int, list], list[int]]:
    """A small regression model trained with validation NDCG@10 read from ``figures``,
    one per look; returns the result, the weights at each look (by epoch; 0: the
    starting weights) and the epochs trained."""
    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(1)])
    model.compile(optimizer=keras.optimizers.SGD(0.1), loss="mse")
    looks, trained, seen = iter(figures), [], {}

    def scripted(*_: Any) -> dict[str, dict[str, float]]:
        ndcg = next(looks)
        return {"full": {"NDCG@10": ndcg, "HR@10": ndcg}, "sampled": {"NDCG@10": ndcg}}

    def epoch_data(epoch: int) -> tuple[np.ndarray, np.ndarray]:
        trained.append(epoch)
        x = np.random.default_rng(epoch).normal(size=(32, 3)).astype("float32")
        return x, x.sum(axis=1, keepdims=True)

    monkeypatch.setattr(fitting, "evaluate", scripted)
    result = fitting.fit_with_early_stopping(model, epoch_data, None, None,  # type: ignore[arg-type]
                                             epochs=epochs, eval_every=eval_every, patience=patience,
                                             batch_size=8, on_epoch=lambda epoch, _: seen.update(
                                                 {epoch: model.get_weights()}),
                                             min_epochs=min_epochs)
    return result, seen, trained


def test_a_model_that_only_loses_on_validation_keeps_its_starting_weights(
        monkeypatch: pytest.MonkeyPatch) -> None:
    result, seen, trained = _fit(monkeypatch, [0.5, 0.4, 0.3, 0.2])
    assert result.best_epoch == 0 and trained == [1, 2]  # two looks without a gain: stop
    assert result.best_valid["full"]["NDCG@10"] == 0.5
    assert not np.array_equal(seen[2][0], seen[0][0])  # it trained, and then went back
    for kept, first in zip(result.model.get_weights(), seen[0]):
        np.testing.assert_array_equal(kept, first)


def test_a_dip_after_the_first_look_is_waited_out_for_min_epochs(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """SASRec from scratch on ml-latest-small (seed 2): validation peaked early, dipped,
    and passed that peak only after patience had stopped the run."""
    figures = [0.0, 0.16, 0.12, 0.09, 0.08, 0.24, 0.20, 0.21, 0.22, 0.23]
    result, _, trained = _fit(monkeypatch, figures, epochs=9)
    assert result.best_epoch == 1 and trained == [1, 2, 3]  # stopped in the dip
    result, _, trained = _fit(monkeypatch, figures, epochs=9, min_epochs=4)
    assert result.best_epoch == 1 and trained == [1, 2, 3, 4]  # held to the floor only
    result, _, trained = _fit(monkeypatch, figures, epochs=9, min_epochs=5)
    assert result.best_epoch == 5 and trained == [1, 2, 3, 4, 5, 6, 7]  # then patience


def test_a_run_past_its_patience_stops_at_an_evaluation_not_at_the_floor(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """The floor (72 epochs on ml-latest-small) falls between looks (every 5): the run
    trained on to the floor and stopped there, its last epochs never scored."""
    result, _, trained = _fit(monkeypatch, [0.5, 0.4, 0.3], epochs=9, patience=1,
                              min_epochs=3, eval_every=2)
    assert trained == [1, 2, 3, 4] and [p["epoch"] for p in result.curve
                                        if "valid_ndcg10" in p] == [0, 2, 4]


def test_the_best_look_is_kept_not_the_last(monkeypatch: pytest.MonkeyPatch) -> None:
    result, seen, trained = _fit(monkeypatch, [0.1, 0.2, 0.6, 0.5, 0.55])
    assert result.best_epoch == 2 and trained == [1, 2, 3, 4]
    assert [p["valid_ndcg10"] for p in result.curve] == [0.1, 0.2, 0.6, 0.5, 0.55]
    assert not np.array_equal(seen[4][0], seen[2][0])
    for kept, best in zip(result.model.get_weights(), seen[2]):
        np.testing.assert_array_equal(kept, best)


def test_throughput_leaves_out_the_first_fit_which_compiles(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """The first epoch's ``model.fit`` traces and compiles the step: counted, it understated
    sequences/s, most with few epochs (``benchmarks.models`` runs 3)."""
    import time

    fit = keras.Sequential.fit
    calls: list[int] = []

    def slow_first(self: Any, *args: Any, **kwargs: Any) -> Any:
        calls.append(1)
        if len(calls) == 1:
            time.sleep(0.5)
        return fit(self, *args, **kwargs)

    monkeypatch.setattr(keras.Sequential, "fit", slow_first)
    result, _, trained = _fit(monkeypatch, [0.1, 0.2, 0.3, 0.4], epochs=3)
    assert trained == [1, 2, 3]
    assert result.samples_per_s > 32 * 3 / 0.5  # epochs 2 and 3 alone: far above this
