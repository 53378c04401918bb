"""Fakes the API's unit tests share: a Redis for ``get`` only, and the app called in
process over it, with a feed hub and a Kafka ingest that only records what it is sent
(events and catalogue records)."""

from __future__ import annotations

import asyncio
from types import SimpleNamespace

import httpx

from services.api.app import create_api
from services.api.feed import FeedHub
from services.api.lists import ListSource
from services.api.live import LiveStats, RateOf
from services.settings import load_settings
from streams.catalog import ItemRecord
from streams.events import Event
from streams.messages import RecommendationList, ScoredItem
from streams.recs_store import recs_key


class FakeRedis:
    """A Redis for ``get`` only: holds ``values``, records every key read, is down, or
    answers after ``delay_s``."""

    def __init__(self, values: dict[str, bytes] | None = None, down: bool = False,
                 delay_s: float = 0.0) -> None:
        self.values = values or {}
        self.down = down
        self.delay_s = delay_s
        self.reads: list[str] = []

    async def get(self, key: str) -> bytes | None:
        self.reads.append(key)
        await asyncio.sleep(self.delay_s)
        if self.down:
            raise ConnectionError("redis down")
        return self.values.get(key)


class FakeIngest:
    """Records the events and catalogue records it is sent, and the trace context of each
    send of events."""

    def __init__(self) -> None:
        self.sent: list[Event] = []
        self.traces: list[object] = []
        self.items: list[ItemRecord] = []

    async def send(self, events: list[Event], trace: object = ()) -> None:
        self.sent.extend(events)
        self.traces.append(trace)

    async def send_items(self, items: list[ItemRecord]) -> None:
        self.items.extend(items)


def stored_list(user: str) -> RecommendationList:
    return RecommendationList(user, "model", "v1", [ScoredItem(i, 1.0) for i in "abc"],
                              f"e-{user}", "x", 1_000_000, 1_020_000)


class InProcessApi:
    """The app built from ``settings`` overrides, its backends faked (user ``u1`` has a
    list in the fake Redis), called in process; its lifespan does not run, so it needs no
    Kafka or Redis."""

    def __init__(self, redis_delay_s: float = 0.0, **settings: object) -> None:
        self.settings = load_settings(**settings)
        self.app = create_api(self.settings)
        redis = FakeRedis({recs_key("u1"): stored_list("u1").to_json()}, delay_s=redis_delay_s)
        source = ListSource(redis, "ch", ttl_s=60)
        self.hub = FeedHub(None, "ch", LiveStats(), source, self.settings.api_max_feeds)
        self.ingest = FakeIngest()
        self.app.state.backends = SimpleNamespace(source=source, hub=self.hub,
                                                  ingest=self.ingest, dlq_rate=RateOf())

    def call(self, method: str, path: str, **kwargs: object) -> httpx.Response:
        async def call() -> httpx.Response:
            async with httpx.AsyncClient(transport=httpx.ASGITransport(app=self.app),
                                         base_url="http://api") as client:
                return await client.request(method, path, **kwargs)  # type: ignore[arg-type]

        return asyncio.run(call())

    def get(self, path: str, **kwargs: object) -> httpx.Response:
        return self.call("GET", path, **kwargs)
