"""Where a user's current list comes from: memory, Redis, or popularity when there is none.

The workers store each user's latest list under ``recs:{user}`` and publish it on the
channel this process follows (``feed.FeedHub``). The newest lists seen on the channel are
kept in memory (bounded, least recently updated out first), so most reads of active users
cost no Redis round trip: about half of a read's time here (docs/BENCHMARKS.md). The copy
is only trusted while the subscription is up: the hub empties it when the subscription
drops (a list published meanwhile would be missed), and reads go to Redis again. Entries
are only ever written from the channel, in publish order, never from a read, so a slow
read cannot put an older list back. The workers also store their popularity list about
once a second; this process keeps the last one it read, so that with Redis down it still
answers (``fallback``) instead of failing.
"""

from __future__ import annotations

import logging
import time
from collections import OrderedDict
from collections.abc import Callable
from typing import Any

import orjson
from redis.exceptions import RedisError

from streams.recs_store import popular_key, recs_key

log = logging.getLogger(__name__)

MAX_K = 100  # most items a read may ask for


class ListSource:
    def __init__(self, client: Any, channel: str, ttl_s: float,
                 on_fallback: Callable[[], None] = lambda: None,
                 max_cached: int = 100_000) -> None:
        self.client = client
        self.on_fallback = on_fallback
        self.channel = channel
        self.ttl_us = int(ttl_s * 1e6)  # lists older than Redis keeps them are not served
        self.max_cached = max_cached
        self.recent: OrderedDict[str, dict] = OrderedDict()  # user -> newest shaped list
        self.popular: dict | None = None  # the newest popularity payload read

    def remember(self, shaped: dict) -> None:
        """A list just published on the channel (``shape``d, all its items)."""
        user = shaped["user_id"]
        self.recent[user] = shaped
        self.recent.move_to_end(user)
        if len(self.recent) > self.max_cached:
            self.recent.popitem(last=False)

    def forget_all(self) -> None:
        self.recent.clear()

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
        cached = self.recent.get(user_id)
        if cached is not None and cached["published_us"] > time.time_ns() // 1000 - self.ttl_us:
            return {**cached, "items": cached["items"][:k]}
        try:
            raw = await self.client.get(recs_key(user_id))
        except (RedisError, OSError) as exc:
            log.debug("redis read failed, serving fallback: %s", exc)
            self.on_fallback()
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
