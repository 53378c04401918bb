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
from infra.mlflow_store import MlflowStore
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

    def up(self, say: Callable[[str], None] = lambda _: None) -> None:
        """Idempotent: starts only what is embedded and not running; creates missing
        topics. Another ``up`` or ``down`` at the same time waits for this one."""
        with exclusive(self.lock_file):
            self._up(say)

    def _up(self, say: Callable[[str], None]) -> None:
        if self.local_kafka is not None:
            if self.local_kafka.running_pid() is None:
                say(f"starting Kafka {self.local_kafka.version} on {self.kafka.bootstrap} "
                    f"({self.kafka.protocol})")
            self.local_kafka.start(self.kafka_timeout_s)
        # Also when the embedded broker was running: it may expect other credentials.
        wait_for_broker(self.kafka, self.kafka_timeout_s)
        if self.local_redis is not None:
            if self.local_redis.running_pid() is None:
                say(f"starting Redis on {mask_url(self.redis_url)}")
            self.local_redis.start()
        wait_for_redis(self.redis_url)  # an external one too: it may still be starting
        self.mlflow.ensure()
        created = ensure_topics(self.kafka, self.topics)
        if created:
            say(f"created topics: {', '.join(created)}")

    def down(self, keep: Collection[str] = ()) -> list[str]:
        """Stop the embedded components but those named in ``keep`` (a caller that found
        them running before its ``up``); returns the names of those that were running."""
        stopped = []
        with exclusive(self.lock_file):
            for name, component in self._embedded():
                if name not in keep and component.stop():
                    stopped.append(name)
        return stopped

    def running(self) -> set[str]:
        """The embedded components running now, by their pid files (no probe): what a
        caller of ``up`` did not start, and so keeps (``down(keep=...)``)."""
        return {name for name, component in self._embedded()
                if component.running_pid() is not None}

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
