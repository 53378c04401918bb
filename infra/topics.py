"""Create Kafka topics idempotently with explicit partition counts."""

from __future__ import annotations

from dataclasses import dataclass, field

from confluent_kafka import KafkaException
from confluent_kafka.admin import AdminClient, NewTopic

from infra.errors import StackError
from infra.kafka_client import KafkaConnection

_ADMIN_TIMEOUT_S = 15.0


@dataclass(frozen=True)
class TopicSpec:
    name: str
    partitions: int
    replication: int = 1
    config: dict[str, str] = field(default_factory=dict)


def ensure_topics(kafka: KafkaConnection, specs: list[TopicSpec]) -> list[str]:
    """Create the topics that do not exist yet; returns the names created.

    An existing topic is left alone even if its partition count differs: changing
    partitions would move keys (users) between partitions and break per-user order.
    """
    admin = AdminClient(kafka.librdkafka())
    try:
        existing = set(admin.list_topics(timeout=_ADMIN_TIMEOUT_S).topics)
    except KafkaException as exc:
        raise StackError(f"cannot list topics on {kafka.bootstrap}: {exc}") from exc
    missing = [s for s in specs if s.name not in existing]
    if not missing:
        return []
    futures = admin.create_topics(
        [NewTopic(s.name, num_partitions=s.partitions, replication_factor=s.replication, config=s.config)
         for s in missing],
        operation_timeout=_ADMIN_TIMEOUT_S,
    )
    created = []
    for name, future in futures.items():
        try:
            future.result(timeout=_ADMIN_TIMEOUT_S)
            created.append(name)
        except KafkaException as exc:
            if exc.args[0].name() != "TOPIC_ALREADY_EXISTS":  # a racing creator is fine
                raise StackError(f"cannot create topic {name!r}: {exc}") from exc
    return created
