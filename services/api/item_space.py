"""The champion's item space in the API process: the item embeddings and index that
``GET /v1/items/{item_id}/similar`` answers from.

Loaded on demand, not at start-up: the first request for similar items starts the load
(off the event loop, with the registry function the workers use) and waits for it a few
seconds; until a champion is loaded, requests get ``503``. An API process nobody asks for
similar items so never holds a model, and start-up stays as fast as before, with or
without a champion in the registry: loading a bundle at start would cost every API
process the model's memory and seconds of CPU while it answers its first reads.

Once loaded, it stays current the way a worker does, with the same parts: a
``streams.hot_swap.Serving`` follows model announcements (``follow_model_updates``) and
swaps in each new champion, given the catalogue first; the catalogue the API follows
(``streams.catalog_follower``) hands each new record to the bundle served, so a new item
is embedded by its content and has neighbours at once. With no champion yet it serves a
``NotLoaded`` placeholder, which the next announcement replaces.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Sequence
from contextlib import suppress
from typing import Any

from infra.urls import mask_urls
from services.api.catalogue import keep_following
from streams.catalog_follower import Catalogue
from streams.hot_swap import Serving
from streams.messages import NO_MODEL
from streams.metrics import WorkerMetrics
from streams.registry import NoChampion

log = logging.getLogger(__name__)

LOADING = "the champion model is loading; retry in a few seconds"
NO_CHAMPION = ("no champion model in the registry yet: similar items need one (the next "
               "one announced is loaded)")
FAILED = ("the champion model could not be loaded (the API's log says why); the next one "
          "announced is tried")


class NotLoaded:
    """What the item space serves before a champion is loaded: it embeds nothing and knows
    no item (the API's counterpart of the worker's ``NoModel``)."""

    version = NO_MODEL

    def add_items(self, records: Sequence[Any]) -> int:
        return 0

    def similar(self, item_id: str, k: int = 10) -> None:
        return None


NOT_LOADED = NotLoaded()


class ItemSpace:
    """``load_bundle`` loads the champion's serving bundle (raising when there is none);
    ``follow_updates(serving, retry_champion)`` follows the model announcements into
    ``serving`` until cancelled, retrying the champion with backoff when its first load
    failed (the announcement topic keeps announcements for its retention only).
    ``metrics`` takes what ``Serving`` and ``Catalogue`` count; the API does not expose
    them (its own metrics are ``ApiMetrics``)."""

    def __init__(self, catalogue: Catalogue, metrics: WorkerMetrics,
                 load_bundle: Callable[[], Any],
                 follow_updates: Callable[[Serving, bool], Awaitable[None]]) -> None:
        self.catalogue, self.metrics = catalogue, metrics
        self.load_bundle, self.follow_updates = load_bundle, follow_updates
        self.serving: Serving | None = None
        self.why_none = LOADING  # why there is no model, for the 503
        self.ready = asyncio.Event()  # set once the first load ended, loaded or not
        self.task: asyncio.Task[None] | None = None

    @property
    def bundle(self) -> Any:
        """The bundle served (``NOT_LOADED`` before any): what ``follow_catalogue`` hands
        each new catalogue record to."""
        return self.serving.bundle if self.serving is not None else NOT_LOADED

    @property
    def model(self) -> Any | None:
        """The champion's bundle; None while there is none."""
        bundle = self.bundle
        return None if bundle.version == NO_MODEL else bundle

    async def wait_model(self, timeout_s: float) -> Any | None:
        """The champion's bundle, starting the load on the first call and waiting for it
        at most ``timeout_s``; None when there is none by then (``why_none`` says why)."""
        if self.task is None:
            self.task = asyncio.create_task(self.run())
        if not self.ready.is_set():
            with suppress(TimeoutError):
                await asyncio.wait_for(self.ready.wait(), timeout_s)
        return self.model

    async def run(self) -> None:
        """Load the champion, then follow the announcements (until cancelled)."""
        try:
            # Loading takes seconds: off the event loop, so requests never stall; with the
            # items of the catalogue its training never saw, by content (``Catalogue.load``).
            bundle = await self.catalogue.load(self.load_bundle)
        except Exception as exc:  # noqa: BLE001 - no champion, or the registry failed
            log.warning("no champion for similar items (%s); following announcements",
                        mask_urls(f"{type(exc).__name__}: {exc}"))
            bundle = NOT_LOADED
            self.why_none = NO_CHAMPION if isinstance(exc, NoChampion) else FAILED
        self.serving = Serving(bundle, self.metrics, catalogue=self.catalogue)
        self.ready.set()
        serving = self.serving  # a failed load, not "no champion", is retried: with no
        # announcement on the topic nothing else would load it, and similar items
        # answered 503 until the next promotion (a review)
        await keep_following("the model follower", lambda: self.follow_updates(
            serving, self.model is None and self.why_none == FAILED))

    async def stop(self) -> None:
        if self.task is not None:
            self.task.cancel()
            with suppress(asyncio.CancelledError):
                await self.task
