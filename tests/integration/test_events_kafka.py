"""Events through the real broker: validation and dead letters, replay, the CLI."""

from __future__ import annotations

import gzip
import os
import subprocess
import sys
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import orjson

from services.settings import Settings
from streams.consumer import read_topic
from streams.events import Event
from streams.producer import SENT_AT_HEADER, EventProducer
from streams.readers import read_events
from streams.replay import replay
from streams.synthetic import SyntheticConfig, generate

GOOD = Event("0b6f2c8e-3f5e-4c1a-9a57-7d2f1c3b4a5e", "u1", "i1", "view", 1_700_000_000_000)


def _mixed_lines() -> tuple[list[bytes], list[bytes], Counter[str]]:
    good = [Event(f"0b6f2c8e-3f5e-4c1a-9a57-{i:012d}", f"u{i % 7}", f"i{i}", "click",
                  1_700_000_000_000 + i).to_json() for i in range(40)]
    base = orjson.loads(GOOD.to_json())
    bad = {
        b"{not json": "bad_json",
        b"[1,2,3]": "not_an_object",
        orjson.dumps({**base, "event_type": "like"}): "unknown_event_type",
        orjson.dumps({**base, "ts": -1}): "bad_timestamp",
        orjson.dumps({**base, "ts": 4_000_000_000_000_000}): "bad_timestamp",
        orjson.dumps({**base, "schema_version": 9}): "unknown_schema_version",
        orjson.dumps({k: v for k, v in base.items() if k != "user_id"}): "missing_field",
        orjson.dumps({**base, "item_id": 5}): "wrong_type",
        orjson.dumps({**base, "context": {"blob": "x" * 250, **{f"k{i}": "y" * 250
                                                                 for i in range(31)}}}): "oversized",
    }
    return good, list(bad), Counter(bad.values())


def test_mixed_input_dead_letters_exactly_the_malformed(
    settings: Settings, new_topic: Callable[..., str]
) -> None:
    topic, dlq = new_topic(partitions=2), new_topic()
    good, bad, reasons = _mixed_lines()
    with EventProducer(settings.kafka, topic, dlq) as producer:
        verdicts = [producer.send_checked(raw) for raw in good[:20] + bad + good[20:]]
    assert verdicts.count(True) == len(good) and producer.stats.dead_lettered == len(bad)
    assert producer.stats.delivered == len(good) + len(bad) and producer.stats.failed == 0

    received = list(read_topic(settings.kafka, topic, from_beginning=True,
                               limit=len(good), idle_timeout_s=20))
    assert sorted(r.value for r in received) == sorted(good)
    assert all(r.key == orjson.loads(r.value)["user_id"].encode() for r in received)
    letters = list(read_topic(settings.kafka, dlq, from_beginning=True,
                              limit=len(bad), idle_timeout_s=20))
    assert Counter(r.headers["reason"].decode() for r in letters) == reasons
    assert sorted(r.value for r in letters) == sorted(bad)  # original bytes, untouched
    assert all(r.headers["detail"] and r.headers["source"] == b"producer" for r in letters)


def test_a_record_past_kafkas_message_limit_is_dead_lettered_cut_not_lost(
    settings: Settings, new_topic: Callable[..., str]
) -> None:
    """librdkafka refuses a 2 MB record in ``produce`` itself: the letter keeps its head."""
    from streams.producer import MAX_LETTER_BYTES, TRUNCATED_HEADER

    topic, dlq = new_topic(), new_topic()
    huge = b'{"user_id": "' + b"u" * 2_000_000 + b'"}'
    with EventProducer(settings.kafka, topic, dlq) as producer:
        assert producer.send_checked(huge) is False and producer.send_checked(GOOD.to_json())
    assert (producer.stats.delivered, producer.stats.failed) == (2, 0)
    (letter,) = read_topic(settings.kafka, dlq, from_beginning=True, limit=1, idle_timeout_s=20)
    assert letter.headers["reason"] == b"oversized"
    assert letter.value == huge[:MAX_LETTER_BYTES]
    assert letter.headers[TRUNCATED_HEADER] == str(len(huge)).encode()


def test_replay_sends_everything_in_per_user_order_with_send_time(
    settings: Settings, new_topic: Callable[..., str]
) -> None:
    topic, dlq = new_topic(partitions=4), new_topic()
    events = list(generate(SyntheticConfig(users=50, items=100, events=3000, seed=5)))
    producer = EventProducer(settings.kafka, topic, dlq)
    summary = replay(iter(events), producer, rate=20_000)
    assert (summary.read, summary.sent, summary.delivered, summary.failed) == (3000,) * 3 + (0,)
    assert summary.seconds >= 3000 / 20_000 * 0.9  # the rate was honoured
    got = list(read_topic(settings.kafka, topic, from_beginning=True, limit=3000,
                          idle_timeout_s=20))
    assert len(got) == 3000 and all(SENT_AT_HEADER in r.headers for r in got)
    per_user: dict[str, list[str]] = {}
    for r in got:
        e = orjson.loads(r.value)
        per_user.setdefault(e["user_id"], []).append(e["event_id"])
    for user, ids in per_user.items():
        assert ids == [e.event_id for e in events if e.user_id == user]


def _cli(settings: Settings, topic: str, dlq: str, *args: str, stdin: bytes = b"") -> str:
    env = {**os.environ, "STREAMREC_TOPIC_INTERACTIONS": topic, "STREAMREC_TOPIC_DLQ": dlq}
    result = subprocess.run([sys.executable, "-m", "services.cli", *args], input=stdin,
                            capture_output=True, env=env, timeout=120)
    assert result.returncode == 0, result.stderr.decode()
    return result.stdout.decode()


def test_cli_produce_replay_and_tail(
    settings: Settings, new_topic: Callable[..., str], tmp_path: Path
) -> None:
    topic, dlq = new_topic(), new_topic()
    good, bad, _ = _mixed_lines()
    out = _cli(settings, topic, dlq, "produce", stdin=b"\n".join(good[:5] + bad[:2]) + b"\n")
    assert ("sent 5, dead-lettered 2; records acknowledged (events and letters) 7, failed 0"
            in " ".join(out.split()))
    packed = tmp_path / "events.jsonl.gz"  # its lines, where its bytes were dead-lettered
    packed.write_bytes(gzip.compress(b"\n".join(good[5:7]) + b"\n"))
    out = _cli(settings, topic, dlq, "produce", str(packed))
    assert "sent 2, dead-lettered 0; records acknowledged (events and letters) 2" in " ".join(
        out.split())

    ratings = tmp_path / "ratings.csv"
    ratings.write_text("userId,movieId,rating,timestamp\n1,10,4.0,964982703\n2,20,3.0,964982000\n")
    out = " ".join(_cli(settings, topic, dlq, "replay", str(ratings), "--format", "movielens").split())
    assert ("read 2, sent 2, dead-lettered 0; records acknowledged (events and letters) 2, "
            "failed 0" in out)

    lines = _cli(settings, topic, dlq, "tail", topic, "--from-beginning", "--raw",
                 "--limit", "9").splitlines()
    values = [orjson.loads(line)["value"] for line in lines]
    expected = [orjson.loads(v) for v in good[:7]] + [e.to_dict() for e in
                                                      read_events(ratings, "movielens")]
    assert sorted(map(orjson.dumps, values)) == sorted(map(orjson.dumps, expected))
    dead = [orjson.loads(line) for line in _cli(
        settings, topic, dlq, "tail", dlq, "--from-beginning", "--raw", "--limit", "2").splitlines()]
    assert {d["headers"]["reason"] for d in dead} == {"bad_json", "not_an_object"}


def test_delivery_failures_are_counted(settings: Settings) -> None:
    missing = f"test.missing.{os.getpid()}.{id(settings)}"  # auto-create is off on our broker
    producer = EventProducer(settings.kafka, missing, missing,
                             config={"message.timeout.ms": 1500})
    producer.send(GOOD)
    producer.send(GOOD)
    producer.close()
    assert (producer.stats.produced, producer.stats.failed, producer.stats.delivered) == (2, 2, 0)
    assert producer.stats.last_error
