"""Experiments simulated offline on a real log: does the always-valid test keep its level
under peeking, and how many events do A/B testing and team-draft interleaving need to
pick the better of two models?

Two cheap models of known different quality (by default popularity and item-kNN over the
last 20 items; ``--models`` picks another pair, e.g. two item-kNN windows) are fitted
on the first part of a global time split. Every later event whose item they know and
whose user has a history gets each model's top-10 list from that history (computed
once, seen items excluded). Then, replaying those events in time order:

- **A/A**: users split 50/50 by a fresh salt per run, both arms served the same model;
  the mSPRT on user-level NDCG@10 is read every ``--look-every`` events; a run is a false
  positive if any look decides. Also A/A for interleaving (a model against itself).
- **A/B**: users split by salt, each user sees their arm's lists; the run stops at the
  first look that decides.
- **Interleaving**: every list is the team draft of both models' lists (coins seeded by
  salt and event id); the next event credits a team; the test of users' credit shares
  (``InterleavingTest``) is read at the same looks.

    .venv/bin/python -m benchmarks.experiments
    .venv/bin/python -m benchmarks.experiments --data ../shared/data/rees46-slice/events.csv \\
        --format rees46
    # a close pair, on the log replayed 40 times by users drawn anew (``resampled``)
    .venv/bin/python -m benchmarks.experiments --data ../shared/data/rees46-slice/events.csv \\
        --format rees46 --models knn:1,knn:20 --look-every 100 --population 40
"""

from __future__ import annotations

import argparse
import json
import math
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
from scipy.stats import binomtest, norm

from model.data import Sequences, build_sequences, time_split
from model.evaluation.baselines import ItemKNN, Popularity
from model.evaluation.protocols import Scorer
from model.experiments.bucketing import assign
from model.experiments.interleaving import credit, rng_for, team_draft
from model.experiments.online import VariantTally, list_outcome, summarise
from model.experiments.statistics import (
    Evidence,
    InterleavingTest,
    SequentialTest,
    Verdict,
    sample_ratio_mismatch,
)
from services.progress import progress_bar
from streams.events import Event
from streams.readers import read_valid_events

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_DATA = ROOT.parent / "shared" / "data" / "ml-latest-small" / "ratings.csv"
DEFAULT_JSON = ROOT / "docs" / "results" / "experiments-simulation.json"
K = 10
METRIC = f"NDCG@{K}"
SHARES = (0.5, 0.5)
# The z-test baselines wait as the sequential test does (``SequentialTest.min_users`` users
# per arm; this many credits), so that they are not judged on their first handful.
MIN_CREDITS_FOR_Z = 20


@dataclass(frozen=True)
class Log:
    """The test events in time order, with both models' lists precomputed: ``lists[m][i]``
    is model m's top-K before event i, ``gains[m][i]`` its NDCG@K for that event."""

    names: tuple[str, str]
    users: list[str]
    event_ids: list[str]
    targets: list[str]
    lists: tuple[list[tuple[str, ...]], list[tuple[str, ...]]]
    gains: tuple[np.ndarray, np.ndarray]

    def __len__(self) -> int:
        return len(self.targets)

    @property
    def user_index(self) -> dict[str, int]:
        """Each user's row in per-user arrays, in order of first event."""
        return {u: i for i, u in enumerate(dict.fromkeys(self.users))}


@dataclass(frozen=True)
class Run:
    """One simulated experiment: its verdict, the events it had read when it decided (None:
    no decision within the log), and whether a fixed-sample z-test at the same level would
    have rejected at one of the same looks (the baseline that peeking breaks)."""

    verdict: str
    events: int | None
    naive: bool
    srm: bool = False


# --- the log ----------------------------------------------------------------------------

def _cases(train_seqs: Sequences, test_events: list[Event]
           ) -> tuple[list[Event], list[np.ndarray], list[int]]:
    """Each test event whose item the models know and whose user has a known history:
    (event, history so far as item ids, target id)."""
    history = {uid: list(train_seqs.by_user[u - 1])
               for uid, u in train_seqs.users.index.items()}
    events, hists, targets = [], [], []
    for e in test_events:
        item = train_seqs.items.get(e.item_id)
        seen = history.setdefault(e.user_id, [])
        if item and seen:
            events.append(e)
            hists.append(np.asarray(seen, dtype=np.int64))
            targets.append(item)
        if item:
            seen.append(item)
    return events, hists, targets


def _top_lists(model: Scorer, hists: list[np.ndarray], ids: list[str], batch: int = 512
               ) -> Iterator[tuple[str, ...]]:
    """The model's top-K external ids for each history, the history itself excluded."""
    for start in range(0, len(hists), batch):
        part = hists[start:start + batch]
        scores = np.array(model.score(np.zeros(len(part), np.int64), part), dtype=np.float64)
        scores[:, 0] = -np.inf
        for row, h in enumerate(part):
            scores[row, h] = -np.inf
        top = np.argpartition(-scores, K, axis=1)[:, :K]
        order = np.argsort(-np.take_along_axis(scores, top, 1), axis=1, kind="stable")
        for row in np.take_along_axis(top, order, 1):
            yield tuple(ids[i - 1] for i in row)


def model_of(spec: str) -> Popularity | ItemKNN:
    """``popularity`` or ``knn:W`` (item-kNN over the user's last W items)."""
    if spec == "popularity":
        return Popularity()
    name, _, window = spec.partition(":")
    if name != "knn" or not window.isdigit() or int(window) < 1:
        raise SystemExit(f"--models: {spec!r} is neither 'popularity' nor 'knn:W' (W >= 1)")
    return ItemKNN(window=int(window))


def load_log(path: str, fmt: str, fraction: float, specs: tuple[str, str]) -> Log:
    """Fit both models on the first ``fraction`` of the log; precompute their lists."""
    train, test = time_split(read_valid_events(path, fmt), fraction)
    seqs = build_sequences(train)
    histories = [h for h in seqs.by_user if len(h)]
    models = tuple(model_of(spec).fit(histories, seqs.num_items) for spec in specs)
    events, hists, targets = _cases(seqs, test)
    ids = seqs.items.ids
    names = [ids[t - 1] for t in targets]
    first, second = (list(_top_lists(m, hists, ids)) for m in models)

    def gains(lists: list[tuple[str, ...]]) -> np.ndarray:
        return np.array([list_outcome(shown, t, K).ndcg for shown, t in zip(lists, names)])

    return Log(specs, [e.user_id for e in events],
               [e.event_id for e in events], names, (first, second),
               (gains(first), gains(second)))


def resampled(log: Log, times: int, seed: int) -> Log:
    """The log replayed ``times`` times in a row, each time by as many users drawn from its
    own with replacement (new users: their ids and event ids suffixed with the replay and
    the draw), each with the drawn user's events at their places in the log. The same
    shop running ``times`` as long with users of the same kind: for a close pair whose A/B
    test outlasts the log. Both kinds of run read the same stream."""
    if times < 1:
        raise ValueError(f"times must be at least 1. Received: times={times}")
    if times == 1:
        return log
    rows_of: dict[str, list[int]] = {}
    for i, user in enumerate(log.users):
        rows_of.setdefault(user, []).append(i)
    users = list(rows_of)
    rng = np.random.default_rng(seed)
    rows = [(i, f"#{replay}.{draw}") for replay in range(times)
            for i, draw in sorted((i, draw) for draw, u in
                                  enumerate(rng.integers(len(users), size=len(users)))
                                  for i in rows_of[users[u]])]
    at = np.array([i for i, _ in rows], dtype=np.int64)
    return Log(log.names, [log.users[i] + tag for i, tag in rows],
               [log.event_ids[i] + tag for i, tag in rows], [log.targets[i] for i in at],
               ([log.lists[0][i] for i in at], [log.lists[1][i] for i in at]),
               (log.gains[0][at], log.gains[1][at]))


def user_level_means(log: Log) -> list[float]:
    """Each model's NDCG@K averaged per user, then over users: the truth the runs seek."""
    means = []
    for gains in log.gains:
        tally = VariantTally(metrics=(METRIC,))
        for user, gain in zip(log.users, gains):
            tally.add(user, {METRIC: float(gain)})
        means.append(tally.summary()[METRIC].mean)
    return means


# --- the simulated experiments ------------------------------------------------------------

def _replay(log: Log, every: int, alpha: float, stop: bool, step: Callable[[int], None],
            look: Callable[[], tuple[Evidence, float]]) -> Run:
    """Feed event i to ``step`` in time order; every ``every`` events (and after the last)
    ``look`` returns the test's evidence and a fixed-sample z statistic. With ``stop`` the
    run ends at the first look that decides, as a live experiment would."""
    decided, naive, bound = None, False, float(norm.ppf(1 - alpha / 2))
    evidence = None
    for i in range(len(log)):
        step(i)
        if (i + 1) % every and i + 1 < len(log):
            continue
        evidence, z = look()
        naive = naive or abs(z) > bound
        if evidence.verdict != Verdict.UNDECIDED:
            decided = decided or i + 1
            if stop:
                break
    return Run(str(evidence.verdict if evidence else Verdict.UNDECIDED), decided, naive)


def split_run(log: Log, salt: str, served: tuple[int, int], every: int, alpha: float,
              stop: bool) -> Run:
    """Users split by ``salt``; arm j sees model ``served[j]``'s lists; the mSPRT compares
    the arms' user-level means. ``srm``: the users per arm fail the sample-ratio check."""
    arms = {u: assign(u, salt, SHARES) for u in set(log.users)}
    tallies = (VariantTally(metrics=(METRIC,)), VariantTally(metrics=(METRIC,)))
    test = SequentialTest(alpha=alpha)

    def step(i: int) -> None:
        arm = arms[log.users[i]]
        tallies[arm].add(log.users[i], {METRIC: float(log.gains[served[arm]][i])})

    def look() -> tuple[Evidence, float]:
        a, b = (t.summary()[METRIC] for t in tallies)
        variance = a.variance + b.variance
        ready = min(a.users, b.users) >= test.min_users and variance > 0
        z = (b.mean - a.mean) / math.sqrt(variance) if ready else 0.0
        return test.look(a, b), z

    run = _replay(log, every, alpha, stop, step, look)
    srm = sample_ratio_mismatch([t.users for t in tallies], SHARES).mismatch
    return replace(run, srm=srm)


def interleaving_run(log: Log, salt: str, models: tuple[int, int], every: int, alpha: float,
                     stop: bool, sides_by_user: bool = False) -> Run:
    """Every list is the team draft of ``models``' lists; the next event credits the team
    that placed its item in the list shown, as a live worker does; an item not shown
    credits no one. An event whose item is in neither model's list credits no one
    whatever the coins, so its draft is skipped. ``sides_by_user``: an A/A run on two
    different models, each user's "A" drawn by the salt: users lean to one model as they
    do (where a model against itself makes every credit a fair coin), while the mean
    share is 1/2 by construction."""
    test = InterleavingTest(alpha=alpha)
    lists = tuple(log.lists[m] for m in models)
    rows = log.user_index
    to_a, given = np.zeros(len(rows)), np.zeros(len(rows))

    def step(i: int) -> None:
        target = log.targets[i]
        a, b = lists
        if sides_by_user and assign(str(log.users[i]), salt, (0.5, 0.5)):
            b, a = lists
        if target in a[i] or target in b[i]:
            team = credit(team_draft(a[i], b[i], K, rng_for(f"{salt}:{log.event_ids[i]}")),
                          target)
            if team is None:  # in a model's list but not drafted into the one shown: no
                return  # credit (counted as B's until 2026-12-06, a review)
            user = rows[log.users[i]]
            to_a[user] += team == 0
            given[user] += 1

    def look() -> tuple[Evidence, float]:
        credits, wins_a = given.sum(), to_a.sum()
        ready = credits >= MIN_CREDITS_FOR_Z  # the naive baseline: credits as coins
        z = float((2 * wins_a - credits) / math.sqrt(credits)) if ready else 0.0
        return test.look(summarise(to_a, given)), z

    return _replay(log, every, alpha, stop, step, look)


def _rate(hits: int, runs: int) -> dict:
    """A share of runs with its exact (Clopper-Pearson) 95% interval."""
    ci = binomtest(hits, runs).proportion_ci(0.95)
    return {"count": hits, "rate": hits / runs, "ci95": [ci.low, ci.high]}


def false_positives(runs: list[Run]) -> dict:
    """The A/A false-positive rate of the always-valid test, and of a fixed-sample z-test
    read at the same looks; with the sample-ratio check's alarms."""
    return {"runs": len(runs),
            "always_valid": _rate(sum(r.verdict != Verdict.UNDECIDED for r in runs), len(runs)),
            "peeking_z_test": _rate(sum(r.naive for r in runs), len(runs)),
            "srm_flagged": sum(r.srm for r in runs)}


def events_to_verdict(runs: list[Run], correct: str, log: Log) -> dict:
    """Correct, wrong and missing verdicts, and the quartiles of the events to a correct
    one, a run without one counting as never (None: more than that share of runs missed);
    with the users those median events came from."""
    needed = [r.events if r.verdict == correct and r.events else math.inf for r in runs]
    quartiles = [float(np.percentile(needed, q, method="higher")) for q in (25, 50, 75)]
    return {"runs": len(runs), "correct": sum(math.isfinite(n) for n in needed),
            "wrong": sum(r.verdict not in (correct, Verdict.UNDECIDED) for r in runs),
            "none": sum(r.verdict == Verdict.UNDECIDED for r in runs),
            "median_events": quartiles[1] if math.isfinite(quartiles[1]) else None,
            "quartiles": [q if math.isfinite(q) else None for q in quartiles[::2]],
            "users_at_median": len(set(log.users[:int(quartiles[1])]))
            if math.isfinite(quartiles[1]) else None,
            "log_events": len(log), "sorted_events": sorted(n for n in needed
                                                           if math.isfinite(n))}


def matched_ratio(ab: dict, il: dict) -> dict | None:
    """A/B's events to a correct verdict over interleaving's, at the same share of runs:
    the median when both reach it within the log, else the largest share both reach (the
    log is too short for A/B's median on a close pair; the fastest runs still compare).
    None when either never decides correctly."""
    both = min(len(ab["sorted_events"]), len(il["sorted_events"]))
    if not both:
        return None
    # the k-th fastest correct run of each, k the median's rank in ``events_to_verdict``
    # (np.percentile's "higher": index ceil((n - 1) / 2)), so both say the same median
    k = min(both, math.ceil((ab["runs"] - 1) / 2) + 1)
    return {"share": k / ab["runs"], "ab": ab["sorted_events"][k - 1],
            "interleaving": il["sorted_events"][k - 1],
            "value": ab["sorted_events"][k - 1] / il["sorted_events"][k - 1]}


def simulate(log: Log, args: argparse.Namespace, better: int) -> dict:
    """All four kinds of run, with one progress bar."""
    total = 3 * args.aa_runs + 2 * args.runs
    correct = str(Verdict.B_WINS if better == 1 else Verdict.A_WINS)
    results: dict = {}
    with progress_bar("simulate", total, "{task.fields[kind]}") as update:
        done = 0

        def each(kind: str, n: int, one: Callable[[int], object]) -> list:
            nonlocal done
            out = []
            for run in range(n):
                update(done, kind=kind)
                out.append(one(run))
                done += 1
            return out

        results["aa_split"] = false_positives(each("A/A split", args.aa_runs, lambda r: split_run(
            log, f"aa-{args.seed}-{r}", (better, better), args.look_every, args.alpha, False)))
        results["aa_interleaving"] = false_positives(each(
            "A/A interleaving", args.aa_runs, lambda r: interleaving_run(
                log, f"aai-{args.seed}-{r}", (better, better), args.look_every, args.alpha,
                False)))
        results["aa_interleaving_pair"] = false_positives(each(
            "A/A interleaving, the pair", args.aa_runs, lambda r: interleaving_run(
                log, f"aap-{args.seed}-{r}", (0, 1), args.look_every, args.alpha, False,
                sides_by_user=True)))
        ab = each("A/B", args.runs, lambda r: split_run(
            log, f"ab-{args.seed}-{r}", (0, 1), args.look_every, args.alpha, True))
        results["ab"] = events_to_verdict(ab, correct, log)
        il = each("interleaving", args.runs, lambda r: interleaving_run(
            log, f"il-{args.seed}-{r}", (0, 1), args.look_every, args.alpha, True))
        results["interleaving"] = events_to_verdict(il, correct, log)
        update(done, kind="done")
    return results


# --- report -----------------------------------------------------------------------------

def _share(rate: dict) -> str:
    low, high = rate["ci95"]
    return f"{rate['count']} = {rate['rate']:.3f} [{low:.3f}, {high:.3f}]"


def _events(figure: float | None, log_events: int) -> str:
    return f"{figure:,.0f}" if figure is not None else f"> {log_events:,}"


def report(log: Log, means: list[float], results: dict) -> dict:
    """Print the figures; return the ratio A/B ÷ interleaving (a lower bound when A/B
    mostly decides nothing within the log)."""
    print(f"\nuser-level {METRIC} on the log: {log.names[0]} {means[0]:.4f}, {log.names[1]} "
          f"{means[1]:.4f}; the runs read {len(log):,} events of {len(set(log.users)):,} users")
    print(f"\n{'A/A false positives':<20} {'runs':>5} {'always-valid test':>26} "
          f"{'z-test read at each look':>28}")
    for kind in ("aa_split", "aa_interleaving", "aa_interleaving_pair"):
        r = results[kind]
        print(f"{kind:<20} {r['runs']:>5} {_share(r['always_valid']):>26} "
              f"{_share(r['peeking_z_test']):>28}")
    print(f"A/A split runs flagged by the sample-ratio check: {results['aa_split']['srm_flagged']}")
    print(f"\n{'to a verdict':<18} {'runs':>5} {'correct':>8} {'wrong':>6} {'none':>5} "
          f"{'median events':>14} {'quartiles':>20} {'users by median':>16}")
    for kind in ("ab", "interleaving"):
        r = results[kind]
        q = " – ".join(_events(x, r["log_events"]) for x in r["quartiles"])
        print(f"{kind:<18} {r['runs']:>5} {r['correct']:>8} {r['wrong']:>6} {r['none']:>5} "
              f"{_events(r['median_events'], r['log_events']):>14} {q:>20} "
              f"{r['users_at_median'] if r['users_at_median'] is not None else '-':>16}")
    ab, il = results["ab"]["median_events"], results["interleaving"]["median_events"]
    ratio = {"value": None, "lower_bound": False}
    if il:
        ratio = {"value": (ab or len(log)) / il, "lower_bound": ab is None}
        print(f"\nA/B events ÷ interleaving events (medians): "
              f"{'≥ ' if ab is None else ''}{ratio['value']:.1f}x  (target: ≥ 5x)")
    matched = matched_ratio(results["ab"], results["interleaving"])
    if matched:
        print(f"at the {matched['share']:.0%} fastest correct runs of each: A/B "
              f"{matched['ab']:,.0f} events, interleaving {matched['interleaving']:,.0f}: "
              f"{matched['value']:.1f}x")
    return {**ratio, "matched": matched}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default=str(DEFAULT_DATA))
    parser.add_argument("--format", default="movielens")
    parser.add_argument("--train-fraction", type=float, default=0.5,
                        help="the models are fitted on this first share of the log")
    parser.add_argument("--models", default="popularity,knn:20",
                        help="the pair, A,B: 'popularity' or 'knn:W' (item-kNN over the "
                             "user's last W items) each")
    parser.add_argument("--aa-runs", type=int, default=500)
    parser.add_argument("--runs", type=int, default=100, help="A/B and interleaving runs")
    parser.add_argument("--look-every", type=int, default=100, help="events between looks")
    parser.add_argument("--alpha", type=float, default=0.05)
    parser.add_argument("--seed", type=int, default=0,
                        help="varies every salt, and the users --population draws")
    parser.add_argument("--population", type=int, default=1,
                        help="replay the log this many times, each time by users drawn from "
                             "its own with replacement (a longer stream for close pairs)")
    parser.add_argument("--json", default=str(DEFAULT_JSON), help="write the figures here")
    args = parser.parse_args()
    start = time.perf_counter()
    specs = tuple(args.models.split(","))
    if len(specs) != 2:
        raise SystemExit(f"--models: two models, A,B. Received: {args.models!r}")
    if args.population < 1:
        raise SystemExit(f"--population: at least 1. Received: {args.population}")
    original = load_log(args.data, args.format, args.train_fraction,
                        specs)  # type: ignore[arg-type]
    means = user_level_means(original)  # the truth: a draw of users could tip a close pair
    log = resampled(original, args.population, args.seed)
    better = int(means[1] > means[0])
    replayed = f" (the log {args.population}x, users drawn anew each time)" \
        if args.population > 1 else ""
    print(f"{args.data}: fitted on the first {args.train_fraction:.0%}; {len(log):,} test "
          f"events from {len(set(log.users)):,} users{replayed}; looks every "
          f"{args.look_every} events, alpha {args.alpha}; lists precomputed in "
          f"{time.perf_counter() - start:.0f} s")
    results = simulate(log, args, better)
    ratio = report(log, means, results)
    out = {"config": {k: v for k, v in vars(args).items() if k != "json"},
           "models": dict(zip(log.names, means)), "better": log.names[better],
           "test_events": len(log), "test_users": len(set(log.users)),
           "log_itself": {"events": len(original), "users": len(set(original.users))},
           "stream_models": dict(zip(log.names, user_level_means(log))), "metric": METRIC,
           **results, "ratio_ab_to_interleaving": ratio,
           "seconds": round(time.perf_counter() - start, 1)}
    if args.json:
        Path(args.json).write_text(json.dumps(out, indent=2) + "\n")
        print(f"wrote {args.json}")


if __name__ == "__main__":
    main()
