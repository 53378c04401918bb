"""From interactions to model inputs: id maps, per-user sequences, splits.

Works on anything with ``user_id``, ``item_id``, ``ts`` and optionally ``event_type``
and ``context`` attributes (the stream's events, rows of a file), so the model layer
needs nothing from Kafka or the schema. Besides item ids, each position keeps its event
type, time, declared context values and conversion label (``model.features``); a
``Side`` carries those for a batch of histories to the models that use them.
Ids are dense integers with 0 reserved for padding; maps grow when new ids appear,
which the retraining job relies on to extend embedding tables.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field, replace
from typing import Any, Protocol

import numpy as np

from model.content import ContentTable, ItemContent, catalogue_table
from model.features import FeatureSpec


class Interaction(Protocol):
    user_id: str
    item_id: str
    ts: int


def _event_type(e: Interaction) -> str | None:
    return getattr(e, "event_type", None)


def _context(e: Interaction) -> dict[str, Any] | None:
    return getattr(e, "context", None)


@dataclass(frozen=True)
class Side:
    """What a model may know of each history beyond its item ids: per position the event
    type codes and times, and the newest event's raw declared context (numeric values
    [n, len(spec.numeric)], NaN = missing; category ids [n, len(spec.categorical)]).
    Row i belongs to history i; slicing rows keeps them together."""

    types: list[np.ndarray]
    times: list[np.ndarray]
    numeric: np.ndarray
    cats: np.ndarray
    # [n, 3]: each newest event's time, its previous event's time and its type code, when
    # they are not the history's last two positions. Serving sets it: an event on an item
    # the model cannot place leaves the history, yet it is the event the list answers,
    # and its context is the one the session holds.
    newest: np.ndarray | None = None

    def __getitem__(self, rows: slice) -> Side:
        return Side(self.types[rows], self.times[rows], self.numeric[rows], self.cats[rows],
                    None if self.newest is None else self.newest[rows])

    def __len__(self) -> int:
        return len(self.types)

    def now(self) -> np.ndarray:
        """Each history's newest event time (0 for an empty one)."""
        if self.newest is not None:
            return self.newest[:, 0]
        return np.array([t[-1] if len(t) else 0 for t in self.times], np.int64)

    def last_events(self) -> np.ndarray:
        """[n, 3] as ``newest``: that where set, else each history's newest event time,
        the time before it (the same for a history of one) and its type code (zeros for
        an empty history)."""
        if self.newest is not None:
            return self.newest
        prev = [t[-2] if len(t) > 1 else (t[-1] if len(t) else 0) for t in self.times]
        kinds = [k[-1] if len(k) else 0 for k in self.types]
        return np.stack([self.now(), np.asarray(prev, np.int64),
                         np.asarray(kinds, np.int64)], axis=1).reshape(len(self), 3)

    def dense(self, spec: FeatureSpec) -> np.ndarray:
        """[n, spec.dense_dim]: the newest event's features (``FeatureSpec.dense``)."""
        last = self.last_events()
        return spec.dense(last[:, 0], last[:, 1], last[:, 2], self.numeric)


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
    types: list[np.ndarray]    # same shape: event type codes (``spec.type_code``)
    numeric: list[np.ndarray]  # [len, len(spec.numeric)] raw values, NaN = missing
    cats: list[np.ndarray]     # [len, len(spec.categorical)] hashed ids, 0 = missing
    converted: list[np.ndarray]  # same shape as by_user: the conversion label
    spec: FeatureSpec = field(default_factory=FeatureSpec)
    content: ContentTable | None = None  # the catalogue's arrays per dense item id, if any
    # True when ``spec``'s numeric moments were fitted on these very sequences: a split
    # refits them on its training part, so held-out events' values stay unseen.
    own_moments: bool = False

    @property
    def num_items(self) -> int:
        return len(self.items)

    @property
    def num_users(self) -> int:
        return len(self.users)

    def interactions(self) -> int:
        return int(sum(len(s) for s in self.by_user))

    def side(self, users: np.ndarray, lengths: Iterable[int]) -> Side:
        """The ``Side`` of histories that are each user's first ``length`` items."""
        pairs = list(zip((int(u) - 1 for u in users), lengths))

        def newest(table: list[np.ndarray], fill: float, width: int) -> np.ndarray:
            out = np.full((len(pairs), width), fill)
            for row, (u, n) in enumerate(pairs):
                if n:
                    out[row] = table[u][n - 1]
            return out

        return Side([self.types[u][:n] for u, n in pairs], [self.times[u][:n] for u, n in pairs],
                    newest(self.numeric, np.nan, len(self.spec.numeric)),
                    newest(self.cats, 0, len(self.spec.categorical)).astype(np.int64))

    def labels(self, users: np.ndarray, positions: Iterable[int]) -> np.ndarray:
        """The conversion label of each user's event at ``position`` (0-based)."""
        return np.array([bool(self.converted[int(u) - 1][p]) for u, p in zip(users, positions)])


def build_sequences(events: Iterable[Interaction], users: IdMap | None = None,
                    items: IdMap | None = None, grow_items: bool = True,
                    spec: FeatureSpec | None = None, catalogue: Sequence[ItemContent] = (),
                    char_tokens: int = 0) -> Sequences:
    """Group events by user, keeping arrival order (callers pass them in time order).

    With ``grow_items=False`` items unknown to ``items`` become 0 (test data scored by a
    model trained on another log); callers drop them. Features follow ``spec``; one whose
    numeric keys have no moments yet is fitted on these events (``FeatureSpec.fit``).
    With ``catalogue`` records, the items carry their content (``catalogue_table``, with
    ``char_tokens`` trigram slots).
    """
    users = users if users is not None else IdMap()
    items = items if items is not None else IdMap()
    spec = spec or FeatureSpec()
    item_id = items.add if grow_items else items.get
    rows: dict[int, list[tuple]] = {}
    for e in events:
        context = _context(e)
        rows.setdefault(users.add(e.user_id), []).append((
            item_id(e.item_id), e.ts, spec.type_code(_event_type(e)),
            spec.numeric_values(context), spec.category_ids(context),
            spec.converted(_event_type(e), context)))
    per_user = [rows.get(u, []) for u in range(1, len(users) + 1)]

    def column(i: int, dtype: Any, width: int | None = None) -> list[np.ndarray]:
        return [np.asarray([r[i] for r in rs], dtype=dtype).reshape(
            (len(rs), width) if width is not None else (len(rs),)) for rs in per_user]

    numeric = column(3, np.float64, len(spec.numeric))
    own_moments = bool(spec.numeric) and not spec.numeric_mean
    if own_moments:
        spec = spec.fit(np.concatenate(numeric) if numeric else np.zeros((0, len(spec.numeric))))
    content = (catalogue_table(catalogue, items.ids, char_tokens=char_tokens) if catalogue
               else None)
    return Sequences(users, items, column(0, np.int64), column(1, np.int64),
                     column(2, np.int64), numeric, column(4, np.int64, len(spec.categorical)),
                     column(5, bool), spec, content, own_moments)


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

    def side(self, users: np.ndarray, stage: str) -> Side:
        """The ``Side`` of ``users``' histories in ``stage``."""
        extra = 0 if stage == "valid" else 1
        return self.sequences.side(users, [len(self.train[u - 1]) + extra for u in users])

    def converted(self, users: np.ndarray, stage: str) -> np.ndarray:
        """Whether each user's ``stage`` target event was a conversion."""
        extra = 0 if stage == "valid" else 1
        return self.sequences.labels(users, [len(self.train[u - 1]) + extra for u in users])


EVALUATED_MIN = 3  # items a user needs to be evaluated: training, validation and test


def leave_last_out(seqs: Sequences) -> LeaveLastOut:
    train, valid, test = [], [], []
    for s in seqs.by_user:
        if len(s) >= EVALUATED_MIN:
            train.append(s[:-2])
            valid.append(s[-2])
            test.append(s[-1])
        else:
            train.append(s)
            valid.append(0)
            test.append(0)
    if seqs.own_moments and train:
        seen = [values[:len(t)] for values, t in zip(seqs.numeric, train)]
        seqs = replace(seqs, spec=seqs.spec.fit(np.concatenate(seen)), own_moments=False)
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


def item_counts(histories: Sequence[np.ndarray], num_items: int) -> np.ndarray:
    """[num_items + 1] interactions per dense item id in ``histories`` (index 0, the
    padding id, counts nothing)."""
    counts = np.bincount(np.concatenate([np.zeros(0, np.int64), *histories]),
                         minlength=num_items + 1)
    counts[0] = 0
    return counts


def pad_left(seq: np.ndarray, length: int) -> np.ndarray:
    """The last ``length`` items, left-padded with 0: the newest item is always last."""
    out = np.zeros(length, dtype=np.int64)
    tail = seq[-length:]
    if len(tail):
        out[-len(tail):] = tail
    return out
