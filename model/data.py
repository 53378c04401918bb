"""From interactions to model inputs: id maps, per-user sequences, splits.

Works on anything with ``user_id``, ``item_id`` and ``ts`` attributes (the stream's
events, rows of a file), so the model layer needs nothing from Kafka or the schema.
Ids are dense integers with 0 reserved for padding; maps grow when new ids appear,
which the retraining job relies on to extend embedding tables.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Protocol

import numpy as np


class Interaction(Protocol):
    user_id: str
    item_id: str
    ts: int


@dataclass
class IdMap:
    """External string ids to dense ints 1..n (0 = padding / unknown); append-only."""

    ids: list[str] = field(default_factory=list)
    index: dict[str, int] = field(default_factory=dict)

    def add(self, key: str) -> int:
        found = self.index.get(key)
        if found is None:
            self.ids.append(key)
            found = self.index[key] = len(self.ids)
        return found

    def get(self, key: str) -> int:
        """Dense id, or 0 for an id the map has never seen."""
        return self.index.get(key, 0)

    def __len__(self) -> int:
        return len(self.ids)

    def to_list(self) -> list[str]:
        return list(self.ids)

    @classmethod
    def from_list(cls, ids: list[str]) -> IdMap:
        return cls(list(ids), {key: i + 1 for i, key in enumerate(ids)})


@dataclass
class Sequences:
    """Per-user item sequences in time order (dense ids), with the maps that made them."""

    users: IdMap
    items: IdMap
    by_user: list[np.ndarray]  # index u-1 holds user u's items, oldest first
    times: list[np.ndarray]    # same shape: epoch ms

    @property
    def num_items(self) -> int:
        return len(self.items)

    @property
    def num_users(self) -> int:
        return len(self.users)

    def interactions(self) -> int:
        return int(sum(len(s) for s in self.by_user))


def build_sequences(events: Iterable[Interaction], users: IdMap | None = None,
                    items: IdMap | None = None, grow_items: bool = True) -> Sequences:
    """Group events by user, keeping arrival order (callers pass them in time order).

    With ``grow_items=False`` items unknown to ``items`` become 0 (test data scored by a
    model trained on another log); callers drop them.
    """
    users = users if users is not None else IdMap()
    items = items if items is not None else IdMap()
    item_id = items.add if grow_items else items.get
    seqs: dict[int, list[int]] = {}
    times: dict[int, list[int]] = {}
    for e in events:
        u = users.add(e.user_id)
        seqs.setdefault(u, []).append(item_id(e.item_id))
        times.setdefault(u, []).append(e.ts)
    by_user = [np.asarray(seqs.get(u, []), dtype=np.int64) for u in range(1, len(users) + 1)]
    ts = [np.asarray(times.get(u, []), dtype=np.int64) for u in range(1, len(users) + 1)]
    return Sequences(users, items, by_user, ts)


@dataclass
class LeaveLastOut:
    """Per user: train = all but the last two items, valid = second to last, test = last.

    Users with fewer than 3 interactions keep everything in train and are not evaluated.
    ``valid_history`` is train; ``test_history`` is train + the validation item.
    """

    sequences: Sequences
    train: list[np.ndarray]
    valid_target: np.ndarray  # 0 where the user is not evaluated
    test_target: np.ndarray

    def eval_users(self, stage: str) -> np.ndarray:
        """Dense user ids (1-based) evaluated in ``stage`` ('valid' or 'test')."""
        target = self.valid_target if stage == "valid" else self.test_target
        return np.flatnonzero(target) + 1

    def history(self, user: int, stage: str) -> np.ndarray:
        train = self.train[user - 1]
        if stage == "valid":
            return train
        return np.append(train, self.valid_target[user - 1])

    def target(self, user: int, stage: str) -> int:
        target = self.valid_target if stage == "valid" else self.test_target
        return int(target[user - 1])


def leave_last_out(seqs: Sequences) -> LeaveLastOut:
    train, valid, test = [], [], []
    for s in seqs.by_user:
        if len(s) >= 3:
            train.append(s[:-2])
            valid.append(s[-2])
            test.append(s[-1])
        else:
            train.append(s)
            valid.append(0)
            test.append(0)
    return LeaveLastOut(seqs, train, np.asarray(valid, dtype=np.int64),
                        np.asarray(test, dtype=np.int64))


def time_split(events: list[Interaction], fraction: float) -> tuple[list, list]:
    """Global split by event time: the first ``fraction`` of events, then the rest.

    For streaming evaluation: train on the past, replay the future. ``events`` must be
    in time order.
    """
    if not 0 < fraction < 1:
        raise ValueError(f"fraction must be in (0, 1), got {fraction}")
    cut = int(len(events) * fraction)
    return events[:cut], events[cut:]


def pad_left(seq: np.ndarray, length: int) -> np.ndarray:
    """The last ``length`` items, left-padded with 0: the newest item is always last."""
    out = np.zeros(length, dtype=np.int64)
    tail = seq[-length:]
    if len(tail):
        out[-len(tail):] = tail
    return out
