"""Model layers: arguments, shapes, invariances, serialization; baselines; a learning check."""

from __future__ import annotations

from pathlib import Path

import keras
import numpy as np
import pytest

from model.data import build_sequences, leave_last_out
from model.evaluation.baselines import ImplicitALS, ItemKNN, Popularity
from model.evaluation.harness import train_models
from model.evaluation.metrics import binary_auc
from model.evaluation.protocols import evaluate
from model.ranking.inputs import Candidates
from model.ranking.neumf import NeuMF, fuse_pretrained, start_from_score, start_given
from model.ranking.training import refit_given
from model.retrieval.sasrec import SASRec, SASRecEncoder
from model.retrieval.training import (
    SASRecConfig,
    SASRecScorer,
    pooled_negatives,
    target_weights,
    training_arrays,
)
from model.sampling import SeenItems
from streams.synthetic import SyntheticConfig, generate

pytestmark = pytest.mark.keras  # `make test` runs these on TensorFlow and again on JAX


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"num_items": 0}, "num_items"), ({"num_items": 5, "dim": 10, "heads": 3}, "divisible"),
    ({"num_items": 5, "dropout": 1.0}, "dropout")])
def test_encoder_rejects_bad_arguments(kwargs: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        SASRecEncoder(**kwargs)


def _sasrec() -> SASRec:
    keras.utils.set_random_seed(0)
    model = SASRec(num_items=30, max_len=8, dim=16, blocks=2, heads=2, dropout=0.0)
    model({"seq": np.ones((1, 8), "int32"), "pos": np.ones((1, 8), "int32"),
           "neg": np.ones((1, 3), "int32")})
    return model


def test_sasrec_shapes_padding_invariance_and_causality() -> None:
    model = _sasrec()
    seq = np.array([[0, 0, 0, 0, 0, 3, 7, 9], [0, 0, 0, 3, 7, 9, 4, 2]])
    h = keras.ops.convert_to_numpy(model.encoder(seq))
    assert h.shape == (2, 8, 16) and np.allclose(h[0, :5], 0)
    # Same items, different padding: same embeddings (positions count from the first item).
    assert np.allclose(h[0, 5:], h[1, 3:6], atol=1e-5)
    # Causal: a later item never changes an earlier position.
    changed = seq.copy()
    changed[1, -1] = 11
    h2 = keras.ops.convert_to_numpy(model.encoder(changed))
    assert np.allclose(h[1, :-1], h2[1, :-1], atol=1e-6) and not np.allclose(h[1, -1], h2[1, -1])
    logits = model({"seq": seq, "pos": seq, "neg": np.ones((2, 5), "int32")})
    assert tuple(logits.shape) == (2, 8, 6)
    assert tuple(model({"seq": seq, "pos": seq, "neg": np.ones((2, 8, 1), "int32")}).shape) == (
        2, 8, 2)
    assert keras.ops.convert_to_numpy(model.encode(seq)).shape == (2, 16)


def test_sasrec_save_and_load_in_safe_mode(tmp_path: Path) -> None:
    model = _sasrec()
    path = tmp_path / "sasrec.keras"
    model.save(path)
    loaded = keras.saving.load_model(path, safe_mode=True)
    seq = np.array([[0, 0, 1, 2, 3, 4, 5, 6]])
    assert np.allclose(keras.ops.convert_to_numpy(loaded.encode(seq)),
                       keras.ops.convert_to_numpy(model.encode(seq)), atol=1e-6)
    assert loaded.get_config()["num_items"] == 30


def _inputs(n: int = 6, session_dim: int = 0, score: bool = False) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(0)
    x = {"user": rng.integers(0, 5, n).astype("int32"), "item": rng.integers(1, 9, n).astype("int32")}
    if session_dim:
        x["session"] = rng.normal(size=(n, session_dim)).astype("float32")
    if score:
        x["score"] = rng.normal(size=(n, 1)).astype("float32")
    return x


def test_neumf_shapes_arguments_and_save_load(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="branch must be one of"):
        NeuMF(4, 8, branch="deep")
    model = NeuMF(4, 8, gmf_dim=8, mlp_layers=(16, 8), session_dim=4, use_score=True,
                  context_dim=3)
    x = {**_inputs(session_dim=4, score=True), "context": np.zeros((6, 3), "float32")}
    assert tuple(model(x).shape) == (6, 1)
    model.save(tmp_path / "neumf.keras")
    loaded = keras.saving.load_model(tmp_path / "neumf.keras", safe_mode=True)
    assert np.allclose(loaded.predict_on_batch(x), model.predict_on_batch(x), atol=1e-6)


def test_ranker_starts_as_its_retriever() -> None:
    model = start_from_score(NeuMF(4, 8, 8, (16, 8), session_dim=4, use_score=True))
    x = _inputs(session_dim=4, score=True)
    assert np.allclose(model.predict_on_batch(x), x["score"], atol=1e-6)


def test_context_columns_no_training_row_set_weigh_nothing() -> None:
    """An event type the log never held has a one-hot column training cannot move: left
    at its random start it shifted the lists of every user whose newest event had it."""
    model = start_from_score(NeuMF(4, 8, 8, (16, 8), session_dim=4, use_score=True,
                                   context_dim=3))
    rng = np.random.default_rng(0)
    model.set_weights([w + rng.normal(0, 0.3, w.shape) for w in model.get_weights()])
    x = {**_inputs(session_dim=4, score=True), "context": np.zeros((6, 3), "float32")}

    def moved_by(column: int) -> bool:
        on = {**x, "context": x["context"] + np.eye(3, dtype="float32")[column]}
        return not np.allclose(model.predict_on_batch(on), model.predict_on_batch(x))

    assert moved_by(1) and moved_by(2)
    trained_on = np.array([[0.5, 0.0, 1.0], [-1.0, 0.0, 0.0]], "float32")
    assert model.silence_unused_context(trained_on) == [1]
    assert not moved_by(1) and moved_by(0) and moved_by(2)


def test_forgotten_context_moves_no_score_and_its_category_table_starts_anew() -> None:
    """A warm start from a ranker of other context keys copied each column's weights to
    another key's column (a review): they are started afresh instead."""
    model = start_from_score(NeuMF(4, 8, 8, (16, 8), session_dim=4, use_score=True,
                                   context_dim=3, categories=2, buckets=5,
                                   tasks=("next", "conversion"), conditional=True))
    rng = np.random.default_rng(0)
    model.set_weights([w + rng.normal(0, 0.3, w.shape) for w in model.get_weights()])
    x = {**_inputs(session_dim=4, score=True), "context": np.zeros((6, 3), "float32"),
         "categories": np.zeros((6, 2), "int32")}
    other = {**x, "context": rng.normal(size=(6, 3)).astype("float32"),
             "categories": np.tile(np.array([3, 1], "int32"), (6, 1))}
    assert not np.allclose(model.predict_on_batch(other), model.predict_on_batch(x))
    before = model.category_table.get_weights()[0]
    model.forget_context()
    assert np.allclose(model.predict_on_batch(other), model.predict_on_batch(x))
    after = model.category_table.get_weights()[0]
    assert not np.allclose(after, before) and np.abs(after).max() <= 0.05  # fresh, small
    kernel = model.mlp[0].get_weights()[0]
    assert kernel[:16 + 4].any(axis=1).all()  # user, item and session rows kept


def test_category_buckets_no_training_row_reads_add_nothing() -> None:
    """A context value training never met, or a key missing where training always had it,
    read a row of the category table still at its random start (a review)."""
    model = start_from_score(NeuMF(4, 8, 8, (16, 8), session_dim=4, use_score=True,
                                   categories=2, buckets=5))
    x = {**_inputs(session_dim=4, score=True), "categories": np.zeros((6, 2), "int32")}

    def moved_by(ids: list[int]) -> bool:
        other = {**x, "categories": np.tile(np.array(ids, "int32"), (6, 1))}
        return not np.allclose(model.predict_on_batch(other), model.predict_on_batch(
            {**x, "categories": np.tile(np.array([4, 4], "int32"), (6, 1))}))

    rng = np.random.default_rng(2)  # as if trained, or at a random start
    model.set_weights([w + rng.normal(0, 0.3, w.shape) for w in model.get_weights()])
    rows = model.get_layer("categories").get_weights()[0]
    assert moved_by([0, 4]) and moved_by([3, 4])
    trained_on = np.array([[1, 4], [2, 3]])  # key 0: buckets 1, 2; key 1: buckets 4, 3
    assert model.silence_unused_categories(trained_on) == 10 - 4
    assert not moved_by([0, 4]) and not moved_by([3, 4])  # key 0's 0 and 3: zeroed
    assert moved_by([1, 4]) and moved_by([4, 3])  # trained rows still count
    assert np.array_equal(model.get_layer("categories").get_weights()[0][[1, 2, 8, 9]],
                          rows[[1, 2, 8, 9]])


def test_ids_no_training_list_held_read_as_the_unknown_user_and_a_content_only_item() -> None:
    model = start_from_score(NeuMF(4, 8, 8, (16, 8), use_score=True))
    rng = np.random.default_rng(1)
    model.set_weights([w + rng.normal(0, 0.3, w.shape) for w in model.get_weights()])
    before = {t: model.get_layer(t).get_weights()[0].copy()
              for t in ("gmf_user", "mlp_user", "gmf_item", "mlp_item")}
    assert model.forget_untrained(np.array([1, 2, 2]), np.array([[1, 3], [5, 0]])) == (2, 5)
    for table in ("gmf_user", "mlp_user"):
        rows = model.get_layer(table).get_weights()[0]
        assert np.array_equal(rows[:3], before[table][:3])
        assert np.array_equal(rows[3], rows[0]) and np.array_equal(rows[4], rows[0])
    for table in ("gmf_item", "mlp_item"):
        rows = model.get_layer(table).get_weights()[0]
        assert np.array_equal(rows[[0, 1, 3, 5]], before[table][[0, 1, 3, 5]])
        assert not rows[[2, 4, 6, 7, 8]].any()
    x = {"user": np.array([3, 0], "int32"), "item": np.array([1, 1], "int32"),
         "score": np.zeros((2, 1), "float32")}
    new_user, unknown = model.predict_on_batch(x)
    assert np.allclose(new_user, unknown)
    # A warm start's ids (the first 3 users, 6 items here) keep what its model learnt.
    warm = start_from_score(NeuMF(4, 8, 8, (16, 8), use_score=True))
    assert warm.forget_untrained(np.array([1]), np.array([1]), 3, 6) == (1, 2)


@pytest.mark.parametrize("kwargs", [{"branch": "gmf"}, {"tasks": ("conversion", "next")}])
def test_conditional_heads_need_the_mlp_branch_and_next_first(kwargs: dict) -> None:
    with pytest.raises(ValueError, match="conditional heads need"):
        NeuMF(4, 8, 8, (16, 8), conditional=True, **{"tasks": ("next", "conversion"), **kwargs})


def _lists(n: int, width: int, rng: np.random.Generator) -> tuple[Candidates, np.ndarray]:
    """``n`` lists of ``width`` candidates, one true item each, which converted when its
    first pair feature is positive (so a conditional head can learn it, and only it)."""
    pair = rng.normal(size=(n, width, 3)).astype("float32")
    ids = rng.integers(1, 9, (n, width))
    hits = np.zeros((n, width), bool)
    hits[np.arange(n), rng.integers(0, width, n)] = True
    labels = np.stack([hits, hits & (pair[..., 0] > 0)], axis=-1).astype("float32")
    found = Candidates(rng.integers(0, 5, n), np.zeros((n, 0), "float32"), ids,
                       rng.normal(size=(n, width)).astype("float32"),
                       rng.normal(size=(n, 2)).astype("float32"), np.zeros((n, 0), "int64"),
                       pair)
    return found, labels


def test_conditional_heads_start_at_their_rate_then_refit_alone_on_true_items() -> None:
    model = NeuMF(4, 8, 8, (16, 8), use_score=True, context_dim=2, pair_dim=3,
                  tasks=("next", "conversion"), wide=True, conditional=True)
    found, labels = _lists(400, 4, np.random.default_rng(3))
    lists, positions = np.nonzero(labels[..., 0])
    true = found.at(lists, positions)  # what the refit reads: each list's true item alone
    assert np.array_equal(true.ids[:, 0], found.ids[labels[..., 0] > 0])
    assert np.array_equal(true.pair[:, 0], found.pair[labels[..., 0] > 0])
    start_given(start_from_score(model), np.array([0.2]))
    x = found.flat(model)
    start = model.predict_on_batch(x)
    assert np.allclose(start[:, 0], x["score"][:, 0], atol=1e-6)  # next: the retriever
    assert np.allclose(1 / (1 + np.exp(-start[:, 1])), 0.2, atol=1e-6)  # given: the rate
    bottom = [w.copy() for layer in model.layers if layer.name != "given"
              for w in layer.get_weights()]
    refit_given(model, found, labels, epochs=60)
    after = [w for layer in model.layers if layer.name != "given" for w in layer.get_weights()]
    assert all(np.array_equal(a, b) for a, b in zip(bottom, after))  # the bottom is frozen
    given = model.predict_on_batch(x)[:, 1].reshape(labels.shape[:2])[labels[..., 0] > 0]
    converted = labels[..., 1][labels[..., 0] > 0] > 0
    assert binary_auc(given, converted) > 0.95


def test_fusing_pretrained_branches_mixes_their_logits() -> None:
    gmf = NeuMF(4, 8, 8, (16, 8), branch="gmf")
    mlp = NeuMF(4, 8, 8, (16, 8), branch="mlp")
    x = _inputs()
    fused = fuse_pretrained(gmf, mlp, alpha=0.3)
    expected = 0.3 * gmf.predict_on_batch(x) + 0.7 * mlp.predict_on_batch(x)
    assert np.allclose(fused.predict_on_batch(x), expected, atol=1e-5)


def test_baselines_by_hand() -> None:
    histories = [np.array([1, 2]), np.array([1, 2]), np.array([3, 4]), np.array([1])]
    pop = Popularity().fit(histories, 4)
    assert pop.score(np.array([1]), [np.array([])])[0].tolist() == [0, 3, 2, 1, 1]
    knn = ItemKNN(shrink=0.0).fit(histories, 4)
    s = knn.score(np.array([4]), [np.array([1])])[0]
    assert s[2] == pytest.approx(2 / np.sqrt(3 * 2)) and s[3] == s[4] == 0
    als = ImplicitALS(factors=4, iterations=10).fit(histories, 4)
    scores = als.score(np.array([1, 3]), [histories[0], histories[2]])
    assert scores[0, 2] > scores[0, 3] and scores[1, 4] > scores[1, 1]
    # New sessions (user 0, the next-click protocol's), and a known user whose history
    # grew since training (the test stage's), by the history given, not a trained row.
    fresh = als.score(np.array([0, 0]), [np.array([3]), np.array([1])])
    assert fresh[0, 4] > fresh[0, 2] and fresh[1, 2] > fresh[1, 4]
    grown = als.score(np.array([1]), [np.array([1, 2, 3, 3, 3])])
    assert grown[0, 4] > scores[0, 4]


def test_training_windows_cover_long_histories() -> None:
    types = [np.arange(11) % 3, np.array([1])]
    rows, seq, pos, seq_types, pos_types = training_arrays(
        [np.arange(1, 12), np.array([5])], max_len=4, max_windows=8, types=types)
    # 11 items: windows end at items 11, 7 and 3; each target item is trained on once.
    assert rows.tolist() == [0, 0, 0]
    assert seq.tolist() == [[7, 8, 9, 10], [3, 4, 5, 6], [0, 0, 1, 2]]
    assert pos.tolist() == [[8, 9, 10, 11], [4, 5, 6, 7], [0, 0, 2, 3]]
    # Types travel with their items: item i has type (i - 1) % 3.
    assert (seq_types == np.where(seq > 0, (seq - 1) % 3, 0)).all()
    assert (pos_types == np.where(pos > 0, (pos - 1) % 3, 0)).all()


def test_targets_weigh_by_their_event_type() -> None:
    pos = np.array([[0, 4, 5, 6]])
    kinds = np.array([[0, 1, 4, 7]])  # padding, view, purchase, a type past the table
    weights = target_weights(pos, kinds, (1.0, 1.0, 1.0, 1.5, 2.0))
    assert weights.tolist() == [[0.0, 1.0, 2.0, 1.0]]


def test_pooled_negatives_score_every_rows_draws_for_every_row() -> None:
    """``pool``: row i's logits are the positive, then every row's draws in batch order,
    each scored by row i's own embedding; a draw ``pool_seen`` marks for row i is masked
    (its columns past the batch's draws, a short last batch's, are not read)."""
    model = _sasrec()
    seq = np.array([[0, 0, 0, 0, 0, 3, 7, 9], [0, 0, 0, 3, 7, 9, 4, 2]])
    pos = np.array([[0, 0, 0, 0, 3, 7, 9, 5], [0, 0, 3, 7, 9, 4, 2, 6]])
    pool = np.array([[5, 11, 12], [13, 6, 3]])
    pool_seen = np.zeros((2, 9), bool)
    pool_seen[0, [0, 2]] = True   # row 0 met 5 and 12 (12 before this window)
    pool_seen[1, [4, 5]] = True   # row 1 met 6 and 3
    pool_seen[:, 6:] = True       # a batch of 3 rows would have drawn 9
    logits = keras.ops.convert_to_numpy(model({"seq": seq, "pos": pos, "pool": pool,
                                               "pool_seen": pool_seen}))
    assert logits.shape == (2, 8, 1 + 6)
    h = keras.ops.convert_to_numpy(model.encoder(seq))
    table = keras.ops.convert_to_numpy(model.item_embeddings())
    want = h @ table[pool.reshape(-1)].T                          # [2, 8, 6]
    want[0][:, [0, 2]] = -1e9
    want[1][:, [4, 5]] = -1e9
    np.testing.assert_allclose(logits[..., 1:], want, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(logits[..., 0], (h * table[pos]).sum(-1), rtol=1e-5, atol=1e-5)


def test_pooled_draws_are_marked_against_each_rows_whole_history() -> None:
    """A training row is a window of a history; the draws of its batch that it met
    earlier or later than its window are no negatives for it either."""
    histories = [np.array([12, 3, 7, 9, 5]), np.array([3, 7, 9, 4, 2, 6]), np.array([1, 2])]
    seen = SeenItems(histories, num_items=14)
    rows = np.array([0, 1, 2, 0])  # batches of 3: rows 0, 1, 2, then row 0 alone
    pool, marks = pooled_negatives(rows, seen, 2, 3, np.random.default_rng(0))
    assert pool.shape == (4, 2) and marks.shape == (4, 6)
    assert not seen.contains(rows, pool).any()
    batch = pool[:3].reshape(-1)
    assert (marks[:3] == seen.contains(rows[:3], np.broadcast_to(batch, (3, 6)))).all()
    assert (marks[3, :2] == seen.contains(rows[3:], pool[3:])).all() and marks[3, 2:].all()
    forced = np.array([[14, 13], [12, 11], [10, 8]])  # 12: row 0's, outside any window
    assert seen.among(rows[:3], forced.reshape(-1))[0].tolist() == [
        False, False, True, False, False, False]


def test_sasrec_learns_sequential_structure_popularity_cannot() -> None:
    events = list(generate(SyntheticConfig(users=200, items=80, events=8000, seed=4,
                                           follow_transition=0.8)))
    split = leave_last_out(build_sequences(events))
    cfg = SASRecConfig(max_len=20, dim=32, blocks=1, epochs=15, eval_every=5, batch_size=64)
    trained = train_models(split, ["popularity", "sasrec"], cfg)
    pop = evaluate(trained["popularity"].scorer, split)["full"]["NDCG@10"]
    sas = evaluate(trained["sasrec"].scorer, split)["full"]["NDCG@10"]
    assert sas > pop + 0.05, (sas, pop)
    with pytest.raises(ValueError, match="unknown models"):
        train_models(split, ["deepfm"])
    assert isinstance(trained["sasrec"].scorer, SASRecScorer)


def test_the_retrievers_dropout_is_the_logs_when_unset() -> None:
    """0.5 for a sparse log, 0.2 for a dense one, as the SASRec paper chose (measured here:
    docs/BENCHMARKS.md); one that is set is kept. The trained model holds it."""
    from model.retrieval.training import SPARSE_EVENTS, fit_sasrec, log_dropout

    assert log_dropout([np.arange(SPARSE_EVENTS)] * 3) == 0.5
    assert log_dropout([np.arange(SPARSE_EVENTS + 1)] * 3) == 0.2
    assert log_dropout([np.arange(SPARSE_EVENTS + 1), np.arange(0)]) == 0.2  # not thinned
    events = list(generate(SyntheticConfig(users=30, items=20, events=300, seed=2)))
    split = leave_last_out(build_sequences(events))  # 10 events a user
    for dropout, kept in ((None, 0.5), (0.1, 0.1)):
        cfg = SASRecConfig(max_len=8, dim=8, blocks=1, epochs=1, eval_every=1, dropout=dropout)
        assert fit_sasrec(split, cfg).model.encoder.dropout == kept


def test_the_multi_task_ranker_trains_on_cross_fitted_lists() -> None:
    """Lists are whole candidate lists (the retriever's nearest unseen items and the user's
    newest items, best score first) holding the true item once, scored by a retriever
    that never saw the user; with conversions in the log the ranker gets both heads, the
    feature spec it was trained with, and early stopping never leaves it below its start
    (the retriever's order)."""
    from model.evaluation.harness import conversion_report
    from model.features import FeatureSpec
    from model.ranking.inputs import RECENT_ITEMS
    from model.ranking.training import EMPTY, NeuMFConfig, cross_fitted_examples
    from streams.events import EVENT_TYPES

    events = list(generate(SyntheticConfig(users=120, items=60, events=4000, seed=8,
                                           follow_transition=0.7)))
    spec = FeatureSpec(event_types=EVENT_TYPES)
    split = leave_last_out(build_sequences(events, spec=spec))
    sasrec_cfg = SASRecConfig(max_len=20, dim=16, blocks=1, epochs=4, eval_every=2)
    cfg = NeuMFConfig(gmf_dim=8, mlp_layers=(16, 8), epochs=4, eval_every=2, candidates=20,
                      lists_per_user=5)
    found, labels = cross_fitted_examples(split, sasrec_cfg, 2, cfg)
    assert labels.shape == (len(found.ids), cfg.candidates + RECENT_ITEMS, 2)
    assert ((labels[..., 0] == 1).sum(axis=1) == 1).all()  # one true next item per list
    assert (found.ids[labels[..., 0] == 1] > 0).all()
    assert ((labels[..., 0] == EMPTY) == (found.ids == 0)).all()  # empty slots marked
    assert (found.ids == 0).any()  # short histories leave recent slots empty
    assert (np.diff(np.where(found.ids > 0, found.scores, -1e9), axis=1) <= 0).all()
    assert (labels[..., 1] <= (labels[..., 0] == 1)).all()  # a conversion is a hit too
    trained = train_models(split, ["sasrec", "pipeline"], sasrec_cfg, cfg)
    result = trained["pipeline"].result
    assert result is not None and result.model.tasks == ("next", "conversion")
    assert FeatureSpec.from_dict(result.model.features) == split.sequences.spec
    looks = {p["epoch"]: p["valid_ndcg10"] for p in result.curve if "valid_ndcg10" in p}
    assert looks[result.best_epoch] == max(looks.values()) >= looks[0]  # never below its start
    # the conversion heads' refit after early stopping changes the served score: the
    # validation reported is that of the weights served, not of the epoch kept
    assert result.best_valid == evaluate(trained["pipeline"].scorer, split, "valid")
    report = conversion_report(trained["pipeline"].scorer, split)  # type: ignore[arg-type]
    assert set(report) == {"next head", "conversion head", "served"}
    assert all(0 <= r["AUC"] <= 1 and r["cases"] > 0 for r in report.values())
    assert all(0 <= r["converts AUC"] <= 1 for r in report.values())
    for head in ("conversion head", "served"):  # each against the next head, paired
        r = report[head]
        assert r["converts AUC gain"] == pytest.approx(
            r["converts AUC"] - report["next head"]["converts AUC"])
        assert r["converts AUC gain low"] <= r["converts AUC gain"] <= r["converts AUC gain high"]


@pytest.mark.parametrize("field", ["epochs", "batch_size", "negatives", "max_windows",
                                   "eval_every", "patience"])
def test_a_sasrec_config_that_cannot_train_is_refused_in_one_line(field: str) -> None:
    """Each failed deep in training (a division by zero, an empty stack) or trained
    nothing (no negative: a loss of 0) before."""
    with pytest.raises(ValueError, match=f"^{field} must be >= 1. Received: {field}=0$"):
        SASRecConfig(**{field: 0})


def test_a_log_with_no_two_item_training_history_is_refused_in_one_line() -> None:
    with pytest.raises(ValueError, match="no user's training history holds two items"):
        training_arrays([np.array([5]), np.array([7])], 50, 8)
