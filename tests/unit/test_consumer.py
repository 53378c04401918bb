"""Reading a topic back: a broker that does not answer is one line naming what to check."""

from __future__ import annotations

from typing import Any

import pytest
from confluent_kafka import KafkaError, KafkaException

from infra.errors import StackError
from streams.consumer import existing_topic


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
