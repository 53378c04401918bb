"""Where a user's current list comes from: memory, Redis, or popularity when there is none.

The workers store each user's latest list under ``recs:{user}`` and publish it on the
channel this process follows (``feed.FeedHub``). The newest lists seen on the channel are
kept in memory (bounded, least recently updated out first), so most reads of active users
cost no Redis round trip: about half of a read's time here (docs/BENCHMARKS.md). They are
kept as their JSON, which the garbage collector never walks: kept as objects, 10,000 lists
were ~140,000 objects that every full collection walked, a pause of ~40 ms here that was
the tail of every read, and ten times that with the memory full. The copy
is only trusted while the subscription is up: the hub empties it when the subscription
drops (a list published meanwhile would be missed), and reads go to Redis again. Entries
are only ever written from the channel, in publish order, never from a read, so a slow
read cannot put an older list back. The workers also store their popularity list about
once a second; this process keeps the last one it read, so that with Redis down it still
answers (``fallback``) instead of failing. Reads that miss memory in the same turn of the
event loop go to Redis together, in ``MGET``s of up to ``MAX_BATCH`` keys, fewer for
long lists (``lists_per_read``; ``infra.redis_batch``): a round trip through redis-py
costs about as much of this process's CPU as the rest of a read, so under load one per
batch, not one per read (docs/BENCHMARKS.md, "Cold reads").

Every answer is the workers' own record, ``streams.messages.RecommendationList``: the API
neither reshapes nor redeclares it.
"""

from __future__ import annotations

import logging
import time
from collections import OrderedDict
from collections.abc import Callable
from typing import Any

from redis.exceptions import RedisError

from infra.redis_batch import BatchedGets
from services.settings import MAX_TOP_N
from streams.messages import UNREADABLE, Path, PopularList, RecommendationList
from streams.recs_store import popular_key, recs_key

log = logging.getLogger(__name__)

MAX_K = 100  # most items a read may ask for
WHOLE = MAX_TOP_N  # a stored list whole: a filtered read filters all a worker stored
MAX_BATCH = 256  # most lists one MGET reads: ~0.4 MB at 10 items a list
READ_BYTES = 512 * 1024  # about the most one MGET's reply holds, read within its timeout
LIST_BYTES = 400  # a stored list's JSON beside its items (ids, times, reasons)
ITEM_BYTES = 160  # one item's JSON with two heads' scores (measured: 120-160)
FALLBACK: Path = "fallback"  # the path of popularity served because Redis did not answer


def lists_per_read(top_n: int) -> int:
    """How many stored lists of ``top_n`` items one ``MGET`` asks for. A count alone let
    lists of 1,000 items make replies of ~30 MB, which the client's 0.5 s timeout could not
    read: every read of the batch then fell back to popularity."""
    return max(1, min(MAX_BATCH, READ_BYTES // (LIST_BYTES + ITEM_BYTES * top_n)))


class ListSource:
    def __init__(self, client: Any, channel: str, ttl_s: float,
                 on_fallback: Callable[[], None] = lambda: None,
                 max_cached: int = 100_000, top_n: int = 10) -> None:
        self.on_fallback = on_fallback
        self.channel = channel
        self.ttl_us = int(ttl_s * 1e6)  # lists older than Redis keeps them are not served
        self.max_cached = max_cached
        self.recent: OrderedDict[str, bytes] = OrderedDict()  # user -> newest, as JSON
        self.popular: PopularList | None = None  # the newest popularity read
        self._popular_unreadable = False  # the stored record failed to parse last time
        self._list_unreadable_said = False  # a user's stored list failed to parse, logged
        self._stored = BatchedGets(client, lists_per_read(top_n))  # reads missing ``recent``

    @property
    def client(self) -> Any:
        """The Redis client, the batched reads' own."""
        return self._stored.client

    def remember(self, rec: RecommendationList) -> None:
        """A list just published on the channel, with all its items."""
        self.recent[rec.user_id] = rec.to_json()
        self.recent.move_to_end(rec.user_id)
        if len(self.recent) > self.max_cached:
            self.recent.popitem(last=False)

    def held(self, user_id: str) -> RecommendationList | None:
        """The newest list seen on the channel for ``user_id``, if still in memory."""
        raw = self.recent.get(user_id)
        return None if raw is None else RecommendationList.from_json(raw)

    def forget_all(self) -> None:
        self.recent.clear()

    async def refresh_popular(self) -> None:
        """Re-read the workers' popularity list; raises when Redis is down. An unreadable
        record keeps the last one read, logged once until a good one comes: raised, it
        ended the refresh loop, and with it ``/readyz``'s view of Kafka."""
        raw = await self.client.get(popular_key(self.channel))
        if raw is None:
            return
        try:
            self.popular = PopularList.from_json(raw)
        except UNREADABLE as exc:
            if not self._popular_unreadable:
                log.warning("the popularity record in Redis is unreadable (%s: %s); "
                            "serving the last one read", type(exc).__name__, exc)
            self._popular_unreadable = True
        else:
            self._popular_unreadable = False

    @property
    def model_version(self) -> str | None:
        return self.popular.model_version if self.popular else None

    async def current(self, user_id: str, k: int) -> RecommendationList:
        """The newest list for ``user_id`` cut to ``k`` items; never raises for Redis
        trouble. A stored list that does not parse (written by another version, say) is
        logged and answered with popularity: raised, it was a 500 on every read and a
        feed that reconnected for ever."""
        cached = self.held(user_id)
        if (cached is not None
                and (cached.published_us or 0) > time.time_ns() // 1000 - self.ttl_us):
            return cached.head(k)
        try:
            raw = await self._stored.get(recs_key(user_id))
        except (RedisError, OSError) as exc:
            log.debug("redis read failed, serving fallback: %s", exc)
            self.on_fallback()
            return self.popular_list(user_id, k, FALLBACK)
        if raw is None:
            return self.popular_list(user_id, k, "popularity")
        try:
            return RecommendationList.from_json(raw).head(k)
        except UNREADABLE as exc:  # said once (then at debug): a read-heavy API would flood
            (log.debug if self._list_unreadable_said else log.warning)(
                "the stored list of a user is unreadable (%s: %s); serving popularity",
                type(exc).__name__, exc)
            self._list_unreadable_said = True
            return self.popular_list(user_id, k, "popularity")

    def popular_list(self, user_id: str, k: int, path: Path) -> RecommendationList:
        """The popularity last read, as ``user_id``'s list (empty before the first read)."""
        if self.popular is None:
            return RecommendationList(user_id, path, None, [])
        return self.popular.as_list(user_id, k, path)
