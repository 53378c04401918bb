"""Live feeds: one Redis pub/sub subscription per API process, fanned out in memory.

Workers publish each micro-batch of lists on one channel (``streams.recs_store``). Each
API process subscribes once and hands each list to the feeds open for that user, so a
thousand SSE clients cost a thousand small in-memory slots, not a Kafka consumer group or
a Redis connection each; Redis pub/sub adds well under a millisecond on loopback, where reading
the ``recommendations`` topic would add the consumer's fetch wait. A list missed while
the subscription is down is not lost for a client: on reconnect every open feed is sent
its user's current list again, and a client that reconnects gets the newest at once.

A slow client only ever needs the newest list, so each feed holds one slot that newer
lists overwrite: no queue can grow without bound.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import defaultdict
from typing import Any

import orjson
from redis.exceptions import RedisError

from services.api.lists import FALLBACK, WHOLE, ListSource
from services.api.live import LiveStats
from streams.messages import UNREADABLE, RecommendationList

log = logging.getLogger(__name__)

_RETRY_S = (0.2, 0.5, 1.0, 2.0)


class Feed:
    """One client's slot: the newest list (all its items) not yet sent to it."""

    __slots__ = ("latest", "ready")

    def __init__(self) -> None:
        self.latest: RecommendationList | None = None
        self.ready = asyncio.Event()

    def offer(self, rec: RecommendationList) -> None:
        self.latest = rec
        self.ready.set()

    async def next(self, timeout_s: float) -> RecommendationList | None:
        """The next list, or None after ``timeout_s`` without one (time for a heartbeat)."""
        try:
            await asyncio.wait_for(self.ready.wait(), timeout_s)
        except TimeoutError:
            return None
        self.ready.clear()
        rec, self.latest = self.latest, None
        return rec


class FeedsFull(RuntimeError):
    """As many feeds are open as the hub allows (``STREAMREC_API_MAX_FEEDS``)."""


class FeedHub:
    def __init__(self, client: Any, channel: str, stats: LiveStats, source: ListSource,
                 max_feeds: int = 1000) -> None:
        self.client = client  # a client without a socket timeout: listening idles
        self.channel = channel
        self.stats = stats
        self.source = source
        self.max_feeds = max_feeds  # each holds a connection: bound them
        self.feeds: dict[str, set[Feed]] = defaultdict(set)
        self.clients = 0

    def open(self, user_id: str) -> Feed:
        if self.clients >= self.max_feeds:
            raise FeedsFull(f"{self.clients} live feeds are open, the limit; retry later")
        feed = Feed()
        self.feeds[user_id].add(feed)
        self.clients += 1
        return feed

    def close(self, user_id: str, feed: Feed) -> None:
        feeds = self.feeds.get(user_id)
        if feeds is not None and feed in feeds:
            feeds.discard(feed)
            self.clients -= 1
            if not feeds:
                del self.feeds[user_id]

    def dispatch(self, raw: bytes) -> None:
        """One published micro-batch (a JSON array of lists): each list into the live
        figures, and unless it answers an older event than the list held for its user
        (``RecommendationList.older_than``), into the in-memory copy and every feed open
        for its user. What is malformed is logged and skipped: an exception here would end
        the subscription, and feeds and live figures freeze."""
        now = time.monotonic()
        for d in self._batch(raw):
            try:  # a missing field fails the parse; one of the wrong type, the delivery
                self._deliver(RecommendationList.from_dict(d), now)
            except UNREADABLE as exc:
                log.warning("malformed list on %s skipped: %r", self.channel, exc)

    def _deliver(self, rec: RecommendationList, now: float) -> None:
        """Into the in-memory copy unless it is empty (Redis holds the user's list, or
        this one where they had none) or may not replace the copy's; to each feed, which
        judges it against what it showed."""
        self.stats.observe(rec, now)
        if not rec.may_replace(self.source.held(rec.user_id)):
            return  # a redelivered event's answer, or an empty list over one with items
        if rec.items:
            self.source.remember(rec)
        for feed in self.feeds.get(rec.user_id, ()):
            feed.offer(rec)

    def _batch(self, raw: bytes) -> list[Any]:
        """The JSON array of one channel message; empty (logged) when it is none."""
        try:
            batch = orjson.loads(raw)
        except orjson.JSONDecodeError as exc:
            log.warning("malformed message on %s skipped: %s", self.channel, exc)
            return []
        if not isinstance(batch, list):
            log.warning("malformed message on %s skipped: not a JSON array", self.channel)
            return []
        return batch

    async def run(self) -> None:
        """Listen until cancelled, resubscribing with backoff whenever Redis goes away."""
        failures = 0
        while True:
            try:
                async with self.client.pubsub(ignore_subscribe_messages=True) as pubsub:
                    await pubsub.subscribe(self.channel)
                    if failures:
                        log.info("feed subscription back after %d failures", failures)
                        await self._resend_current()
                    failures = 0
                    async for message in pubsub.listen():
                        if message["type"] == "message":
                            self.dispatch(message["data"])
            except (RedisError, OSError) as exc:
                if failures == 0:
                    log.warning("feed subscription lost (%s); retrying", exc)
            except Exception:  # a bug must not end the task: feeds and live figures freeze
                log.exception("feed subscription failed; resubscribing")
            self.source.forget_all()  # lists published from now on would be missed
            delay = _RETRY_S[min(failures, len(_RETRY_S) - 1)]
            failures += 1
            await asyncio.sleep(delay)

    async def _resend_current(self) -> None:
        """Each open feed its user's list again, unless Redis could not say what it is (a
        Redis still loading its data answers the subscription, not the read): popularity
        sent then replaced every feed's list until its user's next event."""
        for user_id, feeds in list(self.feeds.items()):
            rec = await self.source.current(user_id, WHOLE)  # each feed filters its own
            if rec.path == FALLBACK:
                continue
            for feed in list(feeds):
                feed.offer(rec)
