"""Wire the infra components from settings: the only place that knows both."""

from __future__ import annotations

from infra.kafka_broker import LocalKafka
from infra.mlflow_store import MlflowStore
from infra.redis_server import LocalRedis
from infra.stack import Stack
from services.settings import Settings


def mlflow_store(settings: Settings) -> MlflowStore:
    local = MlflowStore.local(settings.data_dir / "mlflow")
    if settings.mlflow_tracking_uri is None:
        return local
    return MlflowStore(settings.mlflow_tracking_uri, local.artifact_root)


def build_stack(settings: Settings) -> Stack:
    local_kafka = (
        LocalKafka(settings.data_dir / "kafka", settings.kafka_port,
                   settings.kafka_controller_port, settings.kafka_version, settings.kafka_heap)
        if settings.kafka_embedded else None
    )
    local_redis = (
        LocalRedis(settings.data_dir / "redis", settings.redis_port)
        if settings.redis_embedded else None
    )
    return Stack(
        kafka_bootstrap=settings.kafka_servers,
        redis_url=settings.redis,
        mlflow=mlflow_store(settings),
        topics=settings.topics(),
        local_kafka=local_kafka,
        local_redis=local_redis,
        kafka_timeout_s=settings.kafka_start_timeout_s,
    )
