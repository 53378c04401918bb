"""Redis ``GET``s made in the same turn of the event loop, sent as one ``MGET``.

Under load a process reading many keys pays redis-py's client side per command, about as
much CPU as the rest of an API read (docs/BENCHMARKS.md, "Cold reads"). Here each ``get``
joins the batch of its turn of the loop; the batch goes as one ``MGET`` (in chunks of
``most`` keys) at the next turn, and each caller gets its own key's value. Nothing is
cached: a read never answers from an earlier one.

``aiodataloader`` does the same and was tried first. It was replaced for what a server
needs of it: a batch cancelled (at shutdown) left its callers waiting for ever, as it
handles ``Exception`` only; one batch's error of any kind reached every caller, so a bug
became up to 256 failed reads instead of one fallback each; and it keeps no reference to
the tasks it starts, which asyncio may then collect mid-flight.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from redis.exceptions import RedisError

log = logging.getLogger(__name__)


class BatchedGets:
    """``await batched.get(key)``: that key's value (None when absent); raises
    ``RedisError`` whatever went wrong with its batch."""

    def __init__(self, client: Any, most: int = 256) -> None:
        if most < 1:
            raise ValueError(f"most must be at least 1, not {most}")
        self.client = client
        self.most = most
        self._waiting: list[tuple[str, asyncio.Future[bytes | None]]] = []
        self._loop: asyncio.AbstractEventLoop | None = None  # the waiting batch's
        self._tasks: set[asyncio.Task[None]] = set()  # held so that none is collected

    def get(self, key: str) -> asyncio.Future[bytes | None]:
        loop = asyncio.get_running_loop()
        if not self._waiting or self._loop is not loop:
            # A batch left by a loop closed before sending it would never be sent, and
            # every later get would wait behind it.
            self._waiting, self._loop = [], loop
            loop.call_soon(self._send)
        future: asyncio.Future[bytes | None] = loop.create_future()
        self._waiting.append((key, future))
        return future

    def _send(self) -> None:
        waiting, self._waiting = self._waiting, []
        loop = asyncio.get_running_loop()
        for at in range(0, len(waiting), self.most):
            task = loop.create_task(self._mget(waiting[at:at + self.most]))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def _mget(self, batch: list[tuple[str, asyncio.Future[bytes | None]]]) -> None:
        try:
            values = await self.client.mget([key for key, _ in batch])
            if len(values) != len(batch):
                raise RedisError(f"MGET of {len(batch)} keys gave {len(values)} values")
        except BaseException as exc:
            if not isinstance(exc, (RedisError, OSError, asyncio.CancelledError)):
                log.warning("a batched Redis read failed: %r", exc, exc_info=exc)
            for _, future in batch:
                if not future.done():
                    future.set_exception(RedisError(f"batched read failed: {exc!r}"))
            if not isinstance(exc, Exception):
                raise  # cancelled: its callers are answered, the cancellation goes on
            return
        for (_, future), value in zip(batch, values):
            if not future.done():  # its caller gave up
                future.set_result(value)
