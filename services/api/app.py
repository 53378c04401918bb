"""The FastAPI application, wired: the route groups (``routes``), who may call them
(``auth``), the middleware, and the lifespan that builds what the routes stand on
(``backends``)."""

from __future__ import annotations

import logging

from fastapi import FastAPI, Request, Response
from fastapi.exception_handlers import http_exception_handler
from fastapi.routing import APIRoute
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.routing import Match, Route

from services.api.auth import KEY_HEADER, Access
from services.api.backends import backends_of, lifespan
from services.api.experiments import add_experiment_routes
from services.api.fast_reads import FastReads
from services.api.items import add_item_routes
from services.api.metrics import ApiMetrics, MetricsMiddleware
from services.api.routes import (
    FEED_PATH,
    add_event_route,
    add_feed_route,
    add_list_route,
    add_ops_routes,
)
from services.api.similar import add_similar_route
from services.api.timeouts import RequestTimeout
from services.settings import Settings
from streams.tracing import TRACEPARENT, TRACESTATE

log = logging.getLogger(__name__)


def create_api(settings: Settings) -> FastAPI:
    metrics = ApiMetrics()
    access = Access.of(settings)
    if not access.reads_open and not access.event_keys:
        log.warning("read keys are set but no event key: events, the catalogue and the "
                    "experiments (their promotion too) are open to any client; set "
                    "STREAMREC_API_KEY or STREAMREC_API_EVENT_KEYS to guard them")
    app = FastAPI(title="streamrec API", version="1", lifespan=lifespan(settings, metrics),
                  description="Next-item lists computed by the streamrec stream workers: "
                              "read them (filtered by category or excluded items, if "
                              "asked), follow them live (SSE), send events and catalogue "
                              "records, ask for items similar to an item, and run "
                              "experiments between live models. "
                              + access.describe())
    list_route = add_list_route(app, access)
    feed_route = add_feed_route(app, metrics, settings.api_heartbeat_s, access)
    add_event_route(app, settings, metrics, access)
    add_item_routes(app, settings, access)
    add_similar_route(app, settings, access)
    add_experiment_routes(app, settings, access)
    add_ops_routes(app, metrics, access)
    app.add_exception_handler(StarletteHTTPException, _allow_every_method)
    _add_middleware(app, settings, metrics, access, list_route, feed_route)
    return app


async def _allow_every_method(request: Request, exc: StarletteHTTPException) -> Response:
    """FastAPI's own answer, but a 405's ``Allow`` lists the methods of every route on the
    path: Starlette names only the first route it matched, so ``OPTIONS /v1/experiments``
    said ``Allow: GET`` though the path also takes ``POST`` (the API contract's ST205)."""
    if exc.status_code == 405:
        methods = sorted({m for r in request.app.routes if isinstance(r, Route)
                          and r.matches(request.scope)[0] is not Match.NONE
                          for m in r.methods or ()})
        if methods:
            exc = StarletteHTTPException(405, exc.detail, {**(exc.headers or {}),
                                                           "Allow": ", ".join(methods)})
    return await http_exception_handler(request, exc)


def _add_middleware(app: FastAPI, settings: Settings, metrics: ApiMetrics, access: Access,
                    list_route: APIRoute, feed_route: APIRoute) -> None:
    # Each wraps the ones added before it: the fast path for reads, the request deadline,
    # metrics (which so count 504s), then CORS.
    app.add_middleware(FastReads, source=lambda: backends_of(app).source, route=list_route,
                       access=access, records=lambda: backends_of(app).catalogue.records)
    app.add_middleware(RequestTimeout, timeout_s=settings.api_request_timeout_s,
                       streaming=feed_route.path_regex)
    app.add_middleware(MetricsMiddleware, metrics=metrics,
                       streaming_routes=frozenset({FEED_PATH}))
    if settings.api_cors_origins:
        from fastapi.middleware.cors import CORSMiddleware

        app.add_middleware(CORSMiddleware, allow_origins=settings.api_cors_origins,
                           allow_methods=["GET", "POST", "PUT"],
                           allow_headers=["Content-Type", KEY_HEADER, "Authorization",
                                          "Last-Event-ID", TRACEPARENT, TRACESTATE])
