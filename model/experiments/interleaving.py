"""Team-draft interleaving (Radlinski, Kurup & Joachims 2008; Chapelle et al. 2012).

Two rankers draft one list like captains picking teams: whichever team has fewer picks
goes next, a coin decides when they are level, and each picks its highest item not yet
taken. The user's next interaction credits the team that placed the item. Every user sees
both models in every list, so the comparison is within the same user and moment, which
is why interleaving needs far fewer events than an A/B split.

The coins come from a generator seeded by a hash of the event's key (``rng_for``), so
every worker interleaves an event identically and the credit can be recomputed later.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass

from model.experiments.bucketing import stable_hash

TEAM_A, TEAM_B = 0, 1


@dataclass(frozen=True)
class Interleaved:
    """The list shown (``items``, best first) and, per position, the team that placed it."""

    items: tuple[str, ...]
    teams: tuple[int, ...]


def rng_for(key: str) -> random.Random:
    """A generator seeded from ``key`` (e.g. salt and event id): same key, same coins, in
    every process."""
    return random.Random(stable_hash(key))


def _next_free(ranking: Sequence[str], start: int, taken: set[str]) -> int:
    """The first position at or after ``start`` whose item is not yet taken."""
    while start < len(ranking) and ranking[start] in taken:
        start += 1
    return start


def team_draft(a: Sequence[str], b: Sequence[str], k: int, rng: random.Random) -> Interleaved:
    """Interleave rankings ``a`` and ``b`` into at most ``k`` items. An item in both lists
    is placed once, by the team that reaches it first. When one ranking runs out the other
    keeps picking; the draft stops at ``k`` items or when both are exhausted."""
    if k < 0:
        raise ValueError(f"k must be >= 0. Received: k={k}")
    items: list[str] = []
    teams: list[int] = []
    taken: set[str] = set()
    picks, heads, rankings = [0, 0], [0, 0], (a, b)
    while len(items) < k:
        heads = [_next_free(r, h, taken) for r, h in zip(rankings, heads)]
        left = [h < len(r) for r, h in zip(rankings, heads)]
        if not any(left):
            break
        if picks[TEAM_A] != picks[TEAM_B]:
            team = TEAM_A if picks[TEAM_A] < picks[TEAM_B] else TEAM_B
        else:
            team = rng.getrandbits(1)
        if not left[team]:
            team = 1 - team
        item = rankings[team][heads[team]]
        items.append(item)
        teams.append(team)
        taken.add(item)
        picks[team] += 1
    return Interleaved(tuple(items), tuple(teams))


CREDIT_TO_A = "credit to A"  # per user: the share of their credits that went to A


def credit(interleaved: Interleaved, item: str) -> int | None:
    """The team credited when the user's next interaction is ``item``; None when the list
    did not hold it (the event then says nothing about either model)."""
    try:
        return interleaved.teams[interleaved.items.index(item)]
    except ValueError:
        return None
