"""The experiment benchmark: its comparison of A/B and interleaving when the log is too
short for A/B's median (``benchmarks.experiments.matched_ratio``), the longer stream
it replays then (``resampled``), and its interleaving runs' credits."""

import numpy as np
import pytest

from benchmarks.experiments import Log, interleaving_run, matched_ratio, resampled
from model.experiments.statistics import Verdict


def _runs(events: list[int], runs: int = 10) -> dict:
    return {"runs": runs, "sorted_events": sorted(events)}


def test_the_median_is_compared_when_both_reach_it() -> None:
    """The same rank as ``events_to_verdict``'s median (np.percentile, "higher"): for 10
    runs the 6th fastest; it took the 5th, one rank from the median it printed beside."""
    ratio = matched_ratio(_runs([100 * i for i in range(1, 9)]),
                          _runs([10 * i for i in range(1, 11)]))
    assert ratio == {"share": 0.6, "ab": 600, "interleaving": 60, "value": 10.0}
    runs = [float(10 * i) for i in range(1, 11)]
    assert np.percentile(runs, 50, method="higher") == ratio["interleaving"]


def test_otherwise_the_largest_share_both_reach() -> None:
    ratio = matched_ratio(_runs([900, 300]), _runs([40, 20, 30, 50, 60, 70]))
    assert ratio is not None and ratio["share"] == 0.2
    assert (ratio["ab"], ratio["interleaving"], ratio["value"]) == (900, 30, 30.0)


def test_no_ratio_without_a_correct_verdict_on_each_side() -> None:
    assert matched_ratio(_runs([]), _runs([10])) is None


def test_two_equally_good_models_interleave_to_no_verdict() -> None:
    """Disjoint lists, each user's next item drawn from both alike. A target in a model's
    list but not drafted into the list shown was counted as a credit to B, so B won every
    such run at its first look."""
    rng = np.random.default_rng(0)
    events = 4_000
    a = [tuple(f"a{j}" for j in range(10))] * events
    b = [tuple(f"b{j}" for j in range(10))] * events
    targets = [str(rng.choice(a[0] + b[0])) for _ in range(events)]
    users = [f"u{i % 400}" for i in range(events)]
    log = Log(("A", "B"), users, [f"e{i}" for i in range(events)], targets, (a, b),
              (np.zeros(events), np.zeros(events)))
    verdicts = [interleaving_run(log, f"s{run}", (0, 1), 200, 0.05, True).verdict
                for run in range(5)]
    assert verdicts.count(str(Verdict.UNDECIDED)) >= 4


def test_a_longer_stream_replays_the_log_by_users_drawn_anew_each_time() -> None:
    users = ["u", "v", "u", "w", "v"]
    log = Log(("A", "B"), users, [f"e{i}" for i in range(5)], [f"t{i}" for i in range(5)],
              ([(f"a{i}",) for i in range(5)], [(f"b{i}",) for i in range(5)]),
              (np.arange(5.0), np.arange(5.0) + 10))
    assert resampled(log, 1, seed=0) is log
    with pytest.raises(ValueError, match="times"):
        resampled(log, 0, seed=0)
    long = resampled(log, 20, seed=0)
    assert long.names == log.names and len(set(long.event_ids)) == len(long)  # coins vary
    replays = [[i for i, u in enumerate(long.users) if u.split("#")[1].startswith(f"{r}.")]
               for r in range(20)]
    # Each replay is a block of the stream, of three new users: draws of the log's own.
    assert [rows for rows in replays] == [list(range(r[0], r[-1] + 1)) for r in replays]
    assert sorted(sum(replays, [])) == list(range(len(long)))
    drawn_from = []
    for replay, rows in enumerate(replays):
        drawn = sorted({long.users[i] for i in rows})
        assert sorted(u.split("#")[1] for u in drawn) == [f"{replay}.{d}" for d in range(3)]
        drawn_from.append(tuple(u.split("#")[0] for u in drawn))
        # A drawn user carries the events of the user drawn, in the log's order: each
        # row's target, both lists, both gains and its event id alike.
        for user in drawn:
            mine = [i for i in rows if long.users[i] == user]
            original = [i for i, u in enumerate(users) if u == user.split("#")[0]]
            assert [long.targets[i] for i in mine] == [f"t{i}" for i in original]
            assert [long.lists[0][i] for i in mine] == [(f"a{i}",) for i in original]
            assert [long.lists[1][i] for i in mine] == [(f"b{i}",) for i in original]
            assert list(long.gains[0][mine]) == [float(i) for i in original]
            assert list(long.gains[1][mine]) == [10.0 + i for i in original]
            assert [long.event_ids[i] for i in mine] == \
                [f"e{i}{user[user.index('#'):]}" for i in original]
        places = [int(long.targets[i][1:]) for i in rows]
        assert places == sorted(places)  # the log's order within a replay
    # Drawn with replacement: some replays repeat a user and leave another out, and the
    # draws differ between replays.
    assert any(len(set(d)) < 3 for d in drawn_from) and len(set(drawn_from)) > 1


def test_an_a_a_run_on_two_different_models_draws_each_users_sides() -> None:
    """A model against itself makes every credit a fair coin: the A/A never meets users
    who lean to one model. With each user's "A" drawn by the salt, a clearly better B
    is A for half the users and B for the others: no verdict, where sides fixed find it."""
    rng = np.random.default_rng(1)
    events = 4_000
    a = [tuple(f"a{j}" for j in range(10))] * events
    b = [tuple(f"b{j}" for j in range(10))] * events
    targets = [str(rng.choice(b[0] if rng.random() < 0.8 else a[0])) for _ in range(events)]
    users = [f"u{i % 400}" for i in range(events)]
    log = Log(("A", "B"), users, [f"e{i}" for i in range(events)], targets, (a, b),
              (np.zeros(events), np.zeros(events)))
    assert interleaving_run(log, "s", (0, 1), 200, 0.05, True).verdict == str(Verdict.B_WINS)
    drawn = [interleaving_run(log, f"s{run}", (0, 1), 200, 0.05, False,
                              sides_by_user=True).verdict for run in range(5)]
    assert drawn.count(str(Verdict.UNDECIDED)) >= 4
