"""The champion/challenger gate: both models scored alike on the most recent time slice.

The trainer holds out the newest events of the log (``model.data.time_split``). Each user
with history before the cut and an event after it is one test case: history = their
events before the cut, target = their first item after it. Both protocols apply
(``model.evaluation``: sampled and full ranking, history excluded for both models alike).
The challenger's id maps extend the champion's (same ids for what both know), so the
champion is scored in the challenger's id space through ``KnownPrefix``: users it never
saw are its unknown user, items it never saw leave its histories and rank last. Targets no
model could know (items first seen after the cut) are not test cases.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from model.data import Interaction, LeaveLastOut, Sequences
from model.evaluation import Scorer

STAGE = "valid"  # the stage of ``next_item_split`` that holds the slice's test cases


def next_item_split(train: Sequences, after_cut: Sequence[Interaction]) -> LeaveLastOut:
    """Test cases of the slice after the cut, for ``evaluate(model, split, STAGE)``."""
    targets = np.zeros(train.num_users, dtype=np.int64)
    for e in after_cut:  # in time order: the first known item after the cut counts
        user, item = train.users.get(e.user_id), train.items.get(e.item_id)
        if user and item and not targets[user - 1] and len(train.by_user[user - 1]):
            targets[user - 1] = item
    return LeaveLastOut(train, list(train.by_user), targets, np.zeros_like(targets))


class KnownPrefix:
    """A model trained on a prefix of the id maps, scored in the full id space."""

    def __init__(self, inner: Scorer, known_users: int, known_items: int,
                 all_items: int) -> None:
        self.inner, self.known_users = inner, known_users
        self.known_items, self.all_items = known_items, all_items
        self.name = f"{inner.name} (champion)"

    def score(self, users: np.ndarray, histories: list[np.ndarray]) -> np.ndarray:
        users = np.where(users <= self.known_users, users, 0)
        known = [h[h <= self.known_items] for h in histories]
        out = np.full((len(users), self.all_items + 1), -np.inf)
        out[:, :self.known_items + 1] = self.inner.score(users, known)
        return out


@dataclass(frozen=True)
class Verdict:
    promote: bool
    reason: str
    metric: str
    champion: float | None
    challenger: float


def decide(challenger: dict, champion: dict | None, metric: str = "NDCG@10",
           protocol: str = "full", min_gain: float = 0.0, finite: bool = True) -> Verdict:
    """Promote when the challenger's weights are finite and it beats the champion on
    ``protocol``/``metric`` by more than ``min_gain`` (relative: 0.02 = 2% better); with no
    champion yet, any sound challenger wins."""
    value = float(challenger[protocol][metric])
    label = f"{protocol} {metric}"
    if not finite or not np.isfinite(value):
        return Verdict(False, "challenger has non-finite weights or scores", label, None, value)
    if champion is None:
        return Verdict(True, "no champion yet", label, None, value)
    best = float(champion[protocol][metric])
    needed = best * (1 + min_gain)
    if value > needed:
        return Verdict(True, f"{label} {value:.4f} > champion {best:.4f} "
                             f"(+{min_gain:.0%} needed)", label, best, value)
    return Verdict(False, f"{label} {value:.4f} does not beat champion {best:.4f} by more "
                          f"than {min_gain:.0%}", label, best, value)
