from pathlib import Path

import keras
import numpy as np
import pytest

from model.ranking.neumf import NeuMF
from model.retrieval.sasrec import SASRec
from model.weights import all_finite, copy_weights

pytestmark = pytest.mark.keras  # `make test` runs these on TensorFlow and again on JAX


def _built_sasrec(num_items: int) -> SASRec:
    model = SASRec(num_items=num_items, max_len=8, dim=16, blocks=2, heads=2, dropout=0.0)
    model({"seq": np.ones((1, 8), "int64"), "pos": np.ones((1, 8), "int64"),
           "neg": np.ones((1, 2), "int64")})
    return model


def test_a_grown_sasrec_encodes_old_sessions_exactly_like_the_champion() -> None:
    keras.utils.set_random_seed(1)
    champion, challenger = _built_sasrec(20), _built_sasrec(35)  # 15 new items
    assert copy_weights(challenger, champion) == []
    old = keras.ops.convert_to_numpy(champion.item_embeddings())
    new = keras.ops.convert_to_numpy(challenger.item_embeddings())
    np.testing.assert_array_equal(new[:21], old)
    assert not np.allclose(new[21:], 0)  # new items keep their initial values
    seq = np.random.default_rng(0).integers(1, 21, (4, 8))
    np.testing.assert_allclose(keras.ops.convert_to_numpy(challenger.encode(seq)),
                               keras.ops.convert_to_numpy(champion.encode(seq)), atol=1e-6)


def test_neumf_grows_user_and_item_tables_and_another_architecture_is_reported(
        caplog: pytest.LogCaptureFixture) -> None:
    def built(users: int, items: int, layers: tuple[int, ...]) -> NeuMF:
        model = NeuMF(users, items, gmf_dim=4, mlp_layers=layers, session_dim=3, use_score=True)
        model({"user": np.zeros(1, "int32"), "item": np.ones(1, "int32"),
               "session": np.zeros((1, 3)), "score": np.zeros((1, 1))})
        return model

    champion = built(5, 6, (8, 4))
    assert copy_weights(built(9, 10, (8, 4)), champion) == []
    other = built(9, 10, (8, 6))  # the last MLP layer differs: not copied, and said so
    skipped = copy_weights(other, champion)
    assert sorted(p.split("/", 1)[1] for p in skipped) == [
        "fusion/kernel", "mlp_0/bias", "mlp_0/kernel"]
    assert "warm start: 3 of 8 weights keep their initial values" in caplog.text


def test_all_finite_catches_a_diverged_weight() -> None:
    model = _built_sasrec(5)
    assert all_finite(model)
    table = model.weights[0]
    value = keras.ops.convert_to_numpy(table).copy()
    value[1, 1] = np.nan
    table.assign(value)
    assert not all_finite(model)


def test_a_champion_without_event_types_hands_over_every_shared_weight() -> None:
    keras.utils.set_random_seed(2)
    champion = _built_sasrec(20)
    typed = SASRec(num_items=25, max_len=8, dim=16, blocks=2, heads=2, dropout=0.0,
                   num_types=5)
    typed({"seq": np.ones((1, 8), "int64"), "types": np.ones((1, 8), "int64"),
           "pos": np.ones((1, 8), "int64"), "neg": np.ones((1, 2), "int64")})
    skipped = copy_weights(typed, champion)
    assert [p.split("/", 1)[1] for p in skipped] == ["encoder/type_embedding/embeddings"]
    old = keras.ops.convert_to_numpy(champion.item_embeddings())
    np.testing.assert_array_equal(keras.ops.convert_to_numpy(typed.item_embeddings())[:21], old)


def test_weights_pair_by_path_not_by_position() -> None:
    """Two models with as many weights, of equal shapes, in another order: pairing by
    position handed each layer the other's weights without a word."""
    def built(order: tuple[str, str]) -> keras.Model:
        inputs = keras.Input((4,))
        first, second = (keras.layers.Dense(4, name=name) for name in order)
        return keras.Model(inputs, second(first(inputs)))

    champion, challenger = built(("proj", "head")), built(("head", "proj"))
    assert copy_weights(challenger, champion) == []
    theirs = {w.path: keras.ops.convert_to_numpy(w) for w in champion.weights}  # proj/kernel
    for weight in challenger.weights:
        np.testing.assert_array_equal(keras.ops.convert_to_numpy(weight), theirs[weight.path])


def test_a_champion_loaded_from_its_file_hands_over_every_weight(tmp_path: Path) -> None:
    """A model loaded from a ``.keras`` file names its weights without its own name
    ("encoder/..."), a model built here with it ("sas_rec_3/encoder/...")."""
    keras.utils.set_random_seed(3)
    _built_sasrec(20).save(tmp_path / "champion.keras")
    champion = keras.saving.load_model(tmp_path / "champion.keras", safe_mode=True,
                                       compile=False)
    challenger = _built_sasrec(25)
    assert copy_weights(challenger, champion) == []
    np.testing.assert_array_equal(
        keras.ops.convert_to_numpy(challenger.item_embeddings())[:21],
        keras.ops.convert_to_numpy(champion.item_embeddings()))
