"""The retriever's content mode ``auto``: both modes trained, the better on validation kept,
and the ranker's cross-fitted retrievers trained in the mode kept."""

from __future__ import annotations

import re

import keras
import pytest
from test_cold_items import RECORDS, _log

from model.data import LeaveLastOut, build_sequences, leave_last_out
from model.ranking import training
from model.retrieval.index import ItemIndex
from model.retrieval.training import SASRecConfig, SASRecScorer, fit_sasrec

pytestmark = pytest.mark.keras  # `make test` runs these on TensorFlow and again on JAX

SMALL = SASRecConfig(max_len=6, dim=8, blocks=1, epochs=2, eval_every=1, negatives=5,
                     content_mode="auto")


def _split() -> LeaveLastOut:
    return leave_last_out(build_sequences(_log(), catalogue=RECORDS))


def test_auto_keeps_the_mode_better_on_validation(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level("INFO", logger="streamrec.train"):
        auto = fit_sasrec(_split(), SMALL)
    logged = re.search(r"map ([\d.]+), sum ([\d.]+)", caplog.text)
    assert logged is not None, caplog.text
    scores = {"map": float(logged[1]), "sum": float(logged[2])}
    kept = "sum" if scores["sum"] > scores["map"] else "map"
    assert f"keeping {kept}" in caplog.text
    assert auto.model.encoder.content_spec.mode == kept
    assert auto.best_valid["full"]["NDCG@10"] == pytest.approx(scores[kept], abs=1e-4)
    with pytest.raises(ValueError, match="content_mode must be one of"):
        SASRecConfig(content_mode="mean")


def test_the_rankers_fold_retrievers_train_in_the_mode_kept(
        monkeypatch: pytest.MonkeyPatch) -> None:
    split = _split()
    served = fit_sasrec(split, SMALL).model
    modes: list[str] = []

    def recording(split: LeaveLastOut, cfg: SASRecConfig, *args, **kwargs):  # noqa: ANN202
        modes.append(cfg.content_mode)
        return fit_sasrec(split, cfg, *args, **kwargs)

    monkeypatch.setattr(training, "fit_sasrec", recording)
    index = ItemIndex.build(keras.ops.convert_to_numpy(served.item_embeddings()))
    training.fit_ranker(split, SASRecScorer(served), index, SMALL, 1,
                        training.NeuMFConfig(epochs=1, candidates=10, lists_per_user=2))
    assert modes == [served.encoder.content_spec.mode] * 2
