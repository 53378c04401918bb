"""The item catalogue on the API: ``PUT /v1/items/{item_id}`` (one record) and
``POST /v1/items`` (one record or an array of them), both validated with the catalogue's
schema (``streams.catalog``) and produced to the items topic, answered once Kafka has
acknowledged.

Unlike a batch of events, a batch of records is judged per record: the valid ones are
produced and the others refused, each with its reason. A record is an upsert keyed by
item id on a compacted topic, so resending one already accepted creates no duplicate,
and a client resends only the refused ones. Refused records are answered, not
dead-lettered: the client has the reason. Writing needs an unscoped event key once event
keys are configured (``auth.Access.shared_write_guard``).
"""

from __future__ import annotations

from typing import Annotated, Any

import orjson
from fastapi import FastAPI, HTTPException, Request, Response
from fastapi import Path as PathParam

from services.api.auth import Access
from services.api.backends import backends_of
from services.api.fast_reads import USER_ID_RE
from services.api.ingest import DeliveryFailed
from services.api.routes import inline_schema, json_response, read_capped
from services.api.schemas import ItemOutcome, ItemsResult, Problem
from services.api.timeouts import TIMEOUT_RESPONSE
from services.settings import Settings
from streams.catalog import ItemRecord, json_schema, parse_item
from streams.events import MAX_ID_LENGTH, InvalidEvent, Reason, reencoded

ITEMS_PATH = "/v1/items"
ITEM_PATH = "/v1/items/{item_id}"
# As user ids in paths (``routes.USER_ID``): any character but '/' and control characters.
# An id with '/' is written through POST /v1/items; ``services.api.similar`` takes one.
ITEM_ID = Annotated[str, PathParam(min_length=1, max_length=MAX_ID_LENGTH,
                                   pattern=f"^{USER_ID_RE.pattern}$", examples=["4"])]
Outcome = dict[str, Any]  # the JSON of an ``ItemOutcome``
CATALOGUE = "the catalogue"  # what a scoped key may not write (``Access.shared_write_guard``)


class TooManyItems(ValueError):
    """More records in one body than ``STREAMREC_API_MAX_ITEMS``."""


def outcome(index: int, item_id: object, error: InvalidEvent | None = None) -> Outcome:
    out: Outcome = {"index": index, "item_id": item_id if isinstance(item_id, str) else None,
                    "accepted": error is None}
    if error is not None:
        out.update(reason=error.reason.value, detail=error.detail)
    return out


def _id_of(obj: object) -> object:
    return obj.get("item_id") if isinstance(obj, dict) else None


def validate_put(body: bytes, item_id: str) -> ItemRecord | Outcome:
    """The record of a PUT to ``item_id`` (its body may leave ``item_id`` out), or the
    refusal."""
    try:
        obj = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        return outcome(0, item_id, InvalidEvent(Reason.BAD_JSON, str(exc)))
    if isinstance(obj, dict):
        if obj.get("item_id") is None:  # left out: the path's
            obj["item_id"] = item_id
        named = obj["item_id"]
        if not isinstance(named, str):  # 4 for "4": a type error, as the schema says
            return outcome(0, item_id, InvalidEvent(Reason.WRONG_TYPE,
                                                    "item_id must be a string"))
        if named != item_id:
            return outcome(0, item_id, InvalidEvent(Reason.BAD_VALUE, (
                f"item_id {str(named)[:40]!r} in the body is not {item_id[:40]!r} of the path")))
    try:
        return parse_item(reencoded(obj))
    except InvalidEvent as exc:
        return outcome(0, item_id, exc)


def validate_batch(body: bytes, max_items: int) -> tuple[list[ItemRecord], list[Outcome]]:
    """One record (a JSON object) or a JSON array of them -> (the valid records, an
    outcome per record)."""
    try:
        doc = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        return [], [outcome(0, None, InvalidEvent(Reason.BAD_JSON, str(exc)))]
    objs = doc if isinstance(doc, list) else [doc]
    if len(objs) > max_items:
        raise TooManyItems(f"{len(objs)} records in one request; the limit is {max_items}")
    if not objs:
        return [], [outcome(0, None, InvalidEvent(Reason.BAD_VALUE, "empty array: no records"))]
    items, outcomes = [], []
    for index, obj in enumerate(objs):
        try:
            items.append(parse_item(reencoded(obj)))
            outcomes.append(outcome(index, _id_of(obj)))
        except InvalidEvent as exc:
            outcomes.append(outcome(index, _id_of(obj), exc))
    return items, outcomes


def _record_schema(item_id_required: bool) -> dict[str, Any]:
    """The published record schema; for ``PUT``, whose path names the item, ``item_id``
    may be left out or given as null, which counts as absent, as any optional field's."""
    schema = inline_schema(json_schema())
    if item_id_required:
        return schema
    item_id = {"oneOf": [schema["properties"]["item_id"], {"type": "null"}]}
    return {**schema, "required": [], "properties": {**schema["properties"], "item_id": item_id}}


def add_item_routes(app: FastAPI, settings: Settings, access: Access) -> None:
    guard = access.shared_write_guard(CATALOGUE)

    async def produce(items: list[ItemRecord]) -> None:
        try:
            await backends_of(app).ingest.send_items(items)
        except DeliveryFailed as exc:
            raise HTTPException(503, str(exc)) from None

    common = {413: {"model": Problem}, 503: {"model": Problem,
                                             "description": "Kafka did not acknowledge"},
              **access.shared_write_responses(CATALOGUE), **TIMEOUT_RESPONSE}

    @app.put(ITEM_PATH, status_code=202, response_model=ItemOutcome,
             summary="Create or replace one catalogue record",
             dependencies=guard,
             openapi_extra={"requestBody": {"required": True, "description": (
                 "a record of the published catalogue schema; item_id may be left out, "
                 "and must be the path's when given"), "content": {"application/json": {
                     "schema": _record_schema(item_id_required=False)}}}},
             responses={400: {"model": ItemOutcome, "description": "refused, with the "
                              "reason; nothing was produced"}, **common})
    async def put_item(item_id: ITEM_ID, request: Request) -> Response:
        checked = validate_put(await read_capped(request, settings.api_max_body_bytes),
                               item_id)
        if not isinstance(checked, ItemRecord):
            return json_response(checked, 400)
        await produce([checked])
        return json_response(outcome(0, item_id), 202)

    @app.post(ITEMS_PATH, status_code=202, response_model=ItemsResult,
              summary="Create or replace catalogue records, judged one by one",
              dependencies=guard,
              openapi_extra={"requestBody": _batch_body(settings.api_max_items)},
              responses={400: {"model": ItemsResult, "description": "no record accepted"},
                         **common})
    async def post_items(request: Request) -> Response:
        body = await read_capped(request, settings.api_max_body_bytes)
        try:
            items, outcomes = validate_batch(body, settings.api_max_items)
        except TooManyItems as exc:
            raise HTTPException(413, str(exc)) from None
        if items:
            await produce(items)
        return json_response({"accepted": len(items), "rejected": len(outcomes) - len(items),
                              "results": outcomes}, 202 if items else 400)


def _batch_body(max_items: int) -> dict[str, Any]:
    record = _record_schema(item_id_required=True)
    return {"required": True, "description": "records of the published catalogue schema "
            "(streams/schema/item-v1.json); also: item_id printable, numbers within 64 bits",
            "content": {"application/json": {"schema": {
                "oneOf": [record, {"type": "array", "items": record, "minItems": 1,
                                   "maxItems": max_items}]}}}}
