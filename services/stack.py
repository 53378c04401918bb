"""Wire the infra components from settings: the only place that knows both."""

from __future__ import annotations

from infra.mlflow_store import MlflowStore
from infra.stack import Stack
from services.settings import Settings


def mlflow_store(settings: Settings) -> MlflowStore:
    local = MlflowStore.local(settings.data_dir / "mlflow")
    if settings.mlflow_tracking_uri is None:
        return local
    return MlflowStore(settings.mlflow_uri, local.artifact_root)


def build_stack(settings: Settings) -> Stack:
    return Stack(
        kafka=settings.kafka,
        redis_url=settings.redis,
        mlflow=mlflow_store(settings),
        topics=settings.topics(),
        local_kafka=settings.local_kafka() if settings.kafka_embedded else None,
        local_redis=settings.local_redis() if settings.redis_embedded else None,
        kafka_timeout_s=settings.kafka_start_timeout_s,
        lock_file=settings.data_dir / "stack.lock",
    )
