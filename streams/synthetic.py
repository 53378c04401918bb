"""A synthetic interaction log with the structure real logs have, for tests and the demo.

- item popularity follows a power law (Zipf-like weights);
- items belong to latent topics and each user has a taste over a few topics;
- sequential structure: each item has a few "next" items it often leads to, so the next
  event depends on the previous one (what sequential models learn and popularity cannot);
- sessions: events seconds to minutes apart, sessions hours apart (beyond a 30 min gap);
- optional drift: after ``drift_at`` of the timeline, users' tastes move to other topics,
  which a model retrained on recent events follows and a frozen one does not.

Deterministic for a given seed. Yields schema events in time order.
"""

from __future__ import annotations

import heapq
import uuid
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np

from streams.catalog import ItemRecord
from streams.events import Event

START_MS = 1_700_000_000_000  # 2023-11-14


@dataclass(frozen=True)
class SyntheticConfig:
    users: int = 2_000
    items: int = 1_000
    events: int = 100_000
    topics: int = 20
    zipf_exponent: float = 1.1
    follow_transition: float = 0.6  # chance the next item is one of the previous item's successors
    successors: int = 3
    mean_session_events: float = 8.0
    mean_in_session_gap_s: float = 60.0
    mean_between_sessions_h: float = 12.0
    drift_at: float | None = None  # fraction of the events after which tastes shift
    seed: int = 7

    def __post_init__(self) -> None:
        if self.users < 1 or self.items < self.successors + 1 or self.events < 1:
            raise ValueError(f"need users >= 1, items > successors, events >= 1; got {self}")
        if self.drift_at is not None and not 0 < self.drift_at < 1:
            raise ValueError(f"drift_at must be in (0, 1), got {self.drift_at}")


class _Uniforms:
    """Uniform draws taken from the generator in blocks: one numpy call per 8,192 draws."""

    def __init__(self, rng: np.random.Generator, block: int = 8192) -> None:
        self.rng, self.block, self.buf, self.i = rng, block, rng.random(block), 0

    def __call__(self) -> float:
        if self.i == self.block:
            self.buf, self.i = self.rng.random(self.block), 0
        self.i += 1
        return float(self.buf[self.i - 1])


def _pick(cumulative: np.ndarray, u: float) -> int:
    """Index drawn from a cumulative distribution with one uniform draw."""
    return min(int(np.searchsorted(cumulative, u * cumulative[-1], side="right")),
               len(cumulative) - 1)


class _World:
    """The hidden structure: item topics, popularity, successors and user tastes."""

    def __init__(self, cfg: SyntheticConfig, rng: np.random.Generator) -> None:
        self.cfg = cfg
        self.uniform = _Uniforms(rng)
        popularity = (rng.permutation(cfg.items) + 1).astype(float) ** -cfg.zipf_exponent
        self.topic_of = topic_of = rng.integers(0, cfg.topics, cfg.items)
        by_topic = [np.flatnonzero(topic_of == t) for t in range(cfg.topics)]
        # Empty topics (possible with few items) fall back to the whole catalogue.
        self.by_topic = [ix if len(ix) else np.arange(cfg.items) for ix in by_topic]
        self.topic_cdf = [np.cumsum(popularity[ix]) for ix in self.by_topic]
        # Successors come mostly from the same topic, weighted by popularity.
        self.successors = np.empty((cfg.items, cfg.successors), dtype=np.int64)
        for item in range(cfg.items):
            pool = self.by_topic[topic_of[item]]
            pool = pool[pool != item]
            if len(pool) < cfg.successors:
                pool = np.setdiff1d(np.arange(cfg.items), [item])
            p = popularity[pool] / popularity[pool].sum()
            self.successors[item] = rng.choice(pool, cfg.successors, replace=False, p=p)
        self.taste_cdf = np.cumsum(rng.dirichlet(np.full(cfg.topics, 0.1), cfg.users), axis=1)
        self.drifted_cdf = np.cumsum(rng.dirichlet(np.full(cfg.topics, 0.1), cfg.users), axis=1)

    def next_item(self, user: int, previous: int | None, drifted: bool) -> int:
        cfg, u = self.cfg, self.uniform
        if previous is not None and u() < cfg.follow_transition:
            return int(self.successors[previous, int(u() * cfg.successors)])
        topic = _pick((self.drifted_cdf if drifted else self.taste_cdf)[user], u())
        return int(self.by_topic[topic][_pick(self.topic_cdf[topic], u())])


def catalogue(cfg: SyntheticConfig = SyntheticConfig()) -> list[ItemRecord]:
    """A catalogue record per item of the log ``generate(cfg)`` yields: its hidden topic
    as its category (what content features can learn from), a title naming the topic."""
    world = _World(cfg, np.random.default_rng(cfg.seed))
    return [ItemRecord(f"i{i}", title=f"item {i} on topic {t}", categories=(f"topic-{t}",))
            for i, t in enumerate(world.topic_of.tolist())]


def generate(cfg: SyntheticConfig = SyntheticConfig()) -> Iterator[Event]:
    """Yield ``cfg.events`` events in time order (ties broken by user)."""
    rng = np.random.default_rng(cfg.seed)
    world = _World(cfg, rng)
    u = world.uniform
    type_cdf = np.cumsum([0.70, 0.20, 0.07, 0.03])
    types = ("view", "click", "add_to_cart", "purchase")
    in_gap_ms = cfg.mean_in_session_gap_s * 1000
    between_ms = cfg.mean_between_sessions_h * 3.6e6
    # Each user's next event time lives in a heap; pop the earliest, emit, schedule the next.
    heap = [(START_MS + int(-between_ms * np.log1p(-u())), user) for user in range(cfg.users)]
    heapq.heapify(heap)
    previous: list[int | None] = [None] * cfg.users
    session = [0] * cfg.users
    id_prefix = int(rng.integers(0, 2**63)) << 64
    drift_after = int(cfg.events * cfg.drift_at) if cfg.drift_at is not None else cfg.events
    for n in range(cfg.events):
        ts, user = heapq.heappop(heap)
        item = world.next_item(user, previous[user], drifted=n >= drift_after)
        yield Event(
            event_id=str(uuid.UUID(int=id_prefix | n, version=4)),
            user_id=f"u{user}", item_id=f"i{item}", event_type=types[_pick(type_cdf, u())],
            ts=ts, session_id=f"u{user}-s{session[user]}",
        )
        if u() < 1.0 / cfg.mean_session_events:  # session ends: a long gap follows
            previous[user] = None
            session[user] += 1
            gap_ms = 1_800_000 - between_ms * np.log1p(-u())
        else:
            previous[user] = item
            gap_ms = 1000 - in_gap_ms * np.log1p(-u())
        heapq.heappush(heap, (ts + int(gap_ms), user))
