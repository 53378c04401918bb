"""The catalogue routes in process, their Kafka ingest faked: PUT one record, POST a batch
judged per record, the same keys as posting events, and what the OpenAPI document says."""

from __future__ import annotations

import orjson
import pytest
from api_fakes import InProcessApi

from services.api.items import validate_batch, validate_put
from services.api.schemas import ItemOutcome, ItemsResult
from streams.catalog import ItemRecord

KEY, SCOPED = "event-key-0123456789", "shop-a-key-0123456789"


def put(api: InProcessApi, item_id: str, body: object, key: str | None = None) -> tuple[int, dict]:
    reply = api.call("PUT", f"/v1/items/{item_id}", content=orjson.dumps(body),
                     headers={"X-API-Key": key} if key else {})
    return reply.status_code, reply.json()


def test_put_produces_the_record_keyed_by_the_paths_id() -> None:
    api = InProcessApi()
    assert put(api, "4", {"categories": ["a1", "a2"]}) == (
        202, {"index": 0, "item_id": "4", "accepted": True})
    assert put(api, "5", {"item_id": "5", "title": "Heat", "price": 3}) == (
        202, {"index": 0, "item_id": "5", "accepted": True})
    assert api.ingest.items == [ItemRecord("4", categories=("a1", "a2")),
                                ItemRecord("5", "Heat", price=3)]


def test_an_id_with_a_slash_is_written_by_post_and_a_put_to_similar_is_a_405() -> None:
    api = InProcessApi()  # a URL path as an item id, as the event schema allows
    assert api.call("POST", "/v1/items", content=b'{"item_id": "shop/p/4"}').status_code == 202
    refused = api.call("PUT", "/v1/items/shop/p/4", content=b"{}")
    assert refused.status_code == 404  # PUT's path takes no '/': its similar route does
    refused = api.call("PUT", "/v1/items/x/similar", content=b"{}")
    assert refused.status_code == 405 and refused.headers["allow"] == "GET"
    assert [i.item_id for i in api.ingest.items] == ["shop/p/4"]


@pytest.mark.parametrize(
    ("body", "reason", "detail"),
    [
        ({"item_id": "5", "title": "Heat"}, "bad_value",
         "item_id '5' in the body is not '4' of the path"),
        ({"item_id": 4}, "wrong_type", "item_id must be a string"),  # was "'4' is not '4'"
        ({"price": -1}, "bad_value", "price must be >= 0, got -1"),
        ({"colour": "red"}, "unknown_field", "unknown fields ['colour']"),
        ([{"item_id": "4"}], "not_an_object", "expected a JSON object, got list"),
        ({"schema_version": 2}, "unknown_schema_version", "schema_version 2 is not one of [1]"),
    ],
)
def test_put_refuses_with_400_and_the_reason_and_produces_nothing(
        body: object, reason: str, detail: str) -> None:
    api = InProcessApi()
    status, answer = put(api, "4", body)
    assert (status, answer) == (400, {"index": 0, "item_id": "4", "accepted": False,
                                      "reason": reason, "detail": detail})
    ItemOutcome.model_validate(answer)
    assert api.ingest.items == []
    bad_json = api.call("PUT", "/v1/items/4", content=b"{oops")
    assert bad_json.status_code == 400 and bad_json.json()["reason"] == "bad_json"


def test_post_judges_each_record_and_produces_the_valid_ones() -> None:
    api = InProcessApi(api_max_items=3)
    reply = api.call("POST", "/v1/items", content=orjson.dumps(
        [{"item_id": "4"}, {"item_id": "5", "price": "cheap"}, {"item_id": "6", "brand": "b"}]))
    assert reply.status_code == 202
    assert reply.json() == {"accepted": 2, "rejected": 1, "results": [
        {"index": 0, "item_id": "4", "accepted": True},
        {"index": 1, "item_id": "5", "accepted": False, "reason": "wrong_type",
         "detail": "price must be a number"},
        {"index": 2, "item_id": "6", "accepted": True}]}
    ItemsResult.model_validate(reply.json())
    assert [i.item_id for i in api.ingest.items] == ["4", "6"]
    none = api.call("POST", "/v1/items", content=b'[{"title": "no id"}]')
    assert none.status_code == 400 and none.json()["accepted"] == 0
    assert none.json()["results"][0]["reason"] == "missing_field"
    one = api.call("POST", "/v1/items", content=b'{"item_id": "7"}')  # one record, no array
    assert one.status_code == 202 and api.ingest.items[-1] == ItemRecord("7")
    assert api.call("POST", "/v1/items", content=orjson.dumps([{"item_id": "8"}] * 4)
                    ).status_code == 413


def test_validators_on_bodies() -> None:
    assert validate_put(b'{"item_id": null}', "4") == ItemRecord("4")  # null: left out
    assert validate_batch(b"[]", 5) == ([], [{"index": 0, "item_id": None, "accepted": False,
                                              "reason": "bad_value",
                                              "detail": "empty array: no records"}])
    items, outcomes = validate_batch(b'[{"item_id": 4}]', 5)
    assert items == [] and outcomes[0]["item_id"] is None and outcomes[0]["reason"] == "wrong_type"
    deep = b'{"item_id": "4", "text": ' + b"[" * 300 + b"]" * 300 + b"}"  # was a 500
    assert validate_batch(deep, 5)[1][0]["reason"] == "bad_json"
    assert validate_put(deep, "4")["reason"] == "bad_json"  # type: ignore[index]


def test_writing_items_needs_an_unscoped_event_key_once_keys_are_set() -> None:
    api = InProcessApi(api_key=KEY, api_event_keys={SCOPED: "shop-a:"},
                       api_read_keys=["read-key-0123456789"])
    refused = api.call("PUT", "/v1/items/4", content=b"{}")
    assert refused.status_code == 401 and refused.headers["www-authenticate"] == \
        'ApiKey header="X-API-Key"'
    assert put(api, "4", {}, key="read-key-0123456789")[0] == 401
    assert put(api, "4", {}, key=SCOPED) == (403, {"detail": "a key scoped to some users may "
                                                              "not write the catalogue"})
    assert api.call("POST", "/v1/items", content=b'{"item_id": "4"}',
                    headers={"X-API-Key": SCOPED}).status_code == 403
    assert api.ingest.items == []
    assert put(api, "4", {}, key=KEY)[0] == 202
    assert api.call("POST", "/v1/items", content=b'{"item_id": "5"}',
                    headers={"X-API-Key": KEY}).status_code == 202
    assert [i.item_id for i in api.ingest.items] == ["4", "5"]


def test_the_openapi_document_declares_the_item_routes() -> None:
    doc = InProcessApi(api_key=KEY, api_event_keys={SCOPED: "shop-a:"}).get(
        "/openapi.json").json()
    put_op, post_op = doc["paths"]["/v1/items/{item_id}"]["put"], doc["paths"]["/v1/items"]["post"]
    assert "/v1/items/{item_id}/similar" in doc["paths"]  # ':path' is not in the document
    for op in (put_op, post_op):
        assert op["security"] == [{"eventKey": []}]
        assert {"202", "400", "401", "403", "413", "503"} <= set(op["responses"])
    put_body = put_op["requestBody"]["content"]["application/json"]["schema"]
    assert put_body["required"] == [] and "price" in put_body["properties"]
    # null counts as absent, as the validator reads it (the API contract's ST201)
    assert {"type": "null"} in put_body["properties"]["item_id"]["oneOf"]
    batch = post_op["requestBody"]["content"]["application/json"]["schema"]["oneOf"]
    assert batch[0]["required"] == ["item_id"] and batch[1]["maxItems"] == 1000
    item_id = next(p for p in put_op["parameters"] if p["name"] == "item_id")
    assert item_id["schema"]["maxLength"] == 256
