import numpy as np
import pytest

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
