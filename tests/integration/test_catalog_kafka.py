"""The catalogue through the real broker: ``catalog load`` onto the items topic with its
dead letters, ``tail`` of that topic, a catalogue letter redriven back to items, and the
declared items topic being compacted."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

import orjson
from confluent_kafka.admin import AdminClient, ConfigResource
from typer.testing import CliRunner

from services.cli import app
from services.settings import Settings
from streams.catalog import ItemRecord
from streams.consumer import read_to_end
from streams.dead_letters import REDRIVEN_FROM_HEADER
from streams.producer import ITEM_KIND, RecordProducer, dead_letter_headers

GOOD = [ItemRecord("4", categories=("a1", "a2")), ItemRecord("5", "Heat", price=9.5),
        ItemRecord("6", brand="acme", attributes={"year": 1995})]
BAD = b'{"item_id": "7", "price": -1}'


def _cli(env: dict[str, str], *args: str) -> str:
    result = CliRunner().invoke(app, list(args), env=env)
    assert result.exit_code == 0, result.output
    return " ".join(result.output.split())


def test_load_sends_each_record_keyed_by_id_and_the_bad_line_to_the_dlq(
        settings: Settings, new_topic: Callable[..., str], tmp_path: Path) -> None:
    items, dlq, interactions = new_topic(), new_topic(), new_topic()
    env = {"STREAMREC_TOPIC_ITEMS": items, "STREAMREC_TOPIC_DLQ": dlq,
           "STREAMREC_TOPIC_INTERACTIONS": interactions}
    path = tmp_path / "items.jsonl"
    path.write_bytes(b"\n".join([GOOD[0].to_json(), GOOD[1].to_json(), BAD,
                                 GOOD[2].to_json()]) + b"\n")

    assert _cli(env, "catalog", "load", str(path), "--format", "jsonl") == (
        f"loaded {path} into {items}: sent 3, dead-lettered 1 (to {dlq}); records "
        "acknowledged (items and letters) 4, failed 0")
    sent = list(read_to_end(settings.kafka, items))
    assert [(r.key, r.value) for r in sent] == [(i.key, i.to_json()) for i in GOOD]
    (letter,) = read_to_end(settings.kafka, dlq)
    assert letter.value == BAD
    assert letter.headers["reason"] == b"bad_value"
    assert letter.headers["detail"] == b"price must be >= 0, got -1"
    assert letter.headers["kind"] == ITEM_KIND.encode()
    assert letter.headers["source"] == b"streamrec-catalog"

    tailed = CliRunner().invoke(app, ["tail", items, "--from-beginning", "--limit", "3",
                                      "--raw"])
    assert tailed.exit_code == 0, tailed.output
    assert [(r["key"], r["value"]) for r in map(orjson.loads, tailed.output.splitlines())] == [
        (i.item_id, i.to_dict()) for i in GOOD]
    assert "bad_value │ 1" in _cli(env, "dlq", "inspect", "--group", f"{dlq}-group")


def test_redrive_sends_a_fixed_catalogue_letter_to_items_not_interactions(
        settings: Settings, new_topic: Callable[..., str], group_id: str) -> None:
    items, dlq, interactions = new_topic(), new_topic(), new_topic()
    env = {"STREAMREC_TOPIC_ITEMS": items, "STREAMREC_TOPIC_DLQ": dlq,
           "STREAMREC_TOPIC_INTERACTIONS": interactions}
    fixed = ItemRecord("8", "now valid").to_json()  # as if the rule had since been relaxed
    # Item 9's letter is older than its current record (a corrected one loaded since),
    # item 10's than its tombstone: redriven, either would undo what came after it.
    old_nine, old_ten = ItemRecord("9", "old").to_json(), ItemRecord("10", "gone").to_json()
    current = ItemRecord("9", "corrected").to_json()
    with RecordProducer(settings.kafka) as producer:
        producer.produce(dlq, None, fixed, dead_letter_headers(
            "bad_value", "title too long", "streamrec-catalog", kind=ITEM_KIND))
        producer.produce(dlq, None, BAD, dead_letter_headers(
            "bad_value", "price must be >= 0", "streamrec-catalog", kind=ITEM_KIND))
        for stale in (old_nine, old_ten):
            producer.produce(dlq, None, stale, dead_letter_headers(
                "bad_value", "title too long", "streamrec-catalog", kind=ITEM_KIND))
        time.sleep(0.01)  # the newer records: later than those rejections
        producer.produce(items, b"9", current)
        producer.produce(items, b"10", None)

    assert _cli(env, "dlq", "redrive", "--yes", "--group", group_id) == (
        "redriven 1, still invalid 1 (bad_value 1), superseded 2 (catalogue letters older "
        "than their item's current record: not sent)")
    *_, redriven = read_to_end(settings.kafka, items)
    assert (redriven.key, redriven.value) == (b"8", fixed)
    assert redriven.headers[REDRIVEN_FROM_HEADER] == f"{dlq}[0]@0".encode()
    assert list(read_to_end(settings.kafka, interactions)) == []
    assert [r.key for r in read_to_end(settings.kafka, items)] == [b"9", b"10", b"8"]
    back = list(read_to_end(settings.kafka, dlq))[4:]
    assert [r.value for r in back] == [BAD] and back[0].headers["kind"] == b"item"


def test_the_declared_items_topic_is_compacted(settings: Settings) -> None:
    resource = ConfigResource(ConfigResource.Type.TOPIC, settings.topic_items)
    admin = AdminClient(settings.kafka.librdkafka())
    config = admin.describe_configs([resource])[resource].result(timeout=15)
    assert config["cleanup.policy"].value == "compact"


def test_tail_prints_records_holding_markup_as_they_are(new_topic: Callable[..., str],
                                                        settings: Settings) -> None:
    """Keys, headers and values are user data: read as rich markup, "[/x]" ended the tail."""
    topic = new_topic()
    with RecordProducer(settings.kafka) as producer:
        producer.produce(topic, b"[/x]", b"[bold]not json[/y]",
                         dead_letter_headers("bad_json", "[/z]", "test"))
    tailed = CliRunner().invoke(app, ["tail", topic, "--from-beginning", "--limit", "1"])
    assert tailed.exit_code == 0, tailed.output
    assert "key=[/x]" in tailed.output and "[bold]not json[/y]" in tailed.output
    assert "'detail': '[/z]'" in tailed.output
