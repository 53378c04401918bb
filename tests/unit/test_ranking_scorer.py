import keras
import numpy as np
import pytest

from model.ranking.neumf import NeuMF
from model.ranking.scorer import export_neumf

pytestmark = pytest.mark.keras  # `make test` runs these on TensorFlow and again on JAX


@pytest.mark.parametrize("branch,session_dim,use_score,context_dim,categories,pair_dim,tasks", [
    ("both", 8, True, 0, 0, 0, ("next",)),
    ("both", 0, False, 3, 2, 4, ("next", "conversion")),
    ("gmf", 0, True, 0, 0, 0, ("next",)),
    ("mlp", 8, True, 2, 1, 3, ("next", "conversion"))])
def test_numpy_scores_equal_the_keras_model(branch: str, session_dim: int, use_score: bool,
                                            context_dim: int, categories: int, pair_dim: int,
                                            tasks: tuple[str, ...]) -> None:
    keras.utils.set_random_seed(4)
    model = NeuMF(num_users=30, num_items=50, gmf_dim=6, mlp_layers=(16, 8, 4),
                  session_dim=session_dim, use_score=use_score, context_dim=context_dim,
                  branch=branch, categories=categories, buckets=5, pair_dim=pair_dim,
                  tasks=tasks)
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


def test_a_model_without_hidden_mlp_layers_is_refused() -> None:
    model = NeuMF(num_users=3, num_items=4, mlp_layers=(8,))
    model({"user": np.zeros(1, "int32"), "item": np.ones(1, "int32")})
    with pytest.raises(ValueError, match="hidden MLP layer"):
        export_neumf(model)


def test_context_features_need_the_mlp_branch() -> None:
    with pytest.raises(ValueError, match="MLP branch"):
        NeuMF(num_users=3, num_items=4, branch="gmf", context_dim=2)
