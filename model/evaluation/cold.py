"""The cold-item protocol: how well models recommend items they never trained on.

A fixed random share of the catalogued items (10% by default, by seed) is removed from
training with all their interactions. Every user whose log meets one of those items
after at least one other gives one case: their warm items so far as the history, the
cold item of their last such event as the target. Cases are ranked both ways, among all
items (warm and cold; history excluded) and against 100 sampled ones, exactly as
``model.evaluation.protocols.evaluate_cases`` ranks every other case.

A model scores a cold item only if it can embed one from content (SASRec trained with a
catalogue); any other model gives cold items its lowest score, so they tie at the bottom
of its list: what it would serve. Two baselines stand beside them: popularity within
the item's categories, and random.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field

import keras
import numpy as np

from model.content import ItemContent, catalogue_table
from model.data import (
    IdMap,
    Interaction,
    Sequences,
    Side,
    build_sequences,
    item_counts,
    leave_last_out,
)
from model.evaluation.protocols import Scorer, evaluate_cases
from model.features import FeatureSpec
from model.retrieval.training import SASRecScorer


@dataclass(frozen=True)
class ColdItems:
    """Warm-only training sequences (their ``content`` covers warm and cold ids), every
    item's dense id (warm first, then the ``cold`` ones) and the cases."""

    sequences: Sequences
    items: IdMap
    cold: np.ndarray       # dense ids of the cold items, in ``items``
    users: np.ndarray      # per case: the dense user id
    lengths: np.ndarray    # per case: how many of the user's warm items precede it
    targets: np.ndarray    # per case: the cold item
    # per case: the cold items the user met before it, which no history holds (training
    # never saw them) but a user has met: masked, and never drawn as negatives
    earlier: list[np.ndarray] = field(default_factory=list)

    @property
    def num_items(self) -> int:
        return len(self.items)

    def histories(self) -> list[np.ndarray]:
        return [self.sequences.by_user[u - 1][:n] for u, n in zip(self.users, self.lengths)]

    def side(self) -> Side:
        return self.sequences.side(self.users, self.lengths.tolist())


def cold_item_split(events: Sequence[Interaction], records: Iterable[ItemContent],
                    spec: FeatureSpec | None = None, fraction: float = 0.1,
                    seed: int = 0, char_tokens: int = 0) -> ColdItems:
    """Choose the cold items among those with a record and an event, train-ready
    sequences without them, and one case per user (``events`` in time order);
    ``char_tokens`` as in ``catalogue_table``."""
    if not 0 < fraction < 1:
        raise ValueError(f"fraction must be in (0, 1). Received: fraction={fraction}")
    records = list(records)
    described = {r.item_id for r in records}
    candidates = sorted({e.item_id for e in events} & described)
    if not candidates:
        raise ValueError("no item of the log has a catalogue record: nothing can be cold")
    rng = np.random.default_rng(seed)
    chosen = rng.choice(len(candidates), max(1, round(fraction * len(candidates))), replace=False)
    cold = {candidates[i] for i in chosen}
    seqs = build_sequences((e for e in events if e.item_id not in cold), spec=spec)
    items = IdMap.from_list(seqs.items.ids + sorted(cold))
    seqs.content = catalogue_table(records, items.ids, char_tokens=char_tokens)
    cases: dict[int, tuple[int, int, list[int]]] = {}  # user -> (warm before, target, cold)
    warm_seen: dict[str, int] = {}
    cold_seen: dict[str, list[int]] = {}
    for e in events:
        if e.item_id in cold:
            before, met = warm_seen.get(e.user_id, 0), cold_seen.setdefault(e.user_id, [])
            if before:
                cases[seqs.users.get(e.user_id)] = (before, items.get(e.item_id), list(met))
            met.append(items.get(e.item_id))
        else:
            warm_seen[e.user_id] = warm_seen.get(e.user_id, 0) + 1
    users = np.array(sorted(cases), np.int64)
    return ColdItems(seqs, items, np.arange(seqs.num_items + 1, len(items) + 1),
                     users, np.array([cases[u][0] for u in users], np.int64),
                     np.array([cases[u][1] for u in users], np.int64),
                     [np.array(cases[u][2], np.int64) for u in users])


class WithColdItems:
    """A content-trained SASRec scoring warm items by their trained vectors and cold
    items by their content alone: what a worker does with a catalogue's new item."""

    def __init__(self, sasrec: SASRecScorer, cold: ColdItems) -> None:
        self.name, self.sasrec = sasrec.name, sasrec
        content = cold.sequences.content
        assert content is not None
        rows = cold.cold
        vectors = sasrec.model.content_vectors(content.tokens[rows], content.numeric[rows])
        self.table = np.concatenate([keras.ops.convert_to_numpy(sasrec.model.item_embeddings()),
                                     keras.ops.convert_to_numpy(vectors)])

    def score(self, users: np.ndarray, histories: list[np.ndarray],
              side: Side | None = None) -> np.ndarray:
        return self.sasrec.embed(histories, side) @ self.table.T


class ColdItemsLast:
    """Any other model: its scores for the warm items, and its lowest score for every
    cold item (they tie at the bottom, in an order the metrics draw at random)."""

    def __init__(self, scorer: Scorer, cold: ColdItems) -> None:
        self.name, self.scorer, self.extra = scorer.name, scorer, len(cold.cold)

    def score(self, users: np.ndarray, histories: list[np.ndarray],
              side: Side | None = None) -> np.ndarray:
        scores = np.asarray(self.scorer.score(users, histories, side), np.float64)
        floor = np.where(np.isfinite(scores[:, 1:]), scores[:, 1:], np.inf).min(axis=1) - 1.0
        return np.concatenate([scores, np.repeat(floor[:, None], self.extra, axis=1)], axis=1)


class CategoryPopularity:
    """Each item scored by how popular its categories are: the mean training
    interactions per item of each of its categories, the best of them. Counted on the
    models' own training part (``leave_last_out``), not on the events they never see.

    Every item of a category gets the same score. When the metrics counted a tie half,
    a target in a block of 200 tied items sat at rank 100 and was never a hit; so its
    ties are broken at random (a fixed seed), as a shop showing this baseline would (the
    metrics now break ties at random themselves)."""

    name = "category-popularity"

    def __init__(self, cold: ColdItems, categories: Mapping[str, Sequence[str]]) -> None:
        counts = item_counts(leave_last_out(cold.sequences).train,
                             cold.num_items).astype(np.float64)
        members: dict[str, list[int]] = {}
        for dense, item in enumerate(cold.items.ids, start=1):
            for c in categories.get(item, ()):
                members.setdefault(c, []).append(dense)
        warm = cold.sequences.num_items
        self.scores = np.zeros(cold.num_items + 1)
        for ids in members.values():
            warm_ids = [i for i in ids if i <= warm]
            mean = counts[warm_ids].mean() if warm_ids else 0.0
            self.scores[ids] = np.maximum(self.scores[ids], mean)
        # Each item's place in the order by score, ties in a random order: no two equal.
        order = np.lexsort((np.random.default_rng(0).random(len(self.scores)), self.scores))
        self.scores[order] = np.arange(len(order), dtype=np.float64)

    def score(self, users: np.ndarray, histories: list[np.ndarray],
              side: Side | None = None) -> np.ndarray:
        return np.broadcast_to(self.scores, (len(histories), len(self.scores)))


class RandomScores:
    """Uniform random scores: the floor any model must clear."""

    name = "random"

    def __init__(self, num_items: int, seed: int = 0) -> None:
        self.num_items, self.rng = num_items, np.random.default_rng(seed)

    def score(self, users: np.ndarray, histories: list[np.ndarray],
              side: Side | None = None) -> np.ndarray:
        return self.rng.random((len(histories), self.num_items + 1))


def cold_scorer(scorer: Scorer, cold: ColdItems) -> Scorer:
    """``scorer`` extended to the cold items (by content where it can)."""
    if isinstance(scorer, SASRecScorer) and scorer.model.encoder.content_spec is not None:
        return WithColdItems(scorer, cold)
    return ColdItemsLast(scorer, cold)


def evaluate_cold(scorer: Scorer, cold: ColdItems) -> dict:
    """Both protocols over the cold cases (``evaluate_cases``' shape)."""
    return evaluate_cases(scorer, cold.users, cold.histories(), cold.targets, cold.num_items,
                          side=cold.side(), also_seen=cold.earlier or None)
