"""``GET /v1/items/{item_id}/similar`` in process, its champion a ``FakeBundle``: neighbours
with titles, a catalogue item embedded by content before or after the load, 404 for an
unknown item, 503 with no champion or while loading, bad k, keys; and the item space's
load, off the event loop, then its following of announcements."""

from __future__ import annotations

import asyncio
import threading
from types import SimpleNamespace

import pytest
from api_fakes import FakeBundle, InProcessApi, item_space

from model.pipeline import Recommendation
from services.api.item_space import FAILED, LOADING, NO_CHAMPION
from services.api.schemas import SimilarItems
from services.api.similar import similar_answer
from streams.catalog import ItemRecord
from streams.catalog_follower import Catalogue
from streams.metrics import WorkerMetrics
from streams.registry import NoChampion

READ_KEY = "read-key-0123456789"


def test_similar_answers_the_nearest_items_with_their_titles() -> None:
    api = InProcessApi()
    api.put_records(ItemRecord("b", title="Heat (1995)"), ItemRecord("zz-other", "No"))
    reply = api.get("/v1/items/a/similar?k=2")
    assert reply.status_code == 200
    assert reply.json() == {"item_id": "a", "model_version": FakeBundle.version, "items": [
        {"item_id": "b", "score": 1.0, "path": "model", "title": "Heat (1995)"},
        {"item_id": "c", "score": 0.875, "path": "model"}]}
    SimilarItems.model_validate(reply.json())
    assert len(api.get("/v1/items/a/similar").json()["items"]) == 3  # k=10: all it has


def test_neighbours_without_a_finite_score_are_left_out_not_a_500() -> None:
    """A model whose item table went bad (NaN rows) through an approximate index."""
    bad = SimpleNamespace(version="9", similar=lambda item, k: Recommendation(
        ["b", "c", "d", "e"], [float("nan"), 0.5, float("inf"), -float("inf")]))
    answer = similar_answer("a", bad, 4, {})
    assert answer is not None and answer["items"] == [
        {"item_id": "c", "score": 0.5, "path": "model"}]


def test_a_catalogue_item_has_neighbours_whether_it_came_before_or_after_the_load() -> None:
    api = InProcessApi()
    api.put_records(ItemRecord("before", title="Old news"))  # no model yet: embedded at load
    assert api.get("/v1/items/before/similar").status_code == 200
    api.put_records(ItemRecord("after", title="Fresh"))  # the follower hands it to the model
    items = api.get("/v1/items/after/similar").json()["items"]
    assert [(i["item_id"], i["path"]) for i in items] == [
        ("a", "model"), ("b", "model"), ("c", "model"), ("before", "content")]
    assert api.get("/v1/items/a/similar").json()["items"][-1] == {
        "item_id": "after", "score": 0.625, "path": "content", "title": "Fresh"}


def test_an_item_whose_id_holds_slashes_has_a_similar_route() -> None:
    api = InProcessApi()
    api.put_records(ItemRecord("shop/p/4", title="Heat"), ItemRecord("x/similar", "Odd"))
    for path in ("/v1/items/shop/p/4/similar", "/v1/items/shop%2Fp%2F4/similar",
                 "/v1/items/x/similar/similar"):
        reply = api.get(path)
        assert reply.status_code == 200, path
        assert reply.json()["item_id"] == path.removeprefix("/v1/items/").removesuffix(
            "/similar").replace("%2F", "/")
        assert [i["path"] for i in reply.json()["items"]][:3] == ["model"] * 3
    assert "\n".join(line for line in api.get("/metrics").text.splitlines()
                     if line.startswith("streamrec_api_requests_total{")
                     and "similar" in line).count('route="/v1/items/{item_id}/similar"') == 1


def test_an_item_neither_the_model_nor_the_catalogue_knows_is_a_404() -> None:
    reply = InProcessApi().get("/v1/items/nope/similar")
    assert reply.status_code == 404
    assert reply.json() == {"detail": "item 'nope' is not known to the model or the catalogue"}


def test_a_catalogue_item_a_model_without_content_cannot_place_is_a_404_that_says_so() -> None:
    class NoContent(FakeBundle):
        def add_items(self, records: object) -> int:
            return 0

    api = InProcessApi(load=NoContent)
    api.put_records(ItemRecord("new", title="New"))
    reply = api.get("/v1/items/new/similar")
    assert reply.status_code == 404
    assert "is in the catalogue, but model" in reply.json()["detail"]


def test_a_catalogue_item_before_the_follower_caught_up_is_a_503_with_retry_after() -> None:
    """Read but not yet handed to the model (the catalogue hands over once it has read the
    topic through): a 404 said the model could not take the record."""
    from services.api.similar import CATCHING_UP

    api = InProcessApi()
    api.catalogue.caught_up = False
    api.put_records(ItemRecord("new", title="New"))
    reply = api.get("/v1/items/new/similar")
    assert reply.status_code == 503 and reply.json() == {"detail": CATCHING_UP}
    assert reply.headers["retry-after"] == "5"
    assert api.get("/v1/items/nope/similar").status_code == 404  # known to nobody: still 404
    api.catalogue.hand_over([api.items.bundle])
    assert api.get("/v1/items/new/similar").status_code == 200


def test_an_item_read_by_the_first_pass_over_the_catalogue_is_a_503_not_a_404() -> None:
    """The pass reads into a catalogue of its own until it is whole: the served one is
    still empty, and a 404 said no one knows the item (a review)."""
    from services.api.similar import CATCHING_UP
    from streams.catalog_follower import Catalogue

    api = InProcessApi()
    api.catalogue.caught_up = False
    api.catalogue.reading = Catalogue(api.catalogue.metrics)
    api.catalogue.reading.records["new"] = ItemRecord("new", title="New")
    reply = api.get("/v1/items/new/similar")
    assert reply.status_code == 503 and reply.json() == {"detail": CATCHING_UP}
    assert api.get("/v1/items/nope/similar").status_code == 404


@pytest.mark.parametrize(("error", "detail"), [
    (NoChampion("no models under the alias 'champion' in the registry at sqlite:///x"),
     NO_CHAMPION),
    (OSError("registry at http://user:secret@mlflow:5000 unreachable"), FAILED)])
def test_without_a_champion_similar_is_a_503_that_says_why(
        error: Exception, detail: str, caplog: pytest.LogCaptureFixture) -> None:
    def load() -> FakeBundle:
        raise error

    api = InProcessApi(load=load)
    api.put_records(ItemRecord("a", title="A"))  # a catalogue alone places nothing
    for _ in range(2):
        reply = api.get("/v1/items/a/similar")
        assert reply.status_code == 503 and reply.json() == {"detail": detail}
        assert "retry-after" not in reply.headers
    assert "secret" not in caplog.text and "no champion for similar items" in caplog.text


@pytest.mark.parametrize(("error", "retried"), [(NoChampion("none yet"), False),
                                                (OSError("registry timed out"), True)])
def test_a_failed_first_load_is_retried_by_the_follower(error: Exception,
                                                        retried: bool) -> None:
    """Only an announcement loaded a champion once the first load had failed, and the
    topic keeps them for its retention only: similar items answered 503 until the next
    promotion (a review). The worker's follower retries with backoff; so does the API's."""
    asked: list[bool] = []

    def load() -> FakeBundle:
        raise error

    async def follow(serving: object, retry_champion: bool) -> None:
        asked.append(retry_champion)

    async def scenario() -> None:
        space = item_space(Catalogue(WorkerMetrics(), caught_up=True), load)
        space.follow_updates = follow
        assert await space.wait_model(5) is None
        for _ in range(50):
            if asked:
                break
            await asyncio.sleep(0.01)
        await space.stop()

    asyncio.run(scenario())
    assert asked[:1] == [retried]


def test_while_the_champion_loads_similar_is_a_503_with_retry_after() -> None:
    def slow() -> FakeBundle:
        threading.Event().wait(3)  # longer than the route waits: half the request's 2 s
        return FakeBundle()

    reply = InProcessApi(load=slow, api_request_timeout_s=2).get("/v1/items/a/similar")
    assert reply.status_code == 503 and reply.json() == {"detail": LOADING}
    assert reply.headers["retry-after"] == "5"


@pytest.mark.parametrize("query", ["k=0", "k=101", "k=x", "k=1.5"])
def test_a_bad_k_is_a_422(query: str) -> None:
    assert InProcessApi().get(f"/v1/items/a/similar?{query}").status_code == 422


def test_similar_takes_the_keys_of_reading_lists_and_is_documented() -> None:
    api = InProcessApi(api_read_keys=[READ_KEY])
    assert api.get("/v1/items/a/similar").status_code == 401
    assert api.get("/v1/items/a/similar", headers={"X-API-Key": READ_KEY}).status_code == 200
    op = api.get("/openapi.json").json()["paths"]["/v1/items/{item_id}/similar"]["get"]
    assert op["responses"]["200"]["content"]["application/json"]["schema"] == {
        "$ref": "#/components/schemas/SimilarItems"}
    assert {"401", "404", "422", "503"} <= set(op["responses"])


def test_the_item_space_loads_off_the_loop_then_swaps_what_announcements_name() -> None:
    """The first call starts the load and gives up waiting after its timeout; the load
    ends off the loop; the catalogue read meanwhile is embedded before it serves; what the
    follower swaps in later (``Serving``) is what the item space answers from."""
    release = threading.Event()
    followed: list[object] = []

    def load() -> FakeBundle:
        release.wait(5)
        return FakeBundle()

    async def follow(serving: object, retry_champion: bool) -> None:
        followed.append(serving)
        assert not retry_champion  # loaded: nothing to retry
        await asyncio.Event().wait()

    async def scenario() -> None:
        catalogue = Catalogue(WorkerMetrics(), caught_up=True)
        space = item_space(catalogue, load)
        space.follow_updates = follow
        assert await space.wait_model(0.05) is None and space.why_none == LOADING
        catalogue.take([SimpleNamespace(key=b"new", value=b'{"item_id": "new"}')])  # meanwhile
        release.set()
        await asyncio.wait_for(space.ready.wait(), 5)
        model = space.model
        assert model is not None and model.paths["new"] == "content"
        await asyncio.sleep(0)  # the follower starts
        assert followed == [space.serving]
        newer = FakeBundle(("x",))
        space.serving.bundle = newer  # as ``Serving.apply`` swaps
        assert await space.wait_model(0.05) is newer and space.bundle is newer
        await space.stop()
        assert space.task is not None and space.task.done()

    asyncio.run(scenario())
