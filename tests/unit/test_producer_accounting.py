"""Delivery accounting when nothing is acknowledged: no broker at all (port 1)."""

from __future__ import annotations

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
