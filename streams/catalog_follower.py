"""Every worker follows the ``items`` topic and keeps the catalogue its model serves from.

Like the model follower (``streams.hot_swap``), each worker reads the whole topic with a
consumer of its own outside any group: every worker needs every item, whichever
partitions of ``interactions`` it owns. It starts from the beginning of the compacted
topic, reads it up to the end it had at start (``catch_up``), hands the surviving records
to the bundles once, and then follows it: each poll's records go to the serving bundles at
once (``ServingBundle.add_items``), so an item put into the catalogue is recommendable by
the next micro-batch, with no retrain. A swapped-in model receives the whole catalogue
before it serves (``Serving.apply``).

Records are validated again here (a producer may skip ``streamrec catalog load`` and the
API); an invalid one is counted and logged, never applied. A tombstone forgets the record;
an item a bundle already took stays in it (the bundles take no removals): a content-only
item until the next swap, an item with interactions in every model trained while the
trainer's history holds its events (README, "Removing an item is not supported yet").
Catching up before embedding keeps items deleted before the start out: Kafka leaves the
active segment uncompacted (for up to ``segment.ms``, a week by default), and a
record and its tombstone in two polls put the item back at every start.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import weakref
from collections.abc import Callable, Iterable
from typing import Any, TypeVar

from aiokafka import AIOKafkaConsumer, TopicPartition

from infra.kafka_client import KafkaConnection
from streams.catalog import ItemRecord, parse_keyed_item
from streams.events import InvalidEvent, Reason
from streams.metrics import WorkerMetrics

log = logging.getLogger(__name__)


class Catalogue:
    """The newest valid record per item id, as read from the topic."""

    def __init__(self, metrics: WorkerMetrics, caught_up: bool = False) -> None:
        self.records: dict[str, ItemRecord] = {}
        self.metrics = metrics
        # Whether the follower has read the topic to the end it had at start: before, a
        # record read may still have its tombstone unread.
        self.caught_up = caught_up
        # A pass over the topic under way (``catch_up``): read into a catalogue of its own
        # until it is whole, and looked at only to tell an item being read from one no
        # one knows (the API's similar items: 503, come back, not 404).
        self.reading: Catalogue | None = None
        # The follower found no items topic: no catalogue exists (yet), so a category
        # names no item, where before the first pass it may name many unread ones.
        self.absent = False
        # Each ``take`` is a revision; each record keeps the one that last changed it, so
        # a bundle embedded from a snapshot off the event loop takes the rest on it.
        self.revision = 0
        self._changed: dict[str, int] = {}
        # Bundles that asked for the catalogue before, held weakly: with no items topic
        # the follower never catches up, and a list kept every swapped-out champion and
        # variant (tables, index, ranker) alive, one more per retrain, for good.
        self._waiting: weakref.WeakSet[Any] = weakref.WeakSet()

    def take(self, messages: Iterable[Any]) -> list[ItemRecord]:
        """Apply consumed messages (``key``, ``value``); returns the valid records, the
        newest per item, to embed."""
        fresh: dict[str, ItemRecord] = {}
        self.revision += 1
        for m in messages:
            if m.value is None:
                key = m.key.decode(errors="replace") if m.key else ""
                self.records.pop(key, None)
                self._changed.pop(key, None)
                fresh.pop(key, None)
                continue
            try:
                record = parse_keyed_item(m.key, m.value)
            except InvalidEvent as exc:
                self.metrics.catalogue.labels(
                    "wrong_key" if exc.reason is Reason.WRONG_KEY else "invalid").inc()
                log.warning("catalogue record refused (%s): %s", exc.reason.value, exc.detail)
                continue
            self.records[record.item_id] = fresh[record.item_id] = record
            self._changed[record.item_id] = self.revision
        return list(fresh.values())

    async def load(self, load_bundle: Callable[[], Any]) -> Any:
        """``load_bundle()`` off the event loop, with every record read so far: those read
        before it started are embedded on its thread too (a catalogue of 100,000 records
        takes seconds, which on the loop held up every event and request), those read
        meanwhile by ``embed_all`` on the loop, with no await before the caller serves it."""
        since = self.revision if self.caught_up else None
        records = list(self.records.values()) if since is not None else []

        def load_and_embed() -> Any:
            bundle = load_bundle()
            self.embed(bundle, records)
            return bundle

        bundle = await off_loop(load_and_embed)
        self.embed_all(bundle, since)
        return bundle

    def embed_all(self, bundle: Any, since: int | None = None) -> None:
        """Hand a bundle about to serve every record read so far (items its training never
        saw, by content), or those changed after revision ``since`` (the rest it took
        from a snapshot, ``load``). Called on the event loop with no await before the
        bundle serves, so no record read meanwhile is missed. Before the follower has
        caught up the bundle waits for ``hand_over`` instead (a swap, an experiment's
        variant or the API's first load at start would take items deleted later in the
        topic)."""
        if not self.caught_up:
            self._waiting.add(bundle)
            return
        self.embed(bundle, [r for item, r in self.records.items()
                            if since is None or self._changed[item] > since])

    def hand_over(self, bundles: Iterable[Any]) -> None:
        """Caught up: every record to each of ``bundles`` and of the bundles that waited,
        once each."""
        self.caught_up = True
        waiting, self._waiting = list(self._waiting), weakref.WeakSet()
        for bundle in {id(b): b for b in [*bundles, *waiting]}.values():
            embed_or_log(self, bundle, list(self.records.values()))

    def replace_records(self, read: Catalogue) -> None:
        """Take ``read``'s records (a whole pass over the topic) in place of these, at
        once: readers see the old view or the new one, never a pass half read."""
        self.revision += 1
        self.records, self.reading = read.records, None
        self._changed = dict.fromkeys(self.records, self.revision)

    def embed(self, bundle: Any, records: list[ItemRecord]) -> None:
        """Hand ``records`` to ``bundle``; counted as embedded, or skipped when its model
        reads no content (trained without a catalogue)."""
        if not records:
            return
        embedded = bundle.add_items(records)
        self.metrics.catalogue.labels("embedded").inc(embedded)
        self.metrics.catalogue.labels("skipped").inc(len(records) - embedded)


async def load_with(catalogue: Catalogue | None, load_bundle: Callable[[], Any]) -> Any:
    """``load_bundle()`` off the event loop, with ``catalogue``'s records if there is one
    (``Catalogue.load``)."""
    if catalogue is not None:
        return await catalogue.load(load_bundle)
    return await off_loop(load_bundle)


T = TypeVar("T")


async def off_loop(work: Callable[[], T]) -> T:
    """``work()`` (a model load, a registry look) on a daemon thread of its own, awaited.
    The loop's default executor did the same on threads the interpreter joins at exit: a
    worker stopped while a load waited on a slow registry stayed alive, its state folder
    locked, until the load returned. Loads are rare, so a thread each costs nothing. Not
    covered: artifact downloads, which MLflow runs on a pool of its own that the exit
    still joins."""
    loop = asyncio.get_running_loop()
    done: asyncio.Future[T] = loop.create_future()

    def settle(result: Any, failure: BaseException | None) -> None:
        if done.done():  # its awaiter was cancelled
            return
        if failure is None:
            done.set_result(result)
        else:
            done.set_exception(failure)

    def run() -> None:
        result, failure = None, None
        try:
            result = work()
        except BaseException as exc:  # noqa: BLE001 - handed to the awaiter
            failure = exc
        try:
            loop.call_soon_threadsafe(settle, result, failure)
        except RuntimeError:  # the loop closed meanwhile: nobody waits
            pass

    threading.Thread(target=run, name="off-loop", daemon=True).start()
    return await done


def embed_or_log(catalogue: Catalogue, bundle: Any, records: list[ItemRecord]) -> None:
    """``catalogue.embed``, a failure counted (``failed``) and logged: one bundle that
    cannot take the records must not stop the others, nor the follower."""
    try:
        catalogue.embed(bundle, records)
    except Exception as exc:  # noqa: BLE001 - the bundle serves on without these items
        catalogue.metrics.catalogue.labels("failed").inc(len(records))
        log.error("%s could not take %d catalogue records: %s",
                  getattr(bundle, "version", "a bundle"), len(records), exc)


async def catch_up(consumer: Any, tps: list[TopicPartition], catalogue: Catalogue) -> None:
    """Read ``tps`` up to the end offsets they have now, then put what survives in
    ``catalogue``'s place at once, embedding nothing: the caller hands the survivors over
    once. Until then, a bundle loading meanwhile waits for that hand-over, after a restart
    of the follower too: the records read again so far may hold an item whose tombstone
    comes later. Read into the catalogue itself, a restarted pass showed the API old
    records and deleted items until their newer ones were read again, and kept for good
    an item whose record and tombstone were compacted away meanwhile."""
    catalogue.caught_up = False
    read = catalogue.reading = Catalogue(catalogue.metrics)
    ends = await consumer.end_offsets(tps)
    while any([await consumer.position(tp) < end for tp, end in ends.items()]):
        batch = await consumer.getmany(*tps, timeout_ms=500, max_records=5000)
        read.take(m for records in batch.values() for m in records)
        if not batch:  # an end that moved back (an unclean leader election) is not waited for
            now = await consumer.end_offsets(tps)
            ends = {tp: min(end, now[tp]) for tp, end in ends.items()}
    catalogue.replace_records(read)


async def follow_catalogue(kafka: KafkaConnection, topic: str, catalogue: Catalogue,
                           bundles: Callable[[], Iterable[Any]],
                           missing_wait_s: float = 30.0) -> None:
    """Read ``topic`` from its beginning (``catch_up``), hand its records to every bundle
    served (``bundles()``: the champion's, and an experiment's variants'), then apply each
    poll to every bundle served at that moment; runs until cancelled."""
    waited = False
    consumer = AIOKafkaConsumer(group_id=None, enable_auto_commit=False, **kafka.aiokafka())
    await consumer.start()
    try:
        # Assigned a topic that does not exist, the consumer would spin and log an error
        # per turn (thousands a second): wait for the topic instead, saying so once.
        while topic not in await consumer.topics():
            catalogue.absent = True
            if not waited:
                log.warning("catalogue topic %r does not exist; looking again every %.0f s",
                            topic, missing_wait_s)
                waited = True
            await asyncio.sleep(missing_wait_s)
        catalogue.absent = False
        tps = [TopicPartition(topic, p) for p in sorted(consumer.partitions_for_topic(topic)
                                                        or {0})]
        consumer.assign(tps)
        await consumer.seek_to_beginning(*tps)
        await catch_up(consumer, tps, catalogue)
        catalogue.hand_over(bundles())
        while True:
            batch = await consumer.getmany(timeout_ms=500, max_records=5000)
            messages = [m for records in batch.values() for m in records]
            records = catalogue.take(messages)
            for bundle in bundles():
                embed_or_log(catalogue, bundle, records)
    finally:
        await consumer.stop()
