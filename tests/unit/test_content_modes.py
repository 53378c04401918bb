"""The retriever's content mode ``auto``: both modes trained, the better on validation kept,
and the ranker's cross-fitted retrievers trained in the mode kept, for as many epochs as a
retriever trained from scratch took (carried forward by warm starts)."""

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


def test_the_rankers_fold_retrievers_train_in_the_mode_kept_for_a_from_scratch_count(
        monkeypatch: pytest.MonkeyPatch) -> None:
    split = _split()
    served = fit_sasrec(split, SMALL).model
    folds: list[tuple[str, int]] = []

    def recording(split: LeaveLastOut, cfg: SASRecConfig, *args, **kwargs):  # noqa: ANN202
        folds.append((cfg.content_mode, cfg.epochs))
        return fit_sasrec(split, cfg, *args, **kwargs)

    monkeypatch.setattr(training, "fit_sasrec", recording)
    index = ItemIndex.build(keras.ops.convert_to_numpy(served.item_embeddings()))
    cfg = training.NeuMFConfig(epochs=1, candidates=10, lists_per_user=2)
    mode = served.encoder.content_spec.mode
    first = training.fit_ranker(split, SASRecScorer(served), index, SMALL, 2, cfg).model
    assert folds == [(mode, 2)] * 2 and first.fold_epochs == 2
    folds.clear()  # a warm start: the retriever's best epoch (0 here) counts from the champion
    warm = training.fit_ranker(split, SASRecScorer(served), index, SMALL, 0, cfg, init=first)
    assert folds == [(mode, 2)] * 2 and warm.model.fold_epochs == 2
    assert type(first).from_config(first.get_config()).fold_epochs == 2  # saved with it


def test_the_ranker_serves_the_order_among_unseen_items_that_validates_better() -> None:
    """``fit_ranker`` keeps the retriever's order among unseen items, or the ranker's,
    whichever scores the higher validation NDCG@10, and reports that one's figures."""
    from model.evaluation.protocols import evaluate
    from model.pipeline import PipelineScorer

    split = _split()
    served = fit_sasrec(split, SMALL).model
    index = ItemIndex.build(keras.ops.convert_to_numpy(served.item_embeddings()))
    cfg = training.NeuMFConfig(epochs=2, eval_every=1, candidates=10, lists_per_user=2)
    result = training.fit_ranker(split, SASRecScorer(served), index, SMALL, 2, cfg)
    chosen = result.model.retrieval_order
    pipeline = PipelineScorer(SASRecScorer(served), index, result.model, cfg.candidates,
                              exclude_seen=False, head_weights=cfg.head_weights)
    scores = {}
    for keep in (True, False):
        result.model.retrieval_order = keep
        scores[keep] = evaluate(pipeline, split, "valid")["full"]["NDCG@10"]
    assert chosen == (scores[True] >= scores[False])
    assert result.best_valid["full"]["NDCG@10"] == pytest.approx(scores[chosen])
    result.model.retrieval_order = chosen
    with_seen = evaluate(pipeline, split, "valid", keep_history=True)["full"]["NDCG@10"]
    without = evaluate(pipeline.excluding_seen(True), split, "valid")["full"]["NDCG@10"]
    assert result.model.recommends_seen == (with_seen > without)


@pytest.mark.parametrize(("with_seen", "without", "kept"), [(0.4, 0.03, True),
                                                            (0.02, 0.05, False),
                                                            (0.05, 0.05, False)])
def test_choose_seen_lists_the_users_items_only_where_validation_scores_higher(
        monkeypatch: pytest.MonkeyPatch, with_seen: float, without: float, kept: bool) -> None:
    """With the session's items, validation ranks the history too (``keep_history``);
    without, the pipeline leaves it out of its candidates. Level: left out."""
    from types import SimpleNamespace

    ranker = SimpleNamespace(recommends_seen=None)
    served = SimpleNamespace(ranker=ranker, excluding_seen=lambda exclude: SimpleNamespace(
        exclude=exclude, ranker=ranker))
    calls = []

    def evaluate(scorer: SimpleNamespace, split: object, stage: str,
                 keep_history: bool = False) -> dict:
        calls.append((scorer.exclude, stage, keep_history))
        return {"full": {"NDCG@10": without if scorer.exclude else with_seen}}

    monkeypatch.setattr(training, "evaluate", evaluate)
    figures = training.choose_seen(served, split=None)  # type: ignore[arg-type]
    assert ranker.recommends_seen is kept
    assert figures == {"with": with_seen, "without": without}
    assert sorted(calls) == [(False, "valid", True), (True, "valid", False)]


@pytest.mark.parametrize(("retriever", "own", "kept"), [(0.2, 0.3, False), (0.3, 0.2, True),
                                                        (0.25, 0.25, True)])
def test_choose_order_keeps_the_higher_validation_and_the_retrievers_when_level(
        monkeypatch: pytest.MonkeyPatch, retriever: float, own: float, kept: bool) -> None:
    from types import SimpleNamespace

    served = SimpleNamespace(ranker=SimpleNamespace(retrieval_order=None))
    monkeypatch.setattr(training, "evaluate", lambda scorer, split, stage: {
        "stage": stage, "full": {"NDCG@10": retriever if scorer.ranker.retrieval_order
                                 else own}})
    figures = training.choose_order(served, split=None)  # type: ignore[arg-type]
    assert served.ranker.retrieval_order is kept
    assert figures == {"stage": "valid", "full": {"NDCG@10": retriever if kept else own}}


def test_a_warm_start_from_a_ranker_of_other_context_keys_does_not_carry_them(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """Copied by shape, a champion's ``price`` weights read ``rating`` once the keys were
    reordered, and its category rows read other keys' buckets."""
    from dataclasses import replace

    from model.features import FeatureSpec

    split = _split()
    served = fit_sasrec(split, SMALL).model
    index = ItemIndex.build(keras.ops.convert_to_numpy(served.item_embeddings()))
    cfg = training.NeuMFConfig(epochs=1, candidates=10, lists_per_user=2)
    first = training.fit_ranker(split, SASRecScorer(served), index, SMALL, 2, cfg).model
    forgotten: list[int] = []
    monkeypatch.setattr(type(first), "forget_context", lambda self: forgotten.append(1))
    training.fit_ranker(split, SASRecScorer(served), index, SMALL, 0, cfg, init=first)
    assert forgotten == []  # the same keys: carried
    first.features = replace(FeatureSpec.from_dict(first.features), buckets=128).to_dict()
    training.fit_ranker(split, SASRecScorer(served), index, SMALL, 0, cfg, init=first)
    assert forgotten == [1]
