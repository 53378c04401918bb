"""Delivery accounting when nothing is acknowledged: no broker at all (port 1)."""

from __future__ import annotations

import pytest

from infra.kafka_client import KafkaConnection
from streams.producer import RecordProducer


class _Impatient(RecordProducer):
    """Waits a second for acknowledgements instead of thirty."""

    def flush(self, timeout_s: float = 1.0) -> int:
        return super().flush(1.0)


def test_records_unacknowledged_at_close_are_failed_and_none_delivered() -> None:
    # log_level 0: librdkafka would log each refused reconnect for the rest of the suite
    producer = _Impatient(KafkaConnection("127.0.0.1:1"), {"log_level": 0})
    for _ in range(5):
        producer.produce("t", b"k", b"v")
    producer.close()
    stats = producer.stats
    assert (stats.produced, stats.delivered, stats.failed) == (5, 0, 5)  # was delivered -5
    assert stats.last_error == "5 records not acknowledged before close"


def test_close_waits_for_each_records_final_report() -> None:
    """It gave up after 30 s where librdkafka would still deliver for 300 (its
    ``message.timeout.ms``): a broker back within those called records failed that it
    then took. Now it waits past that timeout, and 30 s where there is none (0)."""
    from streams.producer import _close_wait_s

    assert _close_wait_s({}) == 305.0
    assert _close_wait_s({"message.timeout.ms": 10_000}) == 15.0  # the API's
    assert _close_wait_s({"message.timeout.ms": 0}) == 30.0  # the worker's list producer

    class Pending(RecordProducer):  # records the waits close asks for; never delivers
        def flush(self, timeout_s: float = 30.0) -> int:
            waits.append(timeout_s)
            return 1

    waits: list[float] = []
    Pending(KafkaConnection("127.0.0.1:1"), {"log_level": 0,
                                            "message.timeout.ms": 10_000}).close()
    assert waits == [5.0, 15.0]  # a short wait, then librdkafka's own timeout and more


def test_an_event_past_the_size_limit_is_dead_lettered_at_the_producer() -> None:
    """Built in Python, its context passes ``validate``, which reads no bytes: sent, it
    reached the topic and counted as delivered, for the worker to dead-letter later."""
    from streams.events import MAX_PAYLOAD_BYTES, new_event
    from streams.producer import EventProducer

    sent: list[tuple[str, bytes | None]] = []

    class Recording(EventProducer):
        def produce(self, topic: str, key: bytes | None, value: bytes | None,
                    headers: object = None) -> None:
            sent.append((topic, key))

    producer = Recording(KafkaConnection("127.0.0.1:1"), "events", "events.dlq",
                         config={"log_level": 0})
    big = new_event("u1", "i1", context={f"k{n}": "v" * 256 for n in range(32)})
    assert len(big.to_json()) > MAX_PAYLOAD_BYTES
    producer.send(big)
    producer.send(new_event("u1", "i1"))
    assert sent == [("events.dlq", None), ("events", b"u1")]
    assert producer.stats.dead_lettered == 1


def test_replay_counts_an_event_the_producer_dead_lettered_as_such() -> None:
    """It counted it as sent, and a demo then blamed the worker for its missing list."""
    from types import SimpleNamespace

    from streams.events import MAX_PAYLOAD_BYTES, new_event
    from streams.replay import replay

    class Sizing:
        stats = SimpleNamespace(delivered=0, failed=0)

        def send(self, event: object, headers: object = None) -> bool:
            return len(event.to_json()) <= MAX_PAYLOAD_BYTES  # type: ignore[attr-defined]

        def close(self) -> None:
            pass

    big = new_event("u1", "i1", context={f"k{n}": "v" * 256 for n in range(32)})
    summary = replay(iter([new_event("u1", "i1"), big]), Sizing())  # type: ignore[arg-type]
    assert (summary.read, summary.sent, summary.dead_lettered) == (2, 1, 1)


def test_replay_progress_moves_through_a_run_of_dead_letters() -> None:
    """It was shown only after an event was sent: a run of refused rows froze the bar."""
    from types import SimpleNamespace

    from streams.events import InvalidEvent, Reason
    from streams.readers import Rejected
    from streams.replay import replay

    class Lettering:
        stats = SimpleNamespace(delivered=0, failed=0)

        def dead_letter(self, raw: bytes, error: object) -> None:
            pass

        def refresh_stats(self) -> SimpleNamespace:
            return self.stats

        def close(self) -> None:
            pass

    shown: list[int] = []
    bad = Rejected(b"{}", InvalidEvent(Reason.MISSING_FIELD, "no user_id"))
    summary = replay(iter([bad] * 7), Lettering(), progress_every=2,  # type: ignore[arg-type]
                     on_progress=lambda s: shown.append(s.dead_lettered))
    assert shown == [2, 4, 6] and summary.dead_lettered == 7


def test_a_failed_delivery_is_logged_with_its_records_key(
        caplog: pytest.LogCaptureFixture) -> None:
    """Only the topic was named: the records to send again could not be found."""
    from types import SimpleNamespace

    from confluent_kafka import KafkaError

    producer = _Impatient(KafkaConnection("127.0.0.1:1"), {"log_level": 0})
    msg = SimpleNamespace(topic=lambda: "interactions", key=lambda: b"user-7")
    with caplog.at_level("WARNING", logger="streams.producer"):
        producer.on_delivery(KafkaError(KafkaError._MSG_TIMED_OUT), msg)  # type: ignore[arg-type]
    assert "delivery to interactions failed (key b'user-7')" in caplog.text
    assert producer.stats.failed == 1
    producer.close()



def test_a_failed_delivery_names_its_topic() -> None:
    """Lists and session changelog records share the worker's producer: a changelog the
    cluster refused stopped every commit with an error read as the lists'."""
    from types import SimpleNamespace

    producer = _Impatient(KafkaConnection("127.0.0.1:1"), {"log_level": 0})
    record = SimpleNamespace(topic=lambda: "g-sessions-changelog", key=lambda: b"u1")
    producer.on_delivery("Broker: Topic authorization failed", record)  # type: ignore[arg-type]
    producer.close()
    assert producer.stats.failed == 1
    assert producer.stats.last_error == (
        "to g-sessions-changelog: Broker: Topic authorization failed")
