"""``candidate_lists``: which items the ranker reranks, the same in training, evaluation
and serving; ``served_scores``: the order it serves them in; and ``Candidates.flat`` for a
model trained with fewer pair features."""

import numpy as np

from model.features import PAIR_FEATURES, FeatureSpec
from model.ranking.inputs import Candidates, candidate_lists, served_scores
from model.retrieval.index import ItemIndex


def _index() -> tuple[ItemIndex, np.ndarray, np.ndarray]:
    """Items 1..8 on a line: item i scores i against the query (row 0 is padding)."""
    table = np.zeros((9, 2), np.float32)
    table[1:, 0] = np.arange(1, 9)
    return ItemIndex.build(table), table, np.array([[1.0, 0.0]], np.float32)


def test_without_recent_items_the_lists_are_the_nearest_unseen_items() -> None:
    index, table, query = _index()
    scores, ids = candidate_lists(index, table, query, [np.array([8, 6])], depth=3)
    assert ids.tolist() == [[7, 5, 4]] and scores.tolist() == [[7.0, 5.0, 4.0]]


def test_recent_items_join_once_each_newest_first_and_all_sorted_by_score() -> None:
    index, table, query = _index()
    history = np.array([2, 8, 2, 3, 6])  # newest distinct: 6, 3, 2, 8
    scores, ids = candidate_lists(index, table, query, [history], depth=2, recent=3)
    # unseen: 7, 5 (8 is seen, though older than the 3 newest); recent: 6, 3, 2
    assert ids[0].tolist() == [7, 6, 5, 3, 2]  # a position is a rank by score
    assert (np.diff(scores[0]) <= 0).all()


def test_short_histories_leave_empty_slots_last() -> None:
    index, table, query = _index()
    scores, ids = candidate_lists(index, table, np.repeat(query, 2, 0),
                                  [np.array([1]), np.array([], np.int64)], depth=2, recent=2)
    assert ids.tolist() == [[8, 7, 1, 0], [8, 7, 0, 0]]
    assert np.isneginf(scores[:, -1]).all()


def test_a_model_trained_with_fewer_pair_features_reads_only_those() -> None:
    from types import SimpleNamespace

    spec = FeatureSpec()
    ids = np.array([[3, 4]])
    found = Candidates.build(spec, np.array([1]), np.zeros((1, 2), np.float32), ids,
                             np.ones((1, 2)), [np.array([3])], None)
    assert found.pair.shape == (1, 2, PAIR_FEATURES)
    old = SimpleNamespace(session_dim=0, use_score=False, context_dim=0, categories=0,
                          pair_dim=4)
    flat = found.flat(old)  # type: ignore[arg-type]
    np.testing.assert_array_equal(flat["pair"], found.pair[..., :4].reshape(-1, 4))


def test_a_long_history_windowed_gives_the_features_of_the_session_a_worker_keeps() -> None:
    """Training reads whole logs; a worker's session keeps the newest
    ``STREAMREC_SESSION_MAX_ITEMS``. With the ranker's window, the seen-before features and
    recent candidates of a whole history are those of its newest items alone: item 5, met
    only beyond the window, is unseen, and item 7 counts its one meeting inside it."""
    from model.data import Side

    spec = FeatureSpec(event_types=("view", "purchase"))
    history = np.array([5, 7, 3, 5, 7, 2, 4])
    types = np.array([2, 2, 1, 2, 1, 2, 1])  # 1 view, 2 purchase
    times = np.arange(7, dtype=np.int64) * 3_600_000
    ids = np.array([[5, 7, 4, 8]])

    def pair(hist: np.ndarray, cut: slice, window: int) -> np.ndarray:
        side = Side([types[cut]], [times[cut]], np.zeros((1, 0)), np.zeros((1, 0), np.int64))
        return Candidates.build(spec, np.array([1]), np.zeros((1, 2), np.float32), ids,
                                np.ones((1, 4)), [hist], side, window=window).pair

    windowed = pair(history, slice(None), 3)
    np.testing.assert_array_equal(windowed, pair(history[-3:], slice(-3, None), 0))
    assert windowed[0, :, 1].tolist() == [0, 1, 1, 0]  # 5 beyond the window: unseen
    whole = pair(history, slice(None), 0)
    assert whole[0, :, 1].tolist() == [1, 1, 1, 0]
    assert whole[0, 1, 5] > windowed[0, 1, 5]  # 7 met twice, once within the window
    assert whole[0, 0, 3] == 1 and windowed[0, 0, 3] == 0  # 5's purchase: beyond it

    index, table, query = _index()
    _, found = candidate_lists(index, table, query, [history], depth=1, recent=5, window=3)
    assert sorted(found[0][found[0] > 0].tolist()) == [2, 4, 7, 8]  # 8: the nearest unseen


def _lists(ids: list[list[int]], seen: list[list[int]]) -> Candidates:
    """Candidates ``ids`` in retrieval order, ``seen`` marking the user's own items."""
    pair = np.zeros((len(ids), len(ids[0]), PAIR_FEATURES), np.float32)
    pair[..., 1] = seen
    n = np.asarray(ids)
    return Candidates(np.ones(len(ids), np.int64), np.zeros((len(ids), 2), np.float32), n,
                      -np.arange(n.shape[1], dtype=np.float32)[None].repeat(len(ids), 0),
                      np.zeros((len(ids), 0)), np.zeros((len(ids), 0), np.int64), pair)


def test_served_order_keeps_retrieval_order_among_unseen_items_and_places_seen_ones() -> None:
    found = _lists([[5, 6, 7, 8, 0]], [[0, 1, 0, 0, 0]])  # 6 is the user's own item
    combined = np.array([[0.1, 0.9, 0.5, 0.7, 3.0]])
    scores = served_scores(found, combined, retrieval_order=True)
    order = np.argsort(-scores[0], kind="stable")
    # The ranker put 6 first; the unseen 5, 7, 8 take its other scores in retrieval order.
    assert found.ids[0, order].tolist() == [6, 5, 7, 8, 0]
    assert scores[0].tolist() == [0.7, 0.9, 0.5, 0.1, -np.inf]


def test_served_order_of_unseen_items_only_is_the_retrieval_order() -> None:
    found = _lists([[3, 1, 2], [4, 2, 0]], [[0, 0, 0], [0, 0, 0]])
    combined = np.array([[0.0, 2.0, 1.0], [0.0, 5.0, 9.0]])
    scores = served_scores(found, combined, retrieval_order=True)
    assert scores.tolist() == [[2.0, 1.0, 0.0], [5.0, 0.0, -np.inf]]
    # A ranker that keeps its own order (older models, or where it validated better).
    own = served_scores(found, combined, retrieval_order=False)
    assert own.tolist() == [[0.0, 2.0, 1.0], [0.0, 5.0, -np.inf]]


def test_a_list_scored_nan_keeps_its_nan_for_the_worker_to_see() -> None:
    found = _lists([[3, 1, 2], [4, 2, 1]], [[0, 1, 0], [0, 0, 0]])
    scores = served_scores(found, np.array([[0.5, np.nan, 1.0], [0.0, 1.0, 2.0]]), True)
    assert np.isnan(scores[0, 1]) and scores[0, [0, 2]].tolist() == [0.5, 1.0]
    assert scores[1].tolist() == [2.0, 1.0, 0.0]
