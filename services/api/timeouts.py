"""A deadline for every request but the live feeds: one that Redis, Kafka or a slow
client holds past ``STREAMREC_API_REQUEST_TIMEOUT_S`` is cut and answered 504 with one
line, so a stuck dependency costs a client seconds, never a hung connection. Live feeds
are meant to stay open and are left alone."""

from __future__ import annotations

import asyncio
import re
from collections.abc import Callable, MutableMapping
from typing import Any

import orjson

from services.api.metrics import ASGIApp, Scope
from services.api.schemas import Problem

TIMEOUT_RESPONSE: dict[int | str, dict[str, Any]] = {504: {
    "model": Problem, "description": "no answer within STREAMREC_API_REQUEST_TIMEOUT_S"}}


class RequestTimeout:
    """ASGI middleware: the deadline around each non-streaming request. It watches the
    messages going out, so a 504 replaces an answer only before its first byte."""

    def __init__(self, app: ASGIApp, timeout_s: float, streaming: re.Pattern[str]) -> None:
        self.app = app
        self.timeout_s = timeout_s
        self.streaming = streaming  # paths left without a deadline

    async def __call__(self, scope: Scope, receive: Callable, send: Callable) -> None:
        if scope["type"] != "http" or self.streaming.match(scope["path"]):
            await self.app(scope, receive, send)
            return
        started = False

        async def watch(message: MutableMapping[str, Any]) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        deadline = asyncio.timeout(self.timeout_s)
        try:
            async with deadline:
                await self.app(scope, receive, watch)
        except TimeoutError:
            if started or not deadline.expired():
                raise  # half an answer is out, or not our deadline: nothing to replace it
            body = orjson.dumps({"detail": f"no answer within {self.timeout_s:g} s"})
            await send({"type": "http.response.start", "status": 504,
                        "headers": [(b"content-type", b"application/json")]})
            await send({"type": "http.response.body", "body": body})
