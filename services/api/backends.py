"""What the routes stand on, built at start-up by the app's ``lifespan`` and kept in
``app.state.backends``: two Redis clients (reads time out; the pub/sub listener idles, so
it has no socket timeout), the list source, the feed hub with the live figures, the Kafka
ingest (events and catalogue records), the one client that sizes the dead-letter topic, the
catalogue followed from the items topic (titles, filters), the champion's item space
(similar items; loaded on its first request) and the experiments' calls (the topic, a sync
Redis client for the report, the registry).

They exist only while the app runs, so routes, registered before, reach them at request
time through ``backends_of``.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import time
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

import redis.asyncio as aioredis
from fastapi import FastAPI
from redis.exceptions import RedisError
from starlette.applications import Starlette

from infra.kafka_client import KafkaConnection
from services.api.catalogue import keep_following
from services.api.experiment_calls import ExperimentCalls
from services.api.feed import FeedHub
from services.api.ingest import EventIngest
from services.api.item_space import ItemSpace
from services.api.lists import ListSource
from services.api.live import LiveStats, RateOf
from services.api.metrics import ApiMetrics
from services.settings import Settings
from services.stack import mlflow_store
from streams.catalog_follower import Catalogue, follow_catalogue
from streams.consumer import TopicSizes
from streams.hot_swap import Serving, follow_model_updates
from streams.metrics import WorkerMetrics

log = logging.getLogger(__name__)

REFRESH_S = 1.0  # popularity, Kafka reachability and the dead-letter rate, this often
# A question to Kafka unanswered this long says "not reachable" at once: the client's own
# timeouts (10 s for metadata, 10 s more per partition) kept /readyz saying ready for up
# to 20 s after the broker went.
KAFKA_SLOW_S = 2.0


@dataclass
class Backends:
    """The backends, and what the refresh loop keeps current for the routes."""

    source: ListSource
    hub: FeedHub
    ingest: EventIngest
    sizes: TopicSizes
    dlq_topic: str
    catalogue: Catalogue
    items: ItemSpace
    kafka: KafkaConnection
    items_topic: str
    experiments: ExperimentCalls
    dlq_rate: RateOf = field(default_factory=RateOf)
    kafka_ok: bool = False
    kafka_asked_at: float | None = None  # when the question to Kafka in flight was asked
    popular_read: bool = True  # the last popularity re-read reached Redis

    @property
    def kafka_ready(self) -> bool:
        """Kafka answered the last question, and the one in flight is not overdue."""
        asked = self.kafka_asked_at
        return self.kafka_ok and (asked is None or time.monotonic() - asked < KAFKA_SLOW_S)

    @classmethod
    def build(cls, settings: Settings, metrics: ApiMetrics) -> Backends:
        client = aioredis.Redis.from_url(settings.redis, socket_timeout=0.5,
                                         socket_connect_timeout=0.5)
        listener = aioredis.Redis.from_url(settings.redis, socket_connect_timeout=0.5,
                                           health_check_interval=5)
        source = ListSource(client, settings.recs_channel, settings.recs_ttl_s,
                            on_fallback=metrics.fallbacks.inc, top_n=settings.recs_top_n)
        hub = FeedHub(listener, settings.recs_channel, LiveStats(), source,
                      settings.api_max_feeds)
        # What ``Serving`` and ``Catalogue`` count: the worker's counters, kept unexposed.
        counts = WorkerMetrics()
        catalogue = Catalogue(counts)
        sizes = TopicSizes(settings.kafka)
        store = mlflow_store(settings)

        def champion() -> Any:
            from streams.registry import load_bundle  # MLflow: only on the first load

            return load_bundle(store, head_weights=settings.ranker_head_weights)

        async def follow_updates(serving: Serving, retry_champion: bool) -> None:
            await _existing(sizes, settings.topic_model_updates)
            await follow_model_updates(settings.kafka, settings.topic_model_updates, serving,
                                       champion, settings.recs_top_n, retry_champion)

        return cls(source, hub,
                   EventIngest(settings.kafka, settings.topic_interactions,
                               settings.api_kafka_wait_s,
                               items_topic=settings.topic_items),
                   sizes, settings.topic_dlq, catalogue,
                   ItemSpace(catalogue, counts, champion, follow_updates), settings.kafka,
                   settings.topic_items, ExperimentCalls(settings, store))

    async def follow_items(self) -> None:
        """Follow the catalogue into ``catalogue`` and the item space (until cancelled).
        A missing items topic is waited for there, which marks the catalogue ``absent``
        (a category then names no item, not a 503 for good)."""
        await follow_catalogue(self.kafka, self.items_topic, self.catalogue,
                               lambda: [self.items.bundle])

    async def refresh(self) -> None:
        """Until cancelled, every ``REFRESH_S``: re-read the popularity (the answer for
        users without a list, and the fallback)."""
        while True:
            await self._refresh_popular()
            await asyncio.sleep(REFRESH_S)

    async def watch_kafka(self) -> None:
        """Until cancelled, every ``REFRESH_S``: size the dead-letter topic, which both
        gives its rate and tells whether Kafka is reachable (``kafka_ready``, for
        ``/readyz``). Apart from the popularity's loop, which a broker gone slowed to one
        re-read per 10-20 s; one question in flight at a time."""
        while True:
            self.kafka_asked_at = time.monotonic()
            try:
                dlq = await asyncio.to_thread(self.sizes.size, self.dlq_topic)
                self.dlq_rate.update(dlq, time.monotonic())
                self.kafka_ok = True
            except Exception as exc:  # noqa: BLE001 - any failure means "not reachable"
                if self.kafka_ok:
                    log.warning("kafka not reachable: %s", exc)
                self.kafka_ok = False
            self.kafka_asked_at = None
            await asyncio.sleep(REFRESH_S)

    async def _refresh_popular(self) -> None:
        """Re-read the popularity. While Redis is down the last one read serves on, and
        that is logged once per outage (``/readyz`` reports Redis itself)."""
        try:
            await self.source.refresh_popular()
        except (RedisError, OSError) as exc:
            if self.popular_read:
                log.warning("popularity not re-read from redis, the last one read serves "
                            "on: %s", exc)
            self.popular_read = False
        else:
            self.popular_read = True

    async def close(self) -> None:
        await self.items.stop()
        self.ingest.close()
        self.sizes.close()
        self.experiments.close()
        await self.source.client.aclose()
        await self.hub.client.aclose()


def lifespan(settings: Settings, metrics: ApiMetrics
             ) -> Callable[[FastAPI], AbstractAsyncContextManager[None]]:
    """The app's lifespan: build the backends, run the feed subscription, the refresh and
    Kafka loops and the catalogue follower while the app serves, then stop them and close the
    backends."""

    @asynccontextmanager
    async def serve(app: FastAPI) -> AsyncIterator[None]:
        b = app.state.backends = Backends.build(settings, metrics)
        tasks = [asyncio.create_task(b.hub.run()), asyncio.create_task(b.refresh()),
                 asyncio.create_task(b.watch_kafka()),
                 asyncio.create_task(keep_following("the catalogue follower", b.follow_items))]
        gc.freeze()  # what start-up built lives as long as the process: keep it out of GC
        try:
            yield
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            await b.close()

    return serve


async def _existing(sizes: TopicSizes, topic: str) -> None:
    """Raises unless the broker has ``topic``: a follower assigned a missing topic would
    spin, aiokafka logging an error on each turn, where raising lets ``keep_following``
    look again after a backoff."""
    await asyncio.to_thread(sizes.size, topic)


def backends_of(app: Starlette) -> Backends:
    backends: Backends = app.state.backends
    return backends
