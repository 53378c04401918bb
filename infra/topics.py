"""Create Kafka topics idempotently with explicit partition counts."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from confluent_kafka import KafkaException
from confluent_kafka.admin import AdminClient, ConfigResource, NewTopic

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
    partitions would move keys (users) between partitions and break per-user order. But
    an existing topic must have the ``cleanup.policy`` its spec asks for: a catalogue or
    experiments topic made beforehand without compaction would lose its records after
    the retention period, with nothing said.
    """
    admin = AdminClient(kafka.librdkafka())
    try:
        existing = set(admin.list_topics(timeout=_ADMIN_TIMEOUT_S).topics)
    except KafkaException as exc:
        raise StackError(f"cannot list topics on {kafka.bootstrap}: {exc}") from exc
    _check_policies(admin, [s for s in specs if s.name in existing and "cleanup.policy" in s.config])
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
            _answer(future, f"create topic {name!r}")
            created.append(name)
        except KafkaException as exc:
            if exc.args[0].name() != "TOPIC_ALREADY_EXISTS":  # a racing creator is fine
                raise StackError(f"cannot create topic {name!r}: {exc}") from exc
    return created


def _check_policies(admin: AdminClient, specs: list[TopicSpec]) -> None:
    """Raise when an existing topic's ``cleanup.policy`` is not its spec's."""
    if not specs:
        return
    futures = admin.describe_configs([ConfigResource("topic", s.name) for s in specs],
                                     request_timeout=_ADMIN_TIMEOUT_S)
    wanted = {s.name: s.config["cleanup.policy"] for s in specs}
    for resource, future in futures.items():
        try:
            entry = _answer(future, f"describe topic {resource.name!r}").get("cleanup.policy")
        except KafkaException as exc:
            raise StackError(f"cannot read the configuration of topic {resource.name!r}: "
                             f"{exc}") from exc
        policy = entry.value if entry is not None else "delete"
        if policy != wanted[resource.name]:
            raise StackError(
                f"topic {resource.name!r} exists with cleanup.policy={policy}, and it needs "
                f"{wanted[resource.name]} (its records are kept by key, not by age): set it "
                f"(kafka-configs.sh --bootstrap-server HOST:PORT --alter --entity-type topics "
                f"--entity-name {resource.name} --add-config "
                f"cleanup.policy={wanted[resource.name]}; README, Troubleshooting, for the "
                "local stack), or name another topic in the settings")


def delete_topics(kafka: KafkaConnection, names: list[str]) -> None:
    """Delete ``names`` and wait for the broker's answer: a client destroyed before its
    request went out deleted nothing, so smoke and test topics piled up on the broker.
    A topic already gone is fine; any other refusal raises ``StackError``."""
    if not names:
        return
    # Held until answered: a client let go fails its futures before the request is sent.
    admin = AdminClient(kafka.librdkafka())
    futures = admin.delete_topics(names, operation_timeout=_ADMIN_TIMEOUT_S)
    for name, future in futures.items():
        try:
            _answer(future, f"delete topic {name!r}")
        except KafkaException as exc:
            if exc.args[0].name() != "UNKNOWN_TOPIC_OR_PART":
                raise StackError(f"cannot delete topic {name!r}: {exc}") from exc


def _answer(future: Any, what: str) -> Any:
    """``future``'s result. A broker that does not answer in time raises a bare
    ``TimeoutError``, which the command line printed as ``error: `` and nothing more."""
    try:
        return future.result(timeout=_ADMIN_TIMEOUT_S)
    except TimeoutError:
        raise StackError(f"Kafka did not answer within {_ADMIN_TIMEOUT_S:.0f} s when asked "
                         f"to {what}") from None
