"""Which consumer errors end a topic reader, and which it reads through."""

from __future__ import annotations

import pytest
from confluent_kafka import KafkaError, KafkaException

from streams.consumer import raise_if_lasting


@pytest.mark.parametrize("code", [KafkaError._PARTITION_EOF, KafkaError._TRANSPORT,
                                  KafkaError._ALL_BROKERS_DOWN])
def test_passing_errors_are_read_through(code: int) -> None:
    raise_if_lasting(KafkaError(code))  # librdkafka reconnects by itself


@pytest.mark.parametrize("error", [KafkaError(KafkaError.TOPIC_AUTHORIZATION_FAILED),
                                   KafkaError(KafkaError._FATAL, fatal=True)])
def test_denied_access_or_a_fatal_error_ends_the_reader_in_one_line(error: KafkaError) -> None:
    with pytest.raises(KafkaException, match=error.name()):
        raise_if_lasting(error)
