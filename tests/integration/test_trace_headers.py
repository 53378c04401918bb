"""A real worker with JSON logs: an event's trace context, in Kafka headers, comes back on
the list it causes; the worker's own lines are JSON with its id."""

from __future__ import annotations

import json
import os
import uuid
from collections.abc import Callable
from pathlib import Path

from services.processes import ServiceProcess
from services.settings import Settings
from streams.consumer import read_topic
from streams.events import new_event
from streams.producer import EventProducer

TRACEPARENT = b"00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"


def test_a_list_on_the_topic_carries_its_events_trace_context(
        settings: Settings, new_topic: Callable[..., str], tmp_path: Path) -> None:
    group = f"test-worker-{uuid.uuid4().hex[:8]}"
    env = {**os.environ, "STREAMREC_DATA_DIR": str(tmp_path / "state"),
           "STREAMREC_LOG_FORMAT": "json", "STREAMREC_TOPIC_INTERACTIONS": new_topic(),
           "STREAMREC_TOPIC_DLQ": new_topic(), "STREAMREC_TOPIC_RECOMMENDATIONS": new_topic(),
           "STREAMREC_TOPIC_MODEL_UPDATES": new_topic(), "STREAMREC_INTERACTIONS_PARTITIONS": "1",
           "STREAMREC_WORKER_GROUP": group, "STREAMREC_WORKER_METRICS_PORT": "0"}
    worker = ServiceProcess.start(env, tmp_path / "worker.log", "worker", "--pass-through",
                                  "--worker-id", "w-trace")
    try:
        worker.wait_joined(settings.kafka, group)
        with EventProducer(settings.kafka, env["STREAMREC_TOPIC_INTERACTIONS"],
                           env["STREAMREC_TOPIC_DLQ"]) as producer:
            producer.send(new_event("u1", "i1"), headers=[("traceparent", TRACEPARENT),
                                                          ("tracestate", b"congo=x")])
            producer.send(new_event("u2", "i2"), headers=[("traceparent", b"not-a-trace")])
        lists = list(read_topic(settings.kafka, env["STREAMREC_TOPIC_RECOMMENDATIONS"],
                                from_beginning=True, limit=2, idle_timeout_s=60))
    finally:
        output = worker.stop()
    by_user = {json.loads(r.value)["user_id"]: r.headers for r in lists}
    assert by_user["u1"] == {"traceparent": TRACEPARENT, "tracestate": b"congo=x"}, output[-2000:]
    assert by_user["u2"] == {}  # malformed: dropped, the list still published
    lines = [json.loads(line) for line in output.splitlines() if line.startswith("{")]
    start = next(line for line in lines if line["logger"] == "streamrec.worker")
    assert start["worker_id"] == "w-trace" and start["model_version"] == "pass-through"
