"""The workers' catalogue follower against the real broker: a topic created late is
waited for (one warning, no error flood), then read from its beginning, and each poll's
records reach every bundle served at that moment (the champion and an experiment's
variants), a broken one not stopping the others."""

from __future__ import annotations

import asyncio
import logging
import uuid

import pytest

from infra.topics import TopicSpec, ensure_topics
from services.settings import Settings
from streams.catalog import ItemRecord
from streams.catalog_follower import Catalogue, follow_catalogue
from streams.metrics import WorkerMetrics
from streams.producer import RecordProducer


class Taker:
    def __init__(self) -> None:
        self.added: list[str] = []

    def add_items(self, records: list[ItemRecord]) -> int:
        self.added.extend(r.item_id for r in records)
        return len(records)


class Broken(Taker):
    def add_items(self, records: list[ItemRecord]) -> int:
        raise ValueError("content encoder shape mismatch")


def test_a_missing_topic_is_waited_for_then_read_from_its_beginning(
        settings: Settings, caplog: pytest.LogCaptureFixture) -> None:
    topic = f"test.{uuid.uuid4().hex[:12]}"
    bundle, variant = Taker(), Taker()
    served: list[Taker] = [bundle]

    catalogue = Catalogue(WorkerMetrics())

    async def scenario() -> None:
        task = asyncio.create_task(follow_catalogue(
            settings.kafka, topic, catalogue, lambda: list(served), missing_wait_s=0.5))
        await asyncio.sleep(2.0)  # the topic does not exist yet
        assert not task.done() and catalogue.absent  # the API's categories name nothing
        served[:0] = [Broken(), variant]  # an experiment started: its variants load
        ensure_topics(settings.kafka, [TopicSpec(topic, 1)])
        producer = RecordProducer(settings.kafka)
        producer.produce(topic, b"a", ItemRecord("a", title="first").to_json())
        assert producer.flush(10) == 0
        for _ in range(100):
            if bundle.added and variant.added:
                break
            await asyncio.sleep(0.1)
        task.cancel()

    with caplog.at_level(logging.WARNING, logger="streams.catalog_follower"):
        asyncio.run(scenario())
    assert bundle.added == ["a"] and variant.added == ["a"] and not catalogue.absent
    waits = [r for r in caplog.records if "does not exist" in r.getMessage()]
    assert len(waits) == 1, [r.getMessage() for r in caplog.records]
    errors = [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]
    assert len(errors) < 5, errors[:5]  # before the wait: an error per turn, thousands
