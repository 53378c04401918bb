"""The experiment benchmark: its comparison of A/B and interleaving when the log is too
short for A/B's median (``benchmarks.experiments.matched_ratio``), and its interleaving
runs' credits."""

import numpy as np

from benchmarks.experiments import Log, interleaving_run, matched_ratio
from model.experiments.statistics import Verdict


def _runs(events: list[int], runs: int = 10) -> dict:
    return {"runs": runs, "sorted_events": sorted(events)}


def test_the_median_is_compared_when_both_reach_it() -> None:
    ratio = matched_ratio(_runs([100 * i for i in range(1, 9)]),
                          _runs([10 * i for i in range(1, 11)]))
    assert ratio == {"share": 0.5, "ab": 500, "interleaving": 50, "value": 10.0}


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
