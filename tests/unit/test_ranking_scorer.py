import keras
import numpy as np
import pytest

from model.ranking.neumf import NeuMF
from model.ranking.scorer import export_neumf

pytestmark = pytest.mark.keras  # `make test` runs these on TensorFlow and again on JAX


@pytest.mark.parametrize(
    "branch,session_dim,use_score,context_dim,categories,pair_dim,tasks,wide,conditional", [
        ("both", 8, True, 0, 0, 0, ("next",), False, False),
        ("both", 0, False, 3, 2, 4, ("next", "conversion"), False, False),
        ("gmf", 0, True, 0, 0, 0, ("next",), False, False),
        ("mlp", 8, True, 2, 1, 3, ("next", "conversion"), False, False),
        ("both", 8, True, 2, 1, 6, ("next", "conversion"), True, False),
        ("mlp", 0, False, 0, 0, 3, ("next",), True, False),
        ("both", 8, True, 4, 1, 6, ("next", "conversion"), True, True),
        ("mlp", 0, False, 3, 0, 2, ("next", "conversion", "extra"), False, True),
        ("both", 0, True, 0, 0, 0, ("next", "conversion"), False, True)])
def test_numpy_scores_equal_the_keras_model(branch: str, session_dim: int, use_score: bool,
                                            context_dim: int, categories: int, pair_dim: int,
                                            tasks: tuple[str, ...], wide: bool,
                                            conditional: bool) -> None:
    keras.utils.set_random_seed(4)
    model = NeuMF(num_users=30, num_items=50, gmf_dim=6, mlp_layers=(16, 8, 4),
                  session_dim=session_dim, use_score=use_score, context_dim=context_dim,
                  branch=branch, categories=categories, buckets=5, pair_dim=pair_dim,
                  tasks=tasks, wide=wide, conditional=conditional)
    rng = np.random.default_rng(0)
    batch, cands = 5, 7
    users = rng.integers(0, 31, batch)
    items = rng.integers(1, 51, (batch, cands))
    session = rng.standard_normal((batch, session_dim)).astype(np.float32)
    retrieval = rng.standard_normal((batch, cands)).astype(np.float32)
    context = rng.standard_normal((batch, context_dim)).astype(np.float32)
    cats = rng.integers(0, 5, (batch, categories))
    pair = rng.standard_normal((batch, cands, pair_dim)).astype(np.float32)
    flat = {"user": np.repeat(users, cands), "item": items.ravel()}
    if session_dim:
        flat["session"] = np.repeat(session, cands, axis=0)
    if use_score:
        flat["score"] = retrieval.reshape(-1, 1)
    if context_dim:
        flat["context"] = np.repeat(context, cands, axis=0)
    if categories:
        flat["categories"] = np.repeat(cats, cands, axis=0)
    if pair_dim:
        flat["pair"] = pair.reshape(-1, pair_dim)
    # A training step, so no weight sits at its initial value (biases start at zero).
    model.compile(optimizer=keras.optimizers.Adam(0.05), loss="mse")
    model.fit(flat, rng.standard_normal((batch * cands, len(tasks))), epochs=3, verbose=0)
    expected = keras.ops.convert_to_numpy(model(flat)).reshape(batch, cands, len(tasks))
    got = export_neumf(model).score(users, items, session, retrieval, context, cats, pair)
    assert got.shape == (batch, cands, len(tasks)) and got.dtype == np.float32
    np.testing.assert_allclose(got, expected, atol=1e-5)
    # Features appended since the model was trained are not read: a champion trained with
    # fewer pair features keeps serving.
    newer = np.concatenate([pair, rng.standard_normal((batch, cands, 2)).astype(np.float32)],
                           axis=-1)
    np.testing.assert_allclose(export_neumf(model).score(users, items, session, retrieval,
                                                         context, cats, newer),
                               expected, atol=1e-5)


def test_a_model_without_hidden_mlp_layers_is_refused() -> None:
    model = NeuMF(num_users=3, num_items=4, mlp_layers=(8,))
    model({"user": np.zeros(1, "int32"), "item": np.ones(1, "int32")})
    with pytest.raises(ValueError, match="hidden MLP layer"):
        export_neumf(model)


def test_context_features_need_the_mlp_branch() -> None:
    with pytest.raises(ValueError, match="MLP branch"):
        NeuMF(num_users=3, num_items=4, branch="gmf", context_dim=2)


def _content_ranker(id_dropout: float = 0.0):  # noqa: ANN202 - (model, table, records)
    from types import SimpleNamespace

    from model.content import ContentSpec, catalogue_table

    keras.utils.set_random_seed(5)
    records = [SimpleNamespace(item_id=str(i), title=f"t{i % 5}", text=None,
                               categories=(f"c{i % 3}",), brand=None, price=float(i),
                               attributes={}) for i in range(1, 41)]  # 41..50: no record
    table = catalogue_table(records, [str(i) for i in range(1, 51)],
                            ContentSpec(buckets=64, max_tokens=4))
    model = NeuMF(num_users=30, num_items=50, gmf_dim=6, mlp_layers=(16, 8, 4),
                  session_dim=0, use_score=True, content=table.spec.to_dict(),
                  id_dropout=id_dropout)
    model({"user": np.zeros(1, "int32"), "item": np.ones(1, "int32"),
           "score": np.zeros((1, 1), "float32")})
    model.set_content(table)
    rng = np.random.default_rng(1)
    flat = {"user": rng.integers(0, 31, 60), "item": rng.integers(1, 51, 60),
            "score": rng.standard_normal((60, 1)).astype("float32")}
    model.compile(optimizer=keras.optimizers.Adam(0.05), loss="mse")
    model.fit(flat, rng.standard_normal((60, 1)), epochs=3, verbose=0)
    return model, table, records


def test_a_ranker_with_content_folds_it_into_numpy_and_scores_new_items_by_it() -> None:
    from types import SimpleNamespace

    model, table, records = _content_ranker()
    users, items = np.array([1, 2]), np.array([[3, 45, 7], [9, 1, 50]])
    retrieval = np.ones((2, 3), np.float32)
    flat = {"user": np.repeat(users, 3), "item": items.ravel(), "score": retrieval.reshape(-1, 1)}
    expected = keras.ops.convert_to_numpy(model(flat)).reshape(2, 3, 1)
    ranker = export_neumf(model)
    np.testing.assert_allclose(ranker.score(users, items, retrieval=retrieval), expected,
                               atol=1e-5)
    # A record unchanged re-folds to the same row; a new item gets a row from content alone.
    new = SimpleNamespace(item_id="new", title="t1", text=None, categories=("c1",), brand=None,
                          price=3.0, attributes={})
    grown = ranker.with_items([records[2], new], np.array([3, 51]))
    assert grown.num_items == 51 and ranker.num_items == 50
    np.testing.assert_allclose(grown.mlp_item[3], ranker.mlp_item[3], atol=1e-5)
    assert not grown.gmf_item[51].any()
    # Updating the content-only item again re-folds its content alone (it has no id term).
    again = grown.with_items([new], np.array([51]))
    np.testing.assert_allclose(again.mlp_item[51], grown.mlp_item[51], atol=1e-6)
    assert again.gmf_item is grown.gmf_item  # no new item: its id table is not copied
    # Item 51's score equals the Keras model's for an item with that content and no id.
    tokens, numeric = table.spec.arrays([new])
    content = keras.ops.convert_to_numpy(model.item_content(tokens, numeric))
    first = keras.ops.convert_to_numpy(model.mlp[0].kernel)
    half = model.mlp_layers[0] // 2
    np.testing.assert_allclose(grown.mlp_item[51], content[0] @ first[half:2 * half], atol=1e-5)
    assert export_neumf(_content_ranker()[0]).with_items([], np.zeros(0, np.int64)).num_items == 50


def test_ranker_id_dropout_acts_only_in_training_on_items_with_content() -> None:
    model, _, _ = _content_ranker(id_dropout=0.5)
    items = np.tile(np.arange(1, 51), 40)
    tokens, numeric = model.catalogue.lookup(items)
    keep = keras.ops.convert_to_numpy(model.catalogue.keep(tokens, numeric, training=True))[:, 0]
    with_content = items <= 40
    assert 0.35 < 1 - keep[with_content].mean() < 0.65 and keep[~with_content].all()
    assert model.catalogue.keep(tokens, numeric, training=False) is None


def test_a_saved_ranker_with_content_loads_built_and_exports(tmp_path) -> None:
    model, _, _ = _content_ranker()
    model.save(tmp_path / "r.keras")
    loaded = keras.saving.load_model(tmp_path / "r.keras", safe_mode=True, compile=False)
    users, items = np.array([1, 2]), np.array([[3, 45], [9, 1]])
    retrieval = np.ones((2, 2), np.float32)
    expected = export_neumf(model).score(users, items, retrieval=retrieval)
    np.testing.assert_allclose(export_neumf(loaded).score(users, items, retrieval=retrieval),
                               expected, atol=1e-6)  # exported before any call: built on load


def test_a_ranker_keeps_its_history_window_and_order_through_saving_and_export(tmp_path
                                                                            ) -> None:
    """The window its seen-before features were trained on travels with the model, so a
    worker cuts its sessions the same way, and so do the order chosen among unseen items
    and whether lists hold seen ones; an older model (no keys) reads whole histories,
    serves its own order and leaves seen items out."""
    model = NeuMF(num_users=3, num_items=4, mlp_layers=(8, 4), pair_dim=2, seen_window=7,
                  retrieval_order=True, recommends_seen=True)
    model({"user": np.zeros(1, "int32"), "item": np.ones(1, "int32"),
           "pair": np.zeros((1, 2), "float32")})
    model.save(tmp_path / "r.keras")
    loaded = keras.saving.load_model(tmp_path / "r.keras", safe_mode=True, compile=False)
    assert loaded.seen_window == 7 and export_neumf(loaded).seen_window == 7
    assert loaded.retrieval_order and export_neumf(loaded).retrieval_order
    assert loaded.recommends_seen and export_neumf(loaded).recommends_seen
    config = {k: v for k, v in model.get_config().items()
              if k not in ("seen_window", "retrieval_order", "recommends_seen")}
    older = NeuMF.from_config(config)
    assert older.seen_window == 0 and not older.retrieval_order and not older.recommends_seen
    with pytest.raises(ValueError, match="seen_window >= 0"):
        NeuMF(num_users=3, num_items=4, seen_window=-1)
