"""What the item catalogue adds to the lists the API serves: titles, and per-request
filters.

The API follows the ``items`` topic like a worker does (``streams.catalog_follower``:
``Catalogue`` keeps the newest valid record per item id), with no model needed. A list or
feed is then shown through ``shown``: the items a ``ListFilter`` asks to drop are dropped
(those outside a category, the excluded ids), the rest is cut to ``k``, and each item the
catalogue has a title for carries it (``TitledItem``). Filters apply to the top-N the
workers stored (``STREAMREC_RECS_TOP_N``), so a filtered list may hold fewer than ``k``
items, or none.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, replace

from infra.urls import mask_urls
from streams.backoff import Backoff
from streams.catalog import ItemRecord
from streams.messages import RecommendationList, ScoredItem

log = logging.getLogger(__name__)

Records = Mapping[str, ItemRecord]  # item id -> its newest record (``Catalogue.records``)
NO_RECORDS: Records = {}


@dataclass
class TitledItem(ScoredItem):
    """A list's item as the API answers it where the catalogue has the item's title."""

    title: str | None = None


@dataclass(frozen=True)
class ListFilter:
    """What a reader asked to see of a list: only items of ``category`` (as their catalogue
    record lists it), none of ``exclude``."""

    category: str | None = None
    exclude: frozenset[str] = frozenset()

    @classmethod
    def of(cls, category: str | None, exclude: str | None) -> ListFilter:
        """From the query: ``exclude`` is comma-separated item ids."""
        ids = frozenset(i.strip() for i in (exclude or "").split(",")) - {""}
        return cls(category or None, ids)

    @property
    def active(self) -> bool:
        return self.category is not None or bool(self.exclude)

    def keeps(self, item_id: str, records: Records) -> bool:
        if item_id in self.exclude:
            return False
        if self.category is None:
            return True
        record = records.get(item_id)
        return record is not None and self.category in record.categories


NO_FILTER = ListFilter()


def title_of(item_id: str, records: Records) -> str | None:
    record = records.get(item_id)
    return record.title if record is not None else None


def shown(rec: RecommendationList, k: int, records: Records = NO_RECORDS,
          keep: ListFilter = NO_FILTER) -> RecommendationList:
    """``rec`` as a reader sees it: filtered, cut to ``k``, titled. The record itself is
    returned when nothing changes (no filter, no title known), so a plain read costs only
    the lookups."""
    kept = [n for n, i in enumerate(rec.items)
            if not keep.active or keep.keeps(i.item_id, records)][:k]
    items = [rec.items[n] for n in kept]
    titled = False
    if records:
        out: list[ScoredItem] = []
        for item in items:
            title = title_of(item.item_id, records)
            if title is not None:
                titled = True
                item = TitledItem(item.item_id, item.score, item.heads, item.path, title)
            out.append(item)
        items = out
    if not titled and len(items) == len(rec.items):
        return rec
    tag = rec.experiment  # an interleaved list's teams name who placed each item: kept alike
    if tag is not None and tag.teams is not None:
        tag = replace(tag, teams=[tag.teams[n] for n in kept if n < len(tag.teams)])
    return replace(rec, items=items, experiment=tag)


async def keep_following(what: str, follow: Callable[[], Awaitable[None]],
                         first_s: float = 1.0, most_s: float = 60.0) -> None:
    """Run a follower (a coroutine that reads a topic until cancelled) and start it again
    whenever it fails (Kafka down at start-up, a broker restart), after a backoff that
    doubles while failures come in a row; a follower that ran ``most_s`` before failing
    starts the count afresh. Runs until cancelled."""
    backoff = Backoff(first_s, most_s)
    while True:
        started = time.monotonic()
        try:
            await follow()
            why = "it returned"
        except Exception as exc:  # noqa: BLE001 - any failure: start it again
            why = mask_urls(f"{type(exc).__name__}: {exc}")
        if time.monotonic() - started > most_s:
            backoff.succeeded()
        backoff.failed()
        wait_s = max(0.0, backoff.until - time.monotonic())
        log.warning("%s stopped (%s); starting it again in %.0f s", what, why, wait_s)
        await asyncio.sleep(wait_s)
