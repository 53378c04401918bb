"""Dead letters through the real broker: inspect by reason, redrive what a fix made valid."""

from __future__ import annotations

from collections.abc import Callable
from functools import partial

import orjson
from typer.testing import CliRunner

from services.cli import app
from services.settings import Settings
from streams.consumer import read_to_end
from streams.dead_letters import (
    FIRST_WRITTEN_HEADER,
    REDRIVEN_FROM_HEADER,
    REDRIVES_HEADER,
    DeadLetterQueue,
    Span,
    redrive,
)
from streams.events import Event
from streams.producer import EventProducer, RecordProducer, dead_letter_headers

VALID = Event("0b6f2c8e-3f5e-4c1a-9a57-7d2f1c3b4a5e", "u-fixed", "i1", "view", 1_700_000_000_000)
LIKE = orjson.dumps({**VALID.to_dict(), "user_id": "u2", "event_type": "like"})
BAD = [b"{not json", b"[1, 2", LIKE]


def _cli(dlq: str, interactions: str, group: str, *args: str) -> str:
    env = {"STREAMREC_TOPIC_DLQ": dlq, "STREAMREC_TOPIC_INTERACTIONS": interactions}
    result = CliRunner().invoke(app, ["dlq", *args, "--group", group], env=env)
    assert result.exit_code == 0, result.output
    return " ".join(result.output.split())


def test_inspect_then_redrive_exactly_the_fixed_letter_once(
    settings: Settings, new_topic: Callable[..., str], group_id: str
) -> None:
    dlq, interactions = new_topic(), new_topic(partitions=2)
    with EventProducer(settings.kafka, interactions, dlq) as producer:
        assert [producer.send_checked(raw) for raw in BAD] == [False] * 3
    with RecordProducer(settings.kafka) as producer:  # as if the rule had since been relaxed
        producer.produce(dlq, b"u-fixed", VALID.to_json(),
                         dead_letter_headers("unknown_event_type", "'view' was unknown", "worker"))
    cli = partial(_cli, dlq, interactions, group_id)

    shown = cli("inspect", "--examples", "2")
    assert "4 dead letters not yet handled" in shown
    assert "bad_json │ 2" in shown and "unknown_event_type │ 2" in shown
    assert "unknown_event_type: 'view' was unknown" in shown  # the second example
    assert "redriven 1, still invalid 3 (bad_json 2, unknown_event_type 1); dry run" in cli(
        "redrive", "--dry-run")
    assert cli("redrive", "--yes") == "redriven 1, still invalid 3 (bad_json 2, unknown_event_type 1)"

    (sent,) = read_to_end(settings.kafka, interactions)
    assert (sent.key, sent.value) == (b"u-fixed", VALID.to_json())
    assert sent.headers[REDRIVEN_FROM_HEADER] == f"{dlq}[0]@3".encode()
    back = list(read_to_end(settings.kafka, dlq))[4:]
    assert [r.value for r in back] == BAD and all(r.headers[REDRIVES_HEADER] == b"1" for r in back)
    assert [r.headers["reason"] for r in back] == [b"bad_json", b"bad_json", b"unknown_event_type"]
    assert "3 dead letters not yet handled" in cli("inspect")
    assert "4 dead letters kept" in cli("inspect", "--all")  # copies count once

    with DeadLetterQueue(settings.kafka, dlq, group_id) as queue:
        again = redrive(queue, queue.pending(), interactions)
        assert (again.read, again.redriven, again.committed) == (3, 0, True)
        left = redrive(queue, queue.pending(), interactions, only="wrong_type")
        assert left.left_out == {"bad_json": 2, "unknown_event_type": 1}
    assert len(list(read_to_end(settings.kafka, interactions))) == 1  # nothing new sent
    tail = list(read_to_end(settings.kafka, dlq))[7:]
    assert [r.value for r in tail] == BAD * 2
    assert [r.headers[REDRIVES_HEADER] for r in tail] == [b"2"] * 6  # the filter kept the count
    assert {r.headers[FIRST_WRITTEN_HEADER] for r in tail} == {f"{dlq}[0]@{o}".encode()
                                                               for o in range(3)}
    assert "4 dead letters kept" in cli("inspect", "--all")


def test_letters_retention_deleted_before_they_were_handled_are_said_to_be_gone(
    settings: Settings, new_topic: Callable[..., str], group_id: str
) -> None:
    """Retention deletes letters whether or not anyone handled them; inspect and redrive
    started after the oldest kept and said nothing of the ones before it."""
    from confluent_kafka import TopicPartition
    from confluent_kafka.admin import AdminClient

    dlq, interactions = new_topic(), new_topic()
    with EventProducer(settings.kafka, interactions, dlq) as producer:
        for raw in BAD * 2:
            producer.send_checked(raw)
    cli = partial(_cli, dlq, interactions, group_id)
    with DeadLetterQueue(settings.kafka, dlq, group_id) as queue:
        queue.commit([Span(0, 0, 2)])  # two handled
    admin = AdminClient(settings.kafka.librdkafka())  # held: its futures need it alive
    (done,) = admin.delete_records([TopicPartition(dlq, 0, 4)]).values()
    done.result(timeout=30)  # as retention would: offsets 0..3 gone
    shown = cli("inspect")
    assert f"warning: 2 dead letters in {dlq} expired before {group_id} handled them" in shown
    assert "2 dead letters not yet handled" in shown
    assert "2 dead letters kept" in cli("inspect", "--all")
    with DeadLetterQueue(settings.kafka, dlq, group_id) as queue:
        queue.commit(queue.pending())
    assert "expired" not in cli("inspect")  # said until the group moves past the gap
