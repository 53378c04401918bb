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
without a list, and its fallback when Redis is down. The last ``POPULAR_KEPT`` of those
records are also kept, newest first, under ``<channel>:popular:history``: a worker
restarted after a crash answers again events that the newest records counted already, and
starts its popularity from one that did not (``streams.steps.BatchStep.seed_popularity``).

A list with no items (a fresh worker's popularity knows nothing before its first batch is
counted) is stored only for a user with no list: over one, it replaced what the API
served that user with nothing. It is published all the same, as its event's answer.

The lists are stored by one Lua script call per batch rather than a ``SET`` per list:
redis-py packs and parses every command in Python, ~14 µs of the worker's time per list
against ~3.5 µs for the script's share (measured with 256 lists of 10 items, issue #17).
The script names every key it writes, as Redis asks; all keys in one call suit a single
Redis, not a Redis Cluster, which this client does not speak anyway.
"""

from __future__ import annotations

from typing import Any

KEY_PREFIX = "recs:"
SCRIPT_KEYS_MOST = 1_000  # lists per script call: a backlog of unstored lists goes in chunks
# Popularity records kept, ~1 KB each, read whole by a fresh worker: ten minutes of them
# with one worker storing one a second, one with ten workers; a crashed worker's restart
# and its last commit must be younger than that for it to find one.
POPULAR_KEPT = 600
# ARGV[1] is the TTL, ARGV[i + 1] the payload of KEYS[i]. An empty list ('"items":[]', as
# orjson writes it) is set only where no list is (NX).
STORE_LISTS = """
for i, key in ipairs(KEYS) do
  if string.find(ARGV[i + 1], '"items":[]', 1, true) then
    redis.call('SET', key, ARGV[i + 1], 'EX', ARGV[1], 'NX')
  else
    redis.call('SET', key, ARGV[i + 1], 'EX', ARGV[1])
  end
end
"""
# The same for lists held back from earlier writes, each stored unless the stored list
# answers a later event (a greater ``sent_us``, the order ``RecommendationList.older_than``
# keeps). Read per key, which the batch's own lists skip: they are the newest by
# construction, and a read costs ~3.4 µs per list (docs/RELIABILITY.md, issue #16).
STORE_UNLESS_NEWER = """
local function sent(payload)
  local digits = payload and string.match(payload, '"sent_us":(%d+)')
  return digits and tonumber(digits)
end
for i, key in ipairs(KEYS) do
  local current = redis.call('GET', key)
  local held, stored = sent(ARGV[i + 1]), sent(current)
  local empty = string.find(ARGV[i + 1], '"items":[]', 1, true)
  if not (held and stored and stored > held) and not (empty and current) then
    redis.call('SET', key, ARGV[i + 1], 'EX', ARGV[1])
  end
end
"""


def recs_key(user_id: str) -> str:
    return f"{KEY_PREFIX}{user_id}"


def popular_key(channel: str) -> str:
    return f"{channel}:popular"


def popular_history_key(channel: str) -> str:
    return f"{channel}:popular:history"


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
            # redis-py sends it by digest and loads it again when Redis has lost it (a
            # restart empties the script cache).
            self.store_lists = self.client.register_script(STORE_LISTS)
            self.store_held = self.client.register_script(STORE_UNLESS_NEWER)

    async def read_popular(self) -> list[bytes]:
        """The popularity records the workers stored, newest first (empty: none, or no
        Redis); the last one alone where no history was kept (an older release wrote it)."""
        if self.client is None:
            return []
        async with self.client.pipeline(transaction=False) as pipe:
            pipe.lrange(popular_history_key(self.channel), 0, -1)
            pipe.get(popular_key(self.channel))
            history, last = await pipe.execute()
        return history or ([last] if last is not None else [])

    async def write(self, lists: list[tuple[str, bytes]], popular: bytes | None = None,
                    held: list[tuple[str, bytes]] | None = None) -> None:
        """Store and publish each (user, payload), and the popularity payload when given;
        ``held`` (lists kept from writes that missed Redis) go first, each stored only
        over a list for an older event. Raises the client's error when Redis fails."""
        held = held or []
        if self.client is None or not (lists or held or popular):
            return
        async with self.client.pipeline(transaction=False) as pipe:
            for script, some in ((self.store_held, held), (self.store_lists, lists)):
                for at in range(0, len(some), SCRIPT_KEYS_MOST):
                    chunk = some[at:at + SCRIPT_KEYS_MOST]
                    await script(keys=[recs_key(user) for user, _ in chunk],
                                 args=[self.ttl_s, *(payload for _, payload in chunk)],
                                 client=pipe)
            if held or lists:
                everything = held + lists
                pipe.publish(self.channel, b"[" + b",".join(p for _, p in everything) + b"]")
            if popular is not None:
                history = popular_history_key(self.channel)
                pipe.set(popular_key(self.channel), popular, ex=self.ttl_s)
                pipe.lpush(history, popular)
                pipe.ltrim(history, 0, POPULAR_KEPT - 1)
                pipe.expire(history, self.ttl_s)
            await pipe.execute()
