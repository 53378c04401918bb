"""Fakes the API's unit tests share: a Redis for ``get`` only, and the app called in
process over it, with a feed hub, a Kafka ingest that only records what it is sent
(events and catalogue records), a catalogue filled by the test, and an item space whose
champion is a ``FakeBundle``."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from types import SimpleNamespace
from typing import Any

import httpx

from model.pipeline import Recommendation
from services.api.app import create_api
from services.api.feed import FeedHub
from services.api.item_space import ItemSpace
from services.api.lists import ListSource
from services.api.live import LiveStats, RateOf
from services.settings import load_settings
from streams.catalog import ItemRecord
from streams.catalog_follower import Catalogue
from streams.events import Event
from streams.messages import RecommendationList, ScoredItem
from streams.metrics import WorkerMetrics
from streams.recs_store import recs_key


class FakeRedis:
    """A Redis for ``get``, ``mget`` and ``ping`` only: holds ``values``, records every key read and
    each ``mget``'s keys, is down, or answers after ``delay_s``."""

    def __init__(self, values: dict[str, bytes] | None = None, down: bool = False,
                 delay_s: float = 0.0) -> None:
        self.values = values or {}
        self.down = down
        self.delay_s = delay_s
        self.reads: list[str] = []
        self.batches: list[list[str]] = []

    async def get(self, key: str) -> bytes | None:
        self.reads.append(key)
        await asyncio.sleep(self.delay_s)
        if self.down:
            raise ConnectionError("redis down")
        return self.values.get(key)

    async def ping(self) -> bool:
        if self.down:
            raise ConnectionError("redis down")
        return True

    async def mget(self, keys: list[str]) -> list[bytes | None]:
        self.reads.extend(keys)
        self.batches.append(list(keys))
        await asyncio.sleep(self.delay_s)
        if self.down:
            raise ConnectionError("redis down")
        return [self.values.get(key) for key in keys]


class FakeIngest:
    """Records the events and catalogue records it is sent, and the trace context of each
    send of events."""

    def __init__(self) -> None:
        self.sent: list[Event] = []
        self.fatal: str | None = None  # as ``EventIngest``'s: none failed for good
        self.traces: list[object] = []
        self.items: list[ItemRecord] = []

    async def send(self, events: list[Event], trace: object = ()) -> None:
        self.sent.extend(events)
        self.traces.append(trace)

    async def send_items(self, items: list[ItemRecord]) -> None:
        self.items.extend(items)


class FakeBundle:
    """A champion's item space over ``items`` (trained on) and the catalogue records it is
    given (embedded by content): an item's neighbours are all the others, in that order,
    scores falling from 1."""

    version = "retriever:v3+ranker:v2"

    def __init__(self, items: Sequence[str] = ("a", "b", "c")) -> None:
        self.paths = dict.fromkeys(items, "model")

    def add_items(self, records: Sequence[ItemRecord]) -> int:
        for r in records:
            self.paths.setdefault(r.item_id, "content")
        return len(records)

    def similar(self, item_id: str, k: int = 10) -> Recommendation | None:
        if item_id not in self.paths:
            return None
        others = [i for i in self.paths if i != item_id][:k]
        return Recommendation(others, [1 - n / 8 for n in range(len(others))],
                              paths=[self.paths[i] for i in others])


async def _follow_nothing(serving: object, retry_champion: bool) -> None:
    await asyncio.Event().wait()  # no announcements: until cancelled


def item_space(catalogue: Catalogue, load: Callable[[], Any] = FakeBundle) -> ItemSpace:
    """An item space that loads with ``load`` and sees no announcement."""
    return ItemSpace(catalogue, WorkerMetrics(), load, _follow_nothing)


def stored_list(user: str) -> RecommendationList:
    return RecommendationList(user, "model", "v1", [ScoredItem(i, 1.0) for i in "abc"],
                              f"e-{user}", "x", 1_000_000, 1_020_000)


class InProcessApi:
    """The app built from ``settings`` overrides, its backends faked (user ``u1`` has a
    list in the fake Redis; the catalogue is empty; the champion, loaded by ``load``, is a
    ``FakeBundle``), called in process; its lifespan does not run, so it needs no Kafka or
    Redis."""

    def __init__(self, redis_delay_s: float = 0.0, load: Callable[[], Any] = FakeBundle,
                 **settings: object) -> None:
        self.settings = load_settings(**settings)
        self.app = create_api(self.settings)
        redis = FakeRedis({recs_key("u1"): stored_list("u1").to_json()}, delay_s=redis_delay_s)
        source = ListSource(redis, "ch", ttl_s=60)
        self.hub = FeedHub(None, "ch", LiveStats(), source, self.settings.api_max_feeds)
        self.ingest = FakeIngest()
        self.catalogue = Catalogue(WorkerMetrics(), caught_up=True)
        self.items = item_space(self.catalogue, load)
        self.app.state.backends = SimpleNamespace(source=source, hub=self.hub,
                                                  ingest=self.ingest, dlq_rate=RateOf(),
                                                  catalogue=self.catalogue, items=self.items)

    def put_records(self, *records: ItemRecord) -> None:
        """``records`` read from the items topic, as the catalogue follower applies them."""
        messages = [SimpleNamespace(key=r.key, value=r.to_json()) for r in records]
        self.catalogue.embed(self.items.bundle, self.catalogue.take(messages))

    def call(self, method: str, path: str, **kwargs: object) -> httpx.Response:
        async def call() -> httpx.Response:
            async with httpx.AsyncClient(transport=httpx.ASGITransport(app=self.app),
                                         base_url="http://api") as client:
                return await client.request(method, path, **kwargs)  # type: ignore[arg-type]

        return asyncio.run(call())

    def get(self, path: str, **kwargs: object) -> httpx.Response:
        return self.call("GET", path, **kwargs)
