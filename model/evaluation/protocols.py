"""The offline protocols, identical for every model.

- **sampled** (NCF / SASRec papers): the held-out item ranked against 100 items drawn
  uniformly from those the user has not interacted with.
- **full**: the held-out item ranked against every item the user has not interacted with.

In both, the user's history is excluded from the candidates for every model alike. For
logs where users return to items (e-commerce), ``keep_history`` ranks the full protocol's
target among all items instead: the history excluded, a model that puts every seen item
first is paid for a repeated target at no cost for the others.
Models expose one method, ``score(users, histories, side) -> [batch, num_items + 1]``;
``side`` (``model.data.Side``) carries event types, times and context of each history
for the models that use them, None where the cases have none.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Protocol

import numpy as np

from model.data import LeaveLastOut, Side
from model.evaluation.metrics import auc, coverage, hit_rate, mrr, ndcg, rank_of_target
from model.sampling import SeenItems


class Scorer(Protocol):
    name: str

    def score(self, users: np.ndarray, histories: list[np.ndarray],
              side: Side | None = None) -> np.ndarray:
        """Scores for every item id (column 0 is padding and ignored)."""
        ...


def _ranks(scores: np.ndarray, met: list[np.ndarray], targets: np.ndarray,
           negatives: np.ndarray, keep_history: bool = False, seed: int = 0
           ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(full ranks, full candidate counts, sampled ranks, top-10 items) for one batch;
    ``met``: the items each case's user met before its target (its history and more);
    ``seed``: of the ties' order (``rank_of_target``), one per batch so batches differ."""
    scores = scores.astype(np.float64, copy=True)
    rows = np.arange(len(targets))
    target_scores = scores[rows, targets]
    sampled = rank_of_target(target_scores, scores[rows[:, None], negatives], negatives == 0,
                             seed)
    # Not candidates: padding, the history (unless kept), the target itself, and items
    # the model cannot score (-inf: new to a champion). NaN scores stay candidates and
    # beat the target (``rank_of_target``).
    masked = np.zeros(scores.shape, bool)
    masked[:, 0] = True
    for i, h in enumerate(met if not keep_history else ()):
        masked[i, h] = True
    masked[rows, targets] = True
    ignore = masked | np.isneginf(scores)
    full = rank_of_target(target_scores, scores, ignore, seed)
    # Every item the case could be ranked against: those the model cannot score are in
    # no list it serves, below a target it scores (left out, the AUC of a champion that
    # knows fewer items was taken over fewer items than the challenger's) ...
    candidates = (~masked).sum(axis=1)
    # ... and a -inf target is last among them all, not after the few it scored (with 3
    # scored, rank 3 was a hit@10, and a model scoring every item -inf read a perfect
    # 1.0); among the sampled negatives too (tied with those it cannot score, it was
    # placed among them at random: a hit@10 one case in ten).
    unscorable = np.isneginf(target_scores)
    full = np.where(unscorable, candidates, full).astype(np.float64)
    sampled = np.where(unscorable, (negatives > 0).sum(axis=1), sampled)
    scores[ignore] = -np.inf
    scores[rows, targets] = target_scores
    width = min(10, scores.shape[1])  # a catalogue under 10 items has shorter lists
    top = np.argpartition(-scores, width - 1, axis=1)[:, :width]
    top = np.where(np.isneginf(np.take_along_axis(scores, top, 1)), 0, top)  # no item there
    return full, candidates, sampled, top


def evaluate(model: Scorer, split: LeaveLastOut, stage: str = "test", k: int = 10,
             num_negatives: int = 100, seed: int = 0, batch_size: int = 256,
             keep_history: bool = False) -> dict:
    """Both protocols for ``stage`` ('valid' or 'test'); ``keep_history``: as
    ``evaluate_cases``."""
    users = split.eval_users(stage)
    return evaluate_cases(model, users, [split.history(u, stage) for u in users],
                          np.array([split.target(u, stage) for u in users]),
                          split.sequences.num_items, k, num_negatives, seed, batch_size,
                          split.side(users, stage), keep_history)


def evaluate_cases(model: Scorer, users: np.ndarray, histories: list[np.ndarray],
                   targets: np.ndarray, num_items: int, k: int = 10, num_negatives: int = 100,
                   seed: int = 0, batch_size: int = 256, side: Side | None = None,
                   keep_history: bool = False,
                   also_seen: list[np.ndarray] | None = None) -> dict:
    """Both protocols over test cases (user, history, target); a user may have several.
    ``side`` row i belongs to case i; ``also_seen``: as ``rank_cases``."""
    return rank_cases(model, users, histories, targets, num_items, num_negatives, seed,
                      batch_size, side, keep_history, also_seen).report(k)


@dataclass(frozen=True)
class CaseRanks:
    """Each case's 0-based rank of its target in both protocols, and what the report needs
    beside them. The gate compares two models case by case (``model.evaluation.gate.
    decide``), so the ranks behind the means must outlive them; they stay here, out of
    the report, which goes to JSON and MLflow and so holds numbers only."""

    full: np.ndarray              # among all items the case's user has not interacted with
    full_candidates: np.ndarray   # how many items each full ranking ranked
    sampled: np.ndarray           # among ``num_negatives`` sampled unseen items
    sampled_candidates: np.ndarray  # how many each sampled ranking ranked (0: none unseen)
    top: np.ndarray               # [cases, 10] each case's top-10 items (full ranking)
    num_items: int

    def rows(self, which: np.ndarray) -> CaseRanks:
        """The cases ``which`` selects (a mask or indices), to report a segment without
        ranking it again."""
        return replace(self, full=self.full[which], full_candidates=self.full_candidates[which],
                       sampled=self.sampled[which],
                       sampled_candidates=self.sampled_candidates[which], top=self.top[which])

    def report(self, k: int = 10) -> dict:
        """The protocols' figures: ``{"sampled": {...}, "full": {...}, "users": cases}``."""
        full, samp = self.full, self.sampled
        return {
            "sampled": {f"HR@{k}": hit_rate(samp, k), f"NDCG@{k}": ndcg(samp, k),
                        "MRR": mrr(samp), "AUC": auc(samp, self.sampled_candidates)},
            "full": {f"HR@{k}": hit_rate(full, k), f"NDCG@{k}": ndcg(full, k), "MRR": mrr(full),
                     "AUC": auc(full, self.full_candidates),
                     "coverage@10": coverage(self.top, self.num_items)},
            "users": int(len(full)),
        }


def rank_cases(model: Scorer, users: np.ndarray, histories: list[np.ndarray],
               targets: np.ndarray, num_items: int, num_negatives: int = 100, seed: int = 0,
               batch_size: int = 256, side: Side | None = None, keep_history: bool = False,
               also_seen: list[np.ndarray] | None = None) -> CaseRanks:
    """``evaluate_cases`` before the means: every case's ranks (same cases, same sampled
    negatives for a given ``seed``, so two models ranked alike pair up case by case).
    ``also_seen``: per case, items its user met that its history does not hold (a cold
    case's earlier cold items): masked as the history is, and never drawn as negatives."""
    met = histories if also_seen is None else [
        np.concatenate([h, extra]).astype(np.int64) for h, extra in zip(histories, also_seen)]
    seen = SeenItems([np.append(h, t) for h, t in zip(met, targets)], num_items)
    negatives = seen.sample(np.arange(len(users)), num_negatives, np.random.default_rng(seed),
                            distinct=True, none=0)  # 0: a user who met every item
    full_r, full_n, samp_r, tops = [np.zeros(0)], [np.zeros(0, int)], [np.zeros(0)], [
        np.zeros((0, min(10, num_items + 1)), int)]  # no case: empty figures, not an error
    for start in range(0, len(users), batch_size):
        sl = slice(start, start + batch_size)
        scores = model.score(users[sl], histories[sl], side[sl] if side is not None else None)
        f, n, s, top = _ranks(scores, met[sl], targets[sl], negatives[sl], keep_history,
                              seed + start)
        full_r.append(f), full_n.append(n), samp_r.append(s), tops.append(top)
    return CaseRanks(np.concatenate(full_r), np.concatenate(full_n), np.concatenate(samp_r),
                     (negatives > 0).sum(axis=1), np.concatenate(tops), num_items)


def evaluate_next_click(model: Scorer, sessions: list[np.ndarray], k: int = 20,
                        batch_size: int = 512) -> dict:
    """Session-based protocol: for every prefix of every test session, rank the next click
    among all items (history not excluded: sessions repeat items). Sessions are new users
    (id 0). Items unknown to the model (id 0) are dropped beforehand, as in GRU4Rec."""
    prefixes: list[np.ndarray] = []
    targets: list[int] = []
    for s in sessions:
        for t in range(1, len(s)):
            prefixes.append(s[:t])
            targets.append(int(s[t]))
    ranks = []
    for start in range(0, len(prefixes), batch_size):
        hist = prefixes[start:start + batch_size]
        tgt = np.asarray(targets[start:start + batch_size])
        scores = model.score(np.zeros(len(hist), dtype=np.int64), hist).astype(np.float64)
        rows = np.arange(len(tgt))
        target_scores = scores[rows, tgt]
        scores[:, 0] = -np.inf
        scores[rows, tgt] = -np.inf
        ranks.append(rank_of_target(target_scores, scores, seed=start))
    r = np.concatenate(ranks) if ranks else np.empty(0)
    return {f"Recall@{k}": hit_rate(r, k), f"MRR@{k}": mrr(r, k), "predictions": int(len(r))}


def prequential_ranks(events: list, lists: dict[str, list[str]]) -> np.ndarray:
    """Online (prequential) evaluation: for each event after a user's first, the rank of its
    item in the list recommended after that user's previous event (``inf`` when absent or
    when no list was published for it). ``events`` in replay order, each with
    ``event_id``, ``user_id`` and ``item_id``; ``lists`` maps a triggering event id to the
    recommended item ids, best first."""
    ranks: list[float] = []
    previous: dict[str, str] = {}
    for e in events:
        before = previous.get(e.user_id)
        if before is not None:
            ranks.append(prequential_rank(lists.get(before), e.item_id))
        previous[e.user_id] = e.event_id
    return np.asarray(ranks, dtype=float)


def prequential_rank(shown: Sequence[str] | None, item: str) -> float:
    """One event judged prequentially: the 0-based rank of its ``item`` in the list
    ``shown`` to its user before it, ``inf`` when absent or when nothing was shown. The
    offline replay (``prequential_ranks``) and the API's live figures judge with this one
    rule, so their HR@K (``metrics.hit_rate``) mean the same."""
    return float(shown.index(item)) if shown and item in shown else np.inf
