import numpy as np
import pytest

from model.retrieval import index as index_module
from model.retrieval.index import IndexConfig, ItemIndex


def _table(n: int, d: int = 16, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    centers = rng.normal(size=(20, d))
    table = centers[rng.integers(0, 20, n + 1)] + 0.3 * rng.normal(size=(n + 1, d))
    table[0] = 0
    return table.astype(np.float32)


def test_flat_is_exact_and_excludes_history() -> None:
    table = _table(300)
    index = ItemIndex.build(table)
    assert index.kind == "flat"
    q = np.random.default_rng(1).normal(size=(5, 16)).astype(np.float32)
    scores, ids = index.search(q, 10)
    expected = np.argsort(-(q @ table[1:].T), axis=1)[:, :10] + 1
    assert (ids == expected).all()
    assert np.allclose(scores, np.take_along_axis(q @ table.T, ids, axis=1), atol=1e-4)
    banned = [ids[0, :3], np.array([], dtype=np.int64), ids[2, :10], ids[3, :1], ids[4, :2]]
    _, ids2 = index.search(q, 10, exclude=banned)
    for row, b in enumerate(banned):
        assert not np.isin(ids2[row], b).any() and (ids2[row] > 0).all()


@pytest.mark.parametrize("kind", ["ivf", "hnsw"])
def test_approximate_indexes_keep_recall_against_exact(kind: str) -> None:
    table = _table(20_000, d=32)
    exact = ItemIndex.build(table, IndexConfig(kind="flat"))
    approx = ItemIndex.build(table, IndexConfig(kind=kind))
    q = table[np.random.default_rng(2).integers(1, 20_001, 200)] + 0.1
    _, truth = exact.search(q, 100)
    _, got = approx.search(q, 100)
    recall = np.mean([len(np.intersect1d(a, b)) / 100 for a, b in zip(truth, got)])
    assert recall >= 0.9, recall


def test_auto_kind_follows_catalogue_size_and_tiny_catalogues_pad() -> None:
    assert ItemIndex.build(_table(100), IndexConfig(exact_max=50)).kind == "ivf"
    scores, ids = ItemIndex.build(_table(3)).search(np.ones((1, 16), np.float32), 5)
    assert ids[0, 3:].tolist() == [0, 0] and np.isinf(scores[0, 3:]).all()
    with pytest.raises(ValueError, match="kind must be one of"):
        IndexConfig(kind="lsh")


@pytest.fixture
def numpy_calls(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """The query counts of searches that took the NumPy path."""
    calls: list[int] = []
    real = index_module._numpy_top_k

    def spy(vectors: np.ndarray, q: np.ndarray, *args: object) -> tuple[np.ndarray, np.ndarray]:
        calls.append(len(q))
        return real(vectors, q, *args)

    monkeypatch.setattr(index_module, "_numpy_top_k", spy)
    return calls


@pytest.mark.parametrize("n, queries", [(300, 70), (300, 0), (4, 3)])
def test_numpy_search_of_a_small_flat_index_equals_faiss_search(
        n: int, queries: int, numpy_calls: list[int]) -> None:
    """Past one query chunk, with exclusions out of range or emptying a tiny catalogue's row,
    and after ``add`` and ``update`` moved or rewrote the stored vectors."""
    table, rng = _table(n), np.random.default_rng(3)
    in_numpy = ItemIndex.build(table)
    by_faiss = ItemIndex.build(table, IndexConfig(numpy_max=0))
    for index in (in_numpy, by_faiss):
        index.add(_table(5, seed=4)[1:])
        index.update(np.array([1, 2]), _table(2, seed=5)[1:])
    q = rng.normal(size=(queries, 16)).astype(np.float32)
    banned = [rng.choice(n + 4, min(n, 12), replace=False) + 1 for _ in range(queries)]
    if queries:
        banned[0] = np.array([0, n + 50, 1])
    got = in_numpy.search(q, 10, banned)
    assert numpy_calls == [queries]
    want = by_faiss.search(q, 10, banned)
    assert numpy_calls == [queries]
    assert got[1].shape == want[1].shape == (queries, 10)
    assert (got[1] == want[1]).all()
    assert np.allclose(got[0], want[0], atol=1e-5)


def test_a_single_query_is_searched_in_numpy_past_the_size_limit_with_the_same_result(
        numpy_calls: list[int]) -> None:
    index = ItemIndex.build(_table(300), IndexConfig(numpy_max=10))
    q = np.random.default_rng(6).normal(size=(1, 16)).astype(np.float32)
    banned = [np.array([5, 9, 300])]
    alone = index.search(q, 20, banned)
    in_a_batch = index.search(np.vstack([q, q]), 20, banned * 2)
    assert numpy_calls == [1]  # the pair went to FAISS
    assert (alone[1][0] == in_a_batch[1][0]).all() and 9 not in alone[1][0]
    assert np.allclose(alone[0][0], in_a_batch[0][0], atol=1e-5)


def test_an_exclusion_outside_the_index_never_reaches_the_next_row() -> None:
    table = _table(300)
    index = ItemIndex.build(table, IndexConfig(numpy_max=0))  # FAISS's path
    q = np.repeat(np.random.default_rng(7).normal(size=(1, 16)).astype(np.float32), 2, axis=0)
    _, plain = index.search(q, 5)
    top = int(plain[1, 0])
    _, ids = index.search(q, 5, [np.array([301 + top]), np.array([], np.int64)])
    assert (ids[1] == plain[1]).all()  # 301 + top is row 1's ``top`` in the shared mask


class _CapCheck:
    """A FAISS index as a GPU one is: a search past ``GPU_MOST_K`` fails."""

    def __init__(self, index: object) -> None:
        self.index, self.asked = index, []

    def search(self, q: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        self.asked.append(k)
        if k > index_module.GPU_MOST_K:
            raise RuntimeError(f"k {k} over the GPU's cap")
        return self.index.search(q, k)  # type: ignore[attr-defined]


def test_on_a_gpu_a_history_past_the_selection_cap_is_answered_from_the_host_copy(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(index_module, "GPU_MOST_K", 40)
    table, rng = _table(300), np.random.default_rng(8)
    exact = ItemIndex.build(table)
    gpu_like = ItemIndex.build(table, IndexConfig(numpy_max=0))
    gpu_like.index, gpu_like.host = _CapCheck(gpu_like.index), table[1:].copy()
    q = rng.normal(size=(3, 16)).astype(np.float32)
    long = rng.choice(300, 60, replace=False) + 1
    banned = [np.concatenate([long, long, [0, 999]]), long[:5], np.array([], np.int64)]
    got, want = gpu_like.search(q, 10, banned), exact.search(q, 10, banned)
    assert (got[1] == want[1]).all() and np.allclose(got[0], want[0], atol=1e-5)
    assert max(gpu_like.index.asked) <= 40


def test_an_ivf_index_refiles_updated_items_under_their_ids_without_retraining() -> None:
    table = _table(2_000)
    index = ItemIndex.build(table, IndexConfig(kind="ivf", nprobe=10_000))  # every cell: exact
    centroids = index.index.quantizer.reconstruct_n(0, index.index.nlist)
    moved = np.array([1, 7, 2_000])
    table[moved] = _table(3, seed=9)[1:] * 3  # far from where they were
    assert index.update(moved, table[moved])
    index.add(_table(4, seed=10)[1:])  # new items still go on from n + 1
    table = np.vstack([table, _table(4, seed=10)[1:]])
    q = np.vstack([table[moved], np.random.default_rng(4).normal(size=(5, 16))]).astype(np.float32)
    scores, ids = index.search(q, 10)
    want = ItemIndex.build(table, IndexConfig(kind="flat", numpy_max=0)).search(q, 10)
    assert (ids == want[1]).all() and np.allclose(scores, want[0], atol=1e-4)
    assert index.index.ntotal == index.num_items == 2_004
    assert (index.index.quantizer.reconstruct_n(0, index.index.nlist) == centroids).all()
    assert not ItemIndex.build(table, IndexConfig(kind="hnsw")).update(moved, table[moved])
