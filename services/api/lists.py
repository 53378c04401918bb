"""Where a user's current list comes from: Redis, or popularity when there is none.

The workers store each user's latest list under ``recs:{user}`` and, about once a second,
their popularity list; this process keeps the last popularity it read, so that with
Redis down it still answers (``fallback``) instead of failing.
"""

from __future__ import annotations

import logging
from typing import Any

import orjson
from redis.exceptions import RedisError

from streams.recs_store import popular_key, recs_key

log = logging.getLogger(__name__)


class ListSource:
    def __init__(self, client: Any, channel: str) -> None:
        self.client = client
        self.channel = channel
        self.popular: dict | None = None  # the newest popularity payload read

    async def refresh_popular(self) -> None:
        """Re-read the workers' popularity list; raises when Redis is down."""
        raw = await self.client.get(popular_key(self.channel))
        if raw is not None:
            self.popular = orjson.loads(raw)

    @property
    def model_version(self) -> str | None:
        return self.popular.get("model_version") if self.popular else None

    async def current(self, user_id: str, k: int) -> dict:
        """The newest list for ``user_id`` cut to ``k`` items, in the shape of
        ``schemas.RecommendationList``; never raises for Redis trouble."""
        try:
            raw = await self.client.get(recs_key(user_id))
        except (RedisError, OSError) as exc:
            log.debug("redis read failed, serving fallback: %s", exc)
            return self.popular_list(user_id, k, "fallback")
        if raw is None:
            return self.popular_list(user_id, k, "popularity")
        return shape(orjson.loads(raw), k)

    def popular_list(self, user_id: str, k: int, path: str) -> dict:
        p = self.popular or {}
        return {"user_id": user_id, "path": path, "model_version": p.get("model_version"),
                "items": p.get("items", [])[:k], "event_id": None,
                "published_us": p.get("computed_us")}


def shape(payload: dict, k: int) -> dict:
    """A worker's published payload as the API answers it (its first ``k`` items)."""
    return {"user_id": payload["user_id"], "path": payload["path"],
            "model_version": payload.get("model_version"), "items": payload["items"][:k],
            "event_id": payload.get("event_id"), "published_us": payload.get("published_us")}
