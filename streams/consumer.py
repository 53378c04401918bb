"""Read records back from a topic, for ``streamrec tail`` and for tests and reports.

Uses a throw-away consumer group that never commits, so reading never moves anyone
else's offsets.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

from confluent_kafka import Consumer, KafkaError, KafkaException, Producer

from infra.errors import StackError
from infra.kafka_client import KafkaConnection


@dataclass(frozen=True)
class Record:
    topic: str
    partition: int
    offset: int
    timestamp_ms: int
    key: bytes | None
    value: bytes | None
    headers: dict[str, bytes]


_UNREACHABLE = frozenset({KafkaError._TRANSPORT, KafkaError._TIMED_OUT,
                          KafkaError._ALL_BROKERS_DOWN})


def existing_topic(client: Consumer | Producer, topic: str) -> Any:
    """``topic``'s metadata (its ``partitions``); raises ``KafkaException`` when the broker
    does not know it, rather than letting a consumer wait forever on a missing topic;
    ``StackError`` when no broker answers."""
    try:
        meta = client.list_topics(topic, timeout=10)
    except KafkaException as exc:
        error = exc.args[0] if exc.args and isinstance(exc.args[0], KafkaError) else None
        if error is None or error.code() not in _UNREACHABLE:
            raise
        raise StackError(f"Kafka did not answer for topic {topic!r} ({error.str()}); is the "
                         "stack up? `streamrec stack status` says") from exc
    error = meta.topics[topic].error if topic in meta.topics else None
    if topic not in meta.topics or (error is not None
                                    and error.code() == KafkaError.UNKNOWN_TOPIC_OR_PART):
        raise KafkaException(f"topic {topic!r} does not exist")
    if error is not None:  # denied by an ACL, a leader not yet elected: said as it is
        raise KafkaException(KafkaError(error.code(), f"topic {topic!r}: {error.str()}"))
    return meta.topics[topic]


# Errors a consumer never recovers from by itself; librdkafka retries every other.
LASTING = frozenset({KafkaError.TOPIC_AUTHORIZATION_FAILED, KafkaError.GROUP_AUTHORIZATION_FAILED,
                     KafkaError.UNKNOWN_TOPIC_OR_PART, KafkaError._AUTHENTICATION,
                     KafkaError.SASL_AUTHENTICATION_FAILED})


def raise_if_lasting(error: KafkaError) -> None:
    """Raise ``KafkaException`` for a consumer error that will not pass (fatal, or denied
    access): a reader that went on polling would wait forever and say nothing."""
    if error.fatal() or error.code() in LASTING:
        raise KafkaException(error)


def read_topic(kafka: KafkaConnection, topic: str, *, from_beginning: bool = False,
               limit: int | None = None, idle_timeout_s: float | None = None,
               on_idle: Callable[[float], None] | None = None) -> Iterator[Record]:
    """Yield records as they arrive; stops after ``limit`` records or ``idle_timeout_s`` quiet.
    ``on_idle`` runs after each poll that found nothing, with the seconds since the last
    record (or the start): it may raise to stop the read sooner (the topic's producer has
    exited)."""
    consumer = Consumer(kafka.librdkafka(polled=True, **{
        "group.id": f"streamrec-reader-{uuid.uuid4().hex[:12]}",
        "auto.offset.reset": "earliest" if from_beginning else "latest",
        "enable.auto.commit": False,
    }))
    try:
        existing_topic(consumer, topic)
        consumer.subscribe([topic])
        count, last = 0, time.monotonic()
        while limit is None or count < limit:
            msg = consumer.poll(0.2)
            if msg is None:
                if on_idle is not None:
                    on_idle(time.monotonic() - last)
                if idle_timeout_s is not None and time.monotonic() - last > idle_timeout_s:
                    return
                continue
            if msg.error() is not None:
                raise_if_lasting(msg.error())
                continue  # partition EOF and transient errors: librdkafka recovers
            last = time.monotonic()
            count += 1
            yield Record(msg.topic(), msg.partition(), msg.offset(), msg.timestamp()[1],
                         msg.key(), msg.value(), dict(msg.headers() or []))
    finally:
        consumer.close()


def read_to_end(kafka: KafkaConnection, topic: str, timeout_s: float = 60.0) -> Iterator[Record]:
    """Every record of ``topic`` from its beginning up to the end offsets it had when this
    started: a consistent snapshot while producers keep writing (for the trainer).
    Partitions are read one after another, in offset order."""
    from confluent_kafka import TopicPartition

    consumer = Consumer(kafka.librdkafka(polled=True, **{
        "group.id": f"streamrec-reader-{uuid.uuid4().hex[:12]}",
        "enable.auto.commit": False,
    }))
    try:
        for partition in sorted(existing_topic(consumer, topic).partitions):
            low, end = consumer.get_watermark_offsets(TopicPartition(topic, partition),
                                                      timeout=10)
            yield from read_partition(consumer, topic, partition, low, end, timeout_s)
    finally:
        consumer.close()


def read_partition(consumer: Consumer, topic: str, partition: int, start: int, end: int,
                   timeout_s: float = 60.0) -> Iterator[Record]:
    """Offsets ``start`` up to ``end`` (exclusive) of one partition, in order, through
    ``consumer`` (reassigned to it): a bounded read that stops at ``end`` even while
    producers keep writing, and fails rather than waits forever when records stop coming."""
    from confluent_kafka import TopicPartition

    if end <= start:
        return
    consumer.assign([TopicPartition(topic, partition, start)])
    deadline = time.monotonic() + timeout_s
    while True:
        msg = consumer.poll(0.5)
        if msg is not None and msg.error() is not None:
            raise_if_lasting(msg.error())  # denied access would read as records stopping
        if msg is None or msg.error() is not None:
            if time.monotonic() > deadline:
                raise KafkaException(f"{topic}[{partition}]: no record for "
                                     f"{timeout_s:.0f} s before offset {end}")
            continue
        deadline = time.monotonic() + timeout_s
        yield Record(msg.topic(), msg.partition(), msg.offset(), msg.timestamp()[1],
                     msg.key(), msg.value(), dict(msg.headers() or []))
        if msg.offset() >= end - 1:
            return


class TopicSizes:
    """Sizes of topics through one long-lived client, for callers that ask again and again
    (the API every second, the trainer's event trigger): a new client per question would
    connect and fetch metadata each time."""

    def __init__(self, kafka: KafkaConnection) -> None:
        self._consumer = Consumer(kafka.librdkafka(
            **{"group.id": f"streamrec-reader-{uuid.uuid4().hex[:12]}"}))

    def size(self, topic: str) -> int:
        """Records ever written to ``topic``: the sum of its partitions' end offsets."""
        from confluent_kafka import TopicPartition

        return sum(self._consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=10)[1]
                   for p in existing_topic(self._consumer, topic).partitions)

    def close(self) -> None:
        self._consumer.close()

    def __enter__(self) -> TopicSizes:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()


def topic_size(kafka: KafkaConnection, topic: str) -> int:
    """Records ever written to ``topic``, asked once."""
    with TopicSizes(kafka) as sizes:
        return sizes.size(topic)
