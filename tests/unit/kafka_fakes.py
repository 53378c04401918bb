"""A stand-in for aiokafka's consumer of a one-partition topic, for the followers (model
updates, experiments) run without a broker: nothing on the topic, each fetch a short wait;
a subclass names its topic and returns records."""

from __future__ import annotations

import asyncio
from typing import Any


class EmptyTopicConsumer:
    topic = "topic"

    def __init__(self, **config: object) -> None: ...
    async def start(self) -> None: ...
    async def stop(self) -> None: ...
    async def topics(self) -> set[str]:
        return {self.topic}

    def partitions_for_topic(self, topic: str) -> set[int]:
        return {0}

    def assign(self, tps: list[Any]) -> None: ...
    def seek(self, tp: Any, offset: int) -> None: ...
    async def seek_to_beginning(self, *tps: Any) -> None: ...
    async def end_offsets(self, tps: list[Any]) -> dict[Any, int]:
        return {tp: 0 for tp in tps}

    async def position(self, tp: Any) -> int:
        return 0

    async def getmany(self, timeout_ms: int) -> dict:
        await asyncio.sleep(0.01)
        return {}
