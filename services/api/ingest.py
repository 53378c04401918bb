"""``POST /v1/events``: validate posted events with the producer library's schema, then
produce them to ``interactions`` and answer only once Kafka has acknowledged them. The
item routes (``services.api.items``) produce catalogue records through the same ingest.

A batch is all or nothing: one malformed event rejects the whole body with every reason,
and nothing is produced, so a client can fix and resend without creating duplicates.
Events get the ``sent_us`` header at arrival, so send-to-publish latency includes the API,
and the request's trace context (``streams.tracing``), so their lists join its trace.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from dataclasses import dataclass
from typing import Annotated

import orjson
from confluent_kafka import KafkaError, KafkaException, Message
from pydantic import Field

from infra.kafka_client import KafkaConnection
from streams.catalog import ItemRecord
from streams.events import Event, InvalidEvent, Reason, parse, reencoded
from streams.producer import Headers, RecordProducer, sent_at_header
from streams.tracing import TraceHeaders

log = logging.getLogger(__name__)


class TooManyEvents(ValueError):
    """More events in one body than ``STREAMREC_API_MAX_EVENTS``."""


@dataclass(frozen=True)
class Rejection:
    """Why one posted event was refused."""

    # Also the documented shape of the 422's entries (``schemas.Rejected``): the field
    # descriptions are for the OpenAPI document.
    index: Annotated[int, Field(description="position in the posted array (0 for a single "
                                            "event)")]
    reason: Annotated[str, Field(description="machine-readable, as in the dead-letter header")]
    detail: str


def validate_body(body: bytes, max_events: int) -> tuple[list[Event], list[Rejection]]:
    """One event (a JSON object) or a JSON array of them -> (events, rejections)."""
    try:
        doc = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        return [], [Rejection(0, Reason.BAD_JSON.value, str(exc))]
    items = doc if isinstance(doc, list) else [doc]
    if len(items) > max_events:
        raise TooManyEvents(f"{len(items)} events in one request; the limit is {max_events}")
    if not items:
        return [], [Rejection(0, Reason.BAD_VALUE.value, "empty array: no events")]
    events, rejections = [], []
    for index, item in enumerate(items):
        try:
            events.append(parse(reencoded(item)))
        except InvalidEvent as exc:
            rejections.append(Rejection(index, exc.reason.value, exc.detail))
    return events, rejections


class DeliveryFailed(RuntimeError):
    """Kafka did not acknowledge every event in time; the client should retry."""


class EventIngest:
    """Produces events (and catalogue records, to ``items_topic``) with the idempotent
    producer; ``send`` and ``send_items`` return once all are acked.

    A background thread serves librdkafka's delivery reports and settles each record's
    future on the event loop.
    """

    def __init__(self, kafka: KafkaConnection, topic: str, timeout_s: float = 10.0,
                 items_topic: str = "items") -> None:
        self.topic = topic
        self.items_topic = items_topic
        self.timeout_s = timeout_s
        self.fatal: str | None = None  # the producer's fatal error, once it has had one
        self.producer = RecordProducer(kafka, {"delivery.report.only.error": False,
                                                   "message.timeout.ms": int(timeout_s * 1000),
                                                   "error_cb": self._on_error})
        self._stop = threading.Event()
        self._poller = threading.Thread(target=self._serve_reports, name="ingest-reports",
                                        daemon=True)
        self._poller.start()

    def _serve_reports(self) -> None:
        while not self._stop.is_set():
            self.producer.poll(0.1)

    async def send(self, events: list[Event], trace: TraceHeaders = ()) -> None:
        """Produce ``events``, each with ``trace`` (the request's trace context, so their
        lists join the request's trace); returns once Kafka acknowledged them all."""
        await self._deliver(self.topic, [(e.key, e.to_json(), [sent_at_header(), *trace])
                                         for e in events], "events")

    async def send_items(self, items: list[ItemRecord]) -> None:
        """Produce catalogue records to the items topic, keyed by item id; returns once
        Kafka acknowledged them all."""
        await self._deliver(self.items_topic, [(i.key, i.to_json(), []) for i in items],
                            "records")

    async def _deliver(self, topic: str, records: list[tuple[bytes, bytes, Headers]],
                       what: str) -> None:
        """Produce ``records`` and wait for each one's report; ``DeliveryFailed`` (a 503)
        when Kafka refuses or does not acknowledge them. A batch the local queue has no
        room for is refused before any of it is queued: queued in part, the part went out
        later, and the client's retry of the whole batch duplicated it."""
        if self.fatal is not None:
            raise DeliveryFailed(f"the event producer failed for good ({self.fatal}); "
                                 "this API must be restarted")
        if (room := self.producer.room()) < len(records):
            raise DeliveryFailed(f"Kafka's local queue is full (room for {max(room, 0)} of "
                                 f"{len(records)} {what}; none queued); retry later")
        loop = asyncio.get_running_loop()
        futures = []
        for key, value, headers in records:
            future = loop.create_future()

            def settle(err: KafkaError | None, _msg: Message,
                       future: asyncio.Future = future) -> None:
                if not loop.is_closed():  # else nobody waits: a report flushed at close
                    loop.call_soon_threadsafe(_settle, future, err)

            try:  # waiting for room would stop every request while a broker is away
                self.producer.produce(topic, key, value, headers, on_delivery=settle,
                                      wait_for_room=False)
            except BufferError:  # its byte limit: rarer than the count checked above
                raise DeliveryFailed(f"Kafka's local queue is full ({len(futures)} of "
                                     f"{len(records)} {what} queued); retry later") from None
            except KafkaException as exc:  # e.g. a topic the cluster says does not exist
                raise self._refused(exc, len(futures), len(records), what) from None
            futures.append(future)
        try:  # librdkafka times records out about once a second: its report may lag
            errors = await asyncio.wait_for(asyncio.gather(*futures), self.timeout_s + 1)
        except TimeoutError:
            raise DeliveryFailed(
                f"Kafka did not acknowledge within {self.timeout_s:g} s") from None
        failed = [e for e in errors if e is not None]
        if failed:
            raise DeliveryFailed(f"{len(failed)} of {len(records)} {what} not delivered: "
                                 f"{failed[0]}")

    def _refused(self, exc: KafkaException, queued: int, posted: int, what: str
                 ) -> DeliveryFailed:
        """The 503 for a record librdkafka refused to queue. A fatal error (the idempotent
        producer's) refuses every later record too: it is kept, logged once, and
        reported by ``/readyz`` so that the process is restarted."""
        error = exc.args[0] if exc.args else exc
        # A produce after the fatal error is refused with code _FATAL, its fatal() flag
        # false (confluent-kafka builds it from the bare code): read by its flag alone,
        # the failure was never kept, and /readyz said ready for good.
        if isinstance(error, KafkaError) and (error.fatal() or error.code() == KafkaError._FATAL):
            self._failed(error)
        return DeliveryFailed(f"Kafka refused the {what} ({queued} of {posted} queued): "
                              f"{error}")

    def _on_error(self, error: KafkaError) -> None:
        """librdkafka's error callback (the poll thread): the one place the fatal error
        itself is told, with its flag set."""
        if error.fatal():
            self._failed(error)

    def _failed(self, error: KafkaError) -> None:
        if self.fatal is None:
            self.fatal = str(error)
            log.critical("the event producer failed for good: %s; restart this API", error)

    def close(self) -> None:
        self._stop.set()
        self._poller.join()
        self.producer.close()


def _settle(future: asyncio.Future, err: KafkaError | None) -> None:
    if not future.done():
        future.set_result(None if err is None else str(err))
