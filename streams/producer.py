"""Small typed producers for interaction events, catalogue records and dead letters, on
confluent-kafka.

Idempotent and ``acks=all`` so a retried send never duplicates or reorders a user's
events; keys are partitioned with murmur2 like Java, aiokafka and Faust, so one user's
events land on the same partition whichever client wrote them. The producer flushes
when closed.

Delivery accounting: librdkafka calls back only for failed records
(``delivery.report.only.error``), since a Python callback per acknowledged record costs
about as much as the send itself; ``delivered`` is then produced - failed - in flight,
exact once ``flush()`` has returned.

    with EventProducer(kafka, topic="interactions", dlq_topic="interactions.dlq") as p:
        p.send(new_event("u1", "i42", "click"))
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from types import TracebackType
from typing import Any, Self

from confluent_kafka import KafkaError, Message, Producer

from infra.kafka_client import KafkaConnection
from streams.catalog import ItemRecord
from streams.consumer import existing_topic
from streams.events import Event, InvalidEvent, check_size, parse

log = logging.getLogger(__name__)

SENT_AT_HEADER = "sent_us"  # wall-clock send time, epoch microseconds, ASCII
KIND_HEADER = "kind"  # on a dead letter that is not an event: what it was meant to be
ITEM_KIND = "item"  # a catalogue record (``streams.catalog``), bound for the items topic
_FLUSH_TIMEOUT_S = 30.0
# A dead letter keeps at most this much of its record: past it the record is refused as
# oversized anyway (events at 8 KiB, catalogue records at 256 KiB), and over the client's
# limit (librdkafka's message.max.bytes, aiokafka's max_request_size: 1 MB) the send
# itself would raise, losing the letter (in a worker: crashing it on every redelivery).
MAX_LETTER_BYTES = 256 * 1024
TRUNCATED_HEADER = "truncated_from"  # a cut letter: the record's size in bytes
# A letter's key (a worker letters a record under its own key) is cut past this: a record
# the broker took may be nearly all key, and the letter with its headers then passed the
# client's limit. Nothing reads the letter's key back: `dlq redrive` keys by the user id.
MAX_LETTER_KEY_BYTES = 1024
KEY_TRUNCATED_HEADER = "key_truncated_from"  # a cut key: its size in bytes
Headers = list[tuple[str, bytes]]

PRODUCER_DEFAULTS: dict[str, object] = {
    "enable.idempotence": True,
    "acks": "all",
    "partitioner": "murmur2_random",
    "linger.ms": 5,
    "batch.num.messages": 10_000,
    "queue.buffering.max.messages": 500_000,
    "queue.buffering.max.kbytes": 1_048_576,
    "delivery.report.only.error": True,
    # librdkafka's producers ask the broker to create a topic they meet (its default, for
    # producers only): `check_topics` would create on a cluster that auto-creates the
    # topics it checks for, with the broker's defaults (`stack up` makes them as settings say)
    "allow.auto.create.topics": False,
}


def _close_wait_s(conf: dict[str, Any]) -> float:
    """How long closing waits: until librdkafka gives each record its final report (it
    fails one past ``message.timeout.ms``, 300 s by default), where 30 s called records
    failed that a broker back within those 300 s still took; 30 s where that timeout is
    none (0)."""
    timeout_ms = int(conf.get("message.timeout.ms", 300_000))
    return timeout_ms / 1000 + 5 if timeout_ms else _FLUSH_TIMEOUT_S


@dataclass
class DeliveryStats:
    """``delivered`` counts records the broker acknowledged (events and dead letters)."""

    produced: int = 0
    delivered: int = 0
    failed: int = 0
    dead_lettered: int = 0
    last_error: str | None = None


def sent_at_header() -> tuple[str, bytes]:
    return SENT_AT_HEADER, b"%d" % (time.time_ns() // 1000)


def dead_letter_headers(reason: str, detail: str, source: str, kind: str | None = None
                        ) -> list[tuple[str, bytes]]:
    """Headers of a dead letter: why it was rejected, by whom, and when; ``kind``: what
    the record was meant to be when not an event (``item``: a catalogue record), which
    tells a redrive where it goes (no ``kind`` header: an event)."""
    # Cut at 1 KiB on a character's boundary: a cut inside one left invalid UTF-8.
    cut = detail.encode()[:1024].decode(errors="ignore").encode()
    headers = [("reason", reason.encode()), ("detail", cut),
               ("source", source.encode()),
               ("rejected_ms", str(time.time_ns() // 1_000_000).encode())]
    return headers if kind is None else [*headers, (KIND_HEADER, kind.encode())]


def cut_letter(raw: bytes | None, headers: Headers, key: bytes | None = None
               ) -> tuple[bytes | None, Headers, bytes | None]:
    """A dead letter's bytes, headers and key: the bytes cut to ``MAX_LETTER_BYTES`` with
    the record's size in a ``truncated_from`` header when longer (a tombstone's None as
    it is), the key to ``MAX_LETTER_KEY_BYTES`` likewise (``key_truncated_from``)."""
    if key is not None and len(key) > MAX_LETTER_KEY_BYTES:
        headers = [*headers, (KEY_TRUNCATED_HEADER, str(len(key)).encode())]
        key = key[:MAX_LETTER_KEY_BYTES]
    if raw is None or len(raw) <= MAX_LETTER_BYTES:
        return raw, headers, key
    return (raw[:MAX_LETTER_BYTES], [*headers, (TRUNCATED_HEADER, str(len(raw)).encode())],
            key)


class NotDelivered(RuntimeError):
    """Records the broker did not acknowledge in time (a leader election, a write ACL): a
    failure the user acts on from its one line, as on Kafka being down."""


class RecordProducer:
    """Sends raw records to any topic, with delivery accounting; flushes when closed."""

    def __init__(self, kafka: KafkaConnection, config: dict[str, object] | None = None) -> None:
        conf = kafka.librdkafka(polled=True, **{**PRODUCER_DEFAULTS, **(config or {})},
                                on_delivery=self.on_delivery)
        self.stats = DeliveryStats()
        self._producer = Producer(conf)
        self._close_wait_s = _close_wait_s(conf)
        self._most_queued = int(conf.get("queue.buffering.max.messages", 100_000))

    def on_delivery(self, err: KafkaError | None, msg: Message) -> None:
        """The default delivery report: counts and logs a failure, with the record's key
        (an event's user id), so the records to send again can be found."""
        if err is not None:
            self.stats.failed += 1
            self.stats.last_error = f"to {msg.topic()}: {err}"
            log.warning("delivery to %s failed (key %r): %s", msg.topic(),
                        (msg.key() or b"")[:64], err)

    def refresh_stats(self) -> DeliveryStats:
        """Serve pending failure reports and recompute ``delivered``."""
        self._producer.poll(0)
        stats = self.stats
        stats.delivered = stats.produced - stats.failed - len(self._producer)
        return stats

    def produce(self, topic: str, key: bytes | None, value: bytes | None,
                headers: Headers | None = None,
                on_delivery: Callable[[KafkaError | None, Message], None] | None = None,
                partition: int | None = None, wait_for_room: bool = True,
                timestamp_ms: int | None = None) -> None:
        """Queue one record; when the local queue is full, serve reports until it has room
        (``wait_for_room``; else BufferError: an event loop must not spin here while a
        broker is away). ``on_delivery`` replaces the failure accounting for this record
        and, with ``delivery.report.only.error`` off, also hears of its success.
        ``partition``: where it goes (None: the partitioner picks by key); ``timestamp_ms``:
        the record's time (None: now)."""
        producer = self._producer
        extra: dict[str, Any] = {"on_delivery": on_delivery} if on_delivery is not None else {}
        if partition is not None:
            extra["partition"] = partition
        if timestamp_ms is not None:
            extra["timestamp"] = timestamp_ms
        try:
            producer.produce(topic, value, key, headers=headers, **extra)
        except BufferError:  # local queue full: serve delivery reports, then retry
            if not wait_for_room:
                raise
            while True:
                producer.poll(0.05)
                try:
                    producer.produce(topic, value, key, headers=headers, **extra)
                    break
                except BufferError:
                    continue
        self.stats.produced += 1
        producer.poll(0)

    def poll(self, timeout_s: float) -> None:
        """Serve delivery reports, waiting up to ``timeout_s`` for one."""
        self._producer.poll(timeout_s)

    def room(self) -> int:
        """How many more records the local queue takes now (``queue.buffering.max.messages``
        less those waiting), so a batch can be refused whole rather than queued in part.
        Reports are served first: librdkafka counts the unserved ones (its log lines
        among them) as waiting."""
        self._producer.poll(0)
        return self._most_queued - len(self._producer)

    def pending(self) -> int:
        """Serve delivery reports; returns how many records are not yet acknowledged."""
        self._producer.poll(0)
        return len(self._producer)

    def flush(self, timeout_s: float = _FLUSH_TIMEOUT_S) -> int:
        """Wait for outstanding deliveries; returns how many are still not acknowledged."""
        remaining = self._producer.flush(timeout_s)
        self.refresh_stats()
        return remaining

    def close(self) -> None:
        """Flush until every record has its final report; records still unacknowledged
        then count as failed (and not as in flight: ``delivered`` is what is left)."""
        remaining = self.flush(min(5.0, self._close_wait_s))
        if remaining:
            log.info("waiting up to %.0f s for the broker to acknowledge %d records",
                     self._close_wait_s, remaining)
            remaining = self.flush(self._close_wait_s)
        if remaining:
            self.stats.failed += remaining
            self.stats.last_error = f"{remaining} records not acknowledged before close"
            log.error("%d records were not acknowledged before close", remaining)
            self.stats.delivered = self.stats.produced - self.stats.failed

    def __enter__(self) -> Self:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()


class _TopicWithLetters(RecordProducer):
    """Sends to one topic and refused records to the dead-letter topic, with the reason,
    the source and, when ``kind`` is set, what kind of record it was in the headers."""

    kind: str | None = None
    default_source = "producer"

    def __init__(self, kafka: KafkaConnection, topic: str, dlq_topic: str,
                 source: str | None = None, config: dict[str, object] | None = None) -> None:
        super().__init__(kafka, config)
        self.topic = topic
        self.dlq_topic = dlq_topic
        self.source = source or self.default_source

    def check_topics(self) -> Self:
        """Raise in one line when no broker answers, or the topic or the dead-letter topic
        does not exist (``streams.consumer.existing_topic``): a command that sent into a
        stack that was down waited out librdkafka's 5-minute delivery timeout, silently,
        for each full local queue, before it said anything. Closes itself when it raises."""
        try:
            for topic in (self.topic, self.dlq_topic):
                existing_topic(self._producer, topic)
        except Exception:
            self.close()
            raise
        return self

    def dead_letter(self, raw: bytes, error: InvalidEvent) -> None:
        """Send the original bytes to the dead-letter topic with the reason in headers,
        unkeyed: these records (a file's bad lines) failed before a user id was read.
        Bytes past ``MAX_LETTER_BYTES`` are cut, the size kept in a header."""
        raw, headers, _ = cut_letter(raw, dead_letter_headers(
            error.reason.value, error.detail, self.source, kind=self.kind))
        self.stats.dead_lettered += 1
        self.produce(self.dlq_topic, None, raw, headers)


class EventProducer(_TopicWithLetters):
    """Sends events to the interactions topic and rejects to the dead-letter topic."""

    def send(self, event: Event, headers: Headers | None = None) -> bool:
        """Send a validated event, keyed by its user id (True); one past the size limit
        (its context can pass ``validate`` and still be) goes to the dead-letter topic
        (False)."""
        raw = event.to_json()
        try:
            check_size(raw)
        except InvalidEvent as exc:
            self.dead_letter(raw, exc)
            return False
        self.produce(self.topic, event.key, raw, headers)
        return True

    def send_checked(self, raw: bytes, headers: Headers | None = None) -> bool:
        """Validate raw bytes: send them unchanged when valid (True), else dead-letter them."""
        try:
            event = parse(raw)
        except InvalidEvent as exc:
            self.dead_letter(raw, exc)
            return False
        self.produce(self.topic, event.key, raw, headers)
        return True


class ItemProducer(_TopicWithLetters):
    """Sends catalogue records to the items topic, keyed by item id, and records the
    schema refuses to the dead-letter topic with ``kind: item``."""

    kind = ITEM_KIND
    default_source = "catalog"

    def send(self, item: ItemRecord) -> None:
        self.produce(self.topic, item.key, item.to_json())
