"""Metrics, sampling and splits against hand-computed cases."""

from __future__ import annotations

import math
from types import SimpleNamespace

import numpy as np
import pytest

from model.data import IdMap, build_sequences, leave_last_out, pad_left, time_split
from model.evaluation.metrics import auc, coverage, hit_rate, mrr, ndcg, rank_of_target
from model.evaluation.protocols import evaluate, evaluate_cases, rank_cases
from model.sampling import SeenItems


def test_a_nan_target_score_ranks_last_not_first() -> None:
    """NaN compares false with everything: counted naively it beats nothing, a perfect hit."""
    ranks = rank_of_target(np.array([np.nan, 0.5]), np.array([[0.1, 0.2, -np.inf],
                                                               [0.9, 0.4, 0.1]]))
    assert ranks.tolist() == [3.0, 1.0]
    assert hit_rate(ranks, 1) == 0.0


def test_a_nan_candidate_beats_the_target_and_ignored_columns_do_not_count() -> None:
    target = np.array([0.5, np.nan])
    cands = np.array([[np.nan, 0.9, 0.1], [0.2, 0.3, 0.4]])
    ignore = np.array([[False, True, False], [False, False, True]])
    assert rank_of_target(target, cands).tolist() == [2.0, 3.0]
    assert rank_of_target(target, cands, ignore).tolist() == [1.0, 2.0]  # last of 2


def test_a_model_that_scores_nan_gets_no_hit_in_either_protocol() -> None:
    """A diverged model scores every item NaN. The full ranking counted its candidates
    as the finite scores (none), so each target ranked 0 of 0: NDCG@10 1.0, which early
    stopping would keep as the best epoch."""
    class Diverged:
        name = "diverged"

        def score(self, users: np.ndarray, histories: list[np.ndarray], side: object = None
                  ) -> np.ndarray:
            return np.full((len(users), 31), np.nan)


    ranks = rank_cases(Diverged(), np.array([1, 2]), [np.array([1, 2]), np.array([3])],
                       np.array([4, 5]), 30, num_negatives=5)
    assert ranks.full.tolist() == [27.0, 28.0] == ranks.full_candidates.tolist()  # last
    assert ranks.sampled.tolist() == [5.0, 5.0]  # after all 5 negatives
    report = ranks.report()
    assert report["full"]["HR@10"] == report["full"]["NDCG@10"] == report["full"]["AUC"] == 0.0


def test_a_case_without_candidates_has_no_auc_and_tiny_catalogues_rank() -> None:
    """A user who met every other item has nothing to rank the target against: 0 / 0
    made the whole full AUC NaN. A catalogue under 10 items made the top-10 selection
    raise."""
    class ByLabel:
        name = "by-label"

        def score(self, users: np.ndarray, histories: list[np.ndarray], side: object = None
                  ) -> np.ndarray:
            return np.tile(np.arange(7, dtype=float), (len(users), 1))

    report = evaluate_cases(ByLabel(), np.array([1, 2]), [np.array([1, 2, 3, 4, 5]),
                                                          np.array([1])],
                            np.array([6, 6]), 6, num_negatives=0)
    assert report["full"]["AUC"] == 1.0  # user 2's case: 6 above all 4 others
    assert np.isnan(report["sampled"]["AUC"])  # no negatives asked for: none measured
    assert report["full"]["HR@10"] == 1.0
    # with negatives asked for, the sampled protocol raised "row 0 has seen every item"
    ranks = rank_cases(ByLabel(), np.array([1, 2]), [np.array([1, 2, 3, 4, 5]),
                                                     np.array([1])], np.array([6, 6]), 6)
    assert ranks.sampled_candidates.tolist() == [0, 4]  # user 2's 4 unseen, each once
    assert ranks.sampled.tolist() == [0.0, 0.0]
    assert ranks.report()["sampled"]["AUC"] == 1.0  # user 1's case has none, left out


def test_a_sampled_rank_is_never_below_the_full_rank_where_few_items_are_unseen() -> None:
    """19 unseen items, 2 of them above the target: drawn 100 times with repeats, each item
    above it counted ~5 times (sampled HR@10 0.375 where the full protocol's was 1.0)."""
    class ById:
        def score(self, users: np.ndarray, histories: list[np.ndarray], side: object = None
                  ) -> np.ndarray:
            return np.tile(np.arange(31, dtype=float), (len(users), 1))

    ranks = rank_cases(ById(), np.array([1] * 8), [np.arange(1, 11)] * 8, np.array([28] * 8),
                       30, seed=3)
    assert ranks.full.tolist() == [2.0] * 8
    assert ranks.sampled_candidates.tolist() == [19] * 8
    assert ranks.sampled.tolist() == [2.0] * 8


def test_no_case_reports_empty_figures_not_an_error() -> None:
    """``np.concatenate([])`` raised, where the metrics are made for no case (a cold-item
    split in which no user meets a cold item after a warm one)."""
    class Any:
        name = "any"

        def score(self, users: np.ndarray, histories: list[np.ndarray], side: object = None
                  ) -> np.ndarray:
            raise AssertionError("no case to score")

    report = evaluate_cases(Any(), np.zeros(0, int), [], np.zeros(0, int), 6)
    assert report["users"] == 0 and report["full"]["HR@10"] == 0.0
    assert np.isnan(report["full"]["AUC"]) and report["full"]["coverage@10"] == 0.0


def test_items_met_beyond_the_history_are_masked_and_never_negatives() -> None:
    """A cold case's history holds warm items only: the user's earlier cold items counted
    as unseen, ranked against the target in full and drawn as its negatives (a review)."""

    class ByLabel:
        name = "by-label"

        def score(self, users: np.ndarray, histories: list[np.ndarray], side: object = None
                  ) -> np.ndarray:
            return np.tile(np.arange(8, dtype=float), (len(users), 1))

    # Items 1..7; history [1], target 5; item 7 (scored above the target) met earlier.
    plain = rank_cases(ByLabel(), np.array([1]), [np.array([1])], np.array([5]), 7,
                       num_negatives=5)
    masked = rank_cases(ByLabel(), np.array([1]), [np.array([1])], np.array([5]), 7,
                        num_negatives=5, also_seen=[np.array([7])])
    assert (plain.full.tolist(), masked.full.tolist()) == ([2.0], [1.0])  # 6, 7 / 6 above
    assert (plain.full_candidates.tolist(), masked.full_candidates.tolist()) == ([5], [4])
    # 5 distinct negatives among the 5 unseen items; 4 once item 7 is seen too
    assert plain.sampled.tolist() == [2.0] and masked.sampled.tolist() == [1.0]


def test_rank_of_target_places_the_target_at_random_among_its_ties() -> None:
    """Counted half, a target tied with one item at the head was a sure hit at 1 (HR@1 1,
    where an order of the two gives 0.5), and a tie block across K all or nothing (a
    review): now each metric is, in expectation, that of a random order of the ties."""
    target = np.array([0.5, 0.5, 0.9])
    cands = np.array([[0.9, 0.1, 0.5], [-np.inf, 0.4, 0.3], [0.9, 0.9, 0.9]])
    ranks = rank_of_target(target, cands)
    assert ranks[1] == 0.0 and ranks[0] in (1.0, 2.0) and 0 <= ranks[2] <= 3
    assert (rank_of_target(target, cands) == ranks).all()  # seeded: the same draw
    # A target tied with one other item at the head, many times: HR@1 ~ 0.5, not 1.
    n = 4000
    tied = rank_of_target(np.full(n, 1.0), np.tile([1.0, 0.0, 0.0], (n, 1)))
    assert abs(hit_rate(tied, 1) - 0.5) < 0.03
    # 19 ties with the target from the head: HR@10 ~ 10/20, not 1 (21 ties: ~10/22, not 0)
    for others, expected in ((19, 10 / 20), (21, 10 / 22)):
        rows = rank_of_target(np.zeros(n), np.zeros((n, others)))
        assert abs(hit_rate(rows, 10) - expected) < 0.03


def test_metrics_by_hand() -> None:
    ranks = np.array([0.0, 1.0, 4.0, 20.0])
    assert hit_rate(ranks, 10) == 0.75
    assert ndcg(ranks, 10) == pytest.approx((1 + 1 / math.log2(3) + 1 / math.log2(6)) / 4)
    assert mrr(ranks) == pytest.approx((1 + 1 / 2 + 1 / 5 + 1 / 21) / 4)
    assert mrr(ranks, k=5) == pytest.approx((1 + 1 / 2 + 1 / 5) / 4)
    assert auc(ranks, 100) == pytest.approx(1 - 25 / 400)
    assert coverage(np.array([[1, 2], [2, 3], [0, 0]]), 10) == 0.3
    assert hit_rate(np.empty(0), 10) == ndcg(np.empty(0), 10) == mrr(np.empty(0)) == 0.0


def test_seen_items_sampling_never_returns_seen_items() -> None:
    histories = [np.array([1, 2, 3]), np.array([4]), np.array([], dtype=np.int64)]
    seen = SeenItems(histories, num_items=6)
    assert seen.contains(np.array([0, 1]), np.array([[3, 4], [4, 3]])).tolist() == [
        [True, False], [True, False]]
    samples = seen.sample(np.array([0, 1, 2] * 100), 5, np.random.default_rng(0))
    assert samples.min() >= 1 and samples.max() <= 6
    assert not seen.contains(np.array([0, 1, 2] * 100), samples).any()
    assert set(np.unique(samples[::3])) == {4, 5, 6}  # row 0 saw 1, 2, 3
    with pytest.raises(ValueError, match="row 0 has seen every item"):
        SeenItems([np.arange(1, 7)], 6).sample(np.array([0]), 1, np.random.default_rng(0))
    # distinct: row 0 can only get 4, 5 and 6, each once, in some order
    once = seen.sample(np.array([0, 1] * 50), 3, np.random.default_rng(1), distinct=True)
    assert all(sorted(r) == [4, 5, 6] for r in once[::2].tolist())
    assert all(len(set(r)) == 3 and 4 not in r for r in once[1::2].tolist())
    # a row with fewer unseen items than asked for gets them with repeats, not an error
    short = seen.sample(np.array([0]), 5, np.random.default_rng(2), distinct=True)
    assert set(short[0].tolist()) <= {4, 5, 6} and seen.unseen(np.array([0, 1, 2])).tolist() == [3, 5, 6]


def test_seen_among_marks_each_rows_history_against_a_list_of_items() -> None:
    rng = np.random.default_rng(3)
    histories = [rng.integers(1, 41, rng.integers(0, 30)) for _ in range(20)]
    seen = SeenItems(histories, num_items=40)
    rows, items = rng.integers(0, 20, 15), rng.integers(1, 41, 60)  # repeats in both
    want = seen.contains(rows, np.broadcast_to(items, (15, 60)))
    assert want.any() and (seen.among(rows, items) == want).all()
    assert seen.among(rows, items[:0]).shape == (15, 0)
    assert not SeenItems([], 40).among(np.array([0]), items).any()


def test_a_row_with_barely_enough_unseen_items_gets_them_all_distinct() -> None:
    """100 distinct negatives out of 101 unseen items needs ~500 redraws of the last one
    on average: past the rounds allowed, the whole evaluation raised."""
    seen = SeenItems([np.arange(1, 400), np.arange(1, 300)], num_items=500)  # 101, 201 left
    for seed in range(5):
        out = seen.sample(np.array([0, 1]), 100, np.random.default_rng(seed), distinct=True)
        assert not seen.contains(np.array([0, 1]), out).any()
        assert all(len(set(row)) == 100 for row in out.tolist())


def _events(rows: list[tuple[str, str, int]]) -> list[SimpleNamespace]:
    return [SimpleNamespace(user_id=u, item_id=i, ts=t) for u, i, t in rows]


def test_sequences_and_leave_last_out() -> None:
    seqs = build_sequences(_events([("a", "x", 1), ("b", "y", 2), ("a", "y", 3), ("a", "z", 4),
                                    ("b", "x", 5), ("a", "w", 6)]))
    assert seqs.users.ids == ["a", "b"] and seqs.items.ids == ["x", "y", "z", "w"]
    assert [s.tolist() for s in seqs.by_user] == [[1, 2, 3, 4], [2, 1]]
    split = leave_last_out(seqs)
    assert split.train[0].tolist() == [1, 2] and split.train[1].tolist() == [2, 1]
    assert split.eval_users("test").tolist() == [1]  # b has fewer than 3 events
    assert split.history(1, "valid").tolist() == [1, 2] and split.target(1, "valid") == 3
    assert split.history(1, "test").tolist() == [1, 2, 3] and split.target(1, "test") == 4


def test_id_map_grows_and_round_trips() -> None:
    ids = IdMap()
    assert (ids.add("x"), ids.add("y"), ids.add("x"), ids.get("nope")) == (1, 2, 1, 0)
    again = IdMap.from_list(ids.to_list())
    assert again.get("y") == 2 and again.add("z") == 3


def test_time_split_and_padding() -> None:
    first, rest = time_split(list(range(10)), 0.7)
    assert first == list(range(7)) and rest == [7, 8, 9]
    with pytest.raises(ValueError):
        time_split([1], 1.0)
    assert pad_left(np.array([1, 2, 3]), 5).tolist() == [0, 0, 1, 2, 3]
    assert pad_left(np.array([1, 2, 3]), 2).tolist() == [2, 3]


class _Oracle:
    """Knows each user's test item: must score perfectly on both protocols."""

    name = "oracle"

    def __init__(self, split, num_items: int) -> None:  # type: ignore[no-untyped-def]
        self.split, self.n = split, num_items

    def score(self, users: np.ndarray, histories: list[np.ndarray], side: object = None
              ) -> np.ndarray:
        out = np.zeros((len(users), self.n + 1))
        out[np.arange(len(users)), [self.split.target(u, "test") for u in users]] = 1.0
        return out


def test_evaluate_protocols_on_an_oracle_and_a_constant_model() -> None:
    rows = [(f"u{u}", f"i{(u + k) % 30}", k) for u in range(40) for k in range(6)]
    split = leave_last_out(build_sequences(_events(rows)))
    n = split.sequences.num_items
    perfect = evaluate(_Oracle(split, n), split, "test", num_negatives=10)
    assert perfect["sampled"]["HR@10"] == perfect["full"]["NDCG@10"] == perfect["full"]["MRR"] == 1.0

    class Constant:
        name = "constant"

        def score(self, users: np.ndarray, histories: list[np.ndarray], side: object = None
              ) -> np.ndarray:
            return np.ones((len(users), n + 1))

    flat = evaluate(Constant(), split, "test", num_negatives=10)
    # Ties in a random order, not at the top: 30 items - 5 seen - the target = 24 tied,
    # so the target is in the top 10 for 10 in 25 users on average (40 users here).
    assert abs(flat["sampled"]["AUC"] - 0.5) < 0.15
    assert 0.15 < flat["full"]["HR@10"] < 0.65


def test_binary_auc_counts_pairs_in_order_and_ties_as_half() -> None:
    from model.evaluation.metrics import binary_auc

    assert binary_auc(np.array([3.0, 1.0, 2.0]), np.array([1, 0, 0])) == 1.0
    assert binary_auc(np.array([1.0, 3.0, 2.0]), np.array([1, 0, 0])) == 0.0
    assert binary_auc(np.array([2.0, 2.0, 1.0]), np.array([1, 0, 0])) == 0.75
    assert np.isnan(binary_auc(np.array([1.0]), np.array([1])))


def test_keep_history_ranks_a_repeated_target_against_the_users_other_items_too() -> None:
    from model.evaluation.protocols import evaluate_cases

    class SeenFirst:  # every item of the history above every other item
        name = "seen-first"

        def score(self, users: np.ndarray, histories: list[np.ndarray], side: object = None
                  ) -> np.ndarray:
            out = np.zeros((len(users), 21))
            for row, h in enumerate(histories):
                out[row, h] = 1.0 + np.arange(len(h))  # newer items above older
            return out

    users, history, target = np.array([1]), [np.array([5, 6, 7, 8])], np.array([6])
    masked = evaluate_cases(SeenFirst(), users, history, target, 20, num_negatives=5)
    kept = evaluate_cases(SeenFirst(), users, history, target, 20, num_negatives=5,
                          keep_history=True)
    assert masked["full"]["MRR"] == 1.0           # the other seen items are not ranked
    assert kept["full"]["MRR"] == pytest.approx(1 / 3)  # 8 and 7 are newer


def test_a_target_the_model_cannot_score_ranks_last_in_both_protocols() -> None:
    """-inf (an item new to a champion) is in no list the model serves: last among every
    item it could be ranked against (the 17 neither history nor target). Ranked after the
    3 scored candidates alone, it was a hit@10; tied with the masked -inf items, its
    rank passed the count and the gate's AUC went below 0. Among the sampled negatives
    it tied with those the model cannot score, placed among them at random: a model
    scoring every item -inf read sampled HR@10 0.108 (a review). The items a model
    cannot score count below a target it scores, for the AUC."""

    class KnowsFive:
        name = "knows-five"

        def score(self, users: np.ndarray, histories: list[np.ndarray], side: object = None
                  ) -> np.ndarray:
            out = np.full((len(users), 21), -np.inf)
            out[:, 1:6] = np.arange(5, 0, -1)  # items 1-5 scored; 6-20 unknown
            return out

    ranks = rank_cases(KnowsFive(), np.array([1]), [np.array([1, 2])], np.array([9]), 20,
                       num_negatives=4)
    assert ranks.full.tolist() == [17.0] == ranks.full_candidates.tolist()
    assert ranks.report()["full"]["AUC"] == 0.0 == ranks.report()["full"]["HR@10"]
    assert ranks.sampled.tolist() == [4.0] == ranks.sampled_candidates.tolist()
    assert ranks.report()["sampled"]["AUC"] == 0.0  # last of 5: still a hit@10 of 5
    known = rank_cases(KnowsFive(), np.array([1]), [np.array([1, 2])], np.array([4]), 20,
                       num_negatives=4)  # a target it scores: after the 3 it scores above
    assert (known.full.tolist(), known.full_candidates.tolist()) == ([1.0], [17])
    assert known.report()["full"]["AUC"] == 1 - 1 / 17  # the 15 it cannot score below
    assert sorted(known.top[0][known.top[0] > 0].tolist()) == [3, 4, 5]  # none unscored


def test_a_model_that_scores_every_item_minus_inf_gets_no_hit_and_no_coverage() -> None:
    """Every -inf item was dropped from the candidates, so each target ranked 0 of 0:
    HR@10, NDCG@10 and MRR 1.0, and the unscored items filled the top-10 (coverage 0.3)."""
    from model.evaluation.protocols import evaluate_cases

    class Blank:
        name = "blank"

        def score(self, users: np.ndarray, histories: list[np.ndarray], side: object = None
                  ) -> np.ndarray:
            return np.full((len(users), 31), -np.inf)

    full = evaluate_cases(Blank(), np.array([1, 2]), [np.array([1, 2]), np.array([3])],
                          np.array([4, 5]), 30, num_negatives=5)["full"]
    assert (full["HR@10"], full["NDCG@10"], full["AUC"], full["coverage@10"]) == (0, 0, 0, 0)
    assert full["MRR"] < 0.04  # last of 27 and of 28


def test_sequences_over_a_fixed_item_map_map_unknown_items_to_zero() -> None:
    train = build_sequences(_events([("a", "x", 1), ("a", "y", 2)]))
    test = build_sequences(_events([("s", "y", 3), ("s", "new", 4), ("s", "x", 5)]),
                           items=train.items, grow_items=False)
    assert test.by_user[0].tolist() == [2, 0, 1] and len(train.items) == 2


def test_prequential_ranks_score_the_list_shown_before_each_next_event() -> None:
    from model.evaluation.protocols import prequential_ranks

    def e(eid: str, user: str, item: str) -> SimpleNamespace:
        return SimpleNamespace(event_id=eid, user_id=user, item_id=item)

    events = [e("1", "a", "x"), e("2", "b", "y"), e("3", "a", "z"), e("4", "a", "q"),
              e("5", "b", "w")]
    lists = {"1": ["q", "z"], "3": ["q"], "2": []}  # no list was published for event 4
    ranks = prequential_ranks(events, lists)
    assert ranks.tolist() == [1.0, 0.0, float("inf")]
    assert hit_rate(ranks, 10) == pytest.approx(2 / 3)
    assert mrr(ranks) == pytest.approx((1 / 2 + 1) / 3)
