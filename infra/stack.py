"""The whole local stack as one object: bring it up, report on it, take it down.

Components given as ``None`` are external (configured by URL): they are probed
but never started or stopped by us.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from infra.kafka_broker import LocalKafka, broker_answers, wait_for_broker
from infra.mlflow_store import MlflowStore
from infra.redis_server import LocalRedis, redis_answers
from infra.topics import TopicSpec, ensure_topics


@dataclass(frozen=True)
class ComponentStatus:
    name: str
    address: str
    pid: int | None
    answers: bool
    managed: bool  # started and stopped by us (embedded), or external


@dataclass(frozen=True)
class Stack:
    kafka_bootstrap: str
    redis_url: str
    mlflow: MlflowStore
    topics: list[TopicSpec]
    local_kafka: LocalKafka | None = None
    local_redis: LocalRedis | None = None
    kafka_timeout_s: float = 90.0

    def up(self, say: Callable[[str], None] = lambda _: None) -> None:
        """Idempotent: starts only what is embedded and not running; creates missing topics."""
        if self.local_kafka is not None:
            if self.local_kafka.running_pid() is None:
                say(f"starting Kafka {self.local_kafka.version} on {self.kafka_bootstrap}")
            self.local_kafka.start(self.kafka_timeout_s)
        else:
            wait_for_broker(self.kafka_bootstrap, self.kafka_timeout_s)
        if self.local_redis is not None:
            if self.local_redis.running_pid() is None:
                say(f"starting Redis on {self.redis_url}")
            self.local_redis.start()
        self.mlflow.ensure()
        created = ensure_topics(self.kafka_bootstrap, self.topics)
        if created:
            say(f"created topics: {', '.join(created)}")

    def down(self) -> list[str]:
        """Stop the embedded components; returns the names of those that were running."""
        stopped = []
        for name, component in (("redis", self.local_redis), ("kafka", self.local_kafka)):
            if component is not None and component.stop():
                stopped.append(name)
        return stopped

    def status(self) -> list[ComponentStatus]:
        kafka_pid = self.local_kafka.running_pid() if self.local_kafka else None
        redis_pid = self.local_redis.running_pid() if self.local_redis else None
        return [
            ComponentStatus("kafka", self.kafka_bootstrap, kafka_pid,
                            broker_answers(self.kafka_bootstrap, timeout_s=1.0),
                            self.local_kafka is not None),
            ComponentStatus("redis", self.redis_url, redis_pid, redis_answers(self.redis_url),
                            self.local_redis is not None),
            ComponentStatus("mlflow", self.mlflow.tracking_uri, None, self.mlflow.answers(),
                            self.mlflow.is_local),
        ]
