"""What ``streamrec experiment status`` and ``GET /v1/experiments/{name}`` say: per variant
its users, lists and metrics with intervals; the always-valid test of each variant
against the control (or of the interleaving credits); the sample-ratio check; a verdict.

The tests are sequential (``model.experiments.statistics``): their state (running minimum
p-value, intersected intervals, a verdict fixed at the first look that decided) is kept
in Redis beside the tallies and folded forward at each look, so reading the status as
often as one likes does not inflate false positives.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any

import orjson

from model.experiments.interleaving import CREDIT_TO_A
from model.experiments.online import MetricSummary
from model.experiments.statistics import (
    DEFAULT_ALPHA,
    Evidence,
    InterleavingTest,
    SequentialTest,
    Verdict,
    sample_ratio_mismatch,
)
from streams.experiment import Experiment
from streams.experiment_store import TALLY_TTL_S, read_tallies, tests_key
from streams.experiments import METRICS, Tallies

PRIMARY = "NDCG@10"  # the metric whose test decides an A/B experiment
SRM_STATE = "sample ratio"  # the kept state of the sample-ratio check, beside the tests'
WINNER_STATE = "winner"  # the challenger named at the first look that decided, kept


@dataclass(frozen=True)
class VariantFigures:
    name: str
    model: str
    users: int
    lists: int
    metrics: dict[str, dict[str, float]]  # metric -> mean, low, high (fixed 95%, display)
    served: dict[str, int]  # model version (or popularity) -> lists it answered


@dataclass(frozen=True)
class ExperimentReport:
    experiment: Experiment
    workers: int
    variants: list[VariantFigures]
    tests: dict[str, dict[str, Any]]  # "<variant> vs <control>: <metric>" or "interleaving"
    sample_ratio_p: float
    sample_ratio_mismatch: bool
    verdict: str
    winner: str | None
    load_failures: dict[str, str]  # variant -> error: its users get the control's list

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["experiment"] = self.experiment.model_dump(mode="json")
        return out


def _figures(summary: MetricSummary) -> dict[str, float]:
    low, high = summary.interval()
    return {"mean": summary.mean, "low": low, "high": high}


def _evidence(evidence: Evidence) -> dict[str, Any]:
    return {"verdict": str(evidence.verdict), "p_value": evidence.p_value,
            "estimate": evidence.estimate, "low": evidence.low, "high": evidence.high,
            "drifted": evidence.drifted}


def look(experiment: Experiment, tallies: Tallies, workers: int,
         states: dict[str, dict[str, Any]], failed: dict[str, str] | None = None
         ) -> tuple[ExperimentReport, dict[str, dict]]:
    """The report at this look, and the tests' states to keep for the next one;
    ``failed``: variants some worker could not load ({variant: error})."""
    variants, summaries = [], {}
    for v in experiment.variants:
        tally = tallies.variant(v.name)
        summaries[v.name] = tally.summary()
        variants.append(VariantFigures(v.name, v.model, tally.users, tally.lists, {
            m: _figures(s) for m, s in summaries[v.name].items() if s.users},
            dict(tallies.served.get(v.name, {}))))
    tests: dict[str, dict[str, Any]] = {}
    new_states: dict[str, dict] = {}
    winner = None
    if experiment.mode == "interleave":
        test = InterleavingTest.from_dict(states.get("interleaving", {}))
        shares = tallies.credits.summary()[CREDIT_TO_A]
        evidence = test.look(shares)
        tests["interleaving"] = {**_evidence(evidence), "wins": list(tallies.wins()),
                                 "users": shares.users}
        new_states["interleaving"] = test.to_dict()
        verdict = Verdict.UNDECIDED if evidence.drifted else evidence.verdict
        if verdict is not Verdict.UNDECIDED:
            winner = experiment.variants[0 if verdict is Verdict.A_WINS else 1].name
    else:
        verdict, winner = _ab_tests(experiment, summaries, states, tests, new_states)
    counts = [tallies.variant(v.name).users for v in experiment.variants]
    served = sum(v.share for v in experiment.variants)  # not 1 - holdback: the declared
    shares = [v.share / served for v in experiment.variants]  # sum's rounding, magnified
    srm = sample_ratio_mismatch(counts, shares, seen_p=states.get(SRM_STATE, {}).get(
        "p_value", 1.0)) if experiment.mode == "ab" else None
    if srm is not None:  # its running minimum: a split found broken stays broken
        new_states[SRM_STATE] = {"p_value": srm.p_value}
    broken = bool(srm and srm.mismatch)  # a broken split: no comparison can be trusted,
    return ExperimentReport(  # so no winner (``conclude`` and live trials promote one)
        experiment, workers, variants, tests, srm.p_value if srm else math.nan,
        broken, str(verdict), None if broken else winner, dict(failed or {})), new_states


def _ab_tests(experiment: Experiment, summaries: dict[str, dict[str, MetricSummary]],
              states: dict[str, dict[str, Any]], tests: dict[str, dict[str, Any]],
              new_states: dict[str, dict]) -> tuple[Verdict, str | None]:
    """Each variant against the control on each metric; the verdict is the primary
    metric's: of the variants that beat the control the one ahead by most when first
    named (kept at later looks while it still wins), else the control if it beats them
    all; a test that has drifted (``Evidence``) counts for neither. Each of the k
    challengers is tested at level alpha / k (Bonferroni), so the chance that any false
    verdict is declared stays within alpha.
    A test keeps the level stored with its state, so an experiment begun before this
    correction (2026-12-04) keeps its verdicts."""
    control = experiment.control.name
    level = {"alpha": DEFAULT_ALPHA / (len(experiment.variants) - 1)}
    ahead: dict[str, float] = {}
    beaten = 0
    for v in experiment.variants[1:]:
        for metric in METRICS:
            key = f"{v.name} vs {control}: {metric}"
            test = SequentialTest.from_dict({**level, **states.get(key, {})})
            evidence = test.look(summaries[control][metric], summaries[v.name][metric])
            tests[key], new_states[key] = _evidence(evidence), test.to_dict()
            if metric != PRIMARY or evidence.drifted:  # a verdict the effect moved from
                continue
            if evidence.verdict is Verdict.B_WINS:
                ahead[v.name] = evidence.estimate
            beaten += evidence.verdict is Verdict.A_WINS
    if ahead:  # the one named before while it still wins: ahead by most at each look,
        named = states.get(WINNER_STATE, {}).get("name")  # two close ones took turns
        winner = named if named in ahead else max(ahead, key=lambda name: ahead[name])
        new_states[WINNER_STATE] = {"name": winner}
        return Verdict.B_WINS, winner
    if beaten == len(experiment.variants) - 1:
        return Verdict.A_WINS, control
    return Verdict.UNDECIDED, None


def status(redis: Any, experiment: Experiment) -> ExperimentReport:
    """Look at ``experiment`` now (a sync Redis client): merge the workers' tallies, fold
    the look into the tests' kept states, store them back. The fold is a transaction on
    the states' key (WATCH): two readers at once (a dashboard and the CLI) each fold onto
    the other's states, so a verdict decided by one look is never written over by a
    concurrent look that did not decide."""
    tallies, workers, failed = read_tallies(redis, experiment.name)
    key = tests_key(experiment.name)

    def fold(pipe: Any) -> ExperimentReport:
        raw = pipe.get(key)
        report, new_states = look(experiment, tallies, workers,
                                  orjson.loads(raw) if raw else {}, failed)
        pipe.multi()
        pipe.set(key, orjson.dumps(new_states, option=orjson.OPT_SERIALIZE_NUMPY),
                 ex=TALLY_TTL_S)  # kept as long as the tallies they were read from
        return report

    return redis.transaction(fold, key, value_from_callable=True)
