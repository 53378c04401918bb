"""The latest list per user in Redis: what the workers write and the API reads.

Key ``recs:{user_id}`` holds the JSON payload the worker also publishes to the
``recommendations`` topic, with a TTL so lists of users who left expire. In the same
pipelined round trip per micro-batch, the batch's lists are also published, as one JSON
array, on one Redis pub/sub channel (``STREAMREC_RECS_CHANNEL``): API processes hold one
subscription each and fan the lists out to their live feeds, so a feed client costs no
Kafka consumer and no Redis connection. One message per batch rather than per list: a
``PUBLISH`` per list cost the pass-through worker a tenth of its throughput
(docs/BENCHMARKS.md, "Streaming worker"). About once a second a worker also stores its recent
popularity and model version under ``<channel>:popular``: the API's answer for users
without a list, and its fallback when Redis is down.
"""

from __future__ import annotations

from typing import Any

KEY_PREFIX = "recs:"


def recs_key(user_id: str) -> str:
    return f"{KEY_PREFIX}{user_id}"


def popular_key(channel: str) -> str:
    return f"{channel}:popular"


class RecsWriter:
    """Asynchronous writer; ``url`` None writes nothing (no Redis configured)."""

    def __init__(self, url: str | None, ttl_s: int, channel: str) -> None:
        self.ttl_s = ttl_s
        self.channel = channel
        self.client: Any = None
        if url is not None:
            import redis.asyncio as aioredis

            self.client = aioredis.Redis.from_url(url, socket_timeout=1.0,
                                                  socket_connect_timeout=1.0)

    async def write(self, lists: list[tuple[str, bytes]], popular: bytes | None = None) -> None:
        """Store and publish each (user, payload), and the popularity payload when given;
        raises the client's error when Redis fails."""
        if self.client is None or not (lists or popular):
            return
        async with self.client.pipeline(transaction=False) as pipe:
            for user, payload in lists:
                pipe.set(recs_key(user), payload, ex=self.ttl_s)
            if lists:
                pipe.publish(self.channel, b"[" + b",".join(p for _, p in lists) + b"]")
            if popular is not None:
                pipe.set(popular_key(self.channel), popular, ex=self.ttl_s)
            await pipe.execute()
