"""Online metrics: one list judged by the next interaction, tallied per user so that
statistics treat users, the randomised unit, as the observations."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from model.evaluation.metrics import hit_rate, mrr, ndcg
from model.experiments.online import VariantTally, list_outcome, metric_names

SHOWN = [f"i{j}" for j in range(12)]


@pytest.mark.parametrize("item,hit,gain,rr", [
    ("i0", 1.0, 1.0, 1.0),
    ("i2", 1.0, 0.5, 1 / 3),                 # 1 / log2(2 + 2)
    ("i9", 1.0, 1 / math.log2(11), 0.1),
    ("i11", 0.0, 0.0, 0.0),                  # shown, but beyond the top 10
    ("other", 0.0, 0.0, 0.0),
])
def test_one_list_is_judged_by_the_next_item(item: str, hit: float, gain: float,
                                             rr: float) -> None:
    out = list_outcome(SHOWN, item)
    assert (out.hit, out.ndcg, out.rr) == pytest.approx((hit, gain, rr))
    assert out.as_dict() == {"HR@10": out.hit, "NDCG@10": out.ndcg, "MRR": out.rr}


def test_outcomes_average_to_the_offline_metrics() -> None:
    rng = np.random.default_rng(0)
    ranks = rng.integers(0, 15, 500)
    outs = [list_outcome(SHOWN + [f"x{j}" for j in range(5)], f"i{r}" if r < 12 else "no")
            for r in ranks]
    offline = np.where(ranks < 12, ranks, np.inf)
    assert np.mean([o.hit for o in outs]) == pytest.approx(hit_rate(offline, 10))
    assert np.mean([o.ndcg for o in outs]) == pytest.approx(ndcg(offline, 10))
    assert np.mean([o.rr for o in outs]) == pytest.approx(mrr(offline, 10))
    assert list_outcome(SHOWN, "i3", k=3).as_dict() == {"HR@3": 0.0, "NDCG@3": 0.0, "MRR": 0.0}


def _tally(events: list[tuple[str, float]]) -> VariantTally:
    tally = VariantTally()
    for user, hit in events:
        tally.add(user, {"HR@10": hit, "NDCG@10": hit / 2, "MRR": hit / 3})
    return tally


def test_the_summary_averages_users_not_lists() -> None:
    """A heavy user with nine hits and a light one with one miss: the user-level mean is
    1/2, not the 0.9 the lists would say, and its variance is over two users."""
    tally = _tally([("heavy", 1.0)] * 9 + [("light", 0.0)])
    assert tally.users == 2 and tally.lists == 10
    hr = tally.summary()["HR@10"]
    assert hr.users == 2 and hr.mean == pytest.approx(0.5)
    assert hr.variance == pytest.approx(np.var([1.0, 0.0], ddof=1) / 2)
    assert hr.sd == pytest.approx(np.std([1.0, 0.0], ddof=1))
    assert tally.summary()["NDCG@10"].mean == pytest.approx(0.25)


def test_a_metric_judged_on_some_lists_counts_only_those() -> None:
    tally = VariantTally(metrics=("HR@10", "conversion"))
    tally.add("u1", {"HR@10": 1.0})
    tally.add("u1", {"HR@10": 0.0, "conversion": 1.0})
    tally.add("u2", {"HR@10": 1.0})
    summary = tally.summary()
    assert summary["HR@10"].users == 2 and summary["HR@10"].mean == pytest.approx(0.75)
    assert summary["conversion"].users == 1 and summary["conversion"].mean == 1.0
    assert math.isnan(summary["conversion"].variance)      # one user: no variance yet
    with pytest.raises(ValueError, match="unknown metrics"):
        tally.add("u1", {"NDCG@10": 1.0})


def test_two_workers_tallies_merge_into_the_tally_of_all_events() -> None:
    rng = np.random.default_rng(1)
    events = [(f"u{rng.integers(40)}", float(rng.random() < 0.3)) for _ in range(600)]
    first, second = _tally(events[:250]), _tally(events[250:])  # users overlap
    merged, whole = first.merge(second), _tally(events)
    assert merged.lists == whole.lists and merged.users == whole.users
    for name in metric_names():
        assert merged.summary()[name].mean == pytest.approx(whole.summary()[name].mean)
        assert merged.summary()[name].variance == pytest.approx(whole.summary()[name].variance)
    assert first.lists == 250                                   # merge made a new tally
    with pytest.raises(ValueError, match="cannot merge"):
        first.merge(VariantTally(metrics=("HR@10",)))


def test_a_tally_survives_json() -> None:
    tally = _tally([("a", 1.0), ("b", 0.0), ("a", 0.0)])
    back = VariantTally.from_dict(json.loads(json.dumps(tally.to_dict())))
    assert back == tally and back.summary() == tally.summary()
    with pytest.raises(ValueError, match="each user's row"):
        VariantTally.from_dict({"metrics": ["HR@10"], "lists": 1, "per_user": {"a": [1.0]}})


def test_an_empty_tally_has_no_figures() -> None:
    summary = VariantTally().summary()["HR@10"]
    assert summary.users == 0 and math.isnan(summary.mean) and math.isnan(summary.variance)
