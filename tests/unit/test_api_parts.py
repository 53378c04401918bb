"""The API's parts without Kafka or Redis: live figures, posted-body validation, feed slots
and streams, where lists come from, the fast read path and the app's documented shapes."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncGenerator
from dataclasses import replace
from pathlib import Path
from types import SimpleNamespace

import jsonschema
import orjson
import pytest
from api_fakes import FakeRedis, InProcessApi, stored_list

from model.evaluation.metrics import hit_rate
from model.evaluation.protocols import prequential_rank, prequential_ranks
from services.api.auth import Access
from services.api.fast_reads import USER_ID_RE, FastReads, plain_k
from services.api.feed import Feed, FeedHub
from services.api.ingest import TooManyEvents, validate_body
from services.api.lists import READ_BYTES, ListSource
from services.api.live import LiveStats, RateOf
from services.api.metrics import ApiMetrics, MetricsMiddleware
from services.api.routes import feed_events
from services.api.schemas import Rejected
from streams.events import MAX_ID_LENGTH, new_event
from streams.messages import ExperimentTag, PopularList, RecommendationList, ScoredItem
from streams.recs_store import popular_key, recs_key

LIST_SCHEMA = jsonschema.Draft202012Validator(json.loads(
    (Path(__file__).resolve().parents[2] / "streams/schema/recommendation-list-v1.json")
    .read_text()))
NO_CATALOGUE = SimpleNamespace(records={})  # a feed's backends: no catalogue records


def _list(user: str, items: list[str], item: str | None, version: str = "v1",
          sent: int | None = 1_000_000, published: int = 1_020_000) -> RecommendationList:
    return RecommendationList(user, "model", version, [ScoredItem(i, 1.0) for i in items],
                              f"e-{user}-{published}", item, sent, published)


def _ids(rec: RecommendationList) -> list[str]:
    return [i.item_id for i in rec.items]


def _batch(*recs: RecommendationList) -> bytes:
    """One channel message, as ``RecsWriter`` publishes a micro-batch."""
    return b"[" + b",".join(r.to_json() for r in recs) + b"]"


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
    assert list(stats.ranks) == [1.0, float("inf")]
    assert stats.snapshot(now_s=112.5)["lists_per_s"] == pytest.approx(0.1)  # window slid


def test_online_hr_judges_like_the_offline_prequential_protocol() -> None:
    """The same events through the live figures and through ``prequential_ranks``: one
    rule, one HR@10, including an item shown only below the tenth place (a miss)."""
    long = [f"p{i}" for i in range(12)]
    flow = [("u1", "x", ["a", "b"]), ("u2", "y", long), ("u3", "w", []),
            ("u1", "b", ["c"]), ("u2", "p11", ["q"]),  # b at rank 1: hit; p11 ranked 11: miss
            ("u3", "a", ["d"]),                        # nothing shown: miss
            ("u1", "c", ["e"]), ("u2", "q", ["r"])]    # hits at rank 0
    stats = LiveStats()
    events, lists = [], {}
    for n, (user, item, shown) in enumerate(flow):
        rec = _list(user, shown, item, published=n)
        stats.observe(rec, now_s=1.0)
        events.append(SimpleNamespace(event_id=rec.event_id, user_id=user, item_id=item))
        lists[rec.event_id] = shown
    ranks = prequential_ranks(events, lists)
    assert ranks.tolist() == [1.0, 11.0, float("inf"), 0.0, 0.0]
    snap = stats.snapshot(now_s=1.0)
    assert snap["judged"] == len(ranks) == 5
    assert snap["online_hr10"] == round(hit_rate(ranks, 10), 4) == 0.6


def test_online_hr_judges_only_the_lists_users_were_shown() -> None:
    """An event answered again after a rebalance was judged twice, then stood as the list
    shown; an empty popularity list stood over the user's list (a review)."""
    stats = LiveStats()
    stats.observe(_list("u1", ["b", "x"], "a", sent=1000, published=1), 0.0)
    stats.observe(_list("u1", ["c", "y"], "b", sent=2000, published=2), 0.1)   # hit
    stats.observe(_list("u1", ["b", "x"], "a", sent=1000, published=3), 0.2)   # again
    stats.observe(_list("u1", ["z"], "c", sent=3000, published=4), 0.3)        # hit
    assert list(stats.ranks) == [0.0, 0.0]
    stats.observe(_list("u1", [], "z", sent=4000, published=5), 0.4)           # hit, empty
    stats.observe(_list("u1", ["q"], "z", sent=5000, published=6), 0.5)        # z still shown
    assert list(stats.ranks) == [0.0, 0.0, 0.0, 0.0]


def test_prequential_rank_of_one_event() -> None:
    assert prequential_rank(["a", "b"], "b") == 1.0
    assert prequential_rank(["a", "b"], "z") == float("inf")
    assert prequential_rank([], "a") == prequential_rank(None, "a") == float("inf")


def test_live_stats_keeps_only_its_most_recent_judgements() -> None:
    stats = LiveStats(max_judged=2)
    for n, item in enumerate(["a", "a", "z", "a"]):  # judged: hit, miss, hit
        stats.observe(_list("u1", ["a"], item, published=n), 1.0)
    assert list(stats.ranks) == [float("inf"), 0.0]
    assert stats.snapshot(1.0)["online_hr10"] == 0.5


def test_live_stats_sees_a_model_swap_only_when_the_version_changes() -> None:
    stats = LiveStats()
    stats.observe(_list("u1", ["a"], "a", version="v1"), 1.0)
    assert stats.last_swap_us is None and stats.model_version == "v1"
    stats.observe(replace(_list("u2", ["a"], "a", version="popular-only"), path="popularity"),
                  2.0)
    assert stats.model_version == "v1"  # popularity lists do not name the model in service
    stats.observe(_list("u1", ["a"], "a", version="v2", published=7), 3.0)
    assert stats.model_version == "v2" and stats.last_swap_us == 7
    for n, version in enumerate(["chal:v9", "v2", "chal:v9"]):  # an experiment's variants
        tagged = replace(_list("u3", ["a"], "a", version=version, published=10 + n),
                         experiment=ExperimentTag("exp", "treatment" if n % 2 == 0 else "control"))
        stats.observe(tagged, 4.0 + n)
    assert stats.model_version == "v2" and stats.last_swap_us == 7  # no swap seen
    # A rolling swap (each worker loads on its own), or a worker whose swap was refused:
    # lists of both versions alternate, and every one read as a swap (a review).
    for n in range(6):
        stats.observe(_list("u4", ["a"], "a", version=("v2", "v3")[n % 2],
                            published=20 + n), 10.0 + n)
    assert stats.model_version == "v3" and stats.last_swap_us == 21
    stats.observe(_list("u5", ["a"], "a", version="v2", published=40), 30.0)  # 15 s unseen:
    assert stats.model_version == "v2" and stats.last_swap_us == 40  # back (a rollback)


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
    # What the route answers (orjson of the rejections) is the documented 422 body.
    answer = orjson.loads(orjson.dumps({"accepted": 0, "rejected": rejected}))
    assert answer["rejected"][0] == {"index": 1, "reason": "unknown_event_type",
                                     "detail": rejected[0].detail}
    Rejected.model_validate(answer)


def test_json_nested_past_what_orjson_writes_is_refused_as_bad_json() -> None:
    """Read at any depth to 1024, written back at 254 at most: a body 300 deep was a 500."""
    deep = b"[" * 300 + b"]" * 300
    good = orjson.loads(new_event("u1", "i1").to_json())
    body = b"[" + orjson.dumps(good) + b"," + deep + b"]"
    events, rejected = validate_body(body, max_events=10)
    assert len(events) == 1 and [(r.index, r.reason) for r in rejected] == [(1, "bad_json")]
    assert "Recursion limit reached" in rejected[0].detail


def test_a_full_local_queue_is_a_503_at_once_not_a_frozen_event_loop() -> None:
    """With the broker away, produce waited for room in a loop on the event loop: every
    read, feed and ``/readyz`` stopped with it."""
    from infra.kafka_client import KafkaConnection
    from services.api.ingest import DeliveryFailed, EventIngest
    from streams.producer import RecordProducer

    ingest = EventIngest(KafkaConnection("127.0.0.1:1"), "interactions", timeout_s=1.0)
    ingest.producer.close()
    ingest.producer = RecordProducer(KafkaConnection("127.0.0.1:1"), {
        "log_level": 0, "queue.buffering.max.messages": 1, "message.timeout.ms": 1000})
    started = time.perf_counter()
    try:
        with pytest.raises(DeliveryFailed, match=r"local queue is full \(room for 1 of 2 "
                                                 r"events; none queued\)"):
            asyncio.run(ingest.send([new_event("u1", "i1"), new_event("u2", "i2")]))
        assert time.perf_counter() - started < 1.0  # did not wait for the 1 s timeout
        # Queued in part, the part went out later and a retry of the batch duplicated it.
        assert ingest.producer.stats.produced == 0
    finally:
        ingest.close()


class _Refusing:
    """A producer librdkafka refuses every record of, with ``error``."""

    def __init__(self, error: object) -> None:
        self.error, self.produced = error, 0

    def room(self) -> int:
        return 100

    def poll(self, timeout_s: float) -> None:
        time.sleep(timeout_s)

    def produce(self, *args: object, **kwargs: object) -> None:
        from confluent_kafka import KafkaException

        self.produced += 1
        raise KafkaException(self.error)

    def close(self) -> None:
        pass


def _refusing_ingest(error: object) -> object:
    from infra.kafka_client import KafkaConnection
    from services.api.ingest import EventIngest

    ingest = EventIngest(KafkaConnection("127.0.0.1:1"), "interactions", timeout_s=1.0)
    ingest.producer.close()
    ingest.producer = _Refusing(error)  # type: ignore[assignment]
    return ingest


def test_a_record_librdkafka_refuses_is_a_503_with_its_reason() -> None:
    """A topic the cluster says does not exist made ``produce`` raise KafkaException,
    which reached the client as a bare 500."""
    from confluent_kafka import KafkaError

    from services.api.ingest import DeliveryFailed

    ingest = _refusing_ingest(KafkaError(KafkaError._UNKNOWN_TOPIC))
    try:
        with pytest.raises(DeliveryFailed, match=r"Kafka refused the events \(0 of 1 queued\)"):
            asyncio.run(ingest.send([new_event("u1", "i1")]))
        assert ingest.fatal is None  # the next request tries again
    finally:
        ingest.close()


@pytest.mark.parametrize("flagged", [True, False])
def test_a_fatal_producer_error_refuses_every_later_post_and_readyz_says_so(
        caplog: pytest.LogCaptureFixture, flagged: bool) -> None:
    """The idempotent producer's fatal error refuses every later record: said once, kept,
    and reported by ``/readyz`` (kafka false, 503) so that the process is restarted. A
    real ``produce`` after it raises code ``_FATAL`` with its ``fatal()`` flag false
    (a review): read by the flag alone, /readyz said ready for good."""
    from confluent_kafka import KafkaError

    from services.api.ingest import DeliveryFailed

    ingest = _refusing_ingest(KafkaError(KafkaError._FATAL, "out of sequence", fatal=flagged))
    try:
        for _ in range(2):
            with pytest.raises(DeliveryFailed):
                asyncio.run(ingest.send([new_event("u1", "i1")]))
        assert ingest.producer.produced == 1  # the second post never reached librdkafka
        assert "out of sequence" in (ingest.fatal or "")
        assert [r.levelname for r in caplog.records
                if "failed for good" in r.getMessage()] == ["CRITICAL"]
        api = InProcessApi()
        api.app.state.backends.ingest, api.app.state.backends.kafka_ready = ingest, True
        api.ingest.fatal = None
        ready = api.get("/readyz")
        assert ready.status_code == 503 and ready.json()["kafka"] is False
        api.app.state.backends.ingest = api.ingest  # a producer that never failed
        assert api.get("/readyz").json()["kafka"] is True
    finally:
        ingest.close()


def test_experiment_calls_run_on_their_own_bounded_threads() -> None:
    """On the default pool, calls blocked on an absent Kafka held every thread, stalling
    what else runs there; past the bound one is refused at once with a 503."""
    import threading

    from fastapi import HTTPException

    from services.api.experiments import _Calls

    calls, release = _Calls(workers=1, most=2), threading.Event()

    async def scenario() -> tuple[list[str], HTTPException]:
        blocked = [asyncio.ensure_future(calls.run(release.wait, 5)) for _ in range(2)]
        await asyncio.sleep(0.05)
        with pytest.raises(HTTPException) as refused:
            await calls.run(threading.current_thread)
        release.set()
        await asyncio.gather(*blocked)
        names = [await calls.run(lambda: threading.current_thread().name)]
        return names, refused.value

    names, refused = asyncio.run(scenario())
    assert refused.status_code == 503 and refused.headers == {"Retry-After": "5"}
    assert names[0].startswith("experiment-call") and calls.unfinished == 0


def test_validate_body_reads_integers_as_json_schema_does() -> None:
    """``1.0`` is an integer to the documented schema: accepted for ``ts`` and the version;
    a whole number too big for 64 bits is one too, out of range: refused with that reason,
    not an error."""
    event = orjson.loads(new_event("u1", "i1").to_json())
    events, rejected = validate_body(orjson.dumps(
        {**event, "ts": float(event["ts"]), "schema_version": 1.0}), max_events=1)
    assert rejected == [] and events[0].ts == event["ts"] and events[0].schema_version == 1
    too_big = validate_body(orjson.dumps({**event, "ts": 1e300}), max_events=1)[1]
    assert [r.reason for r in too_big] == ["bad_timestamp"]
    assert validate_body(orjson.dumps({**event, "ts": 1.5}), 1)[1][0].reason == "wrong_type"


def test_validate_body_refuses_more_events_than_the_limit() -> None:
    event = orjson.loads(new_event("u1", "i1").to_json())
    with pytest.raises(TooManyEvents, match="3 events"):
        validate_body(orjson.dumps([event] * 3), max_events=2)


def test_feed_slot_keeps_only_the_newest_list() -> None:
    older, newer = _list("u1", ["a"], "x", published=1), _list("u1", ["b"], "y", published=2)

    async def scenario() -> tuple[RecommendationList | None, RecommendationList | None]:
        feed = Feed()
        feed.offer(older)
        feed.offer(newer)  # a slow client skips straight to the newest
        first = await feed.next(timeout_s=0.1)
        second = await feed.next(timeout_s=0.05)  # nothing new: time for a heartbeat
        return first, second

    assert asyncio.run(scenario()) == (newer, None)


def test_a_channel_message_reaches_the_figures_the_memory_copy_and_the_feeds() -> None:
    source = ListSource(FakeRedis(), "ch", ttl_s=60)
    hub = FeedHub(None, "ch", LiveStats(), source)
    u1, u2 = _list("u1", ["a", "b"], "x"), _list("u2", ["c"], "y", sent=None)
    feed = hub.open("u1")
    hub.dispatch(_batch(u1, u2))
    assert (source.held("u1"), source.held("u2")) == (u1, u2)  # the records, every field
    assert list(source.recent) == ["u1", "u2"]
    assert feed.latest == u1
    assert hub.stats.snapshot(time.monotonic())["lists_per_s"] == pytest.approx(0.2)
    hub.close("u1", feed)
    assert hub.clients == 0 and not hub.feeds


@pytest.mark.parametrize("message", [
    b"{not json", b'{"a": 1}', b"[1, 2]", b'[{"user_id": "u2"}]',
    # parsed, but of the wrong types: they failed in the live figures and ended the task
    b'[{"user_id": "u", "path": "model", "model_version": "m", "items": [], "sent_us": "1",'
    b' "published_us": 5}]',
    b'[{"user_id": ["u"], "path": "model", "model_version": "m", "items": []}]',
])
def test_a_malformed_channel_message_is_skipped_and_the_next_one_still_arrives(
        message: bytes, caplog: pytest.LogCaptureFixture) -> None:
    """One bad message must not end the subscription: feeds and live figures would freeze."""
    source = ListSource(FakeRedis(), "ch", ttl_s=60)
    hub = FeedHub(None, "ch", LiveStats(), source)
    feed = hub.open("u1")
    hub.dispatch(message)
    u1 = _list("u1", ["a"], "x")
    hub.dispatch(b"[" + u1.to_json() + b', {"user_id": 7}]')  # a bad list beside a good one
    assert feed.latest == u1 and list(source.recent) == ["u1"] and source.held("u1") == u1
    assert "malformed" in caplog.text


def test_plain_k_takes_only_a_lone_valid_k() -> None:
    assert plain_k(b"") == 10 and plain_k(b"k=5") == 5 and plain_k(b"k=100") == 100
    for odd in (b"k=0", b"k=101", b"k=-1", b"k=x", b"k=", b"k=1&k=2", b"k=3&x=1", b"x=1",
                b"k=%C2%B2", b"k=%D9%A1%D9%A2",  # a superscript two; Arabic-Indic 12
                b"k=" + b"9" * 4301):  # past int()'s 4,300 digits: a 500 without any key
        assert plain_k(odd) is None, odd  # left to FastAPI, which answers as documented
    reply = InProcessApi().get("/v1/users/u1/recommendations?k=" + "9" * 4301)
    assert reply.status_code == 422, reply.text


def test_user_id_rule_matches_the_documented_parameter() -> None:
    for good in ("u42", "a.b:c@d~e", "has space", "José", "用户7", "x" * MAX_ID_LENGTH):
        assert USER_ID_RE.fullmatch(good), good  # every id an event may carry, but '/'
    for bad in ("", "a/b", "a\x00b", "a\x85b", "x" * (MAX_ID_LENGTH + 1)):
        assert not USER_ID_RE.fullmatch(bad), bad


def test_a_user_whose_id_is_not_ascii_reads_the_list_their_events_made() -> None:
    """Events from "José" or "user 7" were accepted, and their reads refused with 422."""
    from urllib.parse import quote

    from api_fakes import InProcessApi, stored_list

    api = InProcessApi()
    for user in ("José", "user 7"):
        api.app.state.backends.source.client.values[recs_key(user)] = \
            stored_list(user).to_json()
        for query in ("", "?k=2&x=1"):  # the fast path, then FastAPI's
            got = api.get(f"/v1/users/{quote(user)}/recommendations{query}")
            assert got.status_code == 200 and got.json()["user_id"] == user, got.text
            # a list changes with each event, and read keys travel in a header a shared
            # cache does not key on: no cache keeps it (a review)
            assert got.headers["cache-control"] == "no-store"
    assert api.get("/v1/users/a%00b/recommendations").status_code == 422


POPULAR = PopularList("v1", 5, [ScoredItem("p", 1.0), ScoredItem("q", 0.5)])


def test_lists_seen_on_the_channel_are_served_from_memory_until_forgotten() -> None:
    fallbacks: list[int] = []
    redis = FakeRedis()
    source = ListSource(redis, "ch", ttl_s=60, on_fallback=lambda: fallbacks.append(1),
                        max_cached=2)
    now = time.time_ns() // 1000
    for user in ("u1", "u2", "u3"):  # u1 is evicted: least recently updated
        source.remember(_list(user, ["a", "b", "c"], "x", published=now))
    got = asyncio.run(source.current("u2", k=2))
    assert got == _list("u2", ["a", "b"], "x", published=now)  # cut, every other field kept
    assert list(source.recent) == ["u2", "u3"] and redis.reads == []

    redis.down = True
    source.popular = POPULAR
    assert asyncio.run(source.current("u1", k=2)).path == "fallback"  # evicted: Redis
    source.forget_all()  # the subscription dropped: memory is no longer trusted
    assert asyncio.run(source.current("u2", k=1)) == POPULAR.as_list("u2", 1, "fallback")
    assert len(fallbacks) == 2


def test_a_list_older_than_the_redis_ttl_is_not_served_from_memory() -> None:
    source = ListSource(FakeRedis(down=True), "ch", ttl_s=1)
    source.remember(_list("u1", ["a"], "x", published=1))  # long ago
    assert asyncio.run(source.current("u1", k=1)).path == "fallback"


def test_lists_from_redis_are_the_workers_records_cut_to_k() -> None:
    stored = _list("u1", ["a", "b", "c"], "x")
    source = ListSource(FakeRedis({recs_key("u1"): stored.to_json()}), "ch", ttl_s=60)
    got = asyncio.run(source.current("u1", k=2))
    assert isinstance(got, RecommendationList) and got == stored.head(2)
    assert got.event_item_id == "x" and got.sent_us == 1_000_000
    assert asyncio.run(source.current("u1", k=10)) == stored
    assert source.recent == {}  # a read never writes the memory copy


def test_users_without_a_list_get_the_popularity_last_read() -> None:
    redis = FakeRedis()
    source = ListSource(redis, "ch", ttl_s=60)
    before = asyncio.run(source.current("nobody", k=3))  # no popularity read yet
    assert before == RecommendationList("nobody", "popularity", None, [])
    assert source.model_version is None

    redis.values[popular_key("ch")] = POPULAR.to_json()
    asyncio.run(source.refresh_popular())
    assert source.popular == POPULAR and source.model_version == "v1"
    got = asyncio.run(source.current("nobody", k=1))
    assert got == RecommendationList("nobody", "popularity", "v1", [ScoredItem("p", 1.0)],
                                     published_us=5)
    del redis.values[popular_key("ch")]  # expired: the last one read is kept
    asyncio.run(source.refresh_popular())
    assert source.popular == POPULAR


def test_an_unreadable_popularity_record_keeps_the_last_one_and_says_so_once(
        caplog: pytest.LogCaptureFixture) -> None:
    redis = FakeRedis({popular_key("ch"): POPULAR.to_json()})
    source = ListSource(redis, "ch", ttl_s=60)
    asyncio.run(source.refresh_popular())
    for bad in (b"{not json", b"[1, 2]", b'{"items": []}'):
        redis.values[popular_key("ch")] = bad
        asyncio.run(source.refresh_popular())
    assert source.popular == POPULAR
    assert caplog.text.count("popularity record in Redis is unreadable") == 1


def test_an_unreadable_stored_list_is_answered_with_popularity(
        caplog: pytest.LogCaptureFixture) -> None:
    """Raised, it was a 500 on every read of that user and a live feed that reconnected
    for ever (a list written by another version during an upgrade, say)."""
    redis = FakeRedis({popular_key("ch"): POPULAR.to_json()})
    source = ListSource(redis, "ch", ttl_s=60)
    asyncio.run(source.refresh_popular())
    for bad in (b"{not json", b"[1, 2]", b'{"user_id": "u1"}'):
        redis.values[recs_key("u1")] = bad
        got = asyncio.run(source.current("u1", k=1))
        assert got == RecommendationList("u1", "popularity", "v1", [ScoredItem("p", 1.0)],
                                         published_us=5)
    assert caplog.text.count("stored list of a user is unreadable") == 1  # not per read


def test_redis_down_keeps_the_last_popularity_and_says_so_once_per_outage(
        caplog: pytest.LogCaptureFixture) -> None:
    from services.api.backends import Backends

    redis = FakeRedis({popular_key("ch"): POPULAR.to_json()})
    backends = Backends(ListSource(redis, "ch", ttl_s=60), *[None] * 9)  # type: ignore[arg-type]
    asyncio.run(backends._refresh_popular())
    redis.down = True
    for _ in range(3):
        asyncio.run(backends._refresh_popular())
    assert backends.source.popular == POPULAR and not backends.popular_read
    assert caplog.text.count("popularity not re-read from redis") == 1
    redis.down = False
    asyncio.run(backends._refresh_popular())
    assert backends.popular_read
    redis.down = True  # a second outage is logged again
    asyncio.run(backends._refresh_popular())
    assert caplog.text.count("popularity not re-read from redis") == 2


def test_the_live_feed_sends_the_current_list_then_each_new_one() -> None:
    current = _list("u1", ["a", "b", "c"], "x", published=10)
    newer = _list("u1", ["d", "e", "f"], "y", published=20)
    source = ListSource(FakeRedis({recs_key("u1"): current.to_json()}), "ch", ttl_s=60)
    hub = FeedHub(None, "ch", LiveStats(), source)
    metrics = ApiMetrics()

    def clients() -> float | None:
        return metrics.registry.get_sample_value("streamrec_api_feed_clients")

    async def scenario() -> list[bytes]:
        stream = feed_events(SimpleNamespace(source=source, hub=hub, catalogue=NO_CATALOGUE), "u1", 2, None, 0.05,
                             metrics.feed_clients)
        sent = [await anext(stream), await anext(stream)]  # retry advice, current list
        hub.dispatch(_batch(current, newer))  # the current one again is not resent
        sent += [await anext(stream), await anext(stream)]  # newer, then a heartbeat
        assert hub.clients == 1 and clients() == 1
        await stream.aclose()
        return sent

    retry, first, second, heartbeat = asyncio.run(scenario())
    assert retry == b"retry: 2000\n\n" and heartbeat == b": keep-alive\n\n"
    for frame, rec in ((first, current), (second, newer)):
        head, data = frame.split(b"\ndata: ")
        assert head == b"id: %d\nevent: recommendations" % rec.published_us
        assert orjson.loads(data) == orjson.loads(rec.head(2).to_json())
    assert hub.clients == 0 and clients() == 0


def _feed(source: ListSource) -> tuple[FeedHub, AsyncGenerator[bytes, None]]:
    """A hub over ``source``, and user u1's feed on it (2 items, 50 ms heartbeats)."""
    hub = FeedHub(None, "ch", LiveStats(), source)
    return hub, feed_events(SimpleNamespace(source=source, hub=hub, catalogue=NO_CATALOGUE), "u1", 2, None, 0.05,
                            ApiMetrics().feed_clients)


def test_a_feed_never_goes_back_to_an_older_events_list() -> None:
    """A worker that takes over a partition answers its redelivered events again, after
    their users' newer ones (167 times in a ``make faults`` history check): neither the
    feed nor the API's in-memory copy shows such a list after the newer one."""
    current = _list("u1", ["a"], "x", sent=2_000_000, published=10)
    redelivered = _list("u1", ["b"], "y", sent=1_000_000, published=20)
    newest = _list("u1", ["c"], "z", sent=3_000_000, published=30)
    unstamped = _list("u1", ["d"], "w", sent=None, published=40)
    assert redelivered.older_than(current) and not current.older_than(redelivered)
    assert not unstamped.older_than(newest) and not newest.older_than(None)
    source = ListSource(FakeRedis({recs_key("u1"): current.to_json()}), "ch", ttl_s=60)
    hub, stream = _feed(source)

    async def scenario() -> list[bytes]:
        sent = [await anext(stream), await anext(stream)]  # retry advice, current list
        slot = next(iter(hub.feeds["u1"]))
        slot.offer(redelivered)  # as if it reached the slot before the hub's check
        sent.append(await anext(stream))
        hub.dispatch(_batch(newest, redelivered))
        sent.append(await anext(stream))
        await stream.aclose()
        return sent

    _, first, skipped, last = asyncio.run(scenario())
    assert b'"event_id":"e-u1-10"' in first and skipped == b": keep-alive\n\n"
    assert b'"event_id":"e-u1-30"' in last
    assert source.held("u1") == newest  # the redelivered one was not remembered


def test_an_empty_list_never_replaces_one_with_items_in_memory_or_in_a_feed() -> None:
    """A fresh worker's first popularity lists are empty: Redis kept the user's list, but
    the API's in-memory copy served the empty one, and the user's feed showed it."""
    current = _list("u1", ["a"], "x", sent=2_000_000, published=10)
    empty = RecommendationList("u1", "popularity", None, [], "e-u1-20", "y", 3_000_000, 20)
    newest = _list("u1", ["c"], "z", sent=4_000_000, published=30)
    assert not empty.may_replace(current) and empty.may_replace(None)
    assert newest.may_replace(empty) and not current.may_replace(newest)
    source = ListSource(FakeRedis({recs_key("u1"): current.to_json()}), "ch", ttl_s=60)
    hub, stream = _feed(source)

    async def scenario() -> list[bytes]:
        sent = [await anext(stream), await anext(stream)]  # retry advice, current list
        source.remember(current)
        hub.dispatch(_batch(empty))
        assert source.held("u1") == current
        source.forget_all()  # as after a resubscription: the empty one is not remembered
        hub.dispatch(_batch(empty))
        assert "u1" not in source.recent
        assert await source.current("u1", 2) == current  # read from Redis, which kept it
        sent.append(await anext(stream))
        hub.dispatch(_batch(newest))
        sent.append(await anext(stream))
        await stream.aclose()
        return sent

    _, first, skipped, last = asyncio.run(scenario())
    assert b'"event_id":"e-u1-10"' in first and skipped == b": keep-alive\n\n"
    assert b'"event_id":"e-u1-30"' in last


def test_feeds_are_not_resent_popularity_when_redis_cannot_say_the_users_list() -> None:
    """A Redis still loading its data takes the subscription but not the read: every open
    feed was sent popularity over its user's list until that user's next event."""
    stored = _list("u1", ["a"], "x")
    redis = FakeRedis({recs_key("u1"): stored.to_json()}, down=True)
    source = ListSource(redis, "ch", ttl_s=60)
    source.popular = POPULAR
    hub = FeedHub(None, "ch", LiveStats(), source)
    slot = hub.open("u1")
    asyncio.run(hub._resend_current())
    assert slot.latest is None
    redis.down = False  # done loading
    asyncio.run(hub._resend_current())
    assert slot.latest == stored


def test_a_feed_opened_while_redis_failed_sends_the_users_list_once_it_answers() -> None:
    """Read once at the start, popularity then stood on an idle user's feed until their
    next event, and its id, newer than the user's list, made a reconnect keep it (a
    review)."""
    from services.api.routes import client_holds

    stored = _list("u1", ["a"], "x", published=3)
    redis = FakeRedis({recs_key("u1"): stored.to_json()}, down=True)
    source = ListSource(redis, "ch", ttl_s=10**12)
    source.popular = POPULAR
    hub = FeedHub(None, "ch", LiveStats(), source)

    async def scenario() -> list[bytes]:
        stream = feed_events(SimpleNamespace(source=source, hub=hub, catalogue=NO_CATALOGUE),
                             "u1", 2, None, 0.01, ApiMetrics().feed_clients)
        sent = [await anext(stream), await anext(stream), await anext(stream)]
        redis.down = False
        sent.append(await anext(stream))
        await stream.aclose()
        return sent

    _, fallback, waiting, own = asyncio.run(scenario())
    assert b'"path":"fallback"' in fallback and fallback.startswith(b"id: 0\n")
    assert waiting == b": keep-alive\n\n"
    assert b'"event_id":"e-u1-3"' in own and own.startswith(b"id: 3\n")
    assert not client_holds(stored, "0")  # a client that showed popularity takes it


def test_the_feed_skips_the_list_a_reconnecting_client_already_has() -> None:
    current = _list("u1", ["a"], "x", published=10)
    source = ListSource(FakeRedis({recs_key("u1"): current.to_json()}), "ch", ttl_s=60)
    hub = FeedHub(None, "ch", LiveStats(), source)

    async def scenario() -> list[bytes]:
        stream = feed_events(SimpleNamespace(source=source, hub=hub, catalogue=NO_CATALOGUE), "u1", 2, "10", 0.05,
                             ApiMetrics().feed_clients)
        sent = [await anext(stream), await anext(stream)]
        await stream.aclose()
        return sent

    assert asyncio.run(scenario()) == [b"retry: 2000\n\n", b": keep-alive\n\n"]


def test_a_reconnecting_client_keeps_its_list_over_an_older_empty_or_fallback_one() -> None:
    """The first message after a reconnect was sent whenever its id differed from the
    client's: during a Redis outage (a restarted API, no popularity read yet) that was an
    empty fallback list, which blanked the client's table; an older list likewise."""
    from services.api.lists import FALLBACK
    from services.api.routes import client_holds

    newer = _list("u1", ["a"], "x", published=20)
    assert not client_holds(newer, None) and not client_holds(newer, "10")
    assert client_holds(newer, "20") and client_holds(newer, "30")  # its own; a newer one
    assert client_holds(replace(newer, items=[]), "10")
    assert client_holds(replace(newer, path=FALLBACK, published_us=None), "10")
    assert not client_holds(newer, "not-an-id") and not client_holds(newer, "9" * 30)


def test_metrics_count_every_route_but_time_only_non_streaming_ones() -> None:
    metrics = ApiMetrics()

    async def app(scope: dict, receive: object, send: object) -> None:
        scope["route"] = SimpleNamespace(path_format=scope["path"])
        await send({"type": "http.response.start", "status": 200})  # type: ignore[operator]

    async def send(message: dict) -> None:
        pass

    middleware = MetricsMiddleware(app, metrics, streaming_routes=frozenset({"/stream"}))
    for path in ("/stream", "/read"):
        asyncio.run(middleware({"type": "http", "method": "GET", "path": path}, None, send))
    sample = metrics.registry.get_sample_value
    for route in ("/stream", "/read"):
        assert sample("streamrec_api_requests_total",
                      {"route": route, "method": "GET", "status": "200"}) == 1
    assert sample("streamrec_api_request_seconds_count", {"route": "/read"}) == 1
    assert sample("streamrec_api_request_seconds_count", {"route": "/stream"}) is None
    # Any word a client sends as its method, before auth: one "other" series, not one each.
    for method in ("BREW", "X-7f3a"):
        asyncio.run(middleware({"type": "http", "method": method, "path": "/read"}, None, send))
    assert sample("streamrec_api_requests_total",
                  {"route": "/read", "method": "other", "status": "200"}) == 2


def test_fast_reads_answer_plain_reads_and_pass_the_rest_on() -> None:
    stored = _list("u1", ["a", "b", "c"], "x")
    source = ListSource(FakeRedis({recs_key("u1"): stored.to_json()}), "ch", ttl_s=60)
    route = SimpleNamespace(path="/v1/users/{user_id}/recommendations")
    passed: list[str] = []

    async def app(scope: dict, receive: object, send: object) -> None:
        passed.append(scope["path"] + "?" + scope["query_string"].decode())

    def call(path: str, query: bytes = b"") -> list[dict]:
        sent: list[dict] = []

        async def send(message: dict) -> None:
            sent.append(message)

        scope = {"type": "http", "method": "GET", "path": path, "query_string": query}
        asyncio.run(FastReads(app, lambda: source, route, Access())(scope, None, send))
        return sent

    start, body = call("/v1/users/u1/recommendations", b"k=2")
    assert start["status"] == 200 and orjson.loads(body["body"]) == orjson.loads(
        stored.head(2).to_json())
    assert call("/v1/users/a\x00b/recommendations") == call("/v1/users/u1/feed") == []
    assert call("/v1/users/u1/recommendations", b"k=0") == []
    assert passed == ["/v1/users/a\x00b/recommendations?", "/v1/users/u1/feed?",
                      "/v1/users/u1/recommendations?k=0"]


@pytest.fixture
def api() -> InProcessApi:
    return InProcessApi()


def test_reads_answer_the_record_on_the_fast_path_and_through_fastapi(api: InProcessApi) -> None:
    fast = api.get("/v1/users/u1/recommendations?k=2")
    routed = api.get("/v1/users/u1/recommendations?k=2&x=1")  # not plain: FastAPI's route
    assert fast.status_code == routed.status_code == 200
    assert fast.headers["content-type"] == routed.headers["content-type"] == "application/json"
    assert fast.json() == routed.json() == orjson.loads(stored_list("u1").head(2).to_json())
    LIST_SCHEMA.validate(fast.json())  # what the workers publish, as published
    assert api.get("/v1/users/nobody/recommendations").json()["path"] == "popularity"
    too_long = api.get(f"/v1/users/{'u' * (MAX_ID_LENGTH + 1)}/recommendations")
    assert too_long.status_code == 422


def test_the_openapi_document_shows_the_record_and_the_id_limit(api: InProcessApi) -> None:
    doc = api.get("/openapi.json").json()
    read = doc["paths"]["/v1/users/{user_id}/recommendations"]["get"]
    answer = read["responses"]["200"]["content"]["application/json"]
    assert answer["schema"] == {"$ref": "#/components/schemas/RecommendationList"}
    LIST_SCHEMA.validate(answer["example"])
    documented = doc["components"]["schemas"]["RecommendationList"]
    assert set(documented["properties"]) == set(LIST_SCHEMA.schema["properties"])
    user_id = next(p for p in read["parameters"] if p["name"] == "user_id")
    assert user_id["schema"]["maxLength"] == MAX_ID_LENGTH



def test_a_method_a_path_does_not_take_is_answered_with_every_method_it_does(
    api: InProcessApi,
) -> None:
    """Starlette's 405 named only the first route on the path (``Allow: GET`` for
    ``/v1/experiments``, which also takes ``POST``): the API contract's ST205."""
    for path, allowed in (("/v1/experiments", "GET, POST"), ("/v1/events", "POST"),
                          ("/v1/items/4", "PUT"), ("/openapi.json", "GET, HEAD")):
        answer = api.call("OPTIONS", path)
        assert (answer.status_code, answer.headers["allow"]) == (405, allowed), path
    assert api.call("DELETE", "/v1/nowhere").status_code == 404


def test_reads_that_miss_memory_together_go_to_redis_as_one_mget() -> None:
    """One round trip per turn of the loop, not per read: each read still gets its own
    user's list (or popularity), a user read twice included."""
    stored = {u: _list(u, ["a", "b"], "x") for u in ("u1", "u2")}
    redis = FakeRedis({recs_key(u): rec.to_json() for u, rec in stored.items()})
    source = ListSource(redis, "ch", ttl_s=60)
    source.popular = POPULAR

    async def together() -> list[RecommendationList]:
        return await asyncio.gather(*(source.current(u, k=1) for u in ("u1", "u2", "nobody",
                                                                        "u1")))

    got = asyncio.run(together())
    assert got == [stored["u1"].head(1), stored["u2"].head(1),
                   POPULAR.as_list("nobody", 1, "popularity"), stored["u1"].head(1)]
    assert redis.batches == [[recs_key(u) for u in ("u1", "u2", "nobody", "u1")]]

    newer = _list("u1", ["c"], "y")  # a later read never answers from an earlier one
    redis.values[recs_key("u1")] = newer.to_json()
    assert asyncio.run(source.current("u1", k=1)) == newer
    assert len(redis.batches) == 2


def test_long_lists_are_read_in_mgets_whose_replies_stay_small() -> None:
    """Counted by keys alone, 256 lists of 1,000 items made one reply of ~30 MB, past the
    client's 0.5 s timeout: every read of the batch fell back to popularity."""
    heads = {"next": 0.987654321, "conversion": 0.123456789}
    stored = {f"user-{n}": RecommendationList(
        f"user-{n}", "model", "v1",
        [ScoredItem(f"item-{100_000 + i}", 0.123456789 + i, heads, "retrieved")
         for i in range(1000)], f"e-{n}", "item-1", 1_000_000, 1_020_000)
        for n in range(7)}
    redis = FakeRedis({recs_key(u): rec.to_json() for u, rec in stored.items()})
    source = ListSource(redis, "ch", ttl_s=60, top_n=1000)

    async def together() -> list[RecommendationList]:
        return await asyncio.gather(*(source.current(u, k=5) for u in stored))

    assert asyncio.run(together()) == [rec.head(5) for rec in stored.values()]
    assert len(redis.batches) > 1
    for batch in redis.batches:
        assert sum(len(redis.values[key]) for key in batch) <= READ_BYTES


def test_a_batch_redis_fails_is_each_of_its_reads_answered_with_fallback() -> None:
    fallbacks: list[int] = []
    source = ListSource(FakeRedis(down=True), "ch", ttl_s=60,
                        on_fallback=lambda: fallbacks.append(1))
    source.popular = POPULAR

    async def together() -> list[RecommendationList]:
        return await asyncio.gather(*(source.current(u, k=1) for u in ("u1", "u2", "u3")))

    assert [r.path for r in asyncio.run(together())] == ["fallback"] * 3
    assert len(fallbacks) == 3  # counted per read, as before batching


def test_a_read_given_up_leaves_the_others_of_its_batch_answered() -> None:
    """A client that hangs up cancels its read; the reads batched with it still get theirs."""
    stored = _list("u2", ["a"], "x")
    redis = FakeRedis({recs_key("u2"): stored.to_json()}, delay_s=0.05)
    source = ListSource(redis, "ch", ttl_s=60)

    async def one_gives_up() -> RecommendationList:
        gone = asyncio.create_task(source.current("u1", k=1))
        kept = asyncio.create_task(source.current("u2", k=1))
        await asyncio.sleep(0.01)  # both in the batch, waiting on Redis
        gone.cancel()
        return await kept

    assert asyncio.run(one_gives_up()) == stored
    assert redis.batches == [[recs_key("u1"), recs_key("u2")]]


def test_lists_held_in_memory_add_nothing_the_garbage_collector_walks() -> None:
    """Held as objects, 10,000 lists were ~140,000 objects walked by every full collection:
    a pause of ~40 ms that was the tail of every read (docs/BENCHMARKS.md)."""
    import gc

    source = ListSource(FakeRedis(), "ch", ttl_s=60)
    gc.collect()
    before = len(gc.get_objects())
    for i in range(1000):
        source.remember(_list(f"u{i}", ["a", "b", "c"], "x"))
    gc.collect()
    assert len(gc.get_objects()) - before < 20  # the 1,000 lists are held all the same:
    assert len(source.recent) == 1000 and source.held("u7") == _list("u7", ["a", "b", "c"], "x")


def test_readiness_says_kafka_is_gone_while_a_question_to_it_is_overdue(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """The size of the dead-letter topic was asked with the client's own timeouts (10 s
    for metadata, 10 s per partition): ``/readyz`` said Kafka was up for up to 20 s after
    the broker went, and the popularity re-read, in the same loop, waited with it."""
    import threading

    import services.api.backends as backends

    monkeypatch.setattr(backends, "KAFKA_SLOW_S", 0.2)
    answer = threading.Event()

    class SlowBroker:
        def size(self, topic: str) -> int:
            answer.wait(10)
            return 7

    b = backends.Backends(None, None, None, SlowBroker(), "dlq", None, None, None,  # type: ignore[arg-type]
                          "items", None, kafka_ok=True)  # type: ignore[arg-type]

    async def watch() -> tuple[bool, bool]:
        task = asyncio.create_task(b.watch_kafka())
        await asyncio.sleep(0.5)  # the question has been in flight past KAFKA_SLOW_S
        overdue = b.kafka_ready
        answer.set()
        await asyncio.sleep(0.2)
        task.cancel()
        return overdue, b.kafka_ready

    assert asyncio.run(watch()) == (False, True)


def test_a_failed_experiment_call_masks_a_url_before_cutting_its_detail() -> None:
    """Cut to 500 characters first, a URL whose password the cut fell in lost its '@',
    and the start of the password went out in the 503's body."""
    from fastapi import HTTPException

    from services.api.experiments import off_loop

    def fails() -> None:
        raise ConnectionError("x" * 460 + " redis://default:Sup3rS3cretPassw0rd@cache:6379/0")

    with pytest.raises(HTTPException) as info:
        asyncio.run(off_loop(fails))
    assert info.value.status_code == 503 and "Sup3r" not in info.value.detail


def test_a_conclusion_whose_promotion_finds_the_lock_held_is_a_conflict_not_a_503(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """Wrapped in a RuntimeError, another promotion holding the lock answered 503 ("Kafka,
    Redis or the registry did not answer"), where it is a state of things: 409."""
    import threading
    from types import SimpleNamespace

    from services.api import experiment_calls
    from services.api.experiment_calls import ExperimentCalls
    from streams import experiment_control as control

    stopped = SimpleNamespace(winner="b", model_dump=lambda mode: {})
    monkeypatch.setattr(control, "conclude",
                        lambda *a, **k: (SimpleNamespace(verdict="b wins"), stopped, {"r": "2"}))

    def held(settings: object, versions: object) -> None:
        raise control.ExperimentConflict("another promotion holds the lock")

    monkeypatch.setattr(experiment_calls, "make_champion", held)
    calls = object.__new__(ExperimentCalls)
    calls.kafka = calls.topic = calls.redis = calls.store = calls.settings = None
    calls.lock_wait_s, calls._writing = 1.0, threading.Lock()
    with pytest.raises(control.ExperimentConflict, match="concluded .b wins.*conclude again"):
        calls.conclude("e", "b", True)
