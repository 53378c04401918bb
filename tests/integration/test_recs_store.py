"""``RecsWriter`` against the real Redis: every list of a micro-batch stored under its
user's key with the TTL, the batch published once on the channel, and a script cache
emptied by a Redis restart is refilled on the next write."""

from __future__ import annotations

import asyncio
import uuid

import orjson

from services.settings import Settings
from streams.recs_store import (
    POPULAR_KEPT,
    SCRIPT_KEYS_MOST,
    RecsWriter,
    popular_history_key,
    popular_key,
    recs_key,
)


def test_lists_are_stored_with_their_ttl_and_published_once(settings: Settings) -> None:
    channel = f"test:{uuid.uuid4().hex[:8]}"
    users = [f"u-{uuid.uuid4().hex[:8]}-{i}" for i in range(SCRIPT_KEYS_MOST + 5)]  # 2 calls
    lists = [(user, orjson.dumps({"user_id": user, "n": i})) for i, user in enumerate(users)]

    async def run() -> tuple[list, list, list, bytes | None, int]:
        writer = RecsWriter(settings.redis, ttl_s=600, channel=channel)
        client = writer.client
        async with client.pubsub() as sub:
            await sub.subscribe(channel)
            await sub.get_message(timeout=1.0)  # the subscription's confirmation
            await writer.write(lists, popular=b'{"items": []}')
            await client.script_flush()  # what a Redis restart does to the script cache
            await writer.write(lists[:2])
            messages = [await sub.get_message(timeout=2.0) for _ in range(2)]
        stored = await client.mget([recs_key(user) for user in users])
        ttls = [await client.ttl(recs_key(user)) for user in (users[0], users[-1])]
        popular = await writer.read_popular()  # what a fresh worker seeds popularity from
        await client.delete(*[recs_key(user) for user in users], popular_key(channel),
                            popular_history_key(channel))
        assert await writer.read_popular() == []
        await client.aclose()
        return stored, messages, ttls, popular, len(users)

    stored, messages, ttls, popular, count = asyncio.run(run())
    assert stored == [payload for _, payload in lists]
    assert all(500 < ttl <= 600 for ttl in ttls)
    assert popular == [b'{"items": []}']
    published = [orjson.loads(m["data"]) for m in messages if m is not None]
    assert [len(batch) for batch in published] == [count, 2]
    assert published[0][-1] == {"user_id": users[-1], "n": count - 1}


def test_held_lists_are_stored_only_over_lists_for_older_events(settings: Settings) -> None:
    """A list held back while Redis was out is written when it returns; by then the
    user's partition may have moved and its new owner stored a list for a later event,
    which the held one must not overwrite (the order ``RecommendationList.older_than``
    keeps)."""
    channel = f"test:{uuid.uuid4().hex[:8]}"
    tag = uuid.uuid4().hex[:8]
    newer, older, absent, unstamped = (f"u-{tag}-{n}" for n in ("newer", "older", "new", "x"))

    def payload(user: str, sent_us: int | None) -> bytes:
        return orjson.dumps({"user_id": user, "sent_us": sent_us, "published_us": 1})

    async def run() -> list[bytes | None]:
        writer = RecsWriter(settings.redis, ttl_s=600, channel=channel)
        await writer.write([(newer, payload(newer, 2_000)), (older, payload(older, 500)),
                            (unstamped, payload(unstamped, 2_000))])
        await writer.write([], held=[(user, payload(user, 1_000)) for user in (newer, older)]
                           + [(absent, payload(absent, 1_000)), (unstamped, payload(unstamped, None))])
        stored = await writer.client.mget([recs_key(u) for u in (newer, older, absent, unstamped)])
        await writer.client.delete(*[recs_key(u) for u in (newer, older, absent, unstamped)])
        await writer.client.aclose()
        return stored

    stored = asyncio.run(run())
    assert [orjson.loads(p)["sent_us"] for p in stored if p is not None] == [2_000, 1_000, 1_000,
                                                                            None]


def test_an_empty_list_is_stored_only_for_a_user_with_no_list(settings: Settings) -> None:
    """A fresh worker's first popularity lists are empty: stored over a user's list, the
    API served that user nothing. A user with no list still gets the empty one (their
    event's answer), from a batch's lists and from held ones alike; all are published."""
    from streams.messages import RecommendationList, ScoredItem

    channel = f"test:{uuid.uuid4().hex[:8]}"
    tag = uuid.uuid4().hex[:8]
    kept, fresh, held_kept, held_fresh = (f"u-{tag}-{n}" for n in ("k", "f", "hk", "hf"))

    def payload(user: str, items: list[str], sent_us: int) -> bytes:
        return RecommendationList(user, "popularity", "none", [ScoredItem(i, 1.0) for i in items],
                                  f"e-{sent_us}", "i", sent_us, 1).to_json()

    async def run() -> tuple[list[bytes | None], list]:
        writer = RecsWriter(settings.redis, ttl_s=600, channel=channel)
        async with writer.client.pubsub() as sub:
            await sub.subscribe(channel)
            await sub.get_message(timeout=1.0)
            await writer.write([(kept, payload(kept, ["a"], 1)),
                                (held_kept, payload(held_kept, ["a"], 1))])
            await writer.write([(kept, payload(kept, [], 2)), (fresh, payload(fresh, [], 2))],
                               held=[(held_kept, payload(held_kept, [], 2)),
                                     (held_fresh, payload(held_fresh, [], 2))])
            messages = [await sub.get_message(timeout=2.0) for _ in range(2)]
        keys = [recs_key(u) for u in (kept, fresh, held_kept, held_fresh)]
        stored = await writer.client.mget(keys)
        await writer.client.delete(*keys)
        await writer.client.aclose()
        return stored, messages

    stored, messages = asyncio.run(run())
    assert [orjson.loads(p)["items"] != [] for p in stored if p is not None] == [
        True, False, True, False]  # kept lists stay; the new users get their empty one
    assert len(orjson.loads(messages[1]["data"])) == 4  # every list published


def test_popularity_records_are_kept_newest_first_and_bounded(settings: Settings) -> None:
    """A worker restarted after a crash needs a record older than the newest: the history
    holds the last ``POPULAR_KEPT``, with the TTL; a Redis written by an older release,
    with the last record alone, still gives that one."""
    channel = f"test:{uuid.uuid4().hex[:8]}"

    async def run() -> tuple[list[bytes], int, list[bytes]]:
        writer = RecsWriter(settings.redis, ttl_s=600, channel=channel)
        client = writer.client
        for i in range(POPULAR_KEPT + 3):
            await writer.write([], popular=b"%d" % i)
        kept, ttl = await writer.read_popular(), await client.ttl(popular_history_key(channel))
        await client.delete(popular_history_key(channel))  # as an older release left it
        last_only = await writer.read_popular()
        await client.delete(popular_key(channel))
        await client.aclose()
        return kept, ttl, last_only

    kept, ttl, last_only = asyncio.run(run())
    assert kept == [b"%d" % i for i in range(POPULAR_KEPT + 2, 2, -1)]
    assert 500 < ttl <= 600 and last_only == [b"%d" % (POPULAR_KEPT + 2)]
