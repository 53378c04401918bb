"""The experiment benchmark's comparison of A/B and interleaving when the log is too
short for A/B's median (``benchmarks.experiments.matched_ratio``)."""

from benchmarks.experiments import matched_ratio


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
