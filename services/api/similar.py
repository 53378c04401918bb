"""``GET /v1/items/{item_id}/similar``: the items nearest to one item in the champion's
item space (``ServingBundle.similar``), so a catalogue item the model never trained on has
neighbours too, by its content. The model comes from ``item_space.ItemSpace`` (loaded on
the first request), titles from the catalogue the API follows. Reads, so the same keys as
reading lists.

The search runs on the event loop: one k-NN query, and the index only ever changes on
the loop too (new catalogue records, a swap), so a search never meets a change half-made.
"""

from __future__ import annotations

import math
from typing import Annotated, Any

import orjson
from fastapi import FastAPI, HTTPException, Query, Response
from fastapi import Path as PathParam

from services.api.auth import Access
from services.api.backends import backends_of
from services.api.catalogue import Records, title_of
from services.api.item_space import LOADING
from services.api.items import ITEMS_PATH
from services.api.lists import MAX_K
from services.api.schemas import Problem, SimilarItems
from services.api.timeouts import TIMEOUT_RESPONSE
from services.settings import Settings
from streams.events import CONTROL_CHARACTERS, MAX_ID_LENGTH
from streams.messages import wire_score

CATCHING_UP = ("the API is still reading the catalogue it started with; the model takes "
               "its items once it has: retry in a few seconds")

# ``:path`` takes an id holding '/' (a URL path, as the event schema allows), sent as is or
# as %2F: both read as '/'. Only this route takes one: a PUT of such an id in the path
# would also take ``.../similar``, so such ids are written with POST /v1/items.
SIMILAR_PATH = f"{ITEMS_PATH}/{{item_id:path}}/similar"
ITEM_ID = Annotated[str, PathParam(min_length=1, max_length=MAX_ID_LENGTH,
                                   pattern=f"^[^{CONTROL_CHARACTERS}]+$", examples=["4"])]
WAIT_S = 5.0  # the longest a request waits for the first load before its 503


def similar_answer(item_id: str, bundle: Any, k: int, records: Records
                   ) -> dict[str, Any] | None:
    """The answer's JSON (``SimilarItems``), or None for an item ``bundle`` does not know.
    Neighbours without a finite score are left out: a model whose item table went bad
    (the API's own load is not smoke-tested as a worker's is) answers the rest, not a 500."""
    rec = bundle.similar(item_id, k)
    if rec is None:
        return None
    items = []
    paths = rec.paths or ["model"] * len(rec.items)
    for item, score, path in zip(rec.items, rec.scores, paths, strict=True):
        if not math.isfinite(score):
            continue
        out = {"item_id": item, "score": wire_score(score), "path": path}
        if (title := title_of(item, records)) is not None:
            out["title"] = title
        items.append(out)
    return {"item_id": item_id, "model_version": bundle.version, "items": items}


def add_similar_route(app: FastAPI, settings: Settings, access: Access) -> None:
    wait_s = min(WAIT_S, settings.api_request_timeout_s / 2)

    @app.get(SIMILAR_PATH, response_model=SimilarItems, summary="Items similar to one item",
             description="The items nearest to this one in the champion model's item space, "
                         "nearest first. A catalogue item the model never trained on is "
                         "placed by its content (path 'content'). The first request loads "
                         "the model and may wait a few seconds.",
             dependencies=access.read_guard(),
             responses={404: {"model": Problem, "description": "the model has no embedding "
                              "for the item: neither it nor the catalogue knows it, or the "
                              "catalogue does and the model reads no content"},
                        503: {"model": Problem, "description": "no champion model loaded "
                              "yet (loading, or none in the registry), or the item is in "
                              "the catalogue the API is still reading at start"},
                        **access.read_responses(), **TIMEOUT_RESPONSE})
    async def similar(item_id: ITEM_ID, k: Annotated[int, Query(
            ge=1, le=MAX_K, description="how many items")] = 10) -> Response:
        b = backends_of(app)
        bundle = await b.items.wait_model(wait_s)
        if bundle is None:
            why = b.items.why_none
            raise HTTPException(503, why, headers={"Retry-After": "5"} if why == LOADING
                                else None)
        records = b.catalogue.records
        answer = similar_answer(item_id, bundle, k, records)
        reading = b.catalogue.reading
        if answer is None and not b.catalogue.caught_up and (
                item_id in records or (reading is not None and item_id in reading.records)):
            # the model takes the catalogue once its follower has read the topic through
            raise HTTPException(503, CATCHING_UP, headers={"Retry-After": "5"})
        if answer is None:
            raise HTTPException(404, f"item {item_id[:40]!r} is in the catalogue, but model "
                                f"{bundle.version} has no embedding for it (it reads no "
                                "content, or could not take the record: see the API's "
                                "log)" if item_id in records else
                                f"item {item_id[:40]!r} is not known to the model or the "
                                "catalogue")
        return Response(orjson.dumps(answer), media_type="application/json")
