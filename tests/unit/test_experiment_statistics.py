"""Always-valid tests keep their level however often they are read; the sample-ratio check
catches a broken split; the bootstrap covers; the gate promotes only on a sure gain."""

from __future__ import annotations

import json
import math

import numpy as np
import orjson
import pytest

from model.evaluation.gate import case_values, decide
from model.evaluation.metrics import hit_rate, mrr, ndcg
from model.experiments.online import MetricSummary
from model.experiments.statistics import (
    InterleavingTest,
    SequentialTest,
    Verdict,
    bootstrap_interval,
    msprt_half_width,
    msprt_p_value,
    sample_ratio_mismatch,
)

ALPHA = 0.05
RUNS = 200
TOLERANCE = 0.03  # about two binomial standard deviations at 200 runs


def _summary(values: np.ndarray) -> MetricSummary:
    return MetricSummary(len(values), float(values.mean()), float(values.var(ddof=1)
                                                                  / len(values)))


def _user_values(rng: np.random.Generator, n: int, shift: float = 0.0) -> np.ndarray:
    """Per-user means shaped like NDCG@10: mostly zero, sometimes a gain in (0.3, 1]."""
    return (rng.random(n) < 0.2) * rng.uniform(0.3, 1.0, n) + shift


def _run(rng: np.random.Generator, shift: float, users: int = 600, every: int = 10
         ) -> tuple[SequentialTest, list]:
    """Users arrive one per arm at a time; the test is read every ``every`` users."""
    a, b = _user_values(rng, users), _user_values(rng, users, shift)
    test = SequentialTest(alpha=ALPHA)
    looks = [test.look(_summary(a[:n]), _summary(b[:n])) for n in range(every, users + 1, every)]
    return test, looks


def test_msprt_p_values_are_probabilities_that_fall_as_the_effect_grows() -> None:
    for variance in (1e-4, 1e-2, 1.0):
        for tau2 in (1e-4, 1e-2, 1.0):
            ps = [msprt_p_value(d, variance, tau2) for d in np.linspace(0, 5, 50)]
            assert all(0.0 <= p <= 1.0 for p in ps)
            assert ps[0] == 1.0 and all(x >= y for x, y in zip(ps, ps[1:]))


def test_the_interval_is_the_inverted_boundary() -> None:
    """At the interval's edge the one-look p-value is exactly alpha."""
    variance, tau2 = 0.003, 0.01
    half = msprt_half_width(variance, tau2, ALPHA)
    assert msprt_p_value(half, variance, tau2) == pytest.approx(ALPHA)
    assert msprt_p_value(half * 0.99, variance, tau2) > ALPHA


def test_the_always_valid_p_value_only_falls_and_the_intervals_only_shrink() -> None:
    _, looks = _run(np.random.default_rng(0), shift=0.02)
    ps = [e.p_value for e in looks]
    assert all(x >= y for x, y in zip(ps, ps[1:])) and 0 <= ps[-1] <= 1
    lows, highs = [e.low for e in looks], [e.high for e in looks]
    assert all(x <= y for x, y in zip(lows, lows[1:]))
    assert all(x >= y for x, y in zip(highs, highs[1:]))


def test_a_a_runs_read_at_every_look_keep_the_false_positive_rate() -> None:
    """200 A/A experiments, each peeked at 60 times: a fixed-sample z-test read that way
    would reject far more often than 5%."""
    rng = np.random.default_rng(2024)
    rejected = sum(_run(rng, shift=0.0)[0].verdict is not Verdict.UNDECIDED for _ in range(RUNS))
    assert rejected / RUNS <= ALPHA + TOLERANCE


def test_a_clear_effect_is_found_the_right_way_round_and_covered() -> None:
    rng = np.random.default_rng(7)
    shift = 0.08  # about a third of the per-user standard deviation
    runs = [_run(rng, shift)[0] for _ in range(50)]
    assert sum(t.verdict is Verdict.B_WINS for t in runs) >= 45
    assert not any(t.verdict is Verdict.A_WINS for t in runs)
    assert sum(t.low <= shift <= t.high for t in runs) >= 45  # a confidence sequence covers


def test_too_few_users_decide_nothing() -> None:
    test = SequentialTest(min_users=20)
    evidence = test.look(_summary(np.array([0.0, 0, 0, 0, 1])), _summary(np.ones(5)))
    assert evidence.verdict is Verdict.UNDECIDED and evidence.p_value == 1.0 and test.looks == 0


def test_arms_of_one_value_each_decide_nothing_whatever_float_rounding_leaves() -> None:
    """Every user at NDCG 1/log2(3) in both arms: the variance read 1e-34 and the means
    differed by 1e-16, rounding that read as many standard errors, and the first look
    decided for good that B wins (a review)."""
    value = 1 / math.log2(3)  # NDCG of a hit at rank 2
    test = SequentialTest()
    evidence = test.look(_summary(np.full(40, value)), _summary(np.full(57, value)))
    assert evidence.verdict is Verdict.UNDECIDED and test.looks == 0
    # No spread in either arm counts for nothing, so a later effect is read as it is, not
    # as drift from the point such a look would have recorded.
    test.look(_summary(np.zeros(40)), _summary(np.zeros(40)))
    rng = np.random.default_rng(1)
    later = test.look(_summary((rng.random(1000) < 0.05) * 1.0),
                      _summary((rng.random(1000) < 0.15) * 1.0))
    assert later.verdict is Verdict.B_WINS and not later.drifted


def test_the_status_interval_stays_within_the_metrics_range_and_is_never_a_point() -> None:
    """The metrics (hit, NDCG, MRR, click, conversion) lie in [0, 1]: the normal interval
    shown read [-0.048, 0.148] for one hit among 20 users, and [0, 0] for no conversion
    among 400, as sure as a count can be (a review)."""
    none = MetricSummary(400, 0.0, 0.0).interval()
    assert none[0] == 0.0 and 0.005 < none[1] < 0.015  # Wilson's: about [0, 0.0095]
    every = MetricSummary(400, 1.0, 0.0).interval()
    assert 0.985 < every[0] < 0.995 and every[1] == 1.0
    one = _summary(np.array([1.0] + [0.0] * 19)).interval()
    assert one[0] == 0.0 and one[1] == pytest.approx(0.05 + 1.96 * math.sqrt(0.05 * 0.95 / 20),
                                                     abs=0.01)


def test_a_decision_stays_and_the_state_survives_json() -> None:
    rng = np.random.default_rng(3)
    test, looks = _run(rng, shift=0.2)
    assert test.verdict is Verdict.B_WINS and looks[-1].verdict is Verdict.B_WINS
    back = SequentialTest.from_dict(json.loads(json.dumps(test.to_dict())))
    assert back == test and back.verdict is Verdict.B_WINS
    worse = back.look(_summary(np.ones(50)), _summary(np.r_[1.0, np.zeros(49)]))
    assert worse.verdict is Verdict.B_WINS  # later looks do not undo a decision
    assert worse.drifted  # but say the effect it was drawn from has moved


def test_an_effect_that_moves_between_looks_is_flagged_not_an_inverted_interval() -> None:
    """A novelty effect: B ahead, then level, then behind. The running intersection of
    the intervals came out empty, low above high, the estimate outside it (a review)."""
    test, seen = SequentialTest(), []
    for diff in (0.05, 0.05, 0.0, -0.05, -0.05):
        seen.append(test.look(MetricSummary(2000, 0.30, 0.09 / 2000),
                              MetricSummary(2000, 0.30 + diff, 0.09 / 2000)))
    assert seen[0].verdict is Verdict.B_WINS and not seen[1].drifted
    assert seen[3].drifted and seen[4].drifted
    assert all(e.low <= e.estimate <= e.high for e in seen[3:])
    assert SequentialTest.from_dict(json.loads(json.dumps(test.to_dict()))).drifted


@pytest.mark.parametrize("kind", [SequentialTest, InterleavingTest])
def test_the_state_of_a_test_not_looked_at_yet_survives_the_stores_json(kind) -> None:
    """Before a look bounds it, the interval is infinite; orjson, which stores the state,
    writes infinity as null, and every later look then failed in ``max(None, low)``:
    ``experiment status`` and ``conclude`` crashed for good once read early."""
    rng = np.random.default_rng(5)
    fresh = kind(min_users=20)
    back = kind.from_dict(orjson.loads(orjson.dumps(fresh.to_dict())))
    assert back == fresh and (back.low, back.high) == (-math.inf, math.inf)
    if kind is SequentialTest:
        a, b = _summary(rng.normal(0, 1, 40)), _summary(rng.normal(0.1, 1, 40))
        assert back.look(a, b) == fresh.look(a, b)
    else:
        shares = _summary(rng.uniform(0, 1, 40))
        assert back.look(shares) == fresh.look(shares)
    assert back == fresh and math.isfinite(back.low)


def _interleaving_run(rng: np.random.Generator, leanings: tuple[float, ...],
                      users: int = 300, credits: int = 5, every: int = 20) -> InterleavingTest:
    """Users one after another, each leaning to A with one of ``leanings`` (the chance
    each of their ``credits`` goes to A), read every ``every`` credits."""
    from model.experiments.interleaving import CREDIT_TO_A
    from model.experiments.online import VariantTally

    test, tally, given = InterleavingTest(alpha=ALPHA), VariantTally((CREDIT_TO_A,)), 0
    for user, lean in enumerate(rng.choice(leanings, users)):
        for to_a in rng.random(credits) < lean:
            tally.add(str(user), {CREDIT_TO_A: float(to_a)})
            given += 1
            if given % every == 0:
                test.look(tally.summary()[CREDIT_TO_A])
    return test


@pytest.mark.parametrize("leanings", [(0.5,), (0.3, 0.7), (0.2, 0.8)])
def test_interleaving_a_a_keeps_the_false_positive_rate_when_users_differ(
        leanings: tuple[float, ...]) -> None:
    """Equally good models, users who each lean one way: credits of one user are not
    independent coins (a test counting them as such rejected in 32% and 100% of runs)."""
    rng = np.random.default_rng(11)
    rejected = sum(_interleaving_run(rng, leanings, credits=10).verdict is not
                   Verdict.UNDECIDED for _ in range(RUNS))
    assert rejected / RUNS <= ALPHA + TOLERANCE


def test_interleaving_finds_the_better_model_and_covers_its_share() -> None:
    rng = np.random.default_rng(12)
    runs = [_interleaving_run(rng, (0.4,)) for _ in range(50)]  # B wins 60% of credits
    assert sum(t.verdict is Verdict.B_WINS for t in runs) >= 45
    assert not any(t.verdict is Verdict.A_WINS for t in runs)
    assert sum(t.low <= 0.4 <= t.high for t in runs) >= 45
    one_sided = InterleavingTest()  # every user credits A alone: no spread, still decided
    assert one_sided.look(MetricSummary(30, 1.0, 0.0)).verdict is Verdict.A_WINS
    assert InterleavingTest().look(MetricSummary(0, float("nan"), float("nan"))).estimate == 0.5


def test_the_sample_ratio_check_flags_a_broken_split_only() -> None:
    broken = sample_ratio_mismatch([5500, 4500], [0.5, 0.5])
    assert broken.mismatch and broken.p_value < 1e-10
    fine = sample_ratio_mismatch([5000, 5000], [0.5, 0.5])
    assert not fine.mismatch and fine.p_value == pytest.approx(1.0)
    assert not sample_ratio_mismatch([2990, 7010], [0.3, 0.7]).mismatch
    rng = np.random.default_rng(5)  # honest random splits: flagged about 0.1% of the time
    flagged = sum(sample_ratio_mismatch([n := int(rng.binomial(10_000, 0.5)), 10_000 - n],
                                        [0.5, 0.5]).mismatch for _ in range(500))
    assert flagged <= 3
    assert not sample_ratio_mismatch([0, 0], [0.5, 0.5]).mismatch
    # shares accepted as adding up (within 1e-6) are checked, not a crash in chisquare
    assert not sample_ratio_mismatch([300, 310, 290], [0.3333333] * 3).mismatch
    # Read at every look: honest splits looked at every 100 users up to 20,000 are flagged
    # at most at the threshold's rate over all the looks (a chi-square read so: 1.4%).
    runs = (np.cumsum(rng.random(20_000) < 0.5) for _ in range(300))
    assert not any(sample_ratio_mismatch([c[n - 1], n - c[n - 1]], [0.5, 0.5]).mismatch
                   for c in runs for n in range(100, 20_001, 100))
    # A split that errs by 3 points is found all the same, and a flag once raised stays.
    late = sample_ratio_mismatch([5300, 4700], [0.5, 0.5])
    assert late.mismatch and late.p_value < 1e-6
    assert sample_ratio_mismatch([5000, 5000], [0.5, 0.5], seen_p=late.p_value).mismatch
    with pytest.raises(ValueError, match="counts for"):
        sample_ratio_mismatch([1, 2, 3], [0.5, 0.5])
    with pytest.raises(ValueError, match="sum to 1"):
        sample_ratio_mismatch([1, 2], [0.5, 0.6])


def test_the_bootstrap_interval_covers_the_true_mean_most_of_the_time() -> None:
    rng = np.random.default_rng(8)
    covered = sum(lo <= 1.0 <= hi for lo, hi in (
        bootstrap_interval(rng.exponential(1.0, 60), n=500, rng=rng) for _ in range(200)))
    assert 0.88 <= covered / 200 <= 0.99


def test_resampling_users_widens_the_interval_of_correlated_cases() -> None:
    """Twenty cases per user that share the user's level are not 20x the evidence."""
    rng = np.random.default_rng(9)
    users = np.repeat(np.arange(40), 20)
    values = rng.normal(0, 1, 40)[users] + rng.normal(0, 0.1, len(users))
    lo, hi = bootstrap_interval(values, rng=0)
    glo, ghi = bootstrap_interval(values, rng=0, groups=users)
    assert (ghi - glo) > 3 * (hi - lo)
    assert glo <= values.mean() <= ghi
    with pytest.raises(ValueError, match="at least one"):
        bootstrap_interval([])
    with pytest.raises(ValueError, match="groups for"):
        bootstrap_interval([1.0, 2.0], groups=[1])


def test_resampling_within_strata_keeps_a_rare_class_in_every_draw() -> None:
    """An AUC over 4 positives in 300 cases: a plain resample lacks a positive about 2% of
    the time, its AUC is undefined, and the quantiles of the whole interval were NaN."""
    from model.evaluation.metrics import binary_auc

    rng = np.random.default_rng(10)
    labels = np.zeros(300, bool)
    labels[:4] = True
    scores = rng.normal(0, 1, 300) + labels

    def auc(rows: np.ndarray) -> float:
        return binary_auc(scores[rows.astype(int)], labels[rows.astype(int)])

    plain = bootstrap_interval(np.arange(300), auc, n=1000, rng=0)
    assert np.isnan(plain).all()
    low, high = bootstrap_interval(np.arange(300), auc, n=1000, rng=0, strata=labels)
    assert 0 <= low <= auc(np.arange(300)) <= high <= 1
    with pytest.raises(ValueError, match="not both"):
        bootstrap_interval([1.0, 2.0], groups=[1, 2], strata=[0, 1])


# --- the gate's confidence rule (model.evaluation.gate.decide with per-case ranks) ------------

def _report(ranks: np.ndarray) -> dict:
    return {"full": {"NDCG@10": ndcg(ranks, 10)}, "users": len(ranks)}


def _gate_ranks(rng: np.random.Generator, cases: int, better: float
                ) -> tuple[np.ndarray, np.ndarray]:
    """Champion ranks, and challenger ranks that move each case up with prob. ``better``."""
    champion = rng.integers(0, 40, cases).astype(float)
    moved = rng.random(cases) < better
    return np.where(moved, np.floor(champion / 3), champion), champion


def test_case_values_average_to_the_metrics() -> None:
    ranks = np.array([0, 1.5, 3, 9, 10, 40, np.inf])
    assert case_values(ranks, "NDCG@10").mean() == pytest.approx(ndcg(ranks, 10))
    assert case_values(ranks, "HR@10").mean() == pytest.approx(hit_rate(ranks, 10))
    assert case_values(ranks, "MRR").mean() == pytest.approx(mrr(ranks))
    assert case_values(ranks, "MRR@5").mean() == pytest.approx(mrr(ranks, 5))
    with pytest.raises(ValueError, match="no per-case formula"):
        case_values(ranks, "AUC")


def test_the_gate_promotes_a_sure_gain_over_enough_cases() -> None:
    mine, theirs = _gate_ranks(np.random.default_rng(1), 400, better=0.5)
    verdict = decide(_report(mine), _report(theirs), (mine, theirs), min_cases=200)
    assert verdict.promote and verdict.interval is not None and verdict.interval[0] > 0
    assert "above zero" in verdict.reason


def test_the_gate_keeps_the_champion_when_the_gain_may_be_luck() -> None:
    rng = np.random.default_rng(2)
    theirs = rng.integers(0, 40, 400).astype(float)
    mine = theirs.copy()
    mine[np.argmax(theirs >= 10)] = 0  # one case in 400 better: a higher mean, by luck
    assert ndcg(mine, 10) > ndcg(theirs, 10)
    verdict = decide(_report(mine), _report(theirs), (mine, theirs), min_cases=200)
    assert not verdict.promote and verdict.interval is not None and verdict.interval[0] <= 0
    assert "not above zero" in verdict.reason
    for _ in range(20):  # the same model twice, ranks reshuffled: never promoted
        mine = rng.permutation(theirs)
        assert not decide(_report(mine), _report(theirs), (mine, theirs),
                          min_cases=200).promote


def test_the_gate_needs_its_minimum_of_cases() -> None:
    mine, theirs = _gate_ranks(np.random.default_rng(3), 150, better=0.9)
    few = decide(_report(mine), _report(theirs), (mine, theirs), min_cases=200)
    assert not few.promote and "200 needed" in few.reason
    assert decide(_report(mine), _report(theirs), (mine, theirs), min_cases=100).promote
    with pytest.raises(ValueError, match="paired"):
        decide(_report(mine), _report(theirs), (mine, theirs[:-1]), min_cases=1)


def test_the_gate_resamples_users_when_told_them() -> None:
    """When the gain is a matter of which user it is (the challenger helps half the users
    on all their cases), resampling users gives the honest, wider interval."""
    rng = np.random.default_rng(4)
    users = np.repeat(np.arange(20), 20)
    theirs = rng.integers(0, 40, len(users)).astype(float)
    mine = np.where(users % 2 == 0, np.floor(theirs / 3), theirs)
    by_case = decide(_report(mine), _report(theirs), (mine, theirs), min_cases=200).interval
    by_user = decide(_report(mine), _report(theirs), (mine, theirs), min_cases=200,
                     case_users=users).interval
    assert by_case is not None and by_user is not None
    assert (by_user[1] - by_user[0]) > 1.5 * (by_case[1] - by_case[0])
