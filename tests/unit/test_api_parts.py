"""The API's pure parts: live figures, posted-body validation, feed slots, list shapes."""

from __future__ import annotations

import asyncio
import time

import orjson
import pytest

from services.api.fast_reads import USER_ID_RE, plain_k
from services.api.feed import Feed
from services.api.ingest import TooManyEvents, validate_body
from services.api.lists import ListSource, shape
from services.api.live import LiveStats, RateOf
from services.api.schemas import RecommendationList
from streams.events import new_event


def _list(user: str, items: list[str], item: str | None, version: str = "v1",
          sent: int | None = 1_000_000, published: int = 1_020_000) -> dict:
    return {"user_id": user, "path": "model", "model_version": version,
            "items": [{"item_id": i, "score": 1.0} for i in items], "event_id": "e",
            "event_item_id": item, "sent_us": sent, "published_us": published}


def test_live_stats_latency_rate_and_online_hit_rate() -> None:
    stats = LiveStats(window_s=10.0)
    stats.observe(_list("u1", ["a", "b"], "x"), now_s=100.0)      # first list: nothing to judge
    stats.observe(_list("u1", ["c"], "b", published=1_030_000), now_s=101.0)  # b was shown: hit
    stats.observe(_list("u1", ["d"], "z", published=1_040_000), now_s=102.0)  # c shown: miss
    stats.observe(_list("u2", ["a"], "a", sent=None), now_s=103.0)  # no send time: no latency
    snap = stats.snapshot(now_s=103.0)
    assert snap["lists_per_s"] == pytest.approx(0.4)
    assert snap["latency_ms"]["p50"] == pytest.approx(30.0)  # 20, 30, 40 ms
    assert snap["online_hr10"] == pytest.approx(0.5) and snap["judged"] == 2
    assert stats.snapshot(now_s=112.5)["lists_per_s"] == pytest.approx(0.1)  # window slid


def test_live_stats_sees_a_model_swap_only_when_the_version_changes() -> None:
    stats = LiveStats()
    stats.observe(_list("u1", ["a"], "a", version="v1"), 1.0)
    assert stats.last_swap_us is None and stats.model_version == "v1"
    stats.observe({**_list("u2", ["a"], "a", version="popular-only"), "path": "popularity"}, 2.0)
    assert stats.model_version == "v1"  # popularity lists do not name the model in service
    stats.observe(_list("u1", ["a"], "a", version="v2", published=7), 3.0)
    assert stats.model_version == "v2" and stats.last_swap_us == 7


def test_live_stats_forgets_the_oldest_users_beyond_its_bound() -> None:
    stats = LiveStats(max_users=2)
    for user in ("u1", "u2", "u3"):
        stats.observe(_list(user, ["a"], "a"), 1.0)
    assert list(stats.shown) == ["u2", "u3"]


def test_rate_of_a_growing_total() -> None:
    rate = RateOf()
    rate.update(10, 0.0)
    assert rate.rate is None
    rate.update(16, 2.0)
    assert rate.rate == 3.0


def test_validate_body_accepts_one_event_or_an_array() -> None:
    one = new_event("u1", "i1", "click")
    events, rejected = validate_body(one.to_json(), max_events=10)
    assert [e.event_id for e in events] == [one.event_id] and rejected == []
    two = [orjson.loads(new_event("u1", f"i{i}").to_json()) for i in range(2)]
    events, rejected = validate_body(orjson.dumps(two), max_events=10)
    assert len(events) == 2 and rejected == []


def test_validate_body_names_every_bad_event_and_its_reason() -> None:
    good = orjson.loads(new_event("u1", "i1").to_json())
    body = orjson.dumps([good, {**good, "event_type": "like"}, 7, {**good, "ts": "now"}])
    events, rejected = validate_body(body, max_events=10)
    assert [(r.index, r.reason) for r in rejected] == [
        (1, "unknown_event_type"), (2, "not_an_object"), (3, "wrong_type")]
    assert len(events) == 1
    assert validate_body(b"{oops", 10)[1][0].reason == "bad_json"
    assert validate_body(b"[]", 10)[1][0].reason == "bad_value"


def test_validate_body_refuses_more_events_than_the_limit() -> None:
    event = orjson.loads(new_event("u1", "i1").to_json())
    with pytest.raises(TooManyEvents, match="3 events"):
        validate_body(orjson.dumps([event] * 3), max_events=2)


def test_feed_slot_keeps_only_the_newest_list() -> None:
    async def scenario() -> tuple[dict | None, dict | None]:
        feed = Feed()
        feed.offer({"n": 1})
        feed.offer({"n": 2})  # a slow client skips straight to the newest
        first = await feed.next(timeout_s=0.1)
        second = await feed.next(timeout_s=0.05)  # nothing new: time for a heartbeat
        return first, second

    assert asyncio.run(scenario()) == ({"n": 2}, None)


def test_shape_cuts_to_k_and_drops_worker_internals() -> None:
    body = shape(_list("u1", ["a", "b", "c"], "x"), k=2)
    assert [i["item_id"] for i in body["items"]] == ["a", "b"]
    assert set(body) == set(RecommendationList.model_fields)
    RecommendationList.model_validate(body)


def test_plain_k_takes_only_a_lone_valid_k() -> None:
    assert plain_k(b"") == 10 and plain_k(b"k=5") == 5 and plain_k(b"k=100") == 100
    for odd in (b"k=0", b"k=101", b"k=-1", b"k=x", b"k=", b"k=1&k=2", b"k=3&x=1", b"x=1"):
        assert plain_k(odd) is None, odd  # left to FastAPI, which answers as documented


def test_user_id_rule_matches_the_documented_parameter() -> None:
    assert USER_ID_RE.fullmatch("u42") and USER_ID_RE.fullmatch("a.b:c@d~e")
    for bad in ("", "has space", "a/b", "é", "x" * 257):
        assert not USER_ID_RE.fullmatch(bad), bad


class _NoRedis:
    """A client for reads that must not reach Redis, or that find it down."""

    def __init__(self, down: bool = False) -> None:
        self.down = down

    async def get(self, key: str) -> bytes | None:
        if self.down:
            raise ConnectionError("redis down")
        raise AssertionError(f"unexpected Redis read of {key}")


def test_lists_seen_on_the_channel_are_served_from_memory_until_forgotten() -> None:
    fallbacks: list[int] = []
    source = ListSource(_NoRedis(), "ch", ttl_s=60, on_fallback=lambda: fallbacks.append(1),
                        max_cached=2)
    now = time.time_ns() // 1000
    for user in ("u1", "u2", "u3"):  # u1 is evicted: least recently updated
        source.remember(shape(_list(user, ["a", "b", "c"], "x", published=now), k=100))
    got = asyncio.run(source.current("u2", k=2))
    assert got["path"] == "model" and [i["item_id"] for i in got["items"]] == ["a", "b"]
    assert list(source.recent) == ["u2", "u3"]

    source.client = _NoRedis(down=True)
    source.popular = {"model_version": "v1", "computed_us": 5,
                      "items": [{"item_id": "p", "score": 1.0}]}
    assert asyncio.run(source.current("u1", k=2))["path"] == "fallback"  # evicted: Redis
    source.forget_all()  # the subscription dropped: memory is no longer trusted
    assert asyncio.run(source.current("u2", k=2))["items"] == [{"item_id": "p", "score": 1.0}]
    assert len(fallbacks) == 2


def test_a_list_older_than_the_redis_ttl_is_not_served_from_memory() -> None:
    source = ListSource(_NoRedis(down=True), "ch", ttl_s=1)
    source.remember(shape(_list("u1", ["a"], "x", published=1), k=10))  # long ago
    assert asyncio.run(source.current("u1", k=1))["path"] == "fallback"
