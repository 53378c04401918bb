"""``GET /v1/users/{user_id}/recommendations`` without FastAPI's per-request machinery.

The read is the API's hot path. Routing, dependency solving and parameter validation cost
about 70 µs of the ~130 µs a read took here, more than the Redis round trip. This ASGI
layer answers plain valid reads itself, with the route's own constraints (``USER_ID_RE``,
``MAX_K``) and the same ``ListSource``; everything else (a bad id, an odd query, any other
route, a read without the credentials ``Access`` asks for, a filtered read) goes on to
FastAPI, which answers as documented, 401s and 422s included. Titles are added here as
there (``catalogue.shown``). It sets the matched route in the scope so
the metrics middleware labels it like any other request.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any
from urllib.parse import parse_qsl

import orjson

from services.api.auth import Access
from services.api.catalogue import NO_RECORDS, Records, shown
from services.api.lists import MAX_K, ListSource
from services.api.metrics import ASGIApp, Scope
from streams.events import CONTROL_CHARACTERS, MAX_ID_LENGTH

# Any character an event's id may hold but '/', as many as the event schema allows: the
# documented path parameter (``routes.USER_ID``). ASCII alone left a user "José" or
# "user 7", whose events were accepted, unable to read a list.
USER_ID_RE = re.compile(rf"[^/{CONTROL_CHARACTERS}]{{1,{MAX_ID_LENGTH}}}")
# ``no-store``: a list changes with each event, and a shared cache keeping one (Varnish's
# default 120 s) would serve it stale, and to a client without the read key it asked for
_HEADERS = [(b"content-type", b"application/json"), (b"cache-control", b"no-store")]


def plain_k(query: bytes) -> int | None:
    """``k`` from a query string holding nothing else (10 when empty); None otherwise.
    ASCII digits only: ``str.isdigit`` also takes "²", which ``int`` then refuses; and
    few of them: past 4,300 digits ``int`` refuses too (a 500, before any key check)."""
    if not query:
        return 10
    pairs = parse_qsl(query.decode("latin-1"), keep_blank_values=True)
    if len(pairs) != 1 or pairs[0][0] != "k" or not (v := pairs[0][1]).isascii() \
            or not v.isdigit() or len(v) > len(str(MAX_K)):
        return None
    k = int(pairs[0][1])
    return k if 1 <= k <= MAX_K else None


def credentials(scope: Scope) -> tuple[str | None, str | None]:
    """The request's ``X-API-Key`` and ``Authorization`` headers, the first of each, as
    Starlette reads them for the routes."""
    found: dict[bytes, str] = {}
    for name, value in scope["headers"]:
        if name in (b"x-api-key", b"authorization"):
            found.setdefault(name, value.decode("latin-1"))
    return found.get(b"x-api-key"), found.get(b"authorization")


class FastReads:
    def __init__(self, app: ASGIApp, source: Callable[[], ListSource], route: Any,
                 access: Access, records: Callable[[], Records] = lambda: NO_RECORDS) -> None:
        self.app = app
        self.source = source  # built at start-up, after the middleware
        self.records = records  # the catalogue's, likewise
        self.route = route    # the FastAPI route this stands in for, and whose path it serves
        self.access = access
        self.prefix, _, self.suffix = route.path.partition("{user_id}")

    async def __call__(self, scope: Scope, receive: Callable, send: Callable) -> None:
        if scope["type"] == "http" and scope["method"] == "GET":
            path: str = scope["path"]
            if path.startswith(self.prefix) and path.endswith(self.suffix):
                user = path[len(self.prefix):-len(self.suffix)]
                k = plain_k(scope["query_string"])
                if k is not None and USER_ID_RE.fullmatch(user) and (
                        self.access.reads_open or self.access.may_read(*credentials(scope))):
                    scope["route"] = self.route
                    rec = shown(await self.source().current(user, k), k, self.records())
                    await send({"type": "http.response.start", "status": 200,
                                "headers": _HEADERS})
                    await send({"type": "http.response.body", "body": orjson.dumps(rec)})
                    return
        await self.app(scope, receive, send)
