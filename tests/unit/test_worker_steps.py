"""The worker's steps without Faust or a broker: the per-event decision, the per-batch lists,
the model swap and its status record, the lag gauge."""

from __future__ import annotations

import asyncio
import json
import logging
import time
import uuid
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from types import SimpleNamespace
from typing import Any, NamedTuple

import jsonschema
import numpy as np
import orjson
import pytest
from kafka_fakes import EmptyTopicConsumer

from model.features import FeatureSpec, LiveSession
from model.pipeline import Recommendation
from streams.events import new_event
from streams.hot_swap import Serving
from streams.messages import (
    CHAMPION,
    ExperimentTag,
    ModelAnnouncement,
    PopularList,
    RecommendationList,
    ScoredItem,
)
from streams.metrics import WorkerMetrics
from streams.popularity import DecayedPopularity
from streams.producer import MAX_LETTER_BYTES, TRUNCATED_HEADER
from streams.sessions import SessionPolicy, SessionState
from streams.status import WorkerStatus, read_status
from streams.steps import (
    AnsweredEvents,
    BatchStep,
    DeadLetter,
    Duplicate,
    EventStep,
    SessionUpdate,
    sent_us,
)

SCHEMA_DIR = Path(__file__).resolve().parents[2] / "streams" / "schema"
T0 = 1_700_000_000_000
EVENT_ID = "0b6f2c8e-3f5e-4c1a-9a57-7d2f1c3b4a5e"
TRACEPARENT = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"


def schema_validator(file: str) -> jsonschema.Draft202012Validator:
    return jsonschema.Draft202012Validator(json.loads((SCHEMA_DIR / file).read_text()))


# --- per event -------------------------------------------------------------------------

def test_a_valid_event_updates_the_session_and_says_when_it_counts_in_popularity() -> None:
    step = EventStep(SessionPolicy())
    table: dict[str, dict] = {}
    first = step(new_event("u1", "i1", ts=T0, event_id=EVENT_ID).to_json(), table.get)
    assert isinstance(first, SessionUpdate)
    assert (first.user_id, first.session, first.event_id, first.item_id, first.sent_us,
            first.ignored) == ("u1", LiveSession(("i1",), ("view",), (T0,), {}), EVENT_ID,
                               "i1", None, [])
    table[first.user_id] = first.state
    second = step(new_event("u1", "i2", "purchase", ts=T0 + 1000).to_json(), table.get)
    assert isinstance(second, SessionUpdate) and second.session.items == ("i1", "i2")
    assert second.session.types == ("view", "purchase")
    state = SessionState.from_dict(second.state)
    assert state.items == ("i1", "i2") and state.events_in_session == 2
    assert (first.counts_at_ms, second.counts_at_ms) == (T0, T0 + 1000)


def test_bad_json_is_a_dead_letter_with_its_reason() -> None:
    def no_lookup(user_id: str) -> dict | None:
        raise AssertionError("a record that does not parse has no user to look up")

    outcome = EventStep(SessionPolicy())(b"{not json", no_lookup)
    assert isinstance(outcome, DeadLetter) and outcome.reason == "bad_json" and outcome.detail


def test_a_record_breaking_the_schema_names_its_reason() -> None:
    raw = orjson.dumps({**orjson.loads(new_event("u1", "i1", ts=T0).to_json()),
                        "event_type": "teleport"})
    outcome = EventStep(SessionPolicy())(raw, {}.get)
    assert isinstance(outcome, DeadLetter) and outcome.reason == "unknown_event_type"
    assert "teleport" in outcome.detail


@pytest.mark.parametrize("key", [b"u2", b""])
def test_an_event_keyed_by_another_than_its_user_is_a_dead_letter(key: bytes) -> None:
    """Keyed otherwise (or unkeyed: the worker passes b""), a user's events land on other
    partitions and their session splits across workers: refused before it counts."""
    step = EventStep(SessionPolicy())
    raw = new_event("u1", "i1", ts=T0).to_json()
    outcome = step(raw, {}.get, key=key)
    assert isinstance(outcome, DeadLetter) and outcome.reason == "wrong_key"
    assert f"the record's key {key!r} is not its user id" in outcome.detail
    assert isinstance(step(raw, {}.get, key=b"u1"), SessionUpdate)


def test_a_tombstone_is_a_dead_letter_not_a_crash() -> None:
    """A null value (a tombstone, or a producer sending none) has no event to read."""
    outcome = EventStep(SessionPolicy())(None, {}.get)  # type: ignore[arg-type]
    assert isinstance(outcome, DeadLetter) and outcome.reason == "empty_record"


def test_a_record_that_breaks_the_step_otherwise_is_a_dead_letter_naming_why(
        caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch) -> None:
    """Anything else that fails on one record dead-letters that record, with the exception
    as its detail, instead of stopping the agent while the worker keeps its partitions.
    A store that cannot be read is not the record's fault: that is raised, not lettered."""
    import streams.steps as steps

    def broken(user_id: str) -> dict | None:
        raise RuntimeError("table unavailable")

    raw = new_event("u1", "i1", ts=T0, event_id=EVENT_ID).to_json()
    with pytest.raises(steps.StoreUnavailable, match="RuntimeError: table unavailable"):
        EventStep(SessionPolicy())(raw, broken)

    def fails(*_: object) -> None:
        raise ValueError("a bug")

    monkeypatch.setattr(steps, "apply_event", fails)
    with caplog.at_level(logging.ERROR, logger="streams.steps"):
        outcome = EventStep(SessionPolicy())(raw, {}.get)
    assert isinstance(outcome, DeadLetter) and outcome.reason == "processing_error"
    assert outcome.detail == "ValueError: a bug"
    assert "a bug" in caplog.text


def _stored(**changes: Any) -> dict:
    """A readable stored session (one event, ``T0 - 10``) with ``changes`` made to it."""
    step = EventStep(SessionPolicy())
    first = step(new_event("u1", "i0", ts=T0 - 10).to_json(), {}.get)
    assert isinstance(first, SessionUpdate)
    return {**first.state, **changes}


@pytest.mark.parametrize("stored", [
    {"items": 5}, {"v": 9, "items": ["x"]}, {}, [1, 2], "x",
    # of the wrong shape: each raised in ``apply_event``, and every event of the user was
    # dead-lettered for good (a review)
    _stored(events_in_session=None), _stored(last_ts=None), _stored(last_ts="1790000000000"),
    _stored(items=["i0", "i1"]), {k: v for k, v in _stored(last_ts="17").items() if k != "v"}])
def test_an_unreadable_stored_session_starts_afresh_and_says_so(stored: Any) -> None:
    """A state the worker cannot read (a future or corrupt format) must not stop the agent:
    the event starts a new session, and the update says the old one was dropped."""
    raw = new_event("u1", "i1", ts=T0, event_id=EVENT_ID).to_json()
    outcome = EventStep(SessionPolicy())(raw, {"u1": stored}.get)
    assert isinstance(outcome, SessionUpdate) and outcome.reset
    assert outcome.session.items == ("i1",)
    assert SessionState.from_dict(outcome.state).items == ("i1",)


def test_an_event_from_the_future_counts_as_now_in_popularity_and_in_its_session() -> None:
    """Validation lets ``ts`` run up to a day ahead (clock skew); counted as it stands, one
    such event would outweigh 2^24 current ones. And as its session's newest, every later
    event of a device with the right time read as late: the future item stayed the one
    each list answered, for up to a day. It counts as of this machine's clock."""
    now = [T0]
    step = EventStep(SessionPolicy(), clock_ms=lambda: now[0])
    ahead = step(new_event("u1", "future-item", ts=T0 + 23 * 3_600_000).to_json(), {}.get)
    assert isinstance(ahead, SessionUpdate) and ahead.counts_at_ms == T0
    assert ahead.session.times == (T0,)
    now[0] = T0 + 1000
    later = step(new_event("u1", "i2", ts=T0 + 1000).to_json(), {"u1": ahead.state}.get)
    assert isinstance(later, SessionUpdate) and not later.late
    assert later.session.items == ("future-item", "i2")


def test_an_event_from_the_future_read_behind_the_stream_counts_as_when_it_was_sent() -> None:
    """Capped at this machine's clock, an event read while the worker runs behind the
    stream (catching up after a restart) took a time later than the events sent after
    it, which all read as late for as long as the lag lasted (a review). The record's
    Kafka timestamp, its send time, caps it too."""
    step = EventStep(SessionPolicy(), clock_ms=lambda: T0 + 120_000)  # two minutes behind
    ahead = step(new_event("u1", "phone-item", ts=T0 + 3_600_000).to_json(), {}.get,
                 timestamp_s=T0 / 1000)
    assert isinstance(ahead, SessionUpdate) and ahead.session.times == (T0,)
    later = step(new_event("u1", "laptop-item", ts=T0 + 10_000).to_json(),
                 {"u1": ahead.state}.get, timestamp_s=(T0 + 10_000) / 1000)
    assert isinstance(later, SessionUpdate) and not later.late
    assert later.session.items == ("phone-item", "laptop-item")


def test_a_duplicate_event_id_leaves_state_untouched_and_counts_nothing() -> None:
    step = EventStep(SessionPolicy())
    raw = new_event("u1", "i1", ts=T0, event_id=EVENT_ID).to_json()
    update = step(raw, {}.get)
    assert isinstance(update, SessionUpdate)
    step.answered.add("u1", EVENT_ID)  # its list went out (the batch step records that)
    table = {"u1": update.state}
    before = orjson.dumps(table)
    assert step(raw, table.get) == Duplicate(EVENT_ID)  # nothing left to count
    assert orjson.dumps(table) == before


def test_a_redelivered_event_whose_list_never_went_out_is_answered_again() -> None:
    """Its state was applied (a rebalance dropped its micro-batch, or the process died
    before publishing): answered from the session as it stands. An event counts in
    popularity when its list is built, which it never was here: it counts now."""
    step = EventStep(SessionPolicy())
    raw = new_event("u1", "i1", ts=T0, event_id=EVENT_ID).to_json()
    first = step(raw, {}.get)
    assert isinstance(first, SessionUpdate)
    again = step(raw, {"u1": first.state}.get)
    assert isinstance(again, SessionUpdate) and again.event_id == EVENT_ID
    assert again.state == first.state and again.session.items == first.session.items
    # It added nothing to the session: an encoder cache holding it steps nothing more.
    assert first.session.added and not again.session.added
    assert first.counts_at_ms == again.counts_at_ms == T0
    assert again.redelivered and not first.redelivered


def test_answered_events_remember_the_newest_ids_only() -> None:
    answered = AnsweredEvents(capacity=2)
    for event_id in ("a", "b", "c"):
        answered.add("u1", event_id)
    assert not answered.has("u1", "a") and answered.has("u1", "b") and answered.has("u1", "c")
    assert not answered.has("u2", "c")  # the same id for another user is another event


@pytest.mark.parametrize("headers,expected", [
    ([("sent_us", b"1700000000000123")], 1_700_000_000_000_123),
    ({"other": b"x", "sent_us": b"42"}, 42),
    ([("other", b"x")], None),
    ([("sent_us", b"")], None),
    ([("sent_us", b"soon")], None),  # not an integer: the event is answered all the same
    ([("sent_us", b"\xff")], None),
    ([("sent_us", b"99999999999999999999")], None),  # past 64 bits: the list's JSON would fail
    ([("sent_us", b"-5")], None),
    (None, None),
])
def test_the_sent_us_header_is_parsed(headers: Any, expected: int | None) -> None:
    assert sent_us(headers) == expected
    # Without a usable header, the record's Kafka timestamp (s) times the event: events
    # of any producer are timed, and ordered by the API, with no header to send.
    assert sent_us(headers, 1_700_000_000.5) == (expected or 1_700_000_000_500_000)
    assert sent_us(headers, 0.0) == expected  # no timestamp (0 or none): as before
    raw = new_event("u1", "i1", ts=T0).to_json()
    outcome = EventStep(SessionPolicy())(raw, {}.get, headers)
    assert isinstance(outcome, SessionUpdate) and outcome.sent_us == expected
    timed = EventStep(SessionPolicy())(raw, {}.get, headers, timestamp_s=1_700_000_000.5)
    assert isinstance(timed, SessionUpdate)
    assert timed.sent_us == (expected or 1_700_000_000_500_000)


@pytest.mark.parametrize("headers, trace", [
    ([("traceparent", TRACEPARENT.encode()), ("tracestate", b"congo=x")],
     (("traceparent", TRACEPARENT.encode()), ("tracestate", b"congo=x"))),
    ({"traceparent": TRACEPARENT.encode(), "tracestate": b"Not Valid"},
     (("traceparent", TRACEPARENT.encode()),)),
    ([("traceparent", b"00-not-a-trace-01"), ("tracestate", b"congo=x")], ()),
    ([("traceparent", b"\xff")], ()),
    ([("sent_us", b"1")], ()),
])
def test_an_events_valid_trace_headers_reach_its_update(headers: Any, trace: tuple) -> None:
    raw = new_event("u1", "i1", ts=T0).to_json()
    outcome = EventStep(SessionPolicy())(raw, {}.get, headers)
    assert isinstance(outcome, SessionUpdate) and outcome.trace == trace


def test_context_keys_left_out_are_named_and_the_event_still_answered() -> None:
    spec = FeatureSpec(categorical=("device",), numeric=("price",))
    step = EventStep(SessionPolicy(features=spec))
    raw = new_event("u1", "i1", ts=T0, event_id=EVENT_ID,
                    context={"price": "free", "device": "ios", "coupon": "x"}).to_json()
    outcome = step(raw, {}.get)
    assert isinstance(outcome, SessionUpdate)
    assert sorted(outcome.ignored) == ["undeclared", "wrong_type"]
    assert outcome.session.context == {"device": "ios"}
    assert SessionState.from_dict(outcome.state).context == {"device": "ios"}
    step.answered.add("u1", EVENT_ID)
    assert step(raw, {"u1": outcome.state}.get) == Duplicate(EVENT_ID)  # not counted again


# --- per batch -------------------------------------------------------------------------

class FakeBundle:
    """Answers from a fixed {user: Recommendation | None}; remembers what it was asked."""

    def __init__(self, version: str, answers: dict[str, Recommendation | None]) -> None:
        self.version, self.answers = version, answers
        self.users = SimpleNamespace(ids=sorted(answers))
        self.items = SimpleNamespace(ids=["i1"])
        self.calls: list[dict[str, Any]] = []
        self.adopted_from: FakeBundle | None = None

    def adopt_caches(self, other: FakeBundle) -> int:
        self.adopted_from = other
        return 0

    def recommend(self, users: Sequence[str], sessions: Sequence[LiveSession], k: int = 10,
                  exclude_seen: bool | None = True, timings: dict[str, float] | None = None
                  ) -> list[Recommendation | None]:
        self.calls.append({"users": list(users), "sessions": [list(s.items) for s in sessions],
                           "k": k, "exclude_seen": exclude_seen})
        if timings is not None:
            timings["retrieve"] = 0.002
        return [self.answers.get(u) for u in users]


class FakeProducer:
    def __init__(self) -> None:
        self.sent: list[tuple[str, bytes | None, bytes]] = []
        self.headers: list[list[tuple[str, bytes]] | None] = []  # per record sent

    def produce(self, topic: str, key: bytes | None, value: bytes,
                headers: list[tuple[str, bytes]] | None = None) -> None:
        self.sent.append((topic, key, value))
        self.headers.append(headers)


class FakeStore:
    def __init__(self, error: Exception | None = None, *popular: bytes) -> None:
        self.error = error
        self.writes: list[tuple[list[tuple[str, bytes]], bytes | None]] = []
        self.held: list[list[str]] = []  # per write, the users whose lists were held back
        self.popular, self.popular_reads = list(popular), 0  # stored records, newest first

    async def read_popular(self) -> list[bytes]:
        self.popular_reads += 1
        if self.error is not None:
            raise self.error
        return self.popular

    async def write(self, lists: list[tuple[str, bytes]], popular: bytes | None = None,
                    held: list[tuple[str, bytes]] | None = None) -> None:
        """Records the held lists first, then the batch's: the order Redis gets them."""
        if self.error is not None:
            raise self.error
        self.writes.append(((held or []) + lists, popular))
        self.held.append([user for user, _ in held or []])


class SlowStore(FakeStore):
    """A Redis that takes ``delay_s`` over each write (then fails with ``error``)."""

    def __init__(self, delay_s: float, error: Exception | None = None) -> None:
        super().__init__(error)
        self.delay_s = delay_s

    async def write(self, lists: list[tuple[str, bytes]], popular: bytes | None = None,
                    held: list[tuple[str, bytes]] | None = None) -> None:
        await asyncio.sleep(self.delay_s)
        await super().write(lists, popular, held)


class Clock:
    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def update(user: str, items: tuple[str, ...], event_id: str | None = None,
           sent: int | None = 1_700_000_000_000_000) -> SessionUpdate:
    """An update for a new event each call (unless ``event_id`` says otherwise): the batch
    step drops a repeat of an event it answered."""
    return SessionUpdate(user, LiveSession(items), event_id or str(uuid.uuid4()), items[-1],
                         "view", sent, {})


def make_step(store: FakeStore | None = None, exclude_seen: bool | None = True,
              clock: Clock | None = None) -> tuple[BatchStep, FakeProducer, WorkerMetrics]:
    popularity = DecayedPopularity()
    for item, count in (("a", 3), ("b", 2), ("c", 1)):
        for _ in range(count):
            popularity.add(item, T0)
    producer, metrics = FakeProducer(), WorkerMetrics()
    step = BatchStep("recs", 3, exclude_seen, popularity, producer, store or FakeStore(),
                     metrics, clock=clock or Clock(100.0))
    return step, producer, metrics


def published(metrics: WorkerMetrics, path: str) -> float | None:
    return metrics.registry.get_sample_value("streamrec_worker_published_total",
                                             {"path": path})


def test_lists_carry_per_head_scores_and_the_session_items_behind_them() -> None:
    step, producer, _ = make_step()
    bundle = FakeBundle("r:v3", {"u1": Recommendation(
        ["x", "y"], [1.5, 0.5], {"next": [1.0, 0.25], "conversion": [np.float32(0.3333333), 0.0]},
        [("q", np.float32(0.61234567)), ("a", 0.3)], ["model", "content"])})
    (lst,) = asyncio.run(step.publish([update("u1", ("a", "q"))], bundle))
    record = orjson.loads(producer.sent[0][2])
    assert record["items"][0] == {"item_id": "x", "score": 1.5,
                                  "heads": {"next": 1.0, "conversion": 0.333333}, "path": "model"}
    assert record["items"][1]["path"] == "content"  # known by its catalogue content alone
    assert record["because"] == [{"item_id": "q", "weight": 0.6123},
                                 {"item_id": "a", "weight": 0.3}]
    assert RecommendationList.from_json(producer.sent[0][2]) == lst


def test_a_repeat_is_answered_once_though_both_copies_reach_the_batch_step() -> None:
    """A re-sent event sessionized before its original's list went out passes the event
    step's duplicate check (issue #16): the batch step answers only the first copy, in the
    same micro-batch or a later one, and counts the others as duplicates."""
    step, producer, metrics = make_step()
    bundle = FakeBundle("r:v2", {})
    first = asyncio.run(step.publish([update("u1", ("a",), EVENT_ID), update("u2", ("b",)),
                                      update("u1", ("a",), EVENT_ID)], bundle))
    later = asyncio.run(step.publish([update("u1", ("a",), EVENT_ID)], bundle))
    assert [lst.user_id for lst in first] == ["u1", "u2"] and later == []
    assert len(producer.sent) == 2 and metrics.duplicates._value.get() == 2


def test_a_batch_counts_its_events_in_popularity_only_once_its_lists_are_built() -> None:
    """A list answers its own event, so the events after it in the same micro-batch must
    not reach it. Counted first, on a backlog of bursts they put the items users were about
    to take into popularity's lists (issue #15). Each answered event counts once, at its
    ``counts_at_ms``; a copy dropped as a repeat does not count."""
    step, _, _ = make_step()  # popularity a 3, b 2, c 1, all at T0
    bundle = FakeBundle("r:v1", {})  # the model serves nobody: popularity answers all
    z1, z2 = (replace(update(f"u{i}", ("q", "z")), counts_at_ms=T0) for i in range(2))
    old = [replace(update(f"o{i}", ("q", "w")), counts_at_ms=T0 - 24 * 3_600_000)
           for i in range(5)]  # 24 half-lives ago: 5 * 2^-24
    uncounted = [update(f"n{i}", ("q", "y")) for i in range(5)]  # counts_at_ms None
    batch = [update("first", ("q",)), z1, z2, z1, *old, *uncounted]  # z1 twice: a repeat
    lists = asyncio.run(step.publish(batch, bundle))
    assert [i.item_id for i in lists[0].items] == ["a", "b", "c"]  # z is in later events
    (after,) = asyncio.run(step.publish([update("next", ("q",))], bundle))
    # z counted twice ties b, the greater id first. Counted three times (the repeat too)
    # it would lead, and so would w counted as of now, or y counted at all.
    assert [i.item_id for i in after.items] == ["a", "z", "b"]


def test_an_event_id_a_client_reused_for_another_user_is_answered_for_both() -> None:
    """Sessions dedupe per user, so the second user's event is new there; the batch step
    answered events by id alone and dropped its list as a repeat, leaving it unanswered."""
    step, producer, metrics = make_step()
    bundle = FakeBundle("r:v2", {})
    same_batch = asyncio.run(step.publish([update("u1", ("a",), EVENT_ID),
                                           update("u2", ("b",), EVENT_ID)], bundle))
    later = asyncio.run(step.publish([update("u3", ("c",), EVENT_ID)], bundle))
    assert [lst.user_id for lst in same_batch + later] == ["u1", "u2", "u3"]
    assert len(producer.sent) == 3 and metrics.duplicates._value.get() == 0


def test_model_lists_carry_the_bundles_items_with_rounded_scores() -> None:
    step, producer, metrics = make_step()
    bundle = FakeBundle("r:v2", {"u1": Recommendation(
        ["x", "y", "z"], [np.float32(0.1234567891), 2.0, -1.0])})
    lists = asyncio.run(step.publish([update("u1", ("a", "q"), EVENT_ID)], bundle))
    assert bundle.calls == [{"users": ["u1"], "sessions": [["a", "q"]], "k": 3,
                             "exclude_seen": True}]
    ((topic, key, value),) = producer.sent
    assert (topic, key) == ("recs", b"u1") and value == lists[0].to_json()
    record = orjson.loads(value)
    assert list(record) == ["user_id", "path", "model_version", "items", "event_id",
                            "event_item_id", "sent_us", "published_us", "because",
                            "experiment"]
    assert {k: v for k, v in record.items() if k != "published_us"} == {
        "user_id": "u1", "path": "model", "model_version": "r:v2",
        "items": [{"item_id": "x", "score": 0.123457, "heads": None, "path": None},
                  {"item_id": "y", "score": 2.0, "heads": None, "path": None},
                  {"item_id": "z", "score": -1.0, "heads": None, "path": None}],
        "event_id": EVENT_ID, "event_item_id": "q", "sent_us": 1_700_000_000_000_000,
        "because": None, "experiment": None}
    assert record["published_us"] >= record["sent_us"]
    assert (published(metrics, "model"), published(metrics, "popularity")) == (1.0, 0.0)
    assert metrics.registry.get_sample_value("streamrec_worker_stage_seconds_count",
                                             {"stage": "retrieve"}) == 1.0
    sent_to_published = (record["published_us"] - record["sent_us"]) / 1e6
    assert metrics.registry.get_sample_value(
        "streamrec_worker_send_to_publish_seconds_sum") == pytest.approx(sent_to_published)


def test_a_model_list_shorter_than_asked_is_filled_up_with_popularity() -> None:
    """A user who met nearly every item the model knows got a list shorter than the
    ``top_n`` asked for: the empty slots now take recent popularity, without the
    session's items or the model's own, each marked as popularity's."""
    step, producer, metrics = make_step()
    bundle = FakeBundle("r:v2", {"u1": Recommendation(["x"], [0.5], paths=["model"]),
                                 "u2": Recommendation(["x", "y", "b"], [3.0, 2.0, 1.0])})
    short, full = asyncio.run(step.publish([update("u1", ("a", "q")), update("u2", ("a",))],
                                           bundle))
    assert [(i.item_id, i.path) for i in short.items] == [
        ("x", "model"), ("b", "popularity"), ("c", "popularity")]
    assert short.path == "model" and [i.item_id for i in full.items] == ["x", "y", "b"]
    assert metrics.topped_up._value.get() == 1
    schema_validator("recommendation-list-v1.json").validate(orjson.loads(producer.sent[0][2]))
    interleaved = ExperimentTag("e", "interleaved", teams=["a"])  # each item names its team
    kept = step.build(update("u1", ("a",)), Recommendation(["x"], [0.5]), "r:v2", 0, interleaved)
    assert [i.item_id for i in kept.items] == ["x"]


@pytest.mark.parametrize("exclude_seen,expected", [(True, ["b", "c"]),
                                                    (False, ["a", "b", "c"]),
                                                    (None, ["b", "c"])])
def test_users_the_model_cannot_serve_get_popularity(exclude_seen: bool | None,
                                                     expected: list[str]) -> None:
    """None (``auto``) reaches the bundle, whose model chose; popularity leaves the
    session's items out unless told false."""
    step, producer, metrics = make_step(exclude_seen=exclude_seen)
    bundle = FakeBundle("r:v2", {"u1": None})
    (record,) = asyncio.run(step.publish([update("u1", ("a",), sent=None)], bundle))
    assert bundle.calls[0]["exclude_seen"] is exclude_seen
    assert record.path == "popularity" and record.model_version == "r:v2"
    assert [i.item_id for i in record.items] == expected
    assert record.items[0].score == round(record.items[0].score, 6) > 0
    assert orjson.loads(producer.sent[0][2])["sent_us"] is None
    assert published(metrics, "popularity") == 1.0
    # no send time, no end-to-end latency
    assert metrics.registry.get_sample_value(
        "streamrec_worker_send_to_publish_seconds_count") == 0.0


@pytest.mark.parametrize("rec", [
    Recommendation(["x", "y"], [float("nan"), 1.0]),
    Recommendation(["x"], [np.float32(np.inf)]),
    Recommendation(["x"], [1.0], {"conversion": [float("nan")]}),
])
def test_a_model_list_with_a_non_finite_score_is_never_published(rec: Recommendation) -> None:
    """A model that scores NaN (a bad promotion, an overflow) must not reach users: the
    event is answered from popularity and the refusal counted."""
    step, producer, metrics = make_step()
    (record,) = asyncio.run(step.publish([update("u1", ("a",))], FakeBundle("r:v9", {"u1": rec})))
    assert record.path == "popularity" and [i.item_id for i in record.items] == ["b", "c"]
    assert b"NaN" not in producer.sent[0][2] and b"Infinity" not in producer.sent[0][2]
    assert metrics.registry.get_sample_value("streamrec_worker_nonfinite_lists_total") == 1.0


def _champion_against_itself() -> tuple[Any, FakeBundle]:
    """An A/B experiment whose two variants are the champion, and a bundle answering u1."""
    from streams.experiment import Experiment, Variant
    from streams.experiments import LiveExperiment

    experiment = LiveExperiment(Experiment(name="exp", salt="s", started_us=1, variants=[
        Variant(name="control", model="champion", share=0.5),
        Variant(name="treatment", model="champion", share=0.5)]))
    return experiment, FakeBundle("r:v1", {"u1": Recommendation(["x", "y"], [2.0, 1.0])})


def test_an_experiment_reads_each_events_own_type_and_a_late_event_judges_no_list() -> None:
    """The experiment read an event's type off its session's newest item: since a late
    event is placed by time, that is another event's type. A late purchase was read as
    a view, and a late event judged a list shown after it happened."""
    step, _, _ = make_step()
    experiment, bundle = _champion_against_itself()
    asyncio.run(step.publish([update("u1", ("a",))], bundle, experiment))
    late = replace(update("u1", ("y", "a")), item_id="y", event_type="purchase", late=True)
    asyncio.run(step.publish([late], bundle, experiment))
    tally = experiment.tallies.variants[experiment.variant_of("u1").name]  # type: ignore[union-attr]
    assert tally.lists == 0  # the late "y" judged neither list
    for item, kind in (("x", "purchase"), ("q", "view"), ("q", "view"), ("q", "view"),
                       ("q", "view")):
        asyncio.run(step.publish([replace(update("u1", ("a", item)), event_type=kind)],
                                 bundle, experiment))
    row = tally.per_user["u1"]  # per metric: sum, count
    assert row[:2] == [1.0, 5.0]  # five next events judged, "x" a hit; the late one none
    assert row[-2:] == [2.0, 2.0]  # both lists before the purchase of "x" converted


def test_an_event_answered_again_after_a_rebalance_is_not_judged_again() -> None:
    """The partition's old owner judged it and flushed its tally, which ``status`` adds to
    the new owner's; and its new list comes from a session that already holds the user's
    next items, so each judgement of it was a forced miss (a review)."""
    step, _, _ = make_step()
    experiment, bundle = _champion_against_itself()
    asyncio.run(step.publish([update("u1", ("a",))], bundle, experiment))
    again = replace(update("u1", ("a", "x")), item_id="a", redelivered=True)
    asyncio.run(step.publish([again], bundle, experiment))
    tally = experiment.tallies.variants[experiment.variant_of("u1").name]  # type: ignore[union-attr]
    assert tally.lists == 0 and len(experiment.pending["u1"]) == 1  # the first list only
    asyncio.run(step.publish([replace(update("u1", ("a", "x")), item_id="x")], bundle,
                             experiment))
    assert tally.lists == 1 and tally.per_user["u1"][:2] == [1.0, 1.0]  # "x": a hit


class BrokenBundle(FakeBundle):
    def recommend(self, *args: Any, **kwargs: Any) -> list[Recommendation | None]:
        raise RuntimeError("index corrupted")


def test_a_model_that_fails_on_a_batch_leaves_it_to_popularity_not_lost(
        caplog: pytest.LogCaptureFixture) -> None:
    """An exception in the model's batch call would end the agent and lose the batch:
    every event of it is answered by popularity instead, and the failure counted."""
    step, producer, metrics = make_step()
    lists = asyncio.run(step.publish([update("u1", ("a",)), update("u2", ("b",))],
                                     BrokenBundle("r:v5", {})))
    assert [r.path for r in lists] == ["popularity", "popularity"] and len(producer.sent) == 2
    assert metrics.registry.get_sample_value("streamrec_worker_model_failures_total") == 1.0
    assert "index corrupted" in caplog.text
    # Asked for an experiment's variant, the failure is told apart from "cannot serve yet".
    nan = FakeBundle("r:v6", {"u1": Recommendation(["x"], [float("nan")]), "u2": None})
    failed = Recommendation([], [])
    batch = [update("u1", ("a",)), update("u2", ("b",))]
    broken = step.recommend(batch, BrokenBundle("r:v5", {}), failed)
    assert len(broken) == 2 and all(rec is failed for rec in broken)
    first, second = step.recommend(batch, nan, failed)
    assert first is failed and second is None


def test_a_model_answering_fewer_users_than_asked_leaves_the_batch_to_popularity() -> None:
    class ShortBundle(FakeBundle):
        def recommend(self, *args: Any, **kwargs: Any) -> list[Recommendation | None]:
            return super().recommend(*args, **kwargs)[:1]

    step, producer, metrics = make_step()
    bundle = ShortBundle("r:v5", {u: Recommendation(["x"], [1.0]) for u in ("u1", "u2")})
    lists = asyncio.run(step.publish([update("u1", ("a",)), update("u2", ("b",))], bundle))
    assert [r.path for r in lists] == ["popularity", "popularity"] and len(producer.sent) == 2
    assert metrics.registry.get_sample_value("streamrec_worker_model_failures_total") == 1.0


@pytest.mark.parametrize("fails", [False, True])
def test_a_batch_that_cannot_be_published_ends_the_worker_before_a_commit(fails: bool) -> None:
    """Faust acknowledged the batch's events already: carrying on would commit them with
    no list. The worker leaves instead (``exit_unanswered``), and they are redelivered."""
    from confluent_kafka import KafkaError, KafkaException

    from streams.worker import publish_or_exit

    class Refusing(FakeProducer):
        def produce(self, *args: Any, **kwargs: Any) -> None:
            raise KafkaException(KafkaError(KafkaError.MSG_SIZE_TOO_LARGE))

    step, _, _ = make_step()
    if fails:
        step.producer = Refusing()
    exits: list[BaseException] = []
    asyncio.run(publish_or_exit(step, [update("u1", ("a",))], FakeBundle("r:v1", {}), None,
                                on_failure=exits.append))
    assert [type(e) for e in exits] == ([KafkaException] if fails else [])


def test_an_unanswered_batch_exits_with_its_own_code_and_says_why() -> None:
    import subprocess
    import sys

    from streams.worker import EXIT_UNANSWERED

    code = ("from streams.worker import exit_unanswered\n"
            "exit_unanswered(ValueError('list too large'))\n"
            "print('still running')")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=120, cwd=Path(__file__).parents[2])
    assert done.returncode == EXIT_UNANSWERED == 70
    assert "publishing a micro-batch failed" in done.stderr
    assert "ValueError: list too large" in done.stderr and "still running" not in done.stdout


def test_published_lists_follow_the_published_schema() -> None:
    step, producer, _ = make_step()
    bundle = FakeBundle("r:v2", {"u1": Recommendation(["x"], [np.float32(0.5)]), "u2": None})
    asyncio.run(step.publish([update("u1", ("a",)), update("u2", ("b",), sent=None)], bundle))
    check = schema_validator("recommendation-list-v1.json")
    records = [orjson.loads(value) for _, _, value in producer.sent]
    for record in records:
        check.validate(record)
    assert [r["path"] for r in records] == ["model", "popularity"]


def test_the_pass_through_list_still_serves_everyone() -> None:
    from streams.worker import FixedList

    step, _, _ = make_step()
    (record,) = asyncio.run(step.publish([update("u1", ("a",))], FixedList(5)))
    assert record.path == "model" and record.model_version == "pass-through"
    assert [(i.item_id, i.score) for i in record.items] == [("fixed-0", 1.0), ("fixed-1", 1.0),
                                                            ("fixed-2", 1.0)]


def test_popularity_is_stored_at_most_once_per_interval() -> None:
    store, clock = FakeStore(), Clock(100.0)
    step, _, _ = make_step(store=store, clock=clock)
    bundle = FakeBundle("r:v2", {"u1": None})
    for now in (100.0, 100.5, 100.99, 101.0):
        clock.now = now
        asyncio.run(step.publish([update("u1", ("a",))], bundle))
    populars = [popular for _, popular in store.writes]
    assert [p is not None for p in populars] == [True, False, False, True]
    first = populars[0]
    assert first is not None
    schema_validator("popular-list-v1.json").validate(orjson.loads(first))
    record = orjson.loads(first)
    assert list(record) == ["model_version", "computed_us", "items", "newest_ms"]
    assert record["model_version"] == "r:v2" and record["computed_us"] > 0
    assert record["newest_ms"] == T0  # the newest event counted (make_step's)
    assert [i.item_id for i in PopularList.from_json(first).items] == ["a", "b", "c"]


def test_a_popularity_record_made_while_redis_was_busy_goes_with_the_next_write() -> None:
    """Made while a slow write ran (or the breaker was open), the record was dropped and
    the next was not due for a second: with writes over 50 ms the API's popularity froze
    (a review: 25 writes in 5 s, 1 record stored)."""
    store, clock = SlowStore(0.2), Clock(100.0)
    step, _, _ = make_step(store=store, clock=clock)
    bundle = FakeBundle("r:v2", {"u1": None})

    async def batches() -> None:
        await step.publish([update("u1", ("a",), "e1")], bundle)  # a write of 0.2 s
        clock.now = 101.0  # a record is due, made while that write runs
        await step.publish([update("u1", ("a",), "e2")], bundle)
        await step._write  # type: ignore[misc]
        clock.now = 101.2  # the next batch's write carries it
        await step.publish([update("u1", ("a",), "e3")], bundle)
        await step._write  # type: ignore[misc]

    asyncio.run(batches())
    populars = [p for _, p in store.writes]
    assert len(populars) == 2 and all(p is not None for p in populars)
    assert orjson.loads(populars[1])["computed_us"] > orjson.loads(populars[0])["computed_us"]


def test_the_batch_reaches_redis_as_it_reaches_the_topic() -> None:
    store = FakeStore()
    step, producer, _ = make_step(store=store)
    bundle = FakeBundle("r:v2", {"u1": Recommendation(["x"], [1.0]), "u2": None})
    asyncio.run(step.publish([update("u1", ("a",)), update("u2", ("b",))], bundle))
    ((lists, _),) = store.writes
    assert lists == [(key.decode(), value) for _, key, value in producer.sent if key]


def test_a_list_carries_its_events_trace_context_and_only_it() -> None:
    step, producer, _ = make_step()
    traced = replace(update("u1", ("i1",)), trace=(("traceparent", TRACEPARENT.encode()),
                                                  ("tracestate", b"congo=x")))
    asyncio.run(step.publish([traced, update("u2", ("i2",))], FakeBundle("v1", {})))
    # No tracer configured (or no OpenTelemetry): the headers go on as the event had them.
    assert producer.headers == [[("traceparent", TRACEPARENT.encode()),
                                 ("tracestate", b"congo=x")], None]


def test_redis_down_is_counted_and_logged_not_raised(caplog: pytest.LogCaptureFixture) -> None:
    step, producer, metrics = make_step(store=FakeStore(ConnectionError("refused")))
    bundle = FakeBundle("r:v2", {"u1": Recommendation(["x"], [1.0])})
    with caplog.at_level(logging.WARNING, logger="streams.steps"):
        lists = asyncio.run(step.publish([update("u1", ("a",))], bundle))
    assert len(lists) == 1 and len(producer.sent) == 1  # the topic still gets the list
    assert metrics.registry.get_sample_value("streamrec_worker_redis_errors_total") == 1.0
    assert "writing 1 lists to Redis failed: refused" in caplog.text


def test_after_a_redis_failure_batches_skip_redis_for_a_while_not_wait_on_it() -> None:
    """A circuit breaker: a Redis that drops packets costs each write its timeout, which
    throttled a worker to about 256 events/s. After a failure the next batches skip Redis
    (counted) until the backoff passes; lists still reach the topic."""
    clock, store = Clock(100.0), FakeStore(TimeoutError("timed out"))
    step, producer, metrics = make_step(store=store, clock=clock)
    calls = []
    real_write = store.write

    async def counted(lists: list, popular: bytes | None = None, held: list | None = None
                      ) -> None:
        calls.append(len(lists) + len(held or []))
        await real_write(lists, popular, held)

    store.write = counted  # type: ignore[method-assign]
    bundle = FakeBundle("r:v2", {"u1": Recommendation(["x"], [1.0])})
    for _ in range(3):
        asyncio.run(step.publish([update("u1", ("a",))], bundle))
    assert calls == [1] and len(producer.sent) == 3
    sample = metrics.registry.get_sample_value
    assert sample("streamrec_worker_redis_skipped_total") == 2.0
    clock.now += 1.0                          # the first backoff has passed: one try
    store.error = None
    asyncio.run(step.publish([update("u1", ("a",))], bundle))
    asyncio.run(step.publish([update("u1", ("a",))], bundle))  # closed again: every batch
    assert calls == [1, 1, 1] and sample("streamrec_worker_redis_errors_total") == 1.0


def test_a_slow_redis_write_goes_on_in_the_background_and_later_batches_do_not_wait() -> None:
    """A black-holed Redis makes a write wait out its timeout; awaited, that cut the topic
    path to 0.77 of its throughput (``make faults``). A batch waits ``REDIS_WAIT_S`` (0.05 s)
    at most; lists of batches published during the write go with the next one, newest per
    user."""
    store = SlowStore(0.3)
    step, producer, metrics = make_step(store=store)
    bundle = FakeBundle("r:v2", {u: Recommendation(["x"], [1.0]) for u in ("u1", "u2")})

    async def batches() -> list[int]:
        writes_done = []
        for user, event in (("u1", "e1"), ("u2", "e2"), ("u2", "e3")):
            await step.publish([update(user, ("a",), event)], bundle)
            writes_done.append(len(store.writes))
        await step.retry_unstored()  # the idle timer's tick: no batch deferred by it
        await asyncio.sleep(0.4)  # the first write lands
        await step.publish([update("u1", ("b",), "e4")], bundle)
        await asyncio.sleep(0.4)
        return writes_done

    assert asyncio.run(batches()) == [0, 0, 0]  # no batch waited for the 0.3 s write
    assert len(producer.sent) == 4
    written = [{user: orjson.loads(p)["event_id"] for user, p in lists}
               for lists, _ in store.writes]
    assert written == [{"u1": "e1"}, {"u2": "e3", "u1": "e4"}]
    assert metrics.registry.get_sample_value("streamrec_worker_redis_deferred_total") == 2.0


def test_a_stopping_worker_writes_the_lists_that_waited_for_a_slow_write(
        caplog: pytest.LogCaptureFixture) -> None:
    """Lists kept while a slow write ran went with the next batch's write; a worker that
    stopped first never wrote them, though their events' offsets commit as it stops: the
    user's older list stayed in Redis until their next event."""
    store = SlowStore(0.2)
    step, _, _ = make_step(store=store)
    bundle = FakeBundle("r:v2", {u: Recommendation(["x"], [1.0]) for u in ("u1", "u2")})

    async def stop_after_two_batches() -> None:
        await step.publish([update("u1", ("a",), "e1")], bundle)  # its write takes 0.2 s
        await step.publish([update("u2", ("a",), "e2")], bundle)  # kept meanwhile
        assert store.writes == []
        await step.finish()

    asyncio.run(stop_after_two_batches())
    assert [{user: orjson.loads(p)["event_id"] for user, p in lists}
            for lists, _ in store.writes] == [{"u1": "e1"}, {"u2": "e2"}]
    assert store.held == [[], ["u2"]]  # stored only over an older list, as every kept one
    assert "stopping with lists Redis has not taken" not in caplog.text

    # More kept than one write carries (4 MB): the stop writes them all, write by write
    many, _, _ = make_step(store=(plenty := FakeStore()))
    many.unstored.keep([(f"u{i}", bytes(2**20)) for i in range(12)])
    asyncio.run(many.finish())
    assert len(many.unstored) == 0 and sum(len(w) for w, _ in plenty.writes) == 12

    failing, _, _ = make_step(store=FakeStore(ConnectionError("refused")))
    asyncio.run(failing.publish([update("u1", ("a",), "e1")], bundle))  # fails: kept
    with caplog.at_level(logging.WARNING):
        asyncio.run(failing.finish())
    assert "stopping with lists Redis has not taken" in caplog.text


def test_a_slow_write_that_fails_never_puts_back_lists_older_than_those_kept_meanwhile(
) -> None:
    """u1's list from e1 is in the slow write; e2 (kept meanwhile) is newer. The write
    fails: the next one must carry e2, not e1, or u1's feed goes back in time."""
    clock, store = Clock(100.0), SlowStore(0.2, ConnectionError("timed out"))
    step, _, _ = make_step(store=store, clock=clock)
    bundle = FakeBundle("r:v2", {u: Recommendation(["x"], [1.0]) for u in ("u1", "u2")})

    async def batches() -> None:
        await step.publish([update("u1", ("a",), "e1"), update("u2", ("a",), "e0")], bundle)
        await step.publish([update("u1", ("a", "b"), "e2")], bundle)  # deferred
        await asyncio.sleep(0.3)  # the first write fails

    async def retry() -> None:
        await step.retry_unstored()
        await asyncio.sleep(0.3)

    asyncio.run(batches())
    store.error, clock.now = None, clock.now + 1.0
    asyncio.run(retry())
    ((lists, _),) = store.writes
    assert {user: orjson.loads(p)["event_id"] for user, p in lists} == {"u1": "e2", "u2": "e0"}


def test_a_list_that_missed_redis_goes_with_the_next_write_that_reaches_it() -> None:
    """After a Redis restart a new user's list, skipped while the breaker was open, never
    reached Redis: that user had no later event to write it again."""
    clock, store = Clock(100.0), FakeStore(ConnectionError("refused"))
    step, _, _ = make_step(store=store, clock=clock)
    bundle = FakeBundle("r:v2", {u: Recommendation(["x"], [1.0]) for u in ("u1", "u2", "u3")})
    asyncio.run(step.publish([update("u1", ("a",), "e1")], bundle))  # fails
    asyncio.run(step.publish([update("u2", ("a",), "e2")], bundle))  # skipped
    store.error, clock.now = None, clock.now + 1.0                   # Redis is back
    asyncio.run(step.publish([update("u2", ("a", "b"), "e3"), update("u3", ("c",), "e4")],
                             bundle))
    ((lists, _),) = store.writes
    events = {user: orjson.loads(payload)["event_id"] for user, payload in lists}
    assert events == {"u1": "e1", "u2": "e3", "u3": "e4"}  # u2: its newest list only
    assert len(lists) == 3
    assert store.held == [["u1"]]  # stored only over an older event's list (RecsWriter)
    asyncio.run(step.publish([update("u3", ("c", "d"), "e5")], bundle))
    assert [user for user, _ in store.writes[-1][0]] == ["u3"]  # written once, then forgotten


def test_a_worker_that_has_counted_nothing_stores_no_popularity_record() -> None:
    """A fresh worker's popularity knows nothing until its first batch is counted: its
    empty record replaced the API's popularity with nothing. Its empty lists go out as
    their events' answers (stored only where a user has none: ``RecsWriter``)."""
    store = FakeStore()
    step, producer, _ = make_step(store=store)
    step.popularity = DecayedPopularity()  # a fresh worker's
    bundle = FakeBundle("r:v2", {"u1": Recommendation(["x"], [1.0])})
    asyncio.run(step.publish([update("u1", ("a",), "e1"), update("u2", ("b",), "e2")], bundle))
    assert [orjson.loads(p)["items"] == [] for _, _, p in producer.sent] == [False, True]
    ((lists, popular),) = store.writes
    assert [user for user, _ in lists] == ["u1", "u2"] and popular is None
    asyncio.run(step.publish([replace(update("u2", ("b", "c"), "e3"), counts_at_ms=T0)],
                             bundle))  # counted after its own list was built
    assert store.writes[-1][1] is not None  # "c" counted: a record to store


def test_a_fresh_worker_starts_its_popularity_from_the_stored_record_faded_by_event_time(
        ) -> None:
    """Starting from nothing, a restarted worker answered every user popularity served in
    its first micro-batch (a backlog: up to a batch of them) with an empty list, and a new
    user kept it in Redis, served by the API, until their next event."""
    now_us = time.time_ns() // 1000
    record = PopularList("r:v1", now_us, [ScoredItem("p", 40.0), ScoredItem("q", 20.0),
                                          ScoredItem("bad", float("nan"))], newest_ms=T0)
    store = FakeStore(None, record.to_json())
    step, producer, _ = make_step(store=store)
    step.popularity = DecayedPopularity()  # a fresh worker's
    bundle = FakeBundle("r:v2", {})
    first = replace(update("new", ("x",), "e1"), counts_at_ms=T0)
    asyncio.run(step.publish([first], bundle))
    answer = orjson.loads(producer.sent[0][2])
    assert answer["path"] == "popularity" and [i["item_id"] for i in answer["items"]] == ["p", "q"]
    assert answer["items"][0]["score"] == pytest.approx(40.0, rel=1e-3)  # counted at T0: whole
    asyncio.run(step.publish([update("new", ("x", "y"), "e2")], bundle))
    assert store.popular_reads == 1  # once per worker

    def first_list(*stored: PopularList) -> list[dict]:
        step, producer, _ = make_step(store=FakeStore(None, *(r.to_json() for r in stored)))
        step.popularity = DecayedPopularity()
        asyncio.run(step.publish([replace(update("new", ("x",)), counts_at_ms=T0)], bundle))
        return orjson.loads(producer.sent[0][2])["items"]

    hour = 3_600_000  # the half-life, in ms
    # faded by event time (a replay's is years from the wall clock's): an eighth
    assert first_list(replace(record, newest_ms=T0 - 3 * hour))[0]["score"] == pytest.approx(
        5.0, rel=1e-3)
    assert first_list(replace(record, newest_ms=None)) == []  # when it counted: not known
    assert first_list(replace(record, newest_ms=T0))[0]["score"] == pytest.approx(40.0)
    # it counted events after this batch's first: a crash's redelivered events (which may
    # be what these users did next), or another log's future
    assert first_list(replace(record, newest_ms=T0 + 1)) == []
    # after a crash: the newest records counted the redelivered events, an older one did not
    older = PopularList("r:v1", now_us, [ScoredItem("o", 8.0)], newest_ms=T0 - hour)
    assert [i["item_id"] for i in first_list(replace(record, newest_ms=T0 + 2),
                                             replace(record, newest_ms=T0 + 1), older,
                                             replace(record, newest_ms=T0 - 2 * hour))
            ] == ["o"]
    assert first_list(replace(record, newest_ms=T0 + 1), replace(older, newest_ms=None)) == []
    step, producer, _ = make_step(store=FakeStore(None, b"{not json", older.to_json()))
    step.popularity = DecayedPopularity()  # an unreadable record is passed over
    asyncio.run(step.publish([replace(update("new", ("x",)), counts_at_ms=T0)], bundle))
    assert [i["item_id"] for i in orjson.loads(producer.sent[0][2])["items"]] == ["o"]


@pytest.mark.parametrize("store", [FakeStore(ConnectionError("refused")), FakeStore(),
                                   FakeStore(None, b"{not json")])
def test_a_fresh_worker_without_a_readable_record_starts_empty_and_answers(
        store: FakeStore) -> None:
    step, producer, _ = make_step(store=store)
    step.popularity = DecayedPopularity()
    asyncio.run(step.publish([update("new", ("x",), "e1")], FakeBundle("r:v2", {})))
    assert len(producer.sent) == 1 and orjson.loads(producer.sent[0][2])["items"] == []


def test_a_worker_that_has_counted_already_is_not_seeded() -> None:
    store = FakeStore(None, PopularList("r:v1", 0, [ScoredItem("p", 1e6)]).to_json())
    step, producer, _ = make_step(store=store)  # has counted a, b, c
    asyncio.run(step.publish([update("new", ("x",), "e1")], FakeBundle("r:v2", {})))
    assert [i["item_id"] for i in orjson.loads(producer.sent[0][2])["items"]] == ["a", "b", "c"]


def test_an_idle_worker_writes_the_lists_that_missed_redis_once_it_may() -> None:
    clock, store = Clock(100.0), FakeStore(ConnectionError("refused"))
    step, _, _ = make_step(store=store, clock=clock)
    bundle = FakeBundle("r:v2", {"u1": Recommendation(["x"], [1.0])})
    asyncio.run(step.publish([update("u1", ("a",), "e1")], bundle))  # fails: no more events
    store.error = None
    asyncio.run(step.retry_unstored())  # the breaker is still open: nothing tried
    assert store.writes == []
    clock.now += 1.0
    asyncio.run(step.retry_unstored())
    asyncio.run(step.retry_unstored())  # nothing left: no empty write
    assert [[user for user, _ in lists] for lists, _ in store.writes] == [["u1"]]


def test_lists_kept_for_redis_are_bounded_oldest_dropped_first() -> None:
    from streams.steps import UnstoredLists

    kept = UnstoredLists(capacity=2)
    assert kept.keep([("u1", b"1"), ("u2", b"2")]) == 0
    assert kept.keep([("u1", b"1 newer"), ("u3", b"3")]) == 1  # u2 is now the oldest
    assert kept.take(newer=["u3"]) == [("u1", b"1 newer")]
    assert kept.take(newer=[]) == []


def test_lists_kept_for_redis_go_back_a_bounded_share_per_write_oldest_first() -> None:
    """After an outage every kept list went in the next write: one pipeline and one
    PUBLISH of up to 20,000 lists (hundreds of MB with long lists) that missed the
    client's 1 s timeout every time, so the worker never reached Redis again (a review)."""
    from streams.steps import HELD_BYTES_MOST, UnstoredLists

    kept = UnstoredLists()
    kept.keep([(f"u{i}", bytes(1000)) for i in range(10)])
    first = kept.take(newer=["u0"], most_bytes=3000)  # u0's newer list goes in the write
    assert [user for user, _ in first] == ["u1", "u2", "u3"] and len(kept) == 6
    assert [user for user, _ in kept.take(newer=[], most_bytes=500)] == ["u4"]  # one at least
    assert len(kept.take(newer=[])) == 5 and len(kept) == 0
    kept.keep([(f"u{i}", bytes(1024)) for i in range(5000)])  # 5 MB: the writes' own bound
    assert 0 < sum(len(p) for _, p in kept.take(newer=[])) <= HELD_BYTES_MOST
    assert len(kept) > 0


def test_a_failed_writes_lists_come_back_as_the_oldest_and_never_over_newer_ones() -> None:
    from streams.steps import UnstoredLists

    kept = UnstoredLists(capacity=3)
    kept.keep([("u2", b"2 newest"), ("u3", b"3")])  # kept while the write ran
    failed = [("u1", b"1 old"), ("u2", b"2 old"), ("u1", b"1 newer"), ("u4", b"4")]
    assert kept.keep_older(failed) == 1  # u1 (now the oldest) dropped past 3
    assert kept.take(newer=[]) == [("u4", b"4"), ("u2", b"2 newest"), ("u3", b"3")]


def test_backoff_doubles_to_its_ceiling_and_clears_on_success() -> None:
    from streams.backoff import Backoff

    clock = Clock(0.0)
    backoff = Backoff(1.0, 3.0, clock)
    assert backoff.ready()
    for wait in (1.0, 2.0, 3.0, 3.0):
        backoff.failed()
        clock.now += wait - 0.01
        assert not backoff.ready()
        clock.now += 0.01
        assert backoff.ready()
    backoff.failed()
    backoff.succeeded()
    assert backoff.ready() and backoff.delay == 1.0
    with pytest.raises(ValueError, match="first_s"):
        Backoff(0.0, 1.0)


# --- model swap ------------------------------------------------------------------------

def announcement(versions: dict[str, str]) -> bytes:
    return ModelAnnouncement(CHAMPION, versions, "file:///registry").to_json()


def swaps(metrics: WorkerMetrics, outcome: str) -> float | None:
    return metrics.registry.get_sample_value("streamrec_worker_model_swaps_total",
                                             {"outcome": outcome})


def test_an_applied_swap_serves_the_new_bundle_and_updates_the_status_file(
        tmp_path: Path) -> None:
    path, metrics = tmp_path / "worker.json", WorkerMetrics()
    serving = Serving(FakeBundle("r:v1", {"u1": None}), metrics, path)
    assert read_status(path, WorkerStatus) == serving.status.current
    assert serving.status.current.model_version == "r:v1"
    fresh = FakeBundle("r:v2", {"u1": Recommendation(["i2"], [1.0])})
    asyncio.run(serving.apply(announcement({"r": "2"}), lambda: fresh, 10))
    assert serving.bundle is fresh
    status = read_status(path, WorkerStatus)
    assert status is not None and (status.model_version, status.swaps_applied,
                                   status.swaps_failed) == ("r:v2", 1, 0)
    assert swaps(metrics, "applied") == 1.0
    assert fresh.calls[0]["users"] == ["u1"]  # smoke-tested before the swap


def test_a_swap_that_keeps_the_retriever_carries_the_encoder_caches_over() -> None:
    answers = {"u1": Recommendation(["i2"], [1.0])}
    first = FakeBundle("r:v1+k:v1", answers)
    serving = Serving(first, WorkerMetrics())
    ranker_only = FakeBundle("r:v1+k:v2", answers)
    asyncio.run(serving.apply(announcement({"r": "1", "k": "2"}), lambda: ranker_only, 10))
    assert serving.bundle is ranker_only and ranker_only.adopted_from is first
    both = FakeBundle("r:v2+k:v3", answers)
    asyncio.run(serving.apply(announcement({"r": "2", "k": "3"}), lambda: both, 10))
    assert serving.bundle is both and both.adopted_from is None


def test_a_bundle_that_fails_to_load_or_answer_keeps_the_old_one(tmp_path: Path) -> None:
    path, metrics = tmp_path / "worker.json", WorkerMetrics()
    old = FakeBundle("r:v1", {"u1": None})
    serving = Serving(old, metrics, path)

    def broken() -> FakeBundle:
        raise OSError("registry unreachable")

    asyncio.run(serving.apply(announcement({"r": "2"}), broken, 10))
    mute = FakeBundle("r:v3", {"u1": None})  # loads, but answers nothing
    asyncio.run(serving.apply(announcement({"r": "3"}), lambda: mute, 10))
    status = read_status(path, WorkerStatus)
    assert status is not None
    assert status.last_error == "ValueError: smoke recommendation came back empty"
    nan = FakeBundle("r:v4", {"u1": Recommendation(["x"], [float("nan")])})  # answers NaN
    asyncio.run(serving.apply(announcement({"r": "4"}), lambda: nan, 10))
    assert serving.bundle is old
    status = read_status(path, WorkerStatus)
    assert status is not None and (status.model_version, status.swaps_applied,
                                   status.swaps_failed) == ("r:v1", 0, 3)
    assert status.last_error == "ValueError: smoke recommendation has NaN or infinite scores"
    assert swaps(metrics, "failed") == 3.0


class SeenBroken(FakeBundle):
    """Answers with the session's items left out, raises when they may be listed: the
    path a model that chose them serves under ``auto``."""

    def recommend(self, users: Sequence[str], sessions: Sequence[LiveSession], k: int = 10,
                  exclude_seen: bool | None = True, timings: dict[str, float] | None = None
                  ) -> list[Recommendation | None]:
        if exclude_seen is not True:
            raise IndexError("seen-before features out of range")
        return super().recommend(users, sessions, k, exclude_seen, timings)


def test_a_bundle_failing_only_with_seen_items_listed_keeps_the_old_one(tmp_path: Path
                                                                         ) -> None:
    old = FakeBundle("r:v1", {"u1": None})
    serving = Serving(old, WorkerMetrics(), tmp_path / "worker.json")
    fresh = SeenBroken("r:v2", {"u1": Recommendation(["x"], [1.0])})
    assert not asyncio.run(serving.apply(announcement({"r": "2"}), lambda: fresh, 10))
    assert serving.bundle is old


def test_an_experiment_variant_that_loads_but_cannot_answer_is_refused_like_a_swap() -> None:
    from streams.experiment_control import new_experiment
    from streams.experiment_follower import ExperimentSlot
    from streams.hot_swap import smoke_tested

    bundles = {"mute": FakeBundle("r:v3", {"u1": None}),
               "good": FakeBundle("r:v4", {"u1": Recommendation(["i2"], [1.0])})}
    slot = ExperimentSlot(smoke_tested(bundles.__getitem__, 10), WorkerMetrics())
    slot.declare(new_experiment("e", [("control", CHAMPION, 0.5), ("treatment", "mute", 0.5)]))
    asyncio.run(slot.load_missing())
    assert slot.live is not None and slot.live.bundles == {}  # the control serves its users
    assert slot.failed == {"treatment": "ValueError: smoke recommendation came back empty"}
    slot.declare(new_experiment("f", [("control", CHAMPION, 0.5), ("treatment", "good", 0.5)]))
    asyncio.run(slot.load_missing())
    assert slot.live.bundles == {"treatment": bundles["good"]} and slot.failed == {}
    assert bundles["good"].calls[0]["users"] == ["u1"]  # asked once, before it served


def test_the_newest_announcement_is_the_last_in_offset_order() -> None:
    """Announcements share one key, so offsets order them. Picked by the producer's
    timestamp, an announcer whose clock ran ahead (or a tie, where ``max`` keeps the
    first) made a worker keep v6 and drop v7 as "already served"."""
    from streams.hot_swap import newest_announcement

    def record(value: bytes, ts: int) -> SimpleNamespace:
        return SimpleNamespace(value=value, timestamp=ts)

    tp0, tp1 = TP("model-updates", 0), TP("model-updates", 1)
    assert newest_announcement({tp0: [record(b"v6", 1000), record(b"v7", 999)]}) == b"v7"
    assert newest_announcement({tp0: [record(b"v6", 5), record(b"v7", 5)]}) == b"v7"
    assert newest_announcement({tp0: [record(b"v6", 5)], tp1: [record(b"v8", 9)]}) == b"v8"
    assert newest_announcement({}) is None and newest_announcement({tp0: []}) is None


def test_a_failed_load_is_retried_with_backoff_until_it_loads_or_is_replaced() -> None:
    from streams.hot_swap import PendingUpdate

    clock = Clock(0.0)
    pending = PendingUpdate(first_s=5.0, most_s=12.0, clock=clock)
    assert pending.due() is None
    pending.offer(b"v2")
    assert pending.due() == b"v2"
    pending.settle(False)                     # failed: again in 5 s, then 10, then 12
    for wait in (5.0, 10.0, 12.0, 12.0):
        clock.now += wait - 0.1
        assert pending.due() is None
        clock.now += 0.1
        assert pending.due() == b"v2"
        pending.settle(False)
    pending.offer(b"v3")                      # a newer announcement: tried at once
    assert pending.due() == b"v3"
    pending.settle(True)
    assert pending.due() is None


def test_an_announcement_of_the_served_version_is_ignored(tmp_path: Path) -> None:
    path = tmp_path / "worker.json"
    serving = Serving(FakeBundle("r:v1", {"u1": None}), WorkerMetrics(), path)
    before = read_status(path, WorkerStatus)
    loads: list[int] = []

    def load() -> FakeBundle:
        loads.append(1)
        return FakeBundle("r:v1", {"u1": None})

    asyncio.run(serving.apply(announcement({"r": "1"}), load, 10))
    assert loads == [] and read_status(path, WorkerStatus) == before


# --- lag gauge -------------------------------------------------------------------------

class TP(NamedTuple):
    topic: str
    partition: int


def test_the_lag_gauge_waits_for_a_fresh_partitions_highwater() -> None:
    """Right after an assignment the consumer may not know a partition's highwater yet
    (None): the gauge skips it rather than raising TypeError inside the agent."""
    from streams.worker import PartitionLag

    metrics = WorkerMetrics()
    lag = PartitionLag(metrics)
    lag.read(TP("events", 0), 4)
    consumer = SimpleNamespace(assignment=lambda: {TP("events", 0)}, highwater=lambda tp: None)
    lag.update(consumer)
    assert metrics.registry.get_sample_value("streamrec_worker_consumer_lag_records",
                                             {"partition": "0"}) is None


def test_the_lag_gauge_forgets_partitions_that_moved_away() -> None:
    from streams.worker import PartitionLag

    metrics = WorkerMetrics()
    lag = PartitionLag(metrics)
    kept, moved = TP("events", 0), TP("events", 1)
    lag.read(kept, 4)
    lag.read(moved, 7)

    assigned = {kept, moved}

    def highwater(tp: TP) -> int:
        if tp not in assigned:
            raise KeyError(tp)  # as Faust's consumer does for a partition it lost
        return 10

    consumer = SimpleNamespace(assignment=lambda: assigned, highwater=highwater)
    gauge = "streamrec_worker_consumer_lag_records"
    lag.update(consumer)
    assert metrics.registry.get_sample_value(gauge, {"partition": "1"}) == 2.0
    assigned = {kept}  # a rebalance moved partition 1 to another worker
    lag.update(consumer)
    assert metrics.registry.get_sample_value(gauge, {"partition": "0"}) == 5.0
    assert metrics.registry.get_sample_value(gauge, {"partition": "1"}) is None


# --- the Faust adapter -----------------------------------------------------------------

def test_the_stream_processor_writes_updates_and_dead_letters_rejects(
        monkeypatch: pytest.MonkeyPatch) -> None:
    import faust

    from streams.worker import PartitionLag, sessionizer

    message = SimpleNamespace(tp=TP("events", 0), offset=3, key=b"u1",
                              headers=[("sent_us", b"7")], timestamp=1_700_000_000.0)
    monkeypatch.setattr(faust, "current_event", lambda: SimpleNamespace(message=message))
    letters: list[dict[str, Any]] = []
    def dlq(key: bytes | None, value: bytes | None, headers: list) -> None:
        letters.append({"key": key, "value": value, "headers": headers})

    table: dict[str, dict] = {}
    metrics = WorkerMetrics()
    policy = SessionPolicy(features=FeatureSpec(numeric=("price",)))
    step = EventStep(policy)
    process = sessionizer(step, table, dlq, metrics, PartitionLag(metrics))  # type: ignore[arg-type]
    raw = new_event("u1", "i1", ts=T0, event_id=EVENT_ID,
                    context={"price": "n/a", "coupon": "x", "ref": "y"}).to_json()
    first = asyncio.run(process(raw))
    assert isinstance(first, SessionUpdate) and first.sent_us == 7
    assert table == {"u1": first.state}
    step.answered.add("u1", EVENT_ID)
    assert asyncio.run(process(raw)) is None  # the duplicate
    assert asyncio.run(process(b"{not json")) is None
    (letter,) = letters
    assert letter["key"] == b"u1" and letter["value"] == b"{not json"
    assert dict(letter["headers"])["reason"] == b"bad_json"
    assert dict(letter["headers"])["source"] == b"worker"
    sample = metrics.registry.get_sample_value
    assert sample("streamrec_worker_events_total") == 3.0
    assert sample("streamrec_worker_duplicates_total") == 1.0
    assert sample("streamrec_worker_dead_letters_total", {"reason": "bad_json"}) == 1.0
    assert asyncio.run(process(None)) is None  # a tombstone: its letter keeps no value
    assert letters[-1]["value"] is None
    assert dict(letters[-1]["headers"])["reason"] == b"empty_record"
    huge = b"{" + b" " * 1_100_000  # past aiokafka's 1 MB request: it would crash the send
    assert asyncio.run(process(huge)) is None
    assert len(letters[-1]["value"]) == MAX_LETTER_BYTES
    assert dict(letters[-1]["headers"])[TRUNCATED_HEADER] == str(len(huge)).encode()
    message.key = b"k" * 1_048_000  # a record nearly all key: lettered as wrong_key
    assert asyncio.run(process(raw)) is None
    assert len(letters[-1]["key"]) == 1024 and letters[-1]["value"] == raw
    assert dict(letters[-1]["headers"])["key_truncated_from"] == b"1048000"
    ignored = "streamrec_worker_context_ignored_total"  # once: the duplicate is not counted
    assert sample(ignored, {"reason": "undeclared"}) == 2.0
    assert sample(ignored, {"reason": "wrong_type"}) == 1.0
    message.key, message.headers = b"u1", []  # no header: the record's Kafka timestamp
    later = asyncio.run(process(new_event("u1", "i2", ts=T0 + 1).to_json()))
    assert isinstance(later, SessionUpdate) and later.sent_us == 1_700_000_000_000_000
    assert not later.late and sample("streamrec_worker_late_events_total") == 0.0
    late = asyncio.run(process(new_event("u1", "i0", ts=T0 - 1).to_json()))
    assert isinstance(late, SessionUpdate) and late.late
    assert late.session.items == ("i0", "i1", "i2")  # placed by its time
    assert later.session.added and not late.session.added  # nothing new at the end
    assert sample("streamrec_worker_late_events_total") == 1.0


class Unacknowledged:
    """A producer whose records Kafka acknowledges only once ``up``; ``produced`` so far."""

    def __init__(self, produced: int) -> None:
        self.stats = SimpleNamespace(produced=produced, failed=0, last_error=None)
        self.up, self.flushes = False, 0

    def pending(self) -> int:
        return 0 if self.up else self.stats.produced

    def flush(self, timeout_s: float) -> int:
        self.flushes += 1
        return self.pending()


def committing(producer: Unacknowledged, inner: Any = None) -> tuple[Any, list[str]]:
    """A consumer whose ``force_commit`` goes through ``DeliverBeforeCommit``; the calls
    that reached Faust's own."""
    from streams.worker import DeliverBeforeCommit

    calls: list[str] = []

    async def force_commit() -> bool:
        calls.append("commit")
        if inner is not None:
            raise inner
        return True

    consumer = SimpleNamespace(force_commit=force_commit)
    clock = iter(range(0, 10_000))  # each look at the clock: a second later
    DeliverBeforeCommit(producer, wait_s=5, clock=lambda: float(next(clock))).install(consumer)  # type: ignore[arg-type]
    return consumer, calls


def test_a_commit_waits_for_kafka_to_acknowledge_its_records_rather_than_stop_the_worker(
        caplog: pytest.LogCaptureFixture) -> None:
    """A Kafka outage: the commit is skipped (its offsets stay uncommitted) and the worker
    goes on. It raised at first, and a 35 s broker bounce ended both workers (#16)."""
    producer = Unacknowledged(produced=40)
    consumer, calls = committing(producer)
    assert asyncio.run(consumer.force_commit()) is False
    assert asyncio.run(consumer.force_commit()) is False
    assert calls == [] and "2 commits skipped in a row" in caplog.text
    assert producer.flushes == 0  # no blocking flush on the event loop while Kafka is away
    producer.up = True  # Kafka is back
    assert asyncio.run(consumer.force_commit()) is True and calls == ["commit"]


def test_a_commit_skips_when_fausts_own_producer_has_not_delivered() -> None:
    from streams.worker import NotDelivered

    producer = Unacknowledged(produced=0)
    consumer, calls = committing(producer, inner=NotDelivered("3 writes not sent"))
    assert asyncio.run(consumer.force_commit()) is False and calls == ["commit"]


def test_no_delivery_failure_since_the_last_commit_slips_past_the_next_one() -> None:
    """A list that failed for good between two commits (its report served by a poll,
    before the commit began) must stop the next commit as surely as one failing during
    its flush: its events must be processed again."""
    producer = Unacknowledged(produced=3)
    producer.up = True
    consumer, calls = committing(producer)
    assert asyncio.run(consumer.force_commit()) is True
    producer.stats.failed, producer.stats.last_error = 1, "message too large"
    with pytest.raises(RuntimeError, match="not committing"):
        asyncio.run(consumer.force_commit())
    assert calls == ["commit"]


def test_the_stream_processor_counts_sessions_it_had_to_restart(
        monkeypatch: pytest.MonkeyPatch) -> None:
    import faust

    from streams.worker import PartitionLag, sessionizer

    message = SimpleNamespace(tp=TP("events", 0), offset=0, key=b"u1", headers=[],
                              timestamp=None)
    monkeypatch.setattr(faust, "current_event", lambda: SimpleNamespace(message=message))
    table: dict[str, Any] = {"u1": {"items": 5}}
    metrics = WorkerMetrics()
    process = sessionizer(EventStep(SessionPolicy()), table, None,  # type: ignore[arg-type]
                          metrics, PartitionLag(metrics))
    update = asyncio.run(process(new_event("u1", "i1", ts=T0).to_json()))
    assert isinstance(update, SessionUpdate) and table == {"u1": update.state}
    assert metrics.registry.get_sample_value("streamrec_worker_sessions_reset_total") == 1.0


def test_a_session_that_cannot_be_written_ends_the_worker(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """Faust's table raises ``PartitionsMismatch`` once partitions were added to the events
    topic (and librdkafka or the disk can refuse a write). Raised into Faust it ended the
    stream's drainer: the worker kept its partitions and answered nothing. It now leaves,
    as an unpublished batch does, and the events are redelivered."""
    import faust
    from faust.exceptions import PartitionsMismatch

    from streams.worker import PartitionLag, sessionizer

    class Mismatched(dict):
        def __setitem__(self, key: str, value: Any) -> None:
            raise PartitionsMismatch("interactions has 8 partitions, its changelog 4")

    message = SimpleNamespace(tp=TP("events", 0), offset=0, key=b"u1", headers=[],
                              timestamp=None)
    monkeypatch.setattr(faust, "current_event", lambda: SimpleNamespace(message=message))
    metrics, exits = WorkerMetrics(), []
    process = sessionizer(EventStep(SessionPolicy()), Mismatched(), None,  # type: ignore[arg-type]
                          metrics, PartitionLag(metrics), on_failure=exits.append)
    assert asyncio.run(process(new_event("u1", "i1", ts=T0).to_json())) is None
    assert [type(e) for e in exits] == [PartitionsMismatch]

    class Unreadable(dict):  # a store that cannot be read: the event is not dead-lettered
        def get(self, key: str, default: Any = None) -> Any:
            raise OSError("IO error: rocksdb")

    def dlq(key: bytes | None, value: bytes | None, headers: list) -> None:
        exits.append("lettered")

    process = sessionizer(EventStep(SessionPolicy()), Unreadable(), dlq,  # type: ignore[arg-type]
                          metrics, PartitionLag(metrics), on_failure=exits.append)
    assert asyncio.run(process(new_event("u1", "i1", ts=T0).to_json())) is None
    assert [type(e).__name__ for e in exits] == ["PartitionsMismatch", "StoreUnavailable"]


def test_a_bad_event_with_a_huge_redrive_count_is_lettered_not_raised(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """A count past int()'s 4,300 digits raised in the letter's headers, into Faust: the
    stream's drainer ended, and one record from any producer stalled the worker."""
    import faust

    from streams.worker import PartitionLag, sessionizer

    message = SimpleNamespace(tp=TP("events", 0), offset=0, key=b"u1", timestamp=None,
                              headers=[("first_written", b"x"), ("redrives", b"1" * 4301)])
    monkeypatch.setattr(faust, "current_event", lambda: SimpleNamespace(message=message))
    metrics, exits, letters = WorkerMetrics(), [], []
    def dlq(key: bytes | None, value: bytes | None, headers: list) -> None:
        letters.append(dict(headers))

    process = sessionizer(EventStep(SessionPolicy()), {}, dlq,  # type: ignore[arg-type]
                          metrics, PartitionLag(metrics), on_failure=exits.append)
    assert asyncio.run(process(b"{not json")) is None
    assert exits == [] and [h["redrives"] for h in letters] == [b"1"]


def test_a_letter_the_producer_refuses_ends_the_worker_unanswered_not_inside_faust(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """Letters go through the lists' producer, which raises at once on one it refuses (a
    megabyte ``first_written`` header from any producer made it too big): raised into
    Faust, the stream's drainer ended. It goes to ``on_failure``, as a table write does;
    and such a header is not copied into the letter."""
    import faust
    from confluent_kafka import KafkaError, KafkaException

    from streams.worker import PartitionLag, sessionizer

    message = SimpleNamespace(tp=TP("events", 0), offset=0, key=b"u1", timestamp=None,
                              headers=[("first_written", b"h" * 999_500)])
    monkeypatch.setattr(faust, "current_event", lambda: SimpleNamespace(message=message))
    metrics, exits, letters = WorkerMetrics(), [], []

    def refusing(key: bytes | None, value: bytes | None, headers: list) -> None:
        letters.append(dict(headers))
        raise KafkaException(KafkaError(KafkaError.MSG_SIZE_TOO_LARGE))

    process = sessionizer(EventStep(SessionPolicy()), {}, refusing,  # type: ignore[arg-type]
                          metrics, PartitionLag(metrics), on_failure=exits.append)
    assert asyncio.run(process(b"{not json")) is None
    assert [type(e).__name__ for e in exits] == ["KafkaException"]
    assert "first_written" not in letters[0] and "redrives" not in letters[0]


def test_the_stream_processor_names_the_events_partition_in_log_lines(
        monkeypatch: pytest.MonkeyPatch) -> None:
    import faust

    from streams.log_context import LogContext
    from streams.worker import PartitionLag, sessionizer

    message = SimpleNamespace(tp=TP("events", 3), offset=0, key=b"u1", headers=[],
                              timestamp=None)
    monkeypatch.setattr(faust, "current_event", lambda: SimpleNamespace(message=message))
    metrics = WorkerMetrics()
    process = sessionizer(EventStep(SessionPolicy()), {}, None,  # type: ignore[arg-type]
                          metrics, PartitionLag(metrics))

    async def event_then_log() -> logging.LogRecord:
        await process(new_event("u1", "i1", ts=T0).to_json())
        record = logging.makeLogRecord({"msg": "while processing"})
        LogContext().filter(record)
        return record

    assert asyncio.run(event_then_log()).partition == 3


def test_faust_commits_only_after_every_changelog_write_is_handed_on() -> None:
    """Faust's producer buffer (table changelog writes) ends ``flush()`` after 0.1 s
    without a send, with writes still queued; committing then left a restarted worker one
    event short. ``drain_fully`` makes the flush wait for all of them, the one being sent
    included."""
    from faust.transport.producer import ProducerBuffer

    from streams.worker import drain_fully

    class SlowBuffer(ProducerBuffer):
        sent = 0

        async def _send_pending(self, fut: Any) -> None:
            await asyncio.sleep(0.15)  # a send slower than Faust's 0.1 s patience
            self.sent += 1

    async def flushed(drain: bool) -> tuple[int, int]:
        buffer = SlowBuffer()
        buffer.app = SimpleNamespace(conf=SimpleNamespace(producer_threaded=False))
        if drain:
            drain_fully(buffer)
        await buffer.start()
        for i in range(5):
            buffer.put(i)  # type: ignore[arg-type]
        await buffer.flush()
        left = buffer.size, buffer.sent
        buffer.pending = asyncio.Queue()  # stop() would flush again
        await buffer.stop()
        return left

    assert asyncio.run(flushed(drain=False)) != (0, 5)  # the premise: Faust's flush gives up
    assert asyncio.run(flushed(drain=True)) == (0, 5)


def test_a_changelog_that_never_drains_stops_the_commit() -> None:
    from streams.worker import drain_fully

    clock = iter(range(0, 1000, 10))  # each look at the clock: 10 s later

    async def sends_nothing(_: Any) -> int:
        return 0

    buffer = SimpleNamespace(size=3, flush_atmost=sends_nothing, _send_pending=sends_nothing)
    drain_fully(buffer, most_s=30, clock=lambda: float(next(clock)))
    with pytest.raises(RuntimeError, match="3 writes of Faust's producer not sent in 30 s"):
        asyncio.run(buffer.flush())


def test_resuming_flow_keeps_the_events_already_queued() -> None:
    """Faust resumes flow after seeking a new assignment, and mode's ``resume()`` empties
    the stream queues: events queued during the seek were lost, their offsets already
    read (issue #16). A revoke's explicit ``clear()`` must still empty them."""
    from mode.utils.queues import FlowControlEvent, FlowControlQueue

    from streams.worker import keep_queues_on_resume

    def queued_after_resume(keep: bool) -> int:
        flow = FlowControlEvent()  # suspended, as before an assignment
        queue: FlowControlQueue = FlowControlQueue(flow_control=flow, clear_on_resume=True)
        if keep:
            keep_queues_on_resume(flow)
        flow.resume()  # resumed for the changelog restore
        queue.put_nowait("fetched during the seek")
        flow.resume()  # the assignment's final resume
        assert flow.is_active()
        asyncio.run(asyncio.wait_for(flow.acquire(), 1))  # producers are not held back
        return queue.qsize()

    assert queued_after_resume(keep=False) == 0  # the premise: mode's resume clears
    assert queued_after_resume(keep=True) == 1
    flow = FlowControlEvent()
    queue: FlowControlQueue = FlowControlQueue(flow_control=flow, clear_on_resume=True)
    keep_queues_on_resume(flow)
    flow.resume()
    queue.put_nowait("stale")
    flow.suspend()
    flow.clear()  # a revoke
    assert not flow.is_active() and queue.empty()


def test_a_seek_to_committed_rewinds_stream_partitions_without_a_commit() -> None:
    """aiokafka leaves a partition with no committed offset (or one at 0) where it was, past
    records Faust dropped during a rebalance (issue #16): those of the stream topic go back
    to their start; committed ones and changelog partitions are left as they were."""
    from faust.types import TP

    from streams.worker import seek_uncommitted_to_start

    committed = {TP("events", 0): None, TP("events", 1): 0, TP("events", 2): 7,
                 TP("app-sessions-changelog", 0): None}

    class Consumer:
        def __init__(self) -> None:
            self.seeks: list[tuple[TP, int]] = []

        async def seek_to_committed(self) -> dict:
            return committed

        async def seek(self, tp: TP, offset: int) -> None:
            self.seeks.append((tp, offset))

    consumer = Consumer()
    seek_uncommitted_to_start(consumer, "events")
    assert asyncio.run(consumer.seek_to_committed()) == committed  # Faust reads them
    assert consumer.seeks == [(TP("events", 0), 0), (TP("events", 1), 0)]


def test_a_commit_counts_each_acknowledged_offset_once() -> None:
    """After a takeover each offset stood twice in Faust's acknowledged list (an ``ack`` and
    a read gap's range), and each commit then moved one offset (issue #16). Counted once,
    the whole run commits; offsets already committed are dropped."""
    import faust
    from faust.types import TP

    from streams.worker import commit_each_ack_once, uncommitted_once

    def consumer(fixed: bool) -> Any:
        app = faust.App("acks", broker="kafka://127.0.0.1:1")
        if fixed:
            commit_each_ack_once(app.consumer)
        return app.consumer

    tp = TP("events", 3)

    def commit_after_repeats(fixed: bool) -> int | None:
        c = consumer(fixed)
        c._committed_offset[tp] = 2338
        c._acked[tp] = [2337, 2338, 2338, 2339, 2339, 2340, 2340]
        c._acked_index[tp] = {2337, 2338, 2339, 2340}
        return c._new_offset(tp)

    assert commit_after_repeats(fixed=False) == 2339  # the premise: one offset per commit
    assert commit_after_repeats(fixed=True) == 2341

    c = consumer(fixed=True)  # a read gap over offsets acknowledged too
    c._committed_offset[tp] = 10
    c._acked[tp], c._acked_index[tp] = [10, 11, 12], {10, 11, 12}
    c._gap[tp].addi(11, 14)
    first = c._new_offset(tp)
    c._committed_offset[tp] = first
    assert (first, c._new_offset(tp)) == (12, 14)
    assert c._acked[tp] == [] and c._acked_index[tp] == set()
    assert uncommitted_once([5, 3, 3, 9, 5], committed=4) == [5, 9]
    assert uncommitted_once([5, 3, 3], committed=None) == [3, 5]


@pytest.mark.parametrize("static", [True, False])
def test_a_worker_joins_its_group_as_a_static_member_named_by_its_id_and_host(
        tmp_path: Path, static: bool) -> None:
    """A worker killed and restarted within the session timeout takes its partitions back
    with no rebalance only when Kafka knows it again: the same ``--worker-id`` on the same
    host is the same member (issue #16); switched off, membership is dynamic."""
    import socket

    from services.cli_worker import _worker_config
    from services.settings import Settings
    from streams.worker import NoModel, create_app

    settings = Settings(data_dir=tmp_path, worker_static_membership=static)
    cfg = _worker_config(settings, "3", None)
    expected = f"3@{socket.gethostname()}" if static else None
    assert cfg.instance_id == expected
    app = create_app(cfg, NoModel())
    assert app.conf.consumer_group_instance_id == expected


def test_the_app_takes_its_settings_from_the_settings_object_only(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Faust let unprefixed variables override what it was given: with ``BROKER_URL`` set
    (a Celery habit), the worker consumed one cluster and produced its lists to another.
    And the changelogs it creates take the settings' replication factor, not 1."""
    from services.cli_worker import _worker_config
    from services.settings import Settings
    from streams.worker import NoModel, create_app

    for name, value in (("BROKER_URL", "kafka://elsewhere:9092"), ("TOPIC_PARTITIONS", "7"),
                        ("APP_DATADIR", str(tmp_path / "elsewhere"))):
        monkeypatch.setenv(name, value)
    settings = Settings(data_dir=tmp_path, topic_replication=3, interactions_partitions=4)
    app = create_app(_worker_config(settings, "1", None), NoModel())
    assert [str(url) for url in app.conf.broker] == [f"kafka://{settings.kafka.bootstrap}"]
    assert app.conf.topic_partitions == 4
    assert app.conf.topic_replication_factor == 3
    assert str(app.conf.datadir).startswith(str(tmp_path / "workers"))


def test_a_model_that_reads_what_the_sessions_leave_out_is_warned_of(
        clean_env: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    """Trained with ``price``, served by a worker whose settings do not keep it: the
    feature read as missing on every event, and nothing said so at load."""
    from model.features import FeatureSpec
    from services.cli_worker import _warn_unkept
    from services.settings import load_settings

    bundle = SimpleNamespace(version="r:v3", spec=FeatureSpec(numeric=("price",),
                                                              categorical=("device",)))

    def warned() -> str:
        caplog.clear()
        with caplog.at_level(logging.WARNING):
            assert _warn_unkept(bundle, load_settings()) is bundle
        return caplog.text

    clean_env.setenv("STREAMREC_CONTEXT_CATEGORICAL", "device")
    assert "r:v3 reads context keys price " in warned()
    clean_env.setenv("STREAMREC_CONTEXT_CATEGORICAL", "device,price")  # price of another kind:
    assert "r:v3 reads context keys price " in warned()  # its floats dropped as wrong_type
    clean_env.setenv("STREAMREC_CONTEXT_CATEGORICAL", "device")
    clean_env.setenv("STREAMREC_CONTEXT_NUMERIC", "price")
    assert warned() == ""
    # Its seen-before features trained on the newest 80 items; the sessions keep 50.
    bundle.ranker = SimpleNamespace(seen_window=80)
    text = warned()
    assert "trained on the newest 80 items" in text
    assert "STREAMREC_SESSION_MAX_ITEMS=80" in text
    clean_env.setenv("STREAMREC_SESSION_MAX_ITEMS", "80")
    assert warned() == ""


def test_a_starting_worker_serves_popularity_when_the_champion_cannot_serve() -> None:
    """At start the champion was loaded with only ``NoChampion`` caught and no smoke test:
    a champion that could not load (a missing artifact, a pair that does not match, a
    format an older release cannot read) crash-looped every worker restarted, where the
    running ones refused the same swap and served on."""
    from services.cli_worker import first_champion
    from streams.registry import NoChampion
    from streams.worker import NoModel

    class Answers:
        version = "r:v1+k:v1"
        users = SimpleNamespace(ids=["u1"])
        items = SimpleNamespace(ids=["i1"])

        def __init__(self, scores: list[float]) -> None:
            self.scores = scores

        def recommend(self, users: Sequence[str], sessions: Sequence[Any], k: int,
                      exclude_seen: bool | None = True) -> list[Recommendation]:
            return [Recommendation(["i2", "i3"], self.scores)]

    good = Answers([0.5, 0.25])
    assert first_champion(lambda: good, 10) == (good, None, False)

    def missing() -> Answers:
        raise NoChampion("no models under the alias 'champion'")

    def unreadable() -> Answers:
        raise OSError("artifact gone at http://u:secret@mlflow:5000/x")

    for load, said, retried in (
            (missing, "until the trainer announces the first champion", False),
            (unreadable, "(OSError: artifact gone at http://u:***@mlflow:5000/x)", True),
            (lambda: Answers([float("nan"), 0.1]), "NaN or infinite scores", True)):
        bundle, why, failed = first_champion(load, 10)
        assert isinstance(bundle, NoModel) and why is not None and said in why, why
        assert failed is retried  # retried by the model follower, announced or not


def test_a_busy_metrics_port_is_said_not_claimed(caplog: pytest.LogCaptureFixture) -> None:
    """A second worker on one host could not bind the port, logged it, then said
    ``metrics on :9464/metrics`` all the same: scrapes there saw the first worker."""
    import socket

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        with caplog.at_level(logging.ERROR, logger="streams.metrics"):
            assert WorkerMetrics().serve(port) is False
    assert "--metrics-port of its own" in caplog.text
    assert WorkerMetrics().serve(0) is False


def test_a_list_too_big_for_a_kafka_record_is_cut_to_fit_not_a_crash_loop(
        caplog: pytest.LogCaptureFixture) -> None:
    """A thousand items of 256-character ids (1 KB each in emoji) passed librdkafka's
    1,000,000 bytes: the produce raised, the worker exited, and the redelivered batch
    built the same list again, for good."""
    from streams.steps import MAX_LIST_BYTES

    ids = [f"{n:04d}" + "\U0001f600" * 252 for n in range(1000)]
    producer, metrics = FakeProducer(), WorkerMetrics()
    step = BatchStep("recs", 1000, True, DecayedPopularity(), producer, FakeStore(), metrics)
    bundle = FakeBundle("r:v1", {"u1": Recommendation(ids, [1.0 - n / 1000 for n in range(1000)])})
    with caplog.at_level(logging.WARNING, logger="streams.steps"):
        (record,) = asyncio.run(step.publish([update("u1", ("a",))], bundle))
    (_, _, value), = producer.sent
    assert len(value) <= MAX_LIST_BYTES < len(orjson.dumps(ids))
    assert 800 < len(record.items) < 1000 and [i.item_id for i in record.items] == ids[
        :len(record.items)]  # the best first, as the model ranked them
    assert "was cut to" in caplog.text and step.lists_cut == 1


def test_a_list_cut_to_its_head_cuts_its_teams_alike() -> None:
    """``head`` kept an interleaved list's teams whole: an API read of k items said who
    placed items it did not return."""
    tag = ExperimentTag("e", "interleaved", None, teams=["a", "b", "a", "b"])
    full = RecommendationList("u1", "model", "v", [ScoredItem(x, 1.0) for x in "wxyz"],
                              experiment=tag)
    cut = full.head(2)
    assert [i.item_id for i in cut.items] == ["w", "x"] and cut.experiment.teams == ["a", "b"]
    assert full.experiment.teams == ["a", "b", "a", "b"]  # the stored list is untouched


def test_a_champion_that_failed_at_start_is_retried_with_no_announcement_on_the_topic(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """The follower retried only the newest announcement; the topic keeps them for its
    retention, so a worker whose first load met a registry away for a moment served
    popularity until the next promotion, days on."""
    from streams import hot_swap
    from streams.worker import NoModel

    class Empty(EmptyTopicConsumer):  # the model-updates topic with nothing left on it
        topic = "model-updates"

    class Champion:
        version = "r:v2+k:v2"
        users = SimpleNamespace(ids=["u1"])
        items = SimpleNamespace(ids=["i1"])

        def recommend(self, users: Sequence[str], sessions: Sequence[Any], k: int,
                      exclude_seen: bool | None = True) -> list[Recommendation]:
            return [Recommendation(["i2"], [0.5])]

    monkeypatch.setattr(hot_swap, "AIOKafkaConsumer", Empty)
    kafka = SimpleNamespace(aiokafka=lambda: {})

    async def served(retry: bool) -> str:
        serving = Serving(NoModel(), WorkerMetrics())
        follower = asyncio.create_task(hot_swap.follow_model_updates(
            kafka, "model-updates", serving, Champion, 10, retry_champion=retry))  # type: ignore[arg-type]
        await asyncio.sleep(0.3)
        follower.cancel()
        return serving.bundle.version

    assert asyncio.run(served(True)) == "r:v2+k:v2"
    assert asyncio.run(served(False)) == "none"  # NoChampion at start: nothing to retry


def test_an_experiment_judges_a_list_cut_to_fit_as_the_user_got_it() -> None:
    """Cut after the experiment had taken it, its judged list held items the user never
    got."""
    ids = [f"{n:04d}" + "\U0001f600" * 252 for n in range(1000)]
    tracked: list[RecommendationList] = []
    experiment = SimpleNamespace(
        recommend=lambda users, keys, champion, ask, popular: (
            list(ask(list(range(len(users))), champion)), [None] * len(users),
            [ExperimentTag("e", "a")] * len(users)),
        track=lambda interactions, lists: tracked.extend(lists))
    step = BatchStep("recs", 1000, True, DecayedPopularity(), FakeProducer(), FakeStore(),
                     WorkerMetrics())
    step._count_experiment = lambda lists: None  # type: ignore[method-assign]
    bundle = FakeBundle("r:v1", {"u1": Recommendation(ids, [1.0 - n / 1000 for n in range(1000)])})
    (record,) = asyncio.run(step.publish([update("u1", ("a",))], bundle, experiment))
    assert len(tracked) == 1 and tracked[0].items == record.items and len(record.items) < 1000


def test_a_starting_worker_makes_its_dead_letter_topic_when_it_is_missing(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """Faust made it at the first letter while letters went through its producer; the
    lists' producer never makes a topic, so without it the first bad event stopped the
    worker."""
    from infra.errors import StackError
    from services.cli_worker import _ensure_dead_letter_topic
    from services.settings import load_settings

    asked: list[list[str]] = []

    def ensure(kafka: object, specs: list) -> list[str]:
        asked.append([s.name for s in specs])
        return [s.name for s in specs]

    monkeypatch.setattr("infra.topics.ensure_topics", ensure)
    settings = load_settings(topic_dlq="shop.dlq")
    assert _ensure_dead_letter_topic(settings) == "made the dead-letter topic shop.dlq"
    assert asked == [["shop.dlq"]]
    monkeypatch.setattr("infra.topics.ensure_topics", lambda kafka, specs: [])
    assert _ensure_dead_letter_topic(settings) is None  # there already

    def denied(kafka: object, specs: list) -> list[str]:
        raise StackError("cannot create topic 'shop.dlq': TOPIC_AUTHORIZATION_FAILED")

    monkeypatch.setattr("infra.topics.ensure_topics", denied)
    said = _ensure_dead_letter_topic(settings)
    assert said is not None and "the first bad event stops this worker" in said
