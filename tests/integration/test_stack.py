"""The foundation against real services: Kafka broker, redis-server, MLflow sqlite store."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Callable
from pathlib import Path

import pytest
import redis
from confluent_kafka import Consumer, Producer

from infra.errors import StackError
from infra.kafka_broker import LocalKafka
from infra.process import port_in_use
from infra.smoke import kafka_round_trip, mlflow_round_trip, redis_round_trip
from services.settings import Settings, load_settings
from services.stack import build_stack, mlflow_store


def test_produce_consume_round_trip_keeps_per_key_order(
    settings: Settings, new_topic: Callable[..., str], group_id: str
) -> None:
    topic = new_topic(partitions=3)
    producer = Producer(settings.kafka.librdkafka(**{"enable.idempotence": True}))
    sent = [(f"user-{i % 5}".encode(), f"event-{i}".encode()) for i in range(50)]
    for key, value in sent:
        producer.produce(topic, key=key, value=value)
    assert producer.flush(20) == 0
    consumer = Consumer(settings.kafka.librdkafka(**{"group.id": group_id,
                         "auto.offset.reset": "earliest"}))
    consumer.subscribe([topic])
    got: list[tuple[bytes, bytes]] = []
    deadline = time.monotonic() + 30
    while len(got) < len(sent) and time.monotonic() < deadline:
        msg = consumer.poll(0.5)
        if msg is not None and msg.error() is None:
            got.append((msg.key(), msg.value()))
    consumer.close()
    assert sorted(got) == sorted(sent)
    for user in {k for k, _ in sent}:  # one key lands on one partition, so its order holds
        assert [v for k, v in got if k == user] == [v for k, v in sent if k == user]


def test_smoke_round_trips(settings: Settings) -> None:
    """Each round trip raises unless what it wrote came back (its figure is only a
    time); it leaves nothing behind in Redis, keeps its MLflow run, and a Redis that is
    not there is one ``StackError``. Nor a topic on the broker: deletes went unsent, and
    smoke topics piled up."""
    from confluent_kafka.admin import AdminClient

    def smoke_topics() -> set[str]:
        topics = AdminClient(settings.kafka.librdkafka()).list_topics(timeout=10).topics
        return {t for t in topics if t.startswith("streamrec.smoke.")}

    before = smoke_topics()
    kafka_round_trip(settings.kafka)
    deadline = time.monotonic() + 10  # deleted; the broker's metadata follows shortly
    while not smoke_topics() <= before and time.monotonic() < deadline:
        time.sleep(0.2)
    assert smoke_topics() <= before
    redis_round_trip(settings.redis)
    assert not list(redis.Redis.from_url(settings.redis).scan_iter("streamrec:smoke:*"))
    store, name = mlflow_store(settings), f"test-{uuid.uuid4().hex[:8]}"
    mlflow_round_trip(store, name)
    runs = store.client().search_runs([store.experiment_id(name)])
    assert [(r.info.run_name, r.data.metrics) for r in runs] == [("stack-smoke", {"smoke": 1.0})]
    with pytest.raises(StackError, match="Redis round trip to redis://127.0.0.1:1/0 failed"):
        redis_round_trip("redis://127.0.0.1:1/0")


def test_redis_round_trip_and_aof(settings: Settings) -> None:
    client = redis.Redis.from_url(settings.redis)
    key = f"test:{uuid.uuid4().hex}"
    client.set(key, b"\x00bytes\xff", ex=30)
    assert client.get(key) == b"\x00bytes\xff"
    assert client.config_get("appendonly")["appendonly"] == "yes"
    client.delete(key)


def test_topics_exist_with_declared_partitions(settings: Settings) -> None:
    from confluent_kafka.admin import AdminClient

    meta = AdminClient(settings.kafka.librdkafka()).list_topics(timeout=10)
    for spec in settings.topics():
        assert len(meta.topics[spec.name].partitions) == spec.partitions


def test_stack_up_twice_is_idempotent(settings: Settings) -> None:
    stack = build_stack(settings)
    before = {row.name: row.pid for row in stack.status()}
    lines: list[str] = []
    stack.up(say=lines.append)
    after = {row.name: row.pid for row in stack.status()}
    assert before == after and lines == []  # nothing started, no topic created


def test_mlflow_registry_alias_round_trip(settings: Settings) -> None:

    store = mlflow_store(settings)
    client = store.client()
    run = client.create_run(store.experiment_id("test-registry"))
    client.set_terminated(run.info.run_id)
    name = f"test-model-{uuid.uuid4().hex[:8]}"
    client.create_registered_model(name)
    version = client.create_model_version(name, source=f"{run.info.artifact_uri}/m",
                                          run_id=run.info.run_id)
    client.set_registered_model_alias(name, "champion", version.version)
    assert client.get_model_version_by_alias(name, "champion").version == version.version
    assert run.info.artifact_uri.startswith(store.artifact_root.as_uri())


def _isolated_settings(tmp_path: Path, settings: Settings) -> Settings:
    """A second stack on free ports in a temp dir, reusing the cached broker jars."""
    ports = []
    for _ in range(3):
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            ports.append(sock.getsockname()[1])
    (tmp_path / "kafka").mkdir()
    jars = settings.local_kafka().libs
    (tmp_path / "kafka" / jars.name).symlink_to(jars)
    return load_settings(data_dir=tmp_path, kafka_port=ports[0], kafka_controller_port=ports[1],
                         redis_port=ports[2], kafka_heap="256m")


def test_stack_down_leaves_no_process_and_up_recovers_from_a_crash(
    settings: Settings, tmp_path: Path
) -> None:
    mine = _isolated_settings(tmp_path, settings)
    stack = build_stack(mine)
    assert stack.local_kafka is not None and stack.local_redis is not None
    stack.up()
    kafka_pid, redis_pid = stack.local_kafka.running_pid(), stack.local_redis.running_pid()
    assert kafka_pid and redis_pid and all(row.answers for row in stack.status())

    # A crash: Redis killed hard leaves a stale pid file; `up` notices and restarts it.
    os.kill(redis_pid, signal.SIGKILL)
    time.sleep(0.3)
    started: set[str] = set()
    stack.up(started=started)
    new_redis = stack.local_redis.running_pid()
    assert new_redis and new_redis != redis_pid
    assert stack.local_kafka.running_pid() == kafka_pid
    assert started == {"redis"}  # what this up started, read under the stack's lock

    # A caller stops only what its up started (the test fixture).
    assert stack.down(only=started) == ["redis"]
    assert stack.local_kafka.running_pid() == kafka_pid and stack.local_redis.running_pid() is None
    assert stack.down() == ["kafka"]
    for pid in (kafka_pid, new_redis):
        assert not Path(f"/proc/{pid}").exists() or "Z" in Path(f"/proc/{pid}/stat").read_text()
    for port in (mine.kafka_port, mine.kafka_controller_port, mine.redis_port):
        assert not port_in_use(port)
    assert not (tmp_path / "kafka" / "kafka.pid").exists()


def test_unresolvable_kafka_version_is_a_one_line_maven_error(tmp_path: Path) -> None:
    kafka = LocalKafka(tmp_path, 1, 2, version="0.0.0")
    with pytest.raises(StackError, match="Maven could not resolve .*kafka_2.13:0.0.0"):
        kafka.ensure_jars()


def test_cli_prints_one_line_errors_not_tracebacks(tmp_path: Path) -> None:
    env = {**os.environ, "STREAMREC_KAFKA_PORT": "nope"}
    result = subprocess.run(
        [sys.executable, "-m", "services.cli", "stack", "status"],
        capture_output=True, text=True, env=env, timeout=120,
    )
    assert result.returncode == 1
    assert "Traceback" not in result.stderr
    assert "error: invalid settings: STREAMREC_KAFKA_PORT" in result.stderr


def test_an_existing_topic_without_the_compaction_it_needs_is_refused(settings: Settings
                                                                       ) -> None:
    """A catalogue topic made beforehand without compaction lost its records after the
    retention period, with nothing said: its policy is checked, not only its existence."""
    from infra.topics import TopicSpec, ensure_topics

    name = f"test.items.{uuid.uuid4().hex[:8]}"
    compact = TopicSpec(name, 1, 1, {"cleanup.policy": "compact"})
    assert ensure_topics(settings.kafka, [TopicSpec(name, 1)]) == [name]  # delete, by default
    with pytest.raises(StackError, match=f"topic '{name}' exists with cleanup.policy=delete"):
        ensure_topics(settings.kafka, [compact])
    other = f"test.items.{uuid.uuid4().hex[:8]}"
    assert ensure_topics(settings.kafka, [TopicSpec(other, 1, 1, compact.config)]) == [other]
    assert ensure_topics(settings.kafka, [TopicSpec(other, 1, 1, compact.config)]) == []
