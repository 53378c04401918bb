"""One real round trip through each component, for ``streamrec stack check`` and the demo."""

from __future__ import annotations

import logging
import time
import uuid

from confluent_kafka import Consumer, Producer

from infra.errors import StackError
from infra.kafka_client import KafkaConnection
from infra.mlflow_store import MlflowStore
from infra.topics import TopicSpec, delete_topics, ensure_topics
from infra.urls import mask_url

log = logging.getLogger(__name__)

_TIMEOUT_S = 20.0


def kafka_round_trip(kafka: KafkaConnection, replication: int = 1) -> float:
    """Produce one record to a fresh topic (``replication``: the topics' own, which a
    cluster with a minimum would refuse below), read it back, delete it; returns ms."""
    topic = f"streamrec.smoke.{uuid.uuid4().hex[:12]}"
    ensure_topics(kafka, [TopicSpec(topic, 1, replication)])
    try:
        return _produce_and_read(kafka, topic)
    finally:  # whatever the round trip did: smoke topics piled up on the broker
        try:
            delete_topics(kafka, [topic])
        except StackError as exc:
            log.warning("the smoke topic %s was not deleted: %s", topic, exc)


def _produce_and_read(kafka: KafkaConnection, topic: str) -> float:
    payload = uuid.uuid4().bytes
    start = time.perf_counter()
    producer = Producer(kafka.librdkafka(**{"enable.idempotence": True}))
    producer.produce(topic, key=b"smoke", value=payload)
    if producer.flush(_TIMEOUT_S) != 0:
        raise StackError(f"Kafka round trip: the record was not delivered to {kafka.bootstrap}")
    consumer = Consumer(kafka.librdkafka(**{"group.id": topic, "auto.offset.reset": "earliest",
                                                "enable.auto.commit": False}))
    try:
        consumer.subscribe([topic])
        deadline = time.monotonic() + _TIMEOUT_S
        while time.monotonic() < deadline:
            msg = consumer.poll(0.5)
            if msg is not None and msg.error() is None and msg.value() == payload:
                return (time.perf_counter() - start) * 1000
        raise StackError(f"Kafka round trip: nothing came back from {topic} in {_TIMEOUT_S:.0f} s")
    finally:
        consumer.close()


def redis_round_trip(url: str) -> float:
    """SET, GET and DEL one key; returns ms."""
    import redis

    key = f"streamrec:smoke:{uuid.uuid4().hex}"
    client = redis.Redis.from_url(url, socket_timeout=5)
    start = time.perf_counter()
    try:
        client.set(key, b"ok", ex=60)
        value = client.get(key)
        client.delete(key)
    except redis.RedisError as exc:
        raise StackError(f"Redis round trip to {mask_url(url)} failed: {exc}") from exc
    finally:
        client.close()
    if value != b"ok":
        raise StackError(f"Redis round trip: read back {value!r}")
    return (time.perf_counter() - start) * 1000


def mlflow_round_trip(store: MlflowStore, experiment: str) -> float:
    """Log a run with one metric and read the metric back; returns ms."""
    start = time.perf_counter()
    client = store.client()
    run = client.create_run(store.experiment_id(experiment), run_name="stack-smoke")
    client.log_metric(run.info.run_id, "smoke", 1.0)
    client.set_terminated(run.info.run_id)
    value = client.get_run(run.info.run_id).data.metrics.get("smoke")
    if value != 1.0:
        raise StackError(f"MLflow round trip: read back {value!r}")
    return (time.perf_counter() - start) * 1000
