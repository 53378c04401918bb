"""A real stream worker: events in through Kafka, recommendations out to Kafka and Redis."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import uuid
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import orjson
import redis

from services.settings import Settings
from streams.consumer import read_topic
from streams.events import Event
from streams.producer import EventProducer, sent_at_header
from streams.synthetic import SyntheticConfig, generate


def test_worker_answers_every_valid_event_and_dead_letters_the_rest(
    settings: Settings, new_topic: Callable[..., str], tmp_path: Path
) -> None:
    events = list(generate(SyntheticConfig(users=80, items=60, events=3000, seed=11)))
    data = tmp_path / "train.jsonl"
    data.write_bytes(b"".join(e.to_json() + b"\n" for e in events[:2500]))
    topics = {"interactions": new_topic(partitions=2), "dlq": new_topic(),
              "recs": new_topic(partitions=2)}
    env = {**os.environ, "STREAMREC_DATA_DIR": str(tmp_path / "state"),
           "STREAMREC_TOPIC_INTERACTIONS": topics["interactions"],
           "STREAMREC_TOPIC_DLQ": topics["dlq"], "STREAMREC_TOPIC_RECOMMENDATIONS": topics["recs"],
           "STREAMREC_INTERACTIONS_PARTITIONS": "2",
           "STREAMREC_WORKER_GROUP": f"test-worker-{uuid.uuid4().hex[:8]}"}
    cli = [sys.executable, "-m", "services.cli"]
    trained = subprocess.run([*cli, "train", "--data", str(data), "--format", "jsonl",
                              "--model", "all", "--epochs", "2", "--champion"],
                             capture_output=True, text=True, env=env, timeout=600)
    assert trained.returncode == 0, trained.stderr[-2000:]

    worker = subprocess.Popen([*cli, "worker"], env=env, stdout=subprocess.PIPE,
                              stderr=subprocess.STDOUT)
    try:
        live = events[2500:2700]
        cold = Event(str(uuid.uuid4()), "brand-new-user", "never-seen-item", "click",
                     live[-1].ts)
        with EventProducer(settings.kafka_servers, topics["interactions"], topics["dlq"]) as p:
            for e in live + [cold, live[0]]:  # live[0] again: a redelivered duplicate
                p.send(e, headers=[sent_at_header()])
            p._produce(topics["interactions"], b"u1", b"{not json", None)  # another producer
        recs = list(read_topic(settings.kafka_servers, topics["recs"], from_beginning=True,
                               limit=len(live) + 1, idle_timeout_s=90))
        letters = list(read_topic(settings.kafka_servers, topics["dlq"], from_beginning=True,
                                  limit=1, idle_timeout_s=30))
    finally:
        worker.send_signal(signal.SIGTERM)
        try:
            output = worker.communicate(timeout=60)[0].decode(errors="replace")
        except subprocess.TimeoutExpired:
            worker.kill()
            output = worker.communicate()[0].decode(errors="replace")
    values = [orjson.loads(r.value) for r in recs]
    assert len(values) == len(live) + 1, output[-3000:]  # every valid, non-duplicate event
    assert Counter(v["event_id"] for v in values) == Counter(
        [e.event_id for e in live] + [cold.event_id])
    by_event = {v["event_id"]: v for v in values}
    assert by_event[cold.event_id]["path"] == "popularity"
    model_served = [by_event[e.event_id] for e in live]
    assert all(v["path"] == "model" and len(v["items"]) == 10 for v in model_served)
    assert all(v["model_version"] == "streamrec-sasrec:v1+streamrec-ranker:v1" for v in values)
    assert all(v["published_us"] >= v["sent_us"] > 0 for v in model_served)
    assert [r.key for r in recs if orjson.loads(r.value)["user_id"] == live[0].user_id][0] == \
        live[0].user_id.encode()
    assert letters[0].headers["reason"] == b"bad_json" and letters[0].value == b"{not json"
    stored = redis.Redis.from_url(settings.redis).get(f"recs:{live[-1].user_id}")
    assert stored is not None and orjson.loads(stored)["user_id"] == live[-1].user_id
    # The item that triggered a list is in the session, so it is not recommended back.
    last = by_event[live[-1].event_id]
    assert live[-1].item_id not in {i["item_id"] for i in last["items"]}
