"""The latest list per user in Redis: what the workers write and the API reads.

Key ``recs:{user_id}`` holds the JSON payload the worker also publishes to the
``recommendations`` topic, with a TTL so lists of users who left expire. Workers write a
whole micro-batch in one pipelined round trip.
"""

from __future__ import annotations

from typing import Any

KEY_PREFIX = "recs:"


def recs_key(user_id: str) -> str:
    return f"{KEY_PREFIX}{user_id}"


class RecsWriter:
    """Asynchronous writer; ``url`` None writes nothing (no Redis configured)."""

    def __init__(self, url: str | None, ttl_s: int) -> None:
        self.ttl_s = ttl_s
        self.client: Any = None
        if url is not None:
            import redis.asyncio as aioredis

            self.client = aioredis.Redis.from_url(url, socket_timeout=1.0,
                                                  socket_connect_timeout=1.0)

    async def write(self, lists: list[tuple[str, bytes]]) -> None:
        """Store each (user, payload); raises the client's error when Redis fails."""
        if self.client is None or not lists:
            return
        async with self.client.pipeline(transaction=False) as pipe:
            for user, payload in lists:
                pipe.set(recs_key(user), payload, ex=self.ttl_s)
            await pipe.execute()
