"""The API's Prometheus metrics and the ASGI middleware that records them per route.

Routes are labelled by their template (``/v1/users/{user_id}/recommendations``), never by
the raw path, so user ids cannot blow up the label set. The live feed is counted but kept
out of the latency histogram: its "latency" is how long a client stayed connected. The
registry carries the standard ``process_*`` and ``python_*`` collectors too, and every name
follows the worker's conventions (``streams.metrics``).
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

from prometheus_client import Counter, Gauge, Histogram

from streams.metrics import new_registry

Scope = MutableMapping[str, Any]
ASGIApp = Callable[[Scope, Callable, Callable], Awaitable[None]]

# A method label outside these is "other": any word a client sends, before auth, would
# otherwise make a series of its own.
KNOWN_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})
_LATENCY_BUCKETS = (0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0, 5.0)


class ApiMetrics:
    def __init__(self) -> None:
        r = self.registry = new_registry()
        self.requests = Counter("streamrec_api_requests_total", "HTTP requests by route and "
                                "status", ["route", "method", "status"], registry=r)
        self.latency = Histogram("streamrec_api_request_seconds", "Time to answer, by route",
                                 ["route"], buckets=_LATENCY_BUCKETS, registry=r)
        self.feed_clients = Gauge("streamrec_api_feed_clients", "SSE feed clients connected",
                                  registry=r)
        self.events_accepted = Counter("streamrec_api_events_accepted_total", "Events produced "
                                       "to Kafka from POST /v1/events", registry=r)
        self.events_rejected = Counter("streamrec_api_events_rejected_total", "Posted events "
                                       "rejected, by reason", ["reason"], registry=r)
        self.fallbacks = Counter("streamrec_api_fallbacks_total", "Answers served from "
                                 "this process's popularity because Redis was down",
                                 registry=r)


class MetricsMiddleware:
    """Counts every HTTP request and times those not in ``streaming_routes``, by route
    template."""

    def __init__(self, app: ASGIApp, metrics: ApiMetrics,
                 streaming_routes: frozenset[str] = frozenset()) -> None:
        self.app = app
        self.metrics = metrics
        self.streaming_routes = streaming_routes

    async def __call__(self, scope: Scope, receive: Callable, send: Callable) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start = time.perf_counter()
        status = [500]

        async def send_status(message: MutableMapping[str, Any]) -> None:
            if message["type"] == "http.response.start":
                status[0] = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_status)
        finally:
            # as the OpenAPI document writes it: ``{item_id}``, not ``{item_id:path}``
            route = getattr(scope.get("route"), "path_format", "unmatched")
            method = scope["method"] if scope["method"] in KNOWN_METHODS else "other"
            self.metrics.requests.labels(route, method, str(status[0])).inc()
            if route not in self.streaming_routes:
                self.metrics.latency.labels(route).observe(time.perf_counter() - start)
