"""Lists and feeds through the catalogue the API follows, in process: titles where the
catalogue has them (fast path and FastAPI's route alike), filters by category and by
excluded ids, alone and together, and the feed filtered and titled the same way."""

from __future__ import annotations

import asyncio
from types import SimpleNamespace

import orjson
import pytest
from api_fakes import FakeRedis, InProcessApi

from services.api.catalogue import ListFilter, shown
from services.api.feed import FeedHub
from services.api.lists import ListSource
from services.api.live import LiveStats
from services.api.metrics import ApiMetrics
from services.api.routes import feed_events
from streams.catalog import ItemRecord
from streams.messages import ExperimentTag, RecommendationList, ScoredItem
from streams.recs_store import recs_key

LIST = "/v1/users/u1/recommendations"  # u1's stored list: a, b, c
RECORDS = (ItemRecord("a", "Alpha", categories=("x",)), ItemRecord("b", categories=("y",)),
           ItemRecord("c", "Gamma", categories=("x", "y")))


@pytest.fixture
def api() -> InProcessApi:
    api = InProcessApi()
    api.put_records(*RECORDS)
    return api


def _items(reply: object) -> list[dict]:
    return reply.json()["items"]  # type: ignore[attr-defined]


def test_lists_carry_titles_where_the_catalogue_has_them(api: InProcessApi) -> None:
    fast = api.get(f"{LIST}?k=2")
    routed = api.get(f"{LIST}?k=2&x=1")  # not plain: FastAPI's route
    assert fast.json() == routed.json()
    assert _items(fast) == [
        {"item_id": "a", "score": 1.0, "heads": None, "path": None, "title": "Alpha"},
        {"item_id": "b", "score": 1.0, "heads": None, "path": None}]  # no title: none added


def test_without_a_catalogue_the_list_is_the_stored_record() -> None:
    reply = InProcessApi().get(LIST)
    assert [set(i) for i in _items(reply)] == [{"item_id", "score", "heads", "path"}] * 3


@pytest.mark.parametrize(("query", "ids"), [
    ("category=x", ["a", "c"]),
    ("category=x&k=1", ["a"]),
    ("exclude=a,c", ["b"]),
    ("exclude=a,,%20c,zz", ["b"]),          # blanks and unknown ids are harmless
    ("category=y&exclude=b", ["c"]),        # combined
    ("category=nope", []),                  # no item has it: an empty list, not an error
    ("exclude=a,b,c", []),
])
def test_lists_filtered_by_category_and_excluded_ids(api: InProcessApi, query: str,
                                                     ids: list[str]) -> None:
    reply = api.get(f"{LIST}?{query}")
    assert reply.status_code == 200
    body = reply.json()
    assert [i["item_id"] for i in body["items"]] == ids
    assert body["path"] == "model" and body["event_id"] == "e-u1"  # the same record, filtered


def test_a_filter_keeps_the_order_and_titles_and_reads_the_whole_stored_list(
        api: InProcessApi) -> None:
    """k cuts after filtering: k=1 with a excluded is b, not nothing."""
    assert _items(api.get(f"{LIST}?k=1&exclude=a")) == [
        {"item_id": "b", "score": 1.0, "heads": None, "path": None}]
    assert [i.get("title") for i in _items(api.get(f"{LIST}?category=x"))] == ["Alpha", "Gamma"]


def test_a_filter_reads_past_the_first_100_stored_items() -> None:
    """A worker stores up to 1,000 (``STREAMREC_RECS_TOP_N``); a filtered read cut the
    stored list to 100 before filtering, and found nothing where items 150-160 match."""
    api = InProcessApi()
    stored = RecommendationList("u1", "model", "v1", [ScoredItem(f"i{n}", 1.0 - n / 1000)
                                                      for n in range(200)], "e-u1", "x", 1, 2)
    api.app.state.backends.source.client.values[recs_key("u1")] = stored.to_json()
    api.put_records(*(ItemRecord(f"i{n}", categories=("c",)) for n in range(150, 161)))
    assert [i["item_id"] for i in _items(api.get(f"{LIST}?category=c&k=3"))] == [
        "i150", "i151", "i152"]


def test_popularity_lists_are_filtered_too() -> None:
    api = InProcessApi()
    api.put_records(*RECORDS)
    api.app.state.backends.source.popular = SimpleNamespace(
        as_list=lambda user, k, path: RecommendationList(
            user, path, "v1", [ScoredItem(i, 1.0) for i in "cab"][:k]))
    assert [i["item_id"] for i in _items(api.get("/v1/users/new/recommendations?category=x"))
            ] == ["c", "a"]


def test_a_category_asked_during_the_first_catalogue_pass_is_a_503_not_a_short_list() -> None:
    """The pass reads into a catalogue of its own until it is whole: the served one is
    still empty, so the filter found no record and answered an empty list (a review).
    A list or feed without a category is served meanwhile."""
    from streams.catalog_follower import Catalogue

    api = InProcessApi()
    api.catalogue.caught_up = False
    for reading in (None, Catalogue(api.catalogue.metrics)):  # before the pass, during it
        api.catalogue.reading = reading
        for path in (f"{LIST}?category=x", "/v1/users/u1/feed?category=x"):
            reply = api.get(path)
            assert reply.status_code == 503 and reply.headers["retry-after"] == "5", path
            assert "still reading the catalogue" in reply.json()["detail"]
    api.catalogue.absent = True  # no items topic: no catalogue, so no item is in a category
    assert _items(api.get(f"{LIST}?category=x")) == []
    api.catalogue.absent = False
    api.catalogue.reading.records.update({r.item_id: r for r in RECORDS})
    assert [i["item_id"] for i in _items(api.get(f"{LIST}?exclude=b"))] == ["a", "c"]
    api.catalogue.replace_records(api.catalogue.reading)  # the pass is whole
    assert [i["item_id"] for i in _items(api.get(f"{LIST}?category=x"))] == ["a", "c"]
    # A later pass (the follower restarted after a Kafka hiccup): the whole records of
    # the one before serve meanwhile, not a 503 for the whole re-read
    api.catalogue.reading = Catalogue(api.catalogue.metrics)
    assert [i["item_id"] for i in _items(api.get(f"{LIST}?category=x"))] == ["a", "c"]


@pytest.mark.parametrize("query", ["category=", f"category={'x' * 300}",
                                   f"exclude={'a,' * 4097}"])
def test_a_filter_out_of_bounds_is_a_422(api: InProcessApi, query: str) -> None:
    assert api.get(f"{LIST}?{query}").status_code == 422


def test_an_item_without_a_record_is_not_in_any_category() -> None:
    keep = ListFilter.of("x", None)
    assert not keep.keeps("a", {}) and keep.active
    assert ListFilter.of(None, "") == ListFilter() and not ListFilter().active


def test_shown_returns_the_record_itself_when_nothing_changes() -> None:
    rec = RecommendationList("u1", "model", "v1", [ScoredItem("a", 1.0)])
    assert shown(rec, 10) is rec
    assert shown(rec, 10, {"a": ItemRecord("a", categories=("x",))}) is rec  # no title
    assert shown(rec, 10, {}, ListFilter.of(None, "zz")) is rec


def test_a_filtered_interleaved_list_keeps_each_items_team() -> None:
    """``teams[i]`` names the variant that placed ``items[i]``: filtered from the middle,
    the items after a removed one were credited to the wrong variant (a review)."""
    tag = ExperimentTag("exp", "interleaved", teams=["ctrl", "treat", "ctrl"])
    rec = RecommendationList("u1", "model", "v1", [ScoredItem(i, 1.0) for i in "xyz"],
                             experiment=tag)
    out = shown(rec, 10, {}, ListFilter.of(None, "y"))
    assert [i.item_id for i in out.items] == ["x", "z"]
    assert out.experiment is not None and out.experiment.teams == ["ctrl", "ctrl"]
    assert shown(rec, 1).experiment.teams == ["ctrl"]  # type: ignore[union-attr]


def test_the_feed_is_filtered_and_titled_like_the_list() -> None:
    current = RecommendationList("u1", "model", "v1", [ScoredItem(i, 1.0) for i in "abc"],
                                 published_us=10)
    newer = RecommendationList("u1", "model", "v1", [ScoredItem(i, 1.0) for i in "cba"],
                               published_us=20)
    source = ListSource(FakeRedis({recs_key("u1"): current.to_json()}), "ch", ttl_s=60)
    hub = FeedHub(None, "ch", LiveStats(), source)
    catalogue = SimpleNamespace(records={r.item_id: r for r in RECORDS})

    async def scenario() -> list[bytes]:
        stream = feed_events(SimpleNamespace(source=source, hub=hub, catalogue=catalogue),
                             "u1", 10, None, 0.05, ApiMetrics().feed_clients,
                             ListFilter.of("x", None))
        sent = [await anext(stream), await anext(stream)]  # retry advice, current list
        hub.dispatch(b"[" + newer.to_json() + b"]")
        sent.append(await anext(stream))
        await stream.aclose()
        return sent

    _, first, second = asyncio.run(scenario())
    for frame, ids in ((first, ["a", "c"]), (second, ["c", "a"])):
        items = orjson.loads(frame.split(b"\ndata: ")[1])["items"]
        assert [(i["item_id"], i["title"]) for i in items] == [
            (i, catalogue.records[i].title) for i in ids]
