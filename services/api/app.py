"""The FastAPI application: routes only. What they stand on is built in ``lifespan``:
the Redis clients, the list source, the feed hub, the Kafka ingest and the live figures.

Hot routes return JSON built by hand (``orjson``) and skip FastAPI's response
validation; their ``response_model`` documents the shape, and the fuzz test checks every
answer against it.
"""

from __future__ import annotations

import asyncio
import gc
import hmac
import logging
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager, suppress
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any

import orjson
from fastapi import FastAPI, Header, HTTPException, Query, Request, Response, Security
from fastapi import Path as PathParam
from fastapi.responses import FileResponse, StreamingResponse
from fastapi.security import APIKeyHeader
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from redis.exceptions import RedisError

from services.api.fast_reads import USER_ID_RE, FastReads
from services.api.feed import FeedHub
from services.api.ingest import DeliveryFailed, EventIngest, TooManyEvents, validate_body
from services.api.lists import MAX_K, ListSource
from services.api.live import LiveStats, RateOf
from services.api.metrics import ApiMetrics, MetricsMiddleware
from services.api.schemas import (
    Accepted,
    Health,
    LiveFigures,
    Problem,
    Readiness,
    RecommendationList,
    Rejected,
)
from services.settings import Settings
from streams.events import json_schema

log = logging.getLogger(__name__)

DASHBOARD = Path(__file__).with_name("dashboard")
REFRESH_S = 1.0  # popularity, Kafka reachability and the dead-letter rate, this often
# Ids in paths: printable ASCII without space or '/', as long as the event schema allows.
USER_ID = Annotated[str, PathParam(min_length=1, max_length=256,
                                   pattern=f"^{USER_ID_RE.pattern}$", examples=["u42"])]
K = Annotated[int, Query(ge=1, le=MAX_K, description="how many items")]
api_key_header = APIKeyHeader(name="X-API-Key", auto_error=False,
                              description="required when STREAMREC_API_KEY is set")


@dataclass
class Backends:
    """What the routes stand on; built by the lifespan, kept in ``app.state.backends``."""

    source: ListSource
    hub: FeedHub
    ingest: EventIngest
    dlq_rate: RateOf
    kafka_ok: bool = False


def _event_body_schema(max_events: int) -> dict[str, Any]:
    event = {k: v for k, v in json_schema().items() if k not in ("$schema", "$id")}
    return {"required": True, "description": "events of the published event schema; ids "
            "must also be printable and ts at most now + 1 day (422 otherwise)",
            "content": {"application/json": {"schema": {
        "oneOf": [event, {"type": "array", "items": event, "minItems": 1,
                          "maxItems": max_events}]}}}}


def _sse(payload: dict, k: int) -> bytes:
    body = orjson.dumps({**payload, "items": payload["items"][:k]})
    return b"id: %d\nevent: recommendations\ndata: %s\n\n" % (payload["published_us"] or 0,
                                                              body)


def create_api(settings: Settings) -> FastAPI:
    metrics = ApiMetrics()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        import redis.asyncio as aioredis

        from streams.consumer import TopicSizes

        client = aioredis.Redis.from_url(settings.redis, socket_timeout=0.5,
                                         socket_connect_timeout=0.5)
        listener = aioredis.Redis.from_url(settings.redis, socket_connect_timeout=0.5,
                                           health_check_interval=5)
        source = ListSource(client, settings.recs_channel, settings.recs_ttl_s,
                            on_fallback=metrics.fallbacks.inc)
        b = app.state.backends = Backends(
            source, FeedHub(listener, settings.recs_channel, LiveStats(), source),
            EventIngest(settings.kafka_servers, settings.topic_interactions), RateOf())
        sizes = TopicSizes(settings.kafka_servers)

        async def refresh() -> None:
            while True:
                with suppress(RedisError, OSError):
                    await source.refresh_popular()
                try:
                    dlq = await asyncio.to_thread(sizes.size, settings.topic_dlq)
                    b.dlq_rate.update(dlq, time.monotonic())
                    b.kafka_ok = True
                except Exception as exc:  # noqa: BLE001 - any failure means "not reachable"
                    if b.kafka_ok:
                        log.warning("kafka not reachable: %s", exc)
                    b.kafka_ok = False
                await asyncio.sleep(REFRESH_S)

        tasks = [asyncio.create_task(b.hub.run()), asyncio.create_task(refresh())]
        gc.freeze()  # what start-up built lives as long as the process: keep it out of GC
        try:
            yield
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            b.ingest.close()
            sizes.close()
            await client.aclose()
            await listener.aclose()

    app = FastAPI(title="streamrec API", version="1", lifespan=lifespan,
                  description="Next-item lists computed by the streamrec stream workers: "
                              "read them, follow them live (SSE), send events.")

    def json(body: Any, status: int = 200) -> Response:
        return Response(orjson.dumps(body), status, media_type="application/json")

    @app.get("/v1/users/{user_id}/recommendations", response_model=RecommendationList,
             summary="The user's latest list")
    async def recommendations(user_id: USER_ID, k: K = 10) -> Response:
        return json(await app.state.backends.source.current(user_id, k))

    @app.get("/v1/users/{user_id}/feed", response_class=StreamingResponse,
             summary="The user's lists, live (Server-Sent Events)",
             responses={200: {"content": {"text/event-stream": {"example":
                 'id: 1795000000000000\nevent: recommendations\ndata: {"user_id":"u42",...}\n\n'}},
                 "description": "the current list at once, then each new one; "
                                "': keep-alive' comments in between"}})
    async def feed(user_id: USER_ID, k: K = 10,
                   last_event_id: Annotated[str | None, Header(max_length=32)] = None
                   ) -> StreamingResponse:
        b = app.state.backends

        async def stream() -> AsyncIterator[bytes]:
            slot = b.hub.open(user_id)
            metrics.feed_clients.inc()
            try:
                yield b"retry: 2000\n\n"
                # The slot opens first so no list is missed; one published between that and
                # this read would then come twice, hence the check on the last id sent.
                current = await b.source.current(user_id, MAX_K)
                sent = str(current["published_us"])
                if sent != last_event_id:
                    yield _sse(current, k)
                while True:
                    payload = await slot.next(settings.api_heartbeat_s)
                    if payload is None:
                        yield b": keep-alive\n\n"
                    elif str(payload["published_us"]) != sent:
                        sent = str(payload["published_us"])
                        yield _sse(payload, k)
            finally:
                b.hub.close(user_id, slot)
                metrics.feed_clients.dec()

        return StreamingResponse(stream(), media_type="text/event-stream",
                                 headers={"Cache-Control": "no-cache",
                                          "X-Accel-Buffering": "no"})

    @app.post("/v1/events", status_code=202, response_model=Accepted,
              summary="Send one event or an array of events to Kafka",
              openapi_extra={"requestBody": _event_body_schema(settings.api_max_events)},
              responses={401: {"model": Problem}, 413: {"model": Problem},
                         422: {"model": Rejected, "description": "nothing was produced"},
                         503: {"model": Problem, "description": "Kafka did not acknowledge"}})
    async def post_events(request: Request,
                          api_key: Annotated[str | None, Security(api_key_header)] = None
                          ) -> Response:
        if settings.api_key is not None and not hmac.compare_digest(
                (api_key or "").encode(), settings.api_key.get_secret_value().encode()):
            raise HTTPException(401, "missing or wrong X-API-Key")
        body = await _read_capped(request, settings.api_max_body_bytes)
        try:
            events, rejections = validate_body(body, settings.api_max_events)
        except TooManyEvents as exc:
            raise HTTPException(413, str(exc)) from None
        if rejections:
            for r in rejections:
                metrics.events_rejected.labels(r.reason).inc()
            return json({"accepted": 0, "rejected": [r.__dict__ for r in rejections]}, 422)
        try:
            await app.state.backends.ingest.send(events)
        except DeliveryFailed as exc:
            raise HTTPException(503, str(exc)) from None
        metrics.events_accepted.inc(len(events))
        return json({"accepted": len(events)}, 202)

    @app.get("/healthz", response_model=Health, summary="The process is up")
    async def healthz() -> Response:
        return json({"status": "ok"})

    @app.get("/readyz", response_model=Readiness, summary="Kafka and Redis reachable, model "
             "version known", responses={503: {"model": Readiness}})
    async def readyz() -> Response:
        b = app.state.backends
        try:
            redis_ok = bool(await b.source.client.ping())
        except (RedisError, OSError):
            redis_ok = False
        version = b.source.model_version or b.hub.stats.model_version
        ready = redis_ok and b.kafka_ok and version is not None
        return json({"ready": ready, "kafka": b.kafka_ok, "redis": redis_ok,
                     "model_version": version}, 200 if ready else 503)

    @app.get("/v1/live", response_model=LiveFigures, summary="The dashboard's figures")
    async def live() -> Response:
        b = app.state.backends
        return json({**b.hub.stats.snapshot(time.monotonic()), "dlq_per_s": b.dlq_rate.rate,
                     "feed_clients": b.hub.clients})

    @app.get("/metrics", summary="Prometheus metrics", response_class=Response,
             responses={200: {"content": {"text/plain": {}}}})
    async def prometheus() -> Response:
        return Response(generate_latest(metrics.registry), media_type=CONTENT_TYPE_LATEST)

    @app.get("/", include_in_schema=False)
    async def dashboard() -> FileResponse:
        return FileResponse(DASHBOARD / "index.html")

    @app.get("/dashboard.js", include_in_schema=False)
    async def dashboard_script() -> FileResponse:
        return FileResponse(DASHBOARD / "dashboard.js", media_type="text/javascript")

    # Each wraps the ones added before it: the fast path for reads, then metrics, then CORS.
    app.add_middleware(FastReads, source=lambda: app.state.backends.source, route=next(
        r for r in app.routes if getattr(r, "endpoint", None) is recommendations))
    app.add_middleware(MetricsMiddleware, metrics=metrics)
    if settings.api_cors_origins:
        from fastapi.middleware.cors import CORSMiddleware

        app.add_middleware(CORSMiddleware, allow_origins=settings.api_cors_origins,
                           allow_methods=["GET", "POST"],
                           allow_headers=["Content-Type", "X-API-Key", "Last-Event-ID"])
    return app


async def _read_capped(request: Request, cap: int) -> bytes:
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
