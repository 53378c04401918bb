"""Wire the infra components from settings: the only place that knows both."""

from __future__ import annotations

from infra.mlflow_store import MlflowStore
from infra.stack import Stack
from services.settings import Settings


def mlflow_store(settings: Settings) -> MlflowStore:
    """The registry the settings name: by default a sqlite database under the data dir;
    a sqlite database named in the settings keeps its artifacts beside it
    (``MlflowStore.sqlite``); other database URIs under the data dir's artifact root."""
    if settings.mlflow_tracking_uri is None:
        return MlflowStore.local(settings.data_dir / "mlflow")
    uri = settings.mlflow_uri
    if uri.startswith("sqlite:///"):  # an absolute path: the settings refuse others
        return MlflowStore.sqlite(uri)
    return MlflowStore(uri, settings.data_dir / "mlflow" / "artifacts")


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
