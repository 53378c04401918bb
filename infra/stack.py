"""The whole local stack as one object: bring it up, report on it, take it down.

Components given as ``None`` are external (configured by URL): they are probed
but never started or stopped by us.
"""

from __future__ import annotations

from collections.abc import Callable, Collection
from dataclasses import dataclass, field
from pathlib import Path

from infra.kafka_broker import LocalKafka, broker_answers, wait_for_broker
from infra.kafka_client import KafkaConnection
from infra.mlflow_store import MlflowStore, wait_for_mlflow
from infra.process import exclusive
from infra.redis_server import LocalRedis, redis_answers, wait_for_redis
from infra.topics import TopicSpec, ensure_topics
from infra.urls import mask_url


@dataclass(frozen=True)
class ComponentStatus:
    name: str
    address: str
    pid: int | None
    answers: bool
    managed: bool  # started and stopped by us (embedded), or external


@dataclass(frozen=True)
class Stack:
    kafka: KafkaConnection
    redis_url: str = field(repr=False)  # may carry a password
    mlflow: MlflowStore
    topics: list[TopicSpec]
    local_kafka: LocalKafka | None = None
    local_redis: LocalRedis | None = None
    kafka_timeout_s: float = 90.0
    lock_file: Path | None = None  # held while the stack comes up or goes down

    def up(self, say: Callable[[str], None] = lambda _: None,
           started: set[str] | None = None) -> None:
        """Idempotent: starts only what is embedded and not running; creates missing
        topics. Another ``up`` or ``down`` at the same time waits for this one.
        ``started`` receives the name of each component this call starts, as it starts
        it (also when a later step fails): what its caller stops (``down(only=...)``).
        Read under the lock, not before it: a caller that looked first, then waited for
        another's ``up``, stopped a stack that other one was using."""
        with exclusive(self.lock_file):
            self._up(say, set() if started is None else started)

    def _up(self, say: Callable[[str], None], started: set[str]) -> None:
        if self.local_kafka is not None:
            if self.local_kafka.running_pid() is None:
                say(f"starting Kafka {self.local_kafka.version} on {self.kafka.bootstrap} "
                    f"({self.kafka.protocol})")
                started.add("kafka")
            self.local_kafka.start(self.kafka_timeout_s)
        # Also when the embedded broker was running: it may expect other credentials.
        wait_for_broker(self.kafka, self.kafka_timeout_s)
        if self.local_redis is not None:
            if self.local_redis.running_pid() is None:
                say(f"starting Redis on {mask_url(self.redis_url)}")
                started.add("redis")
            self.local_redis.start()
        wait_for_redis(self.redis_url)  # an external one too: it may still be starting
        self.mlflow.ensure()
        if not self.mlflow.is_local:  # a server: it may be down, or still starting
            wait_for_mlflow(self.mlflow)
        created = ensure_topics(self.kafka, self.topics)
        if created:
            say(f"created topics: {', '.join(created)}")

    def down(self, only: Collection[str] | None = None) -> list[str]:
        """Stop the embedded components (``only``: those named, e.g. the ones a caller's
        ``up`` started); returns the names of those that were running."""
        stopped = []
        with exclusive(self.lock_file):
            for name, component in self._embedded():
                if (only is None or name in only) and component.stop():
                    stopped.append(name)
        return stopped

    def _embedded(self) -> list[tuple[str, LocalRedis | LocalKafka]]:
        """(name, component) of each embedded component, Redis first: it stops first."""
        return [(name, c) for name, c in (("redis", self.local_redis), ("kafka", self.local_kafka))
                if c is not None]

    def status(self) -> list[ComponentStatus]:
        kafka_pid = self.local_kafka.running_pid() if self.local_kafka else None
        redis_pid = self.local_redis.running_pid() if self.local_redis else None
        return [
            ComponentStatus("kafka", f"{self.kafka.bootstrap} ({self.kafka.protocol})", kafka_pid,
                            broker_answers(self.kafka, timeout_s=1.0),
                            self.local_kafka is not None),
            ComponentStatus("redis", mask_url(self.redis_url), redis_pid, redis_answers(self.redis_url),
                            self.local_redis is not None),
            ComponentStatus("mlflow", mask_url(self.mlflow.tracking_uri), None, self.mlflow.answers(),
                            self.mlflow.is_local),
        ]
