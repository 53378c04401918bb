"""Reading a topic back: a broker that does not answer is one line naming what to check."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import pytest
from confluent_kafka import KafkaError, KafkaException

from infra.errors import StackError
from streams.consumer import existing_topic, read_partition


class Refusing:
    """A client whose metadata request fails with ``code``."""

    def __init__(self, code: int) -> None:
        self.code = code

    def list_topics(self, topic: str, timeout: float) -> Any:
        raise KafkaException(KafkaError(self.code, "Failed to get metadata"))


def test_an_unreachable_broker_says_to_check_the_stack() -> None:
    with pytest.raises(StackError, match=r"Kafka did not answer for topic 'interactions' "
                       r"\(Failed to get metadata\); is the stack up"):
        existing_topic(Refusing(KafkaError._TRANSPORT), "interactions")


def test_other_kafka_errors_keep_their_own_message() -> None:
    with pytest.raises(KafkaException, match="Failed to get metadata") as info:
        existing_topic(Refusing(KafkaError.TOPIC_AUTHORIZATION_FAILED), "interactions")
    assert info.value.args[0].code() == KafkaError.TOPIC_AUTHORIZATION_FAILED


class Listing:
    """A client whose metadata names ``topic`` with a per-topic ``code`` (0: none)."""

    def __init__(self, code: int) -> None:
        self.error = KafkaError(code, "denied") if code else None

    def list_topics(self, topic: str, timeout: float) -> Any:
        return SimpleNamespace(topics={topic: SimpleNamespace(error=self.error)})


def test_a_topic_the_broker_denies_is_not_called_missing() -> None:
    with pytest.raises(KafkaException, match="topic 'interactions': denied") as info:
        existing_topic(Listing(KafkaError.TOPIC_AUTHORIZATION_FAILED), "interactions")
    assert info.value.args[0].code() == KafkaError.TOPIC_AUTHORIZATION_FAILED
    with pytest.raises(KafkaException, match="topic 'interactions' does not exist"):
        existing_topic(Listing(KafkaError.UNKNOWN_TOPIC_OR_PART), "interactions")
    assert existing_topic(Listing(0), "interactions").error is None


class Denied:
    """A consumer whose every poll reports that reading the topic is not allowed."""

    def assign(self, partitions: list[Any]) -> None:
        pass

    def poll(self, timeout: float) -> Any:
        return SimpleNamespace(error=lambda: KafkaError(KafkaError.TOPIC_AUTHORIZATION_FAILED))


def test_a_bounded_read_denied_access_says_so_rather_than_waiting() -> None:
    """It read every error as an empty poll: a missing Read ACL waited out the whole
    timeout, then said "no record for 60 s"."""
    with pytest.raises(KafkaException) as info:
        next(read_partition(Denied(), "interactions", 0, 0, 10, timeout_s=1))
    assert info.value.args[0].code() == KafkaError.TOPIC_AUTHORIZATION_FAILED
