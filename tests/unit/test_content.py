"""Item content (``model.content``) and the retriever that reads it: hashing against
hand-computed tokens, fitting and normalising numbers, the Keras encoder against its
NumPy twin, SASRec with a catalogue (id + content, id dropout, export, save and load)."""

from __future__ import annotations

import math
import zlib
from dataclasses import replace
from pathlib import Path

import keras
import numpy as np
import pytest

from model.content import ContentSpec, ItemContentEncoder, NumpyContent, catalogue_table
from model.retrieval.encoder import export_sasrec
from model.retrieval.sasrec import SASRec
from streams.catalog import ItemRecord

pytestmark = pytest.mark.keras  # `make test` runs these on TensorFlow and again on JAX




def _hash(key: str, buckets: int = 1 << 15) -> int:
    return 1 + zlib.crc32(key.encode()) % (buckets - 1)


def test_tokens_are_field_tagged_hashes_most_telling_first_each_once() -> None:
    spec = ContentSpec(char_tokens=16)
    item = ItemRecord("1", title="Gorilla Glue", text="glue, waterproof", categories=("Tools ",),
                brand="Gorilla")
    expected = [_hash(k) for k in ("c=tools", "b=gorilla", "w=gorilla", "w=glue",
                                   "w=gorilla_glue", "w=waterproof", "w=glue_waterproof")]
    trigrams = [_hash(f"g={g}") for g in ("<go", "gor", "ori", "ril", "ill", "lla", "la>",
                                          "<gl", "glu", "lue", "ue>", "<wa", "wat", "ate",
                                          "ter", "erp")]  # "glue" again adds nothing
    assert spec.tokens(item) == expected + trigrams  # "w=glue" from the text is already there
    assert ContentSpec(max_tokens=2).tokens(item) == expected[:2]  # no trigrams by default
    assert ContentSpec(max_tokens=2, char_tokens=3).tokens(item) == expected[:2] + trigrams[:3]
    assert ContentSpec(bigrams=False).tokens(item) == [
        _hash(k) for k in ("c=tools", "b=gorilla", "w=gorilla", "w=glue", "w=waterproof")]
    assert spec.tokens(ItemRecord("2")) == []


def test_trigrams_tie_word_forms_and_a_spec_saved_without_them_reads_none() -> None:
    spec = ContentSpec(char_tokens=16)
    glue, glues = (set(spec.tokens(ItemRecord("1", title=t))) for t in ("glue", "glues"))
    assert glue & glues == {_hash("g=<gl"), _hash("g=glu"), _hash("g=lue")}  # words differ
    old = {k: v for k, v in spec.to_dict().items() if k != "char_tokens"}
    assert ContentSpec.from_dict(old).char_tokens == 0 and ContentSpec.from_dict(old).width == 16
    before_modes = {k: v for k, v in spec.to_dict().items() if k != "mode"}
    assert ContentSpec.from_dict(before_modes).mode == "sum"  # trained as id + content
    assert ContentSpec.from_dict(replace(spec, mode="map").to_dict()).mode == "map"
    with pytest.raises(ValueError, match="char_tokens"):
        ContentSpec(char_tokens=-1)


def test_one_extreme_price_does_not_flatten_the_others() -> None:
    """A sentinel price of 1e300 among 999 of 5 to 200 spread the log prices so wide that
    every other item read about 0 (a review); context numbers were clipped already."""
    prices = np.random.default_rng(0).uniform(5, 200, 999)
    clean = ContentSpec().fit([ItemRecord(str(i), price=float(p)) for i, p in enumerate(prices)])
    spiked = ContentSpec().fit([ItemRecord(str(i), price=float(p)) for i, p in
                                enumerate([*prices, 1e300])])
    assert spiked.numeric_std[0] == pytest.approx(clean.numeric_std[0], rel=0.05)


def test_a_number_every_item_that_has_it_sets_alike_reads_zero_for_any_value() -> None:
    """Its spread of 0 was read as 1: every training row read 0, so its weights never
    learnt, and a new item's other value fed them (a shift several times the title's own
    vector). As ``FeatureSpec`` does for context numbers, any value now reads 0."""
    items = [ItemRecord(str(i), title=f"thing {i}",
                        attributes={"featured": 1} if i < 20 else {}) for i in range(100)]
    spec = ContentSpec().fit(items)
    assert spec.numeric == ("featured",) and spec.numeric_std == (0.0,)
    _, numeric = spec.arrays([*items[:2], ItemRecord("new", attributes={"featured": 40}),
                              ItemRecord("off", attributes={"featured": 0})])
    assert not numeric.any()
    assert ContentSpec.from_dict(spec.to_dict()) == spec
    saved_before = replace(spec, numeric_std=(1.0,))  # as models trained before read it
    assert saved_before.arrays([ItemRecord("new", attributes={"featured": 40})])[1].any()


def test_fit_keeps_numbers_most_items_carry_and_normalises_their_logs() -> None:
    items = [ItemRecord(str(i), price=float(p), attributes={"year": 2000 + i} if i < 2 else {})
             for i, p in enumerate([9.0, 99.0, 999.0])]
    items += [ItemRecord("x", attributes={"rare": 1.0})] + [ItemRecord(f"n{i}") for i in range(17)]
    spec = ContentSpec().fit(items)
    assert spec.numeric == ("price", "year")  # "rare": 1 of 21 items, under 5%
    logs = np.log1p([9.0, 99.0, 999.0])
    assert spec.numeric_mean[0] == pytest.approx(logs.mean())
    assert spec.numeric_std[0] == pytest.approx(logs.std())
    tokens, numeric = spec.arrays([None, items[0], items[2]])
    assert tokens.dtype == np.int32 and tokens.shape == (3, spec.width)
    assert not tokens.any() and not numeric[0].any()
    assert numeric[1, 0] == pytest.approx((logs[0] - logs.mean()) / logs.std())
    assert numeric[2, 1] == 0.0  # no year: the mean
    assert ContentSpec.from_dict(spec.to_dict()) == spec


def test_a_bad_spec_and_non_finite_numbers_fail_or_drop() -> None:
    with pytest.raises(ValueError, match="buckets"):
        ContentSpec(buckets=1)
    spec = ContentSpec(numeric=("price",))
    assert math.isnan(spec.raw_numeric(ItemRecord("1", price=math.inf))[0])


def test_catalogue_table_rows_follow_the_id_map() -> None:
    records = [ItemRecord("b", categories=("x",)), ItemRecord("zz", brand="q")]
    table = catalogue_table(records, ["a", "b", "c"])
    assert table.tokens.shape[0] == 4 and table.covered == 1
    assert table.tokens[2, 0] == _hash("c=x") and not table.tokens[[0, 1, 3]].any()


def test_numpy_content_equals_the_keras_encoder() -> None:
    keras.utils.set_random_seed(1)
    layer = ItemContentEncoder(buckets=50, num_numeric=2, dim=8)
    layer.build()
    rng = np.random.default_rng(0)
    tokens = rng.integers(0, 50, (6, 5)).astype("int32")
    tokens[0] = 0  # no content: the zero vector
    numeric = rng.normal(size=(6, 2)).astype("float32")
    numeric[0] = 0
    expected = keras.ops.convert_to_numpy(layer(tokens, numeric))
    twin = NumpyContent(ContentSpec(buckets=50), keras.ops.convert_to_numpy(
        layer.token_embedding.embeddings), keras.ops.convert_to_numpy(layer.numeric_map.kernel))
    np.testing.assert_allclose(twin.embed(tokens, numeric), expected, atol=1e-6)
    assert not expected[0].any()


def _content_sasrec(id_dropout: float = 0.5, mode: str = "sum") -> tuple[SASRec, np.ndarray]:
    keras.utils.set_random_seed(3)
    records = [ItemRecord(str(i), title=f"thing {i % 4}", categories=(f"c{i % 3}",), price=i + 1.0)
               for i in range(1, 30)]  # items 30..40 have no record
    table = catalogue_table(records, [str(i) for i in range(1, 41)],
                            ContentSpec(buckets=64, max_tokens=6, mode=mode))
    model = SASRec(num_items=40, max_len=8, dim=16, blocks=1, heads=2,
                   content=table.spec.to_dict(), id_dropout=id_dropout)
    seq = np.random.default_rng(0).integers(1, 41, (5, 8))
    seq[1, :3] = 0
    model({"seq": seq, "pos": seq, "neg": np.ones((5, 2), "int64")})
    model.encoder.set_content(table)
    model.compile(optimizer="adam", loss=lambda y, p: keras.ops.mean(p ** 2))
    model.fit({"seq": seq, "pos": seq, "neg": np.ones((5, 2), "int64")}, np.zeros(5), verbose=0)
    return model, seq


def test_a_warm_start_carries_each_numeric_keys_weights_to_that_key() -> None:
    """Each round fits its spec anew, keys ordered by how many items carry them: with
    ``price`` and ``year`` swapped, the challenger read ``year`` through the weights learnt
    for ``price`` (copied by shape), and a key new to the round took a dropped one's."""
    from model.content import carry_numeric_rows
    from model.weights import copy_weights

    def sasrec(keys: tuple[str, ...]) -> SASRec:
        spec = ContentSpec(buckets=16, numeric=keys, numeric_mean=(0.0,) * len(keys),
                           numeric_std=(1.0,) * len(keys))
        model = SASRec(num_items=5, max_len=4, dim=8, blocks=1, heads=1,
                       content=spec.to_dict())
        model({"seq": np.ones((1, 4), "int64"), "pos": np.ones((1, 4), "int64"),
               "neg": np.ones((1, 1), "int64")})
        return model

    def rows(model: SASRec) -> np.ndarray:
        return keras.ops.convert_to_numpy(model.encoder.content_encoder.numeric_map.kernel)

    champion = sasrec(("price", "year"))
    for keys, expected in ((("year", "price"), [1, 0]), (("price", "rating"), [0, None])):
        challenger = sasrec(keys)
        copy_weights(challenger, champion)
        carry_numeric_rows(challenger.encoder.content_encoder, keys,
                           champion.encoder.content_encoder, ("price", "year"))
        for row, old in enumerate(expected):
            want = rows(champion)[old] if old is not None else np.zeros(8, np.float32)
            np.testing.assert_array_equal(rows(challenger)[row], want)
    challenger, before = sasrec(("price",)), sasrec(())  # a champion with no numbers
    copy_weights(challenger, before)
    carry_numeric_rows(challenger.encoder.content_encoder, ("price",),
                       before.encoder.content_encoder, ())
    assert not rows(challenger).any()


def test_sasrec_items_are_id_plus_content_and_the_numpy_forms_agree() -> None:
    model, seq = _content_sasrec()
    enc = model.encoder
    ids = keras.ops.convert_to_numpy(enc.item_embedding.embeddings)
    tokens = keras.ops.convert_to_numpy(enc.catalogue.tokens)
    numeric = keras.ops.convert_to_numpy(enc.catalogue.numeric)
    content = keras.ops.convert_to_numpy(model.content_vectors(tokens, numeric))
    table = keras.ops.convert_to_numpy(model.item_embeddings())
    np.testing.assert_allclose(table, ids + content, atol=1e-6)
    assert not content[35].any() and content[5].any()  # item 35 has no record
    exported = export_sasrec(model)
    np.testing.assert_allclose(exported.items, table, atol=1e-6)
    np.testing.assert_allclose(exported.encode(seq),
                               keras.ops.convert_to_numpy(model.encode(seq)), atol=1e-5)
    assert exported.content is not None and exported.id_vectors is not None
    np.testing.assert_allclose(exported.content.embed(tokens, numeric), content, atol=1e-6)


def test_id_dropout_drops_ids_of_items_with_content_in_training_only() -> None:
    model, _ = _content_sasrec(id_dropout=0.5)
    enc = model.encoder
    ids = np.tile(np.arange(1, 41), (50, 1))
    served = keras.ops.convert_to_numpy(enc.item_vectors(ids))
    trained = keras.ops.convert_to_numpy(enc.item_vectors(ids, training=True))
    changed = ~np.isclose(served, trained).all(axis=-1)
    assert 0.35 < changed[:, :29].mean() < 0.65  # items 1..29 have content
    assert not changed[:, 29:].any()             # no content: the id always stays


def test_id_dropout_reads_numbers_as_content_and_follows_the_seed() -> None:
    """An item with a price and no words is content-described everywhere else (the map
    fit, the coverage count); id dropout skipped it. And its draws ignored the seed."""
    spec = ContentSpec(buckets=64, max_tokens=6, numeric=("price",), numeric_mean=(0.0,),
                       numeric_std=(1.0,), mode="sum")
    records = [ItemRecord(str(i), price=i + 1.0) for i in range(1, 11)]  # numbers only
    table = catalogue_table(records, [str(i) for i in range(1, 21)], spec)
    assert table.covered == 10

    def changed(seed: int) -> np.ndarray:
        keras.utils.set_random_seed(seed)
        model = SASRec(num_items=20, max_len=4, dim=8, blocks=1, content=spec.to_dict(),
                       id_dropout=0.5)
        seq = np.arange(1, 5)[None]
        model({"seq": seq, "pos": seq, "neg": np.ones((1, 2), "int64")})
        model.encoder.set_content(table)
        ids = np.tile(np.arange(1, 21), (40, 1))
        served = keras.ops.convert_to_numpy(model.encoder.item_vectors(ids))
        trained = keras.ops.convert_to_numpy(model.encoder.item_vectors(ids, training=True))
        return ~np.isclose(served, trained).all(axis=-1)

    one = changed(1)
    assert 0.35 < one[:, :10].mean() < 0.65 and not one[:, 10:].any()
    assert (changed(1) == one).all() and (changed(2) != one).any()


def test_a_saved_sasrec_keeps_its_catalogue(tmp_path) -> None:
    model, seq = _content_sasrec()
    model.save(tmp_path / "m.keras")
    loaded = keras.saving.load_model(tmp_path / "m.keras", safe_mode=True, compile=False)
    exported = export_sasrec(loaded)  # before any call: the model was built on load
    np.testing.assert_allclose(exported.items, export_sasrec(model).items, atol=1e-6)
    np.testing.assert_allclose(keras.ops.convert_to_numpy(loaded.item_embeddings()),
                               keras.ops.convert_to_numpy(model.item_embeddings()), atol=1e-6)
    np.testing.assert_allclose(keras.ops.convert_to_numpy(loaded.encode(seq)),
                               keras.ops.convert_to_numpy(model.encode(seq)), atol=1e-5)


def _bundle(mode: str = "sum"):  # noqa: ANN202 - (model, bundle)
    from model.data import IdMap
    from model.pipeline import ServingBundle

    model, _ = _content_sasrec(mode=mode)
    items = IdMap.from_list([str(i) for i in range(1, 41)])
    return model, ServingBundle.from_models(model, None, IdMap.from_list(["u"]), items, "v1")


def test_records_that_move_nothing_copy_nothing_and_a_failed_add_is_caught_up() -> None:
    """A worker re-reads the whole items topic at start, mostly trained items whose
    vectors stay: each poll copied the whole table all the same. And an index that raised
    while adding (out of memory) left items in the id map but never in the index."""
    model, bundle = _bundle(mode="map")
    table = bundle.encoder.items
    assert bundle.add_items([ItemRecord("7", title="thing 9", categories=("c7",))]) == 1
    assert bundle.encoder.items is table  # a trained item keeps its id vector: no copy

    def out_of_memory(vectors: np.ndarray) -> None:
        raise MemoryError

    add, bundle.index.add = bundle.index.add, out_of_memory
    with pytest.raises(MemoryError):
        bundle.add_items([ItemRecord("new1", title="thing 1")])
    bundle.index.add = add
    # new1's record changes too: it moves, yet the index never had it (an update of its
    # label, past the index's end, raised on a flat index and misnumbered an IVF one)
    bundle.add_items([ItemRecord("new1", title="thing 3"), ItemRecord("new2", title="thing 2")])
    assert bundle.index.num_items == len(bundle.items) == 42
    for dense in (41, 42):  # each label holds its own row (inner products: not top-1)
        vector = bundle.encoder.items[dense]
        scores, ids = bundle.index.search(vector[None], 42)
        assert scores[0][ids[0] == dense][0] == pytest.approx(float(vector @ vector), rel=1e-5)


def test_a_record_with_nothing_to_embed_is_not_placed_as_a_zero_vector() -> None:
    """A new item whose record holds no content the model reads (an image alone, a title
    of punctuation) joined the index as the zero vector and was served as ``content``,
    with arbitrary neighbours at score 0; training leaves such items unplaced (a review).
    A trained item keeps its vector."""
    model, bundle = _bundle(mode="map")
    seven = bundle.encoder.items[7].copy()
    bare = [ItemRecord("bare", image_url="https://x/y.jpg"), ItemRecord("dots", title="..."),
            ItemRecord("7", image_url="https://x/7.jpg")]
    assert bundle.add_items(bare) == 1  # "7", learnt from events, alone
    assert bundle.items.get("bare") == bundle.items.get("dots") == 0
    assert bundle.index.num_items == 40
    np.testing.assert_array_equal(bundle.encoder.items[7], seven)


def test_a_new_item_joins_the_bundle_by_content_and_can_be_recommended() -> None:
    model, bundle = _bundle()
    new = ItemRecord("new", title="thing 1", categories=("c1",), price=2.0)
    assert bundle.add_items([new]) == 1
    assert bundle.items.get("new") == 41 and bundle.index.num_items == 41
    exported = export_sasrec(model)
    assert exported.content is not None
    expected = exported.content.embed_items([new])[0]
    np.testing.assert_allclose(bundle.encoder.items[41], expected, atol=1e-6)
    # The index scores the new item like any other.
    query = np.random.default_rng(1).normal(size=(1, 16)).astype("float32")
    scores, ids = bundle.index.search(query, 41)
    assert scores[0][ids[0] == 41][0] == pytest.approx(float(query[0] @ expected), rel=1e-5)
    [rec] = bundle.recommend(["u"], [["1"]], k=41)  # every item but the seen one
    assert rec is not None and len(rec.items) == 40 and rec.paths is not None
    assert {p for item, p in zip(rec.items, rec.paths) if item != "new"} == {"model"}
    assert rec.paths[rec.items.index("new")] == "content"
    [rec] = bundle.recommend(["u"], [["new"]], k=40)  # a session of the new item alone
    assert rec is not None and "new" not in rec.items
    similar = bundle.similar("new", k=5)
    assert similar is not None and len(similar.items) == 5 and "new" not in similar.items
    assert bundle.similar("nope") is None


def test_a_changed_record_re_embeds_its_item_as_id_plus_new_content() -> None:
    model, bundle = _bundle()
    exported = export_sasrec(model)
    changed = ItemRecord("7", title="another thing", categories=("c9",), price=50.0)
    assert bundle.add_items([changed]) == 1 and bundle.index.num_items == 40
    expected = exported.id_vectors[7] + exported.content.embed_items([changed])[0]
    np.testing.assert_allclose(bundle.encoder.items[7], expected, atol=1e-6)
    scores, ids = bundle.index.search(bundle.encoder.items[7][None], 40)
    got = scores[0][ids[0] == 7][0]
    assert got == pytest.approx(float(expected @ expected), rel=1e-5)


def test_records_that_move_no_vector_leave_the_index_alone(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """In ``map`` mode a trained item keeps its id vector: a worker re-reading the items
    topic at start rebuilt an IVF or HNSW index (k-means again) per poll for nothing."""
    from model.retrieval.index import ItemIndex

    model, bundle = _bundle(mode="map")
    rebuilt: list[int] = []
    build = ItemIndex.build
    monkeypatch.setattr(ItemIndex, "build", classmethod(
        lambda cls, table, cfg=None: rebuilt.append(len(table) - 1) or build(table, cfg)))
    monkeypatch.setattr(bundle.index, "update", lambda ids, vectors: False)  # as IVF answers
    before = bundle.encoder.items.copy()
    assert bundle.add_items([ItemRecord("7", title="another thing", price=5.0)]) == 1
    assert rebuilt == [] and (bundle.encoder.items == before).all()
    assert bundle.add_items([ItemRecord("new", title="thing 1")]) == 1
    assert rebuilt == [] and bundle.index.num_items == 41  # added, not rebuilt
    assert bundle.add_items([ItemRecord("new", title="thing 2, changed")]) == 1
    assert rebuilt == [41]  # a content-only item's vector moves: the index follows


def test_the_records_a_sum_model_trained_with_move_no_vector(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """In ``sum`` mode NumPy's id + content rounds differently from Keras's table (~1e-7):
    compared exactly, every trained item read as changed, and each start or swap refiled
    or rebuilt the whole index."""
    from dataclasses import replace

    model, bundle = _bundle(mode="sum")
    # Keras's table one float32 step away from NumPy's sum, as a reviewer's build had it
    # (1.2e-7; this one's rounds alike)
    items = np.nextafter(bundle.encoder.items, np.float32(np.inf))
    bundle.encoder = replace(bundle.encoder, items=items)
    updated: list[int] = []
    monkeypatch.setattr(bundle.index, "update",
                        lambda ids, vectors: updated.extend(ids) or True)
    records = [ItemRecord(str(i), title=f"thing {i % 4}", categories=(f"c{i % 3}",),
                          price=i + 1.0) for i in range(1, 30)]  # as _content_sasrec's
    assert bundle.add_items(records) == len(records)
    assert updated == []
    assert bundle.add_items([ItemRecord("7", title="another thing", price=5.0)]) == 1
    assert list(updated) == [7]


def test_a_bundle_without_a_catalogue_embeds_nothing() -> None:
    from model.data import IdMap
    from model.pipeline import ServingBundle

    keras.utils.set_random_seed(0)
    plain = SASRec(num_items=5, max_len=4, dim=8, blocks=1)
    seq = np.ones((1, 4), "int64")
    plain({"seq": seq, "pos": seq, "neg": np.ones((1, 2), "int64")})
    bundle = ServingBundle.from_models(plain, None, IdMap(), IdMap.from_list(list("abcde")), "v")
    assert bundle.add_items([ItemRecord("z", title="x")]) == 0 and bundle.items.get("z") == 0


def test_logits_are_the_same_from_the_whole_table_or_per_lookup(monkeypatch) -> None:
    import model.retrieval.sasrec as sasrec_module

    model, seq = _content_sasrec()
    inputs = {"seq": seq, "pos": seq, "neg": np.arange(1, 11).reshape(5, 2)}
    whole = keras.ops.convert_to_numpy(model(inputs))
    monkeypatch.setattr(sasrec_module, "FULL_TABLE_MAX", 0)  # every vector per lookup
    np.testing.assert_allclose(keras.ops.convert_to_numpy(model(inputs)), whole, atol=1e-5)


def test_map_mode_serves_id_vectors_and_fits_content_onto_them() -> None:
    model, seq = _content_sasrec(mode="map")
    enc = model.encoder
    ids = keras.ops.convert_to_numpy(enc.item_embedding.embeddings)
    np.testing.assert_allclose(keras.ops.convert_to_numpy(model.item_embeddings()), ids)
    tokens = keras.ops.convert_to_numpy(enc.catalogue.tokens)[1:30]  # items with a record

    def error() -> float:
        mapped = keras.ops.convert_to_numpy(model.content_vectors(
            tokens, keras.ops.convert_to_numpy(enc.catalogue.numeric)[1:30]))
        return float(((mapped - ids[1:30]) ** 2).mean())

    before = error()
    loss = model.fit_content_map(epochs=100)
    assert error() == pytest.approx(loss, rel=0.2) and error() < 0.8 * before
    np.testing.assert_allclose(keras.ops.convert_to_numpy(model.item_embeddings()), ids)
    exported = export_sasrec(model)
    np.testing.assert_allclose(exported.items, ids, atol=1e-6)
    np.testing.assert_allclose(exported.encode(seq),
                               keras.ops.convert_to_numpy(model.encode(seq)), atol=1e-5)


def test_map_fit_weighs_items_by_their_weights() -> None:
    """Items weighted 0 do not pull the map: fitted on four items alone, their content
    lands nearer their id vectors than when all 29 items count equally."""
    def error_on_first_four(weights: np.ndarray | None) -> float:
        model, _ = _content_sasrec(mode="map")
        enc = model.encoder
        model.fit_content_map(epochs=100, item_weights=weights)
        mapped = keras.ops.convert_to_numpy(model.content_vectors(
            keras.ops.convert_to_numpy(enc.catalogue.tokens)[1:5],
            keras.ops.convert_to_numpy(enc.catalogue.numeric)[1:5]))
        ids = keras.ops.convert_to_numpy(enc.item_embedding.embeddings)[1:5]
        return float(((mapped - ids) ** 2).mean())

    first_four = np.zeros(40)
    first_four[:4] = 7.0  # any scale: weights are normalised to a mean of 1
    weighted, unweighted = error_on_first_four(first_four), error_on_first_four(None)
    assert weighted < 0.5 * unweighted
    assert error_on_first_four(np.zeros(40)) == pytest.approx(0.0, abs=1e-10)  # none met:
    # every item with content takes its mapped vector (``test_map_fit_places_unmet_items``)


def test_a_warm_started_map_keeps_the_items_its_start_had_learned() -> None:
    """A warm start's items met only in events past the topic's retention read as never
    met: their id vectors were replaced by their content's, and served as ``content``."""
    from types import SimpleNamespace

    from model.retrieval.training import learned_by

    start = SimpleNamespace(encoder=SimpleNamespace(num_items=5), unmet_items=(2,))
    assert learned_by(start, 7).tolist() == [True, False, True, True, True, False, False]
    assert learned_by(None, 7) is None
    model, _ = _content_sasrec(mode="map")
    before = keras.ops.convert_to_numpy(model.encoder.item_embedding.embeddings).copy()
    met = np.ones(40)
    met[24:30] = 0  # not met this round; all learned by the model it started from
    model.fit_content_map(epochs=2, item_weights=met, learned=np.ones(40, bool))
    after = keras.ops.convert_to_numpy(model.encoder.item_embedding.embeddings)
    np.testing.assert_array_equal(after, before)
    assert model.unmet_items == ()


def test_map_fit_places_unmet_items_by_their_content() -> None:
    model, _ = _content_sasrec(mode="map")
    enc = model.encoder
    before = keras.ops.convert_to_numpy(enc.item_embedding.embeddings).copy()
    tokens = keras.ops.convert_to_numpy(enc.catalogue.tokens)
    numeric = keras.ops.convert_to_numpy(enc.catalogue.numeric)
    described = (tokens > 0).any(axis=1) | (numeric != 0).any(axis=1)
    met = np.ones(40)
    met[24:35] = 0  # items 25..35 never met in training; 30..35 have no record
    model.fit_content_map(epochs=20, item_weights=met)
    after = keras.ops.convert_to_numpy(enc.item_embedding.embeddings)
    unmet = np.zeros(41, bool)
    unmet[25:36] = described[25:36]
    assert unmet[25:30].all() and not unmet[30:36].any()
    mapped = keras.ops.convert_to_numpy(model.content_vectors(tokens[unmet], numeric[unmet]))
    np.testing.assert_allclose(after[unmet], mapped, atol=1e-6)
    np.testing.assert_array_equal(after[~unmet], before[~unmet])  # met, or nothing to map
    np.testing.assert_allclose(export_sasrec(model).items, after, atol=1e-6)  # served so


def test_items_placed_by_content_follow_their_changed_records_in_a_worker(
        tmp_path: Path) -> None:
    """An item training never met sits in the table at its content's mapped vector. A
    worker kept that vector when the item's record changed, as for a trained item, and
    served the item as ``model``; it now moves with its record, as a new item does. The
    model records which items training never met (nothing in the weights tells them
    apart: on a small catalogue the map fits trained items' vectors as closely), those
    with no record then too, and a saved model keeps that record."""
    from model.data import IdMap
    from model.pipeline import ServingBundle

    model, _ = _content_sasrec(mode="map")
    met = np.ones(40)
    met[24:29] = 0  # items 25..29 never met in training
    met[33] = 0     # item 34 neither, and it had no record then
    model.fit_content_map(epochs=20, item_weights=met)
    model.save(tmp_path / "m.keras")
    model = keras.saving.load_model(tmp_path / "m.keras", safe_mode=True, compile=False)
    exported = export_sasrec(model)
    assert exported.unmet is not None
    assert np.flatnonzero(exported.unmet).tolist() == [25, 26, 27, 28, 29, 34]
    bundle = ServingBundle.from_models(model, None, IdMap.from_list(["u"]),
                                       IdMap.from_list([str(i) for i in range(1, 41)]), "v1")
    kept = bundle.encoder.items[7].copy()
    changed = [ItemRecord("26", title="thing 9", categories=("c7",), price=80.0),
               ItemRecord("34", title="thing 2", categories=("c1",), price=3.0),
               ItemRecord("7", title="thing 9", categories=("c7",), price=80.0)]
    assert bundle.add_items(changed) == 3
    mapped, first_record = exported.content.embed_items(changed[:2])
    np.testing.assert_allclose(bundle.encoder.items[26], mapped, atol=1e-6)
    np.testing.assert_allclose(bundle.encoder.items[34], first_record, atol=1e-6)
    np.testing.assert_array_equal(bundle.encoder.items[7], kept)  # trained: its id vector
    scores, ids = bundle.index.search(mapped[None], 40)
    assert scores[0][ids[0] == 26][0] == pytest.approx(float(mapped @ mapped), rel=1e-5)
    [rec] = bundle.recommend(["u"], [["1"]], k=39)
    assert rec is not None and rec.paths is not None
    paths = dict(zip(rec.items, rec.paths))
    assert {paths[str(i)] for i in (*range(25, 30), 34)} == {"content"}
    assert {paths[str(i)] for i in (2, 7, 24, 30)} == {"model"}
    assert export_sasrec(_content_sasrec(mode="sum")[0]).unmet is None
    everyone, _ = _content_sasrec(mode="map")
    everyone.fit_content_map(epochs=2, item_weights=np.ones(40))  # every item met
    assert export_sasrec(everyone).unmet is None


def test_map_mode_bundle_keeps_trained_vectors_and_maps_new_items() -> None:
    model, bundle = _bundle(mode="map")
    before = bundle.encoder.items[7].copy()
    new = ItemRecord("new", title="thing 1", categories=("c1",), price=2.0)
    assert bundle.add_items([ItemRecord("7", title="other", categories=("c9",)), new]) == 2
    np.testing.assert_allclose(bundle.encoder.items[7], before)  # id vector, unchanged
    mapped = export_sasrec(model).content.embed_items([new])[0]
    np.testing.assert_allclose(bundle.encoder.items[41], mapped, atol=1e-6)
