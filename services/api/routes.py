"""The API's routes in four groups, each added to the app by one function given what it
needs: the list, its live feed, posted events, and the operational routes (health,
readiness, the dashboard's figures, Prometheus, the dashboard). What they stand on is
reached at request time through ``backends.backends_of``; who may call them is said by
``auth.Access``, whose guards and answers each route takes. The routes go on the app itself
rather than through ``APIRouter``s: this FastAPI matches an included router's routes
through one more layer on every request. Lists and feeds go out through
``catalogue.shown``: titled from the catalogue, filtered as the request asks.

Routes return JSON built by hand (``orjson``, which serializes the list records as they
are) and skip FastAPI's response validation; their ``response_model`` documents the shape,
and the fuzz test checks every answer against it.
"""

from __future__ import annotations

import time
from collections.abc import AsyncGenerator
from pathlib import Path
from typing import Annotated, Any

import orjson
from fastapi import FastAPI, Header, HTTPException, Query, Request, Response
from fastapi import Path as PathParam
from fastapi.responses import FileResponse, StreamingResponse
from fastapi.routing import APIRoute
from prometheus_client import CONTENT_TYPE_LATEST, Gauge, generate_latest
from redis.exceptions import RedisError

from services.api.auth import KEY_CHALLENGE, KEY_HEADER, Access
from services.api.backends import Backends, backends_of
from services.api.catalogue import NO_FILTER, ListFilter, shown
from services.api.fast_reads import USER_ID_RE
from services.api.feed import FeedsFull
from services.api.ingest import DeliveryFailed, TooManyEvents, validate_body
from services.api.lists import FALLBACK, MAX_K, WHOLE
from services.api.metrics import ApiMetrics
from services.api.schemas import (
    LIST_EXAMPLE,
    Accepted,
    Health,
    LiveFigures,
    Problem,
    Readiness,
    Rejected,
)
from services.api.timeouts import TIMEOUT_RESPONSE
from services.settings import Settings
from streams.catalog import MAX_NAME_LENGTH
from streams.events import MAX_ID_LENGTH, MAX_PAYLOAD_BYTES, Event, json_schema
from streams.messages import RecommendationList
from streams.tracing import TRACEPARENT, TRACESTATE, from_request

LIST_PATH = "/v1/users/{user_id}/recommendations"
FEED_PATH = "/v1/users/{user_id}/feed"
DASHBOARD = Path(__file__).with_name("dashboard")
# Ids in paths: any character but '/' and control characters, as long as the event schema
# allows (``fast_reads.USER_ID_RE``).
USER_ID = Annotated[str, PathParam(min_length=1, max_length=MAX_ID_LENGTH,
                                   pattern=f"^{USER_ID_RE.pattern}$", examples=["u42"])]
K = Annotated[int, Query(ge=1, le=MAX_K, description="how many items")]
CATEGORY = Annotated[str | None, Query(min_length=1, max_length=MAX_NAME_LENGTH, description=(
    "keep only items whose catalogue record has this category (filters the stored list, "
    "so fewer than k items may come back)"))]
EXCLUDE = Annotated[str | None, Query(max_length=8192, description=(
    "comma-separated item ids to leave out (filters the stored list, so fewer than k "
    "items may come back)"))]


CATEGORIES_READING = ("the API is still reading the catalogue it started with, so a "
                      "category filter would drop items whose record it has not read yet: "
                      "retry in a few seconds")
CATEGORY_RESPONSE: dict[int | str, dict[str, Any]] = {503: {
    "model": Problem,
    "description": "a category asked for while the API still reads the catalogue it started with"}}


def _categories_read(b: Backends, keep: ListFilter) -> None:
    """A category filter keeps the items whose record names the category: until the first
    pass over the catalogue topic is whole (before it starts too: Kafka down at the
    API's start, the follower's consumer starting), most records are not there yet, and a
    list came back silently short (often empty). 503 with ``Retry-After`` instead, as
    similar items do then; with no items topic at all there is nothing to wait for. A
    later pass (the follower restarted after a Kafka hiccup) reads beside the whole
    records of the one before, which serve meanwhile (revision 0: none yet)."""
    if (keep.category is not None and b.catalogue.revision == 0
            and not b.catalogue.absent):
        raise HTTPException(503, CATEGORIES_READING, headers={"Retry-After": "5"})


LIST_NOTE = ("The workers' record, each item with its catalogue `title` where the catalogue "
             "has one. `category` and `exclude` filter the top-N the workers stored, so a "
             "filtered list may hold fewer than k items.")


def json_response(body: Any, status: int = 200) -> Response:
    """A JSON answer built by hand (orjson), for routes whose body is not a model; never
    cached (``fast_reads._HEADERS``: every answer here is of the moment)."""
    return Response(orjson.dumps(body), status, media_type="application/json",
                    headers={"Cache-Control": "no-store"})


def inline_schema(schema: dict[str, Any]) -> dict[str, Any]:
    """A published JSON Schema without its ``$schema`` and ``$id``, to nest in OpenAPI."""
    return {k: v for k, v in schema.items() if k not in ("$schema", "$id")}


# The HTTP server (uvicorn on httptools) refuses a request line past ~64 KiB before the
# app sees it: within the parameters' own limits, a long ``exclude`` of non-ASCII ids (12
# bytes a character, percent-encoded) gets there.
LONG_URL_RESPONSE: dict[int | str, dict[str, Any]] = {400: {
    "content": {"text/plain": {"example": "Invalid HTTP request received."}},
    "description": "a URL over ~64 KiB, refused by the HTTP server (e.g. an exclude list "
                   "of thousands of non-ASCII ids): send fewer"}}


def add_list_route(app: FastAPI, access: Access) -> APIRoute:
    """Adds the list route; returns it, for ``FastReads`` to stand in for."""

    @app.get(LIST_PATH, response_model=RecommendationList, summary="The user's latest list",
             description=LIST_NOTE, dependencies=access.read_guard(),
             responses={200: {"content": {"application/json": {"example": LIST_EXAMPLE}}},
                        **CATEGORY_RESPONSE, **LONG_URL_RESPONSE, **access.read_responses(),
                        **TIMEOUT_RESPONSE})
    async def recommendations(user_id: USER_ID, k: K = 10, category: CATEGORY = None,
                              exclude: EXCLUDE = None) -> Response:
        b, keep = backends_of(app), ListFilter.of(category, exclude)
        _categories_read(b, keep)
        rec = await b.source.current(user_id, WHOLE if keep.active else k)
        return json_response(shown(rec, k, b.catalogue.records, keep))

    return _route_of(app, recommendations)


def add_feed_route(app: FastAPI, metrics: ApiMetrics, heartbeat_s: float,
                   access: Access) -> APIRoute:
    """Adds the live feed; returns it, for the request deadline to leave alone."""

    @app.get(FEED_PATH, response_class=StreamingResponse,
             summary="The user's lists, live (Server-Sent Events)",
             description=LIST_NOTE, dependencies=access.read_guard(),
             responses={200: {"content": {"text/event-stream": {"example":
                 'id: 1795000000000000\nevent: recommendations\ndata: {"user_id":"u42",...}\n\n'}},
                 "description": "the current list at once, then each new one; "
                                "': keep-alive' comments in between"},
                 503: {"model": Problem, "description": "as many live feeds are open as "
                       "STREAMREC_API_MAX_FEEDS allows, or a category asked for while the "
                       "API still reads the catalogue it started with"}, **LONG_URL_RESPONSE,
                 **access.read_responses()})
    async def feed(user_id: USER_ID, k: K = 10, category: CATEGORY = None,
                   exclude: EXCLUDE = None,
                   last_event_id: Annotated[str | None, Header(max_length=32)] = None
                   ) -> StreamingResponse:
        b = backends_of(app)
        _categories_read(b, ListFilter.of(category, None))
        events = feed_events(b, user_id, k, last_event_id, heartbeat_s, metrics.feed_clients,
                             ListFilter.of(category, exclude))
        try:
            # Started here, so a full hub is a 503 before the 200 goes out, and the slot
            # it opens is closed with the stream even if the stream is never read.
            first = await anext(events)
        except FeedsFull as exc:
            raise HTTPException(503, str(exc), headers={"Retry-After": "5"}) from None
        return StreamingResponse(_resumed(first, events), media_type="text/event-stream",
                                 headers={"Cache-Control": "no-cache",
                                          "X-Accel-Buffering": "no"})

    return _route_of(app, feed)


def _route_of(app: FastAPI, endpoint: Any) -> APIRoute:
    return next(r for r in app.routes if isinstance(r, APIRoute) and r.endpoint is endpoint)


async def _resumed(first: bytes, rest: AsyncGenerator[bytes, None]
                   ) -> AsyncGenerator[bytes, None]:
    """A started stream: its first chunk again, then the rest."""
    try:
        yield first
        async for chunk in rest:
            yield chunk
    finally:
        await rest.aclose()


def client_holds(current: RecommendationList, last_event_id: str | None) -> bool:
    """Whether a client reconnecting with ``last_event_id`` (the ``published_us`` of the
    list it shows) keeps what it shows rather than take ``current``: the same list, or
    one ``current`` must not replace, as the feed's own lists never do: popularity served
    because Redis did not answer, an empty list, or one published before the client's.
    Sent regardless, a reconnect during a Redis outage blanked the client's table."""
    if last_event_id is None:
        return False
    if not (last_event_id.isascii() and last_event_id.isdigit() and len(last_event_id) < 20):
        return str(current.published_us) == last_event_id  # not an id this API sent
    return (current.path == FALLBACK or not current.items
            or (current.published_us or 0) <= int(last_event_id))


async def feed_events(b: Backends, user_id: str, k: int, last_event_id: str | None,
                       heartbeat_s: float, clients: Gauge, keep: ListFilter = NO_FILTER
                       ) -> AsyncGenerator[bytes, None]:
    """One feed's stream: the current list unless the client already has it, then each
    new one, with a heartbeat comment after ``heartbeat_s`` without one. Each list is
    shown filtered by ``keep`` and titled from the catalogue's records as they are then
    (a restarted catalogue follower puts new ones in their place)."""
    slot = b.hub.open(user_id)
    clients.inc()
    try:
        yield b"retry: 2000\n\n"
        # The slot opens first so no list is missed; one published between that and
        # this read would then come twice, hence the check on the last id sent.
        last = await b.source.current(user_id, WHOLE)  # as the channel's lists come
        if not client_holds(last, last_event_id):
            yield _sse(shown(last, k, b.catalogue.records, keep))
        while True:
            rec = await slot.next(heartbeat_s)
            if rec is None and last.path == FALLBACK:  # Redis did not answer: ask again,
                rec = await b.source.current(user_id, WHOLE)  # or an idle user's feed
                if rec.path == FALLBACK:  # showed popularity until their next event
                    rec = None
            if rec is None:
                yield b": keep-alive\n\n"
            elif rec.published_us != last.published_us and rec.may_replace(last):
                last = rec  # never back in time, nor an empty list over one with items
                yield _sse(shown(rec, k, b.catalogue.records, keep))
    finally:
        b.hub.close(user_id, slot)
        clients.dec()


def _sse(rec: RecommendationList) -> bytes:
    """One list as an event; its id is its ``published_us``, which a reconnecting client
    sends back (``client_holds``), but 0 for the popularity served while Redis did not
    answer: its newer time made a client holding it refuse the user's own list."""
    sent_id = 0 if rec.path == FALLBACK else rec.published_us or 0
    return b"id: %d\nevent: recommendations\ndata: %s\n\n" % (sent_id, orjson.dumps(rec))


def add_event_route(app: FastAPI, settings: Settings, metrics: ApiMetrics,
                    access: Access) -> None:
    @app.post("/v1/events", status_code=202, response_model=Accepted,
              summary="Send one event or an array of events to Kafka",
              dependencies=access.event_guard(),
              openapi_extra={"requestBody": _event_body_schema(settings.api_max_events),
                             "parameters": _TRACE_PARAMETERS},
              responses={413: {"model": Problem},
                         422: {"model": Rejected, "description": "nothing was produced"},
                         503: {"model": Problem,
                               "description": "Kafka did not acknowledge"},
                         **access.event_responses(), **TIMEOUT_RESPONSE})
    async def post_events(request: Request) -> Response:
        prefix = access.event_prefix(request.headers.get(KEY_HEADER))
        if prefix is None:
            raise HTTPException(401, f"missing or wrong {KEY_HEADER}",
                                headers={"WWW-Authenticate": KEY_CHALLENGE})
        body = await read_capped(request, settings.api_max_body_bytes)
        try:
            events, rejections = validate_body(body, settings.api_max_events)
        except TooManyEvents as exc:
            raise HTTPException(413, str(exc)) from None
        if rejections:
            for r in rejections:
                metrics.events_rejected.labels(r.reason).inc()
            return json_response({"accepted": 0, "rejected": rejections}, 422)
        outside = _outside_scope(events, prefix)
        if outside:
            raise HTTPException(403, outside)
        try:
            await backends_of(app).ingest.send(events, from_request(
                request.headers.get(TRACEPARENT), request.headers.get(TRACESTATE)))
        except DeliveryFailed as exc:
            raise HTTPException(503, str(exc)) from None
        metrics.events_accepted.inc(len(events))
        return json_response({"accepted": len(events)}, 202)


# Read from the request by ``from_request``, documented here: passed on to each event.
_TRACE_PARAMETERS = [{"name": name, "in": "header", "required": False,
                      "schema": {"type": "string"}, "description": "W3C trace context, put "
                      "on each event's Kafka record and on the list it causes (a malformed "
                      "one is dropped)"} for name in (TRACEPARENT, TRACESTATE)]


def _outside_scope(events: list[Event], prefix: str) -> str | None:
    """Why a key scoped to ``prefix`` may not post these events, or None when it may."""
    index = next((n for n, e in enumerate(events) if not e.user_id.startswith(prefix)), None)
    if index is None:
        return None
    return (f"this key may post events only for users whose id starts with {prefix!r}; "
            f"event {index} is for {events[index].user_id[:40]!r}")


def _event_body_schema(max_events: int) -> dict[str, Any]:
    event = inline_schema(json_schema())
    return {"required": True, "description": "events of the published event schema; also "
            "(422 otherwise): ids printable, ts at most now + 1 day, each event at most "
            f"{MAX_PAYLOAD_BYTES} bytes of JSON",
            "content": {"application/json": {"schema": {
        "oneOf": [event, {"type": "array", "items": event, "minItems": 1,
                          "maxItems": max_events}]}}}}


async def read_capped(request: Request, cap: int) -> bytes:
    """The body, or 413 as soon as it is known to exceed ``cap`` bytes."""
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > cap:
        raise HTTPException(413, f"body of {declared} bytes; the limit is {cap}")
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > cap:
            raise HTTPException(413, f"body over the limit of {cap} bytes")
        chunks.append(chunk)
    return b"".join(chunks)


def add_ops_routes(app: FastAPI, metrics: ApiMetrics, access: Access) -> None:
    """Health and readiness stay open for probes; the figures and metrics are reads."""

    @app.get("/healthz", response_model=Health, summary="The process is up",
             responses=TIMEOUT_RESPONSE)
    async def healthz() -> Response:
        return json_response({"status": "ok"})

    @app.get("/readyz", response_model=Readiness, summary="Kafka and Redis reachable, "
             "model version known", responses={503: {"model": Readiness}, **TIMEOUT_RESPONSE})
    async def readyz() -> Response:
        b = backends_of(app)
        try:
            redis_ok = bool(await b.source.client.ping())
        except (RedisError, OSError):
            redis_ok = False
        version = b.source.model_version or b.hub.stats.model_version
        kafka_ok = b.kafka_ready and b.ingest.fatal is None  # a producer failed for good: no
        ready = redis_ok and kafka_ok and version is not None
        return json_response({"ready": ready, "kafka": kafka_ok, "redis": redis_ok,
                              "model_version": version}, 200 if ready else 503)

    @app.get("/v1/live", response_model=LiveFigures, summary="The dashboard's figures",
             dependencies=access.read_guard(),
             responses={**access.read_responses(), **TIMEOUT_RESPONSE})
    async def live() -> Response:
        b = backends_of(app)
        return json_response({**b.hub.stats.snapshot(time.monotonic()),
                              "dlq_per_s": b.dlq_rate.rate, "feed_clients": b.hub.clients})

    @app.get("/metrics", summary="Prometheus metrics", response_class=Response,
             dependencies=access.read_guard(),
             responses={200: {"content": {"text/plain": {}}}, **access.read_responses(),
                        **TIMEOUT_RESPONSE})
    async def prometheus() -> Response:
        return Response(generate_latest(metrics.registry), media_type=CONTENT_TYPE_LATEST)

    @app.get("/", include_in_schema=False)
    async def dashboard() -> FileResponse:
        return FileResponse(DASHBOARD / "index.html")

    @app.get("/dashboard.js", include_in_schema=False)
    async def dashboard_script() -> FileResponse:
        return FileResponse(DASHBOARD / "dashboard.js", media_type="text/javascript")
