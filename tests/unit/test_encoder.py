import keras
import numpy as np
import pytest

from model.retrieval.encoder import export_sasrec
from model.retrieval.sasrec import SASRec

pytestmark = pytest.mark.keras  # `make test` runs these on TensorFlow and again on JAX


def test_numpy_forward_equals_the_keras_model() -> None:
    keras.utils.set_random_seed(3)
    model = SASRec(num_items=40, max_len=12, dim=16, blocks=2, heads=2, dropout=0.2)
    rng = np.random.default_rng(0)
    seq = rng.integers(1, 41, (9, 12))
    for row, pad in enumerate([0, 3, 11, 12, 5, 0, 1, 7, 2]):
        seq[row, :pad] = 0  # left padding of every length, including an empty session
    model({"seq": seq, "pos": seq, "neg": np.ones((9, 2), "int64")})
    # Train a step so the weights are not at their symmetric initial values.
    model.compile(optimizer="adam", loss=lambda y, p: keras.ops.mean(p ** 2))
    model.fit({"seq": seq, "pos": seq, "neg": np.ones((9, 2), "int64")}, np.zeros(9), verbose=0)
    expected = keras.ops.convert_to_numpy(model.encode(seq))
    exported = export_sasrec(model)
    got = exported.encode(seq)
    assert got.dtype == np.float32 and got.shape == (9, 16)
    np.testing.assert_allclose(got, expected, atol=1e-5)
    # What filling a cache computes: the forward's keys and values, every block's.
    kv = exported.keys_values(seq)
    assert len(kv) == 2
    for (keys, values), (want_keys, want_values) in zip(kv, exported.forward(seq)[1]):
        assert keys.shape == (9, 12, 2, 8)
        np.testing.assert_array_equal(keys, want_keys)
        np.testing.assert_array_equal(values, want_values)


@pytest.mark.parametrize("max_len,lengths", [
    (6, (15, 4, 9)),      # 15 > 2 windows; the first and last roll in the same step
    (20, (45, 3, 17)),    # caches grow 8 -> 16 -> 20, then roll
])
def test_incremental_steps_equal_the_full_forward_including_window_rolls(
        max_len: int, lengths: tuple[int, ...]) -> None:
    from model.data import pad_left
    from model.retrieval.encoder import IncrementalEncoder

    keras.utils.set_random_seed(5)
    model = SASRec(num_items=40, max_len=max_len, dim=16, blocks=2, heads=2, dropout=0.0)
    model({"seq": np.ones((1, max_len), "int64"), "pos": np.ones((1, max_len), "int64"),
           "neg": np.ones((1, 2), "int64")})
    full = export_sasrec(model)
    inc = IncrementalEncoder(full)
    rng = np.random.default_rng(1)
    streams = [rng.integers(1, 41, n).tolist() for n in lengths]
    caches = [inc.prefill([]) for _ in streams]
    for t in range(max(lengths)):
        live = [i for i, s in enumerate(streams) if t < len(s)]
        got = inc.step([caches[i] for i in live], np.array([streams[i][t] for i in live]))
        window = np.stack([pad_left(np.array(caches[i].items), max_len) for i in live])
        np.testing.assert_allclose(got, full.encode(window), atol=1e-5)
        for i in live:  # the window never exceeds max_len and always ends with the newest item
            assert caches[i].items[-1] == streams[i][t] and len(caches[i].items) <= max_len
            assert len(caches[i].items) <= caches[i].keys.shape[1] <= max_len


@pytest.mark.parametrize("max_len,bursts", [
    (6, (1, 3, 5, 2, 7)),     # bursts longer than the window roll inside one call
    (20, (4, 17, 1, 9, 30)),  # caches grow, then roll mid-burst
])
def test_a_burst_extends_a_cache_as_one_step_per_event_would(
        max_len: int, bursts: tuple[int, ...]) -> None:
    """Several events of one user in a micro-batch, appended in one call: the same
    embeddings, explanations and cache as stepping them one at a time."""
    from model.retrieval.encoder import IncrementalEncoder

    keras.utils.set_random_seed(8)
    model = SASRec(num_items=40, max_len=max_len, dim=16, blocks=2, heads=2, dropout=0.0,
                   num_types=3)
    model({"seq": np.ones((1, max_len), "int64"), "types": np.ones((1, max_len), "int64"),
           "pos": np.ones((1, max_len), "int64"), "neg": np.ones((1, 2), "int64")})
    inc = IncrementalEncoder(export_sasrec(model))
    rng = np.random.default_rng(3)
    tokens = [inc.token(int(i), int(t)) for i, t in
              zip(rng.integers(1, 41, sum(bursts)), rng.integers(0, 3, sum(bursts)))]
    one_by_one, burst = inc.prefill([]), inc.prefill([])
    done = 0
    for n in bursts:
        chunk = tokens[done:done + n]
        expected, why = [], []
        for t in chunk:
            found: list[np.ndarray] = []
            expected.append(inc.step([one_by_one], np.array([t]), found)[0])
            why.append((list(one_by_one.items), found[0]))
        explained: list[tuple[list[int], np.ndarray]] = []
        (got,) = inc.extend_all([burst], [chunk], [explained])
        np.testing.assert_allclose(got, np.stack(expected), atol=1e-5)
        assert burst.items == one_by_one.items
        for (window, weights), (items, want) in zip(explained, why, strict=True):
            assert list(window) == items
            np.testing.assert_allclose(weights, want, atol=1e-6)
        done += n
    live = len(burst.items)
    np.testing.assert_allclose(burst.keys[:, :live], one_by_one.keys[:, :live], atol=1e-5)


def test_bursts_of_several_sessions_extend_in_one_call_as_each_alone_would() -> None:
    """Sessions at different lengths, with bursts of different sizes (none, inside the
    window, rolling once and twice), padded into shared forwards: the same embeddings,
    explanations and caches as each session's own steps."""
    from model.retrieval.encoder import IncrementalEncoder

    keras.utils.set_random_seed(9)
    model = SASRec(num_items=40, max_len=8, dim=16, blocks=2, heads=2, dropout=0.0, num_types=3)
    model({"seq": np.ones((1, 8), "int64"), "types": np.ones((1, 8), "int64"),
           "pos": np.ones((1, 8), "int64"), "neg": np.ones((1, 2), "int64")})
    inc = IncrementalEncoder(export_sasrec(model))
    rng = np.random.default_rng(4)
    history, bursts = (0, 3, 7, 5), (2, 0, 11, 17)
    tokens = [[inc.token(int(i), int(t)) for i, t in
               zip(rng.integers(1, 41, h + n), rng.integers(0, 3, h + n))]
              for h, n in zip(history, bursts)]
    together = [inc.prefill(t[:h]) for t, h in zip(tokens, history)]
    explained: list[list[tuple[list[int], np.ndarray]]] = [[] for _ in tokens]
    got = inc.extend_all(together, [t[h:] for t, h in zip(tokens, history)], explained)
    for i, (t, h) in enumerate(zip(tokens, history)):
        alone = inc.prefill(t[:h])
        expected, why = [], []
        for token in t[h:]:
            found: list[np.ndarray] = []
            expected.append(inc.step([alone], np.array([token]), found)[0])
            why.append((list(alone.items), found[0]))
        assert got[i].shape == (bursts[i], 16)
        if expected:  # and what a later event that adds no item is answered with
            np.testing.assert_allclose(got[i], np.stack(expected), atol=1e-5)
            np.testing.assert_allclose(together[i].output, alone.output, atol=1e-5)
            np.testing.assert_allclose(together[i].attention, alone.attention, atol=1e-6)
        assert together[i].items == alone.items
        live = len(alone.items)
        np.testing.assert_allclose(together[i].keys[:, :live], alone.keys[:, :live], atol=1e-5)
        for (window, weights), (items, want) in zip(explained[i], why, strict=True):
            assert list(window) == items
            np.testing.assert_allclose(weights, want, atol=1e-6)


def test_event_types_change_the_embedding_and_the_numpy_forms_follow_them() -> None:
    from model.retrieval.encoder import IncrementalEncoder

    keras.utils.set_random_seed(6)
    model = SASRec(num_items=30, max_len=8, dim=16, blocks=2, heads=2, dropout=0.0, num_types=5)
    rng = np.random.default_rng(2)
    seq = rng.integers(1, 31, (4, 8))
    types = rng.integers(0, 5, (4, 8))
    model({"seq": seq, "types": types, "pos": seq, "neg": np.ones((4, 2), "int64")})
    model.compile(optimizer="adam", loss=lambda y, p: keras.ops.mean(p ** 2))
    model.fit({"seq": seq, "types": types, "pos": seq, "neg": np.ones((4, 2), "int64")},
              np.zeros(4), verbose=0)
    expected = keras.ops.convert_to_numpy(model.encode(seq, types))
    exported = export_sasrec(model)
    np.testing.assert_allclose(exported.encode(seq, types), expected, atol=1e-5)
    # A purchase is not a view: the same items with other types embed differently.
    other = keras.ops.convert_to_numpy(model.encode(seq, (types + 1) % 5))
    assert np.abs(other - expected).max() > 1e-3
    # The incremental encoder takes (item, type) tokens and gives the same embedding.
    inc = IncrementalEncoder(exported)
    tokens = [inc.token(int(i), int(t)) for i, t in zip(seq[0], types[0])]
    cache = inc.prefill(tokens[:-1])
    explain: list[np.ndarray] = []
    got = inc.step([cache], np.array(tokens[-1:]), explain)
    np.testing.assert_allclose(got[0], expected[0], atol=1e-5)
    # The explanation: the newest position's attention over the 8 items, summing to 1.
    assert explain[0].shape == (8,) and explain[0].sum() == pytest.approx(1.0, abs=1e-5)
    # A type code past the model's five (a ranker from another run declaring more types)
    # is unknown, not the next item: item 3 at type 7 read as item 4 at type 2.
    assert inc.token(3, 7) == inc.token(3, 0) == 15
    assert inc.token(np.array([3, 30]), np.array([7, 4])).tolist() == [15, 154]


def test_a_cache_grows_by_doubling_up_to_the_window_keeping_its_rows() -> None:
    """``reserve`` keeps the live rows, zero-fills the new ones (a gather reads only live
    rows, but garbage there would reach attention as NaN if it ever did), and never grows
    past the window."""
    from model.retrieval.encoder import SessionCache

    rng = np.random.default_rng(2)
    keys = rng.standard_normal((2, 8, 2, 4)).astype(np.float32)
    cache = SessionCache(list(range(8)), keys.copy(), -keys)
    before = cache.keys
    cache.reserve(8, window=20)
    assert cache.keys is before  # room already: nothing copied
    cache.reserve(9, window=20)
    assert cache.keys.shape == cache.values.shape == (2, 16, 2, 4)
    assert cache.keys.dtype == np.float32
    np.testing.assert_array_equal(cache.keys[:, :8], keys)
    np.testing.assert_array_equal(cache.values[:, :8], -keys)
    assert not cache.keys[:, 8:].any() and not cache.values[:, 8:].any()
    cache.reserve(17, window=20)
    assert cache.keys.shape[1] == 20 and cache.nbytes == 2 * 2 * 20 * 2 * 4 * 4
    np.testing.assert_array_equal(cache.keys[:, :8], keys)


def test_a_window_of_one_item_is_refused() -> None:
    """Serving's caches roll to half the window: with one item they kept both the old and
    the new item at a clamped position, then failed the next step."""
    with pytest.raises(ValueError, match="max_len must be >= 2"):
        SASRec(num_items=5, max_len=1)
