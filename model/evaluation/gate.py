"""The champion/challenger gate: both models scored alike on the most recent time slice.

The trainer holds out the newest events of the log (``model.data.time_split``). Every
event after the cut whose user has history before the cut is a test case (at most 20 per
user): history = the user's items before that event, target = its item. (One case per user
was tried first: on ml-latest-small that left 11 cases, too few to decide anything.)
Both protocols apply (``model.evaluation.protocols``: sampled and full ranking, history
excluded for both models alike).
The challenger's id maps extend the champion's (same ids for what both know), so the
champion is scored in the challenger's id space through ``KnownPrefix``: users it never
saw are its unknown user, items it never saw leave its histories and rank last. Targets no
model could know (items first seen after the cut) are not test cases.
A higher mean on one slice can be luck: ``decide`` also asks the bootstrap interval of the
per-case gain to lie above zero, over enough cases from enough users.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from model.data import Interaction, Sequences, Side
from model.evaluation.metrics import hit_rate, mrr, ndcg
from model.evaluation.protocols import Scorer
from model.experiments.statistics import bootstrap_interval


@dataclass(frozen=True)
class Cases:
    """Test cases for ``model.evaluation.protocols.evaluate_cases``: row i is (user, history,
    target), with the history's ``side`` (event types, times, newest context)."""

    users: np.ndarray
    histories: list[np.ndarray]
    targets: np.ndarray
    side: Side


def gate_cases(train: Sequences, after_cut: Sequence[Interaction],
               max_per_user: int = 20) -> Cases:
    """Each event after the cut is a case: its user's known items before it (before the
    cut and after), and its item as the target. Users with no history before the cut and
    items first seen after it make no case; at most ``max_per_user`` cases per user (the
    first ones), so a few heavy users cannot decide the gate alone."""
    spec = train.spec
    known = {u: len(h) for u, h in enumerate(train.by_user, 1) if len(h)}
    items = {u: list(train.by_user[u - 1]) for u in known}
    types = {u: list(train.types[u - 1]) for u in known}
    times = {u: list(train.times[u - 1]) for u in known}
    newest = {u: (train.numeric[u - 1][-1], train.cats[u - 1][-1]) for u in known}
    users, hists, rows, targets = [], [], [], []
    counts: dict[int, int] = {}
    for e in after_cut:  # in time order
        user, item = train.users.get(e.user_id), train.items.get(e.item_id)
        if not user or user not in known or not item:
            continue
        if counts.get(user, 0) < max_per_user:
            counts[user] = counts.get(user, 0) + 1
            users.append(user)
            hists.append(np.asarray(items[user], dtype=np.int64))
            rows.append((np.asarray(types[user]), np.asarray(times[user]), *newest[user]))
            targets.append(item)
        context = getattr(e, "context", None)
        items[user].append(item)
        types[user].append(spec.type_code(getattr(e, "event_type", None)))
        times[user].append(e.ts)
        newest[user] = (np.asarray(spec.numeric_values(context)),
                        np.asarray(spec.category_ids(context)))
    side = Side([r[0] for r in rows], [r[1] for r in rows],
                np.asarray([r[2] for r in rows]).reshape(len(rows), len(spec.numeric)),
                np.asarray([r[3] for r in rows], np.int64).reshape(len(rows),
                                                                   len(spec.categorical)))
    return Cases(np.asarray(users, dtype=np.int64), hists, np.asarray(targets, dtype=np.int64),
                 side)


class KnownPrefix:
    """A model trained on a prefix of the id maps, scored in the full id space."""

    def __init__(self, inner: Scorer, known_users: int, known_items: int,
                 all_items: int) -> None:
        self.inner, self.known_users = inner, known_users
        self.known_items, self.all_items = known_items, all_items
        self.name = f"{inner.name} (champion)"

    def score(self, users: np.ndarray, histories: list[np.ndarray],
              side: Side | None = None) -> np.ndarray:
        users = np.where(users <= self.known_users, users, 0)
        keep = [h <= self.known_items for h in histories]
        known = [h[k] for h, k in zip(histories, keep)]
        if side is not None:  # the types and times of the items the champion knows,
            # and the newest event's, as serving gives them (``Side.newest``): an event on
            # a new item still is the one the list answers
            side = Side([t[k] for t, k in zip(side.types, keep)],
                        [t[k] for t, k in zip(side.times, keep)], side.numeric, side.cats,
                        side.last_events())
        out = np.full((len(users), self.all_items + 1), -np.inf)
        out[:, :self.known_items + 1] = self.inner.score(users, known, side)
        return out


LEVEL = 0.95


@dataclass(frozen=True)
class Verdict:
    """``interval``: the bootstrap interval of the per-case difference challenger −
    champion (None when no comparison got that far)."""

    promote: bool
    reason: str
    metric: str
    champion: float | None
    challenger: float
    interval: tuple[float, float] | None = None


def case_values(ranks: np.ndarray, metric: str) -> np.ndarray:
    """Each case's ``metric`` ("HR@K", "NDCG@K", "MRR", "MRR@K") from its 0-based rank,
    by the formulas of ``model.evaluation.metrics`` (a case's value is the metric over a
    batch of one)."""
    name, _, cut = metric.partition("@")
    k = int(cut) if cut else None
    formulas = {"HR": hit_rate, "NDCG": ndcg, "MRR": mrr}
    if name not in formulas or (k is None and name != "MRR"):
        raise ValueError(f"no per-case formula for {metric!r}; use HR@K, NDCG@K or MRR")
    formula = formulas[name]
    return np.array([formula(np.array([r], dtype=float), k) for r in np.asarray(ranks)])


def decide(challenger: dict, champion: dict | None,
           ranks: tuple[np.ndarray, np.ndarray] | None, *, min_cases: int,
           min_users: int = 1, metric: str = "NDCG@10", protocol: str = "full",
           min_gain: float = 0.0, finite: bool = True, case_users: np.ndarray | None = None,
           level: float = LEVEL, seed: int = 0) -> Verdict:
    """Promote when the challenger's weights are finite and it beats the champion on
    ``protocol``/``metric`` by more than ``min_gain`` (relative: 0.02 = 2% better) over at
    least ``min_cases`` gate cases from at least ``min_users`` users (when ``case_users``
    names them: a few heavy users' cases say little of the rest, and a bootstrap over a
    handful of users is too narrow), and the gain is sure: the bootstrap interval at
    ``level`` of the mean per-case difference challenger − champion lies above zero (a
    higher mean on one slice can be luck). With no champion yet, any sound challenger wins.

    ``ranks``: the per-case 0-based ranks of challenger and champion on the same cases, in
    ``protocol`` (None only without a champion). ``case_users`` (each case's user)
    resamples users rather than cases, since one user's cases are not independent; it is
    needed to count users (``min_users`` above 1)."""
    if min_users > 1 and case_users is None:
        raise ValueError("counting the gate's users needs each case's user (case_users)")
    value = float(challenger[protocol][metric])
    label = f"{protocol} {metric}"
    if not finite or not np.isfinite(value):
        return Verdict(False, "challenger has non-finite weights or scores", label, None, value)
    if champion is None:
        return Verdict(True, "no champion yet", label, None, value)
    if ranks is None:
        raise ValueError("comparing with a champion needs both models' per-case ranks")
    best = float(champion[protocol][metric])
    needed = best * (1 + min_gain)
    if value <= needed:
        return Verdict(False, f"{label} {value:.4f} does not beat champion {best:.4f} by more "
                              f"than {min_gain:.0%}", label, best, value)
    if (cases := int(challenger.get("users", 0))) < min_cases:  # no count: none compared
        return Verdict(False, f"{label} {value:.4f} > champion {best:.4f} on only {cases} gate "
                              f"cases ({min_cases} needed to compare)", label, best, value)
    if case_users is not None and (users := len(np.unique(case_users))) < min_users:
        return Verdict(False, f"{label} {value:.4f} > champion {best:.4f} on the cases of only "
                              f"{users} users ({min_users} needed to compare)", label, best,
                       value)
    interval = _gain_interval(ranks, metric, case_users, level, seed)
    sure = interval[0] > 0
    return Verdict(sure, f"{label} {value:.4f} > champion {best:.4f} (+{min_gain:.0%} needed); "
                         f"per-case gain {level:.0%} interval [{interval[0]:+.4f}, "
                         f"{interval[1]:+.4f}] {'above' if sure else 'not above'} zero",
                   label, best, value, interval)


def _gain_interval(ranks: tuple[np.ndarray, np.ndarray], metric: str,
                   users: np.ndarray | None, level: float, seed: int) -> tuple[float, float]:
    """Bootstrap interval of the mean per-case gain challenger − champion."""
    mine, theirs = (np.asarray(r, dtype=float) for r in ranks)
    if len(mine) != len(theirs) or (users is not None and len(users) != len(mine)):
        raise ValueError(f"ranks must be paired case by case: {len(mine)} challenger ranks, "
                         f"{len(theirs)} champion ranks"
                         + (f", {len(users)} case users" if users is not None else ""))
    gain = case_values(mine, metric) - case_values(theirs, metric)
    return bootstrap_interval(gain, level=level, rng=seed, groups=users)
