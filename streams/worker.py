"""The Faust worker: interactions in, sessions in a changelog-backed table, recommendations
out to the ``recommendations`` topic and Redis, in micro-batches.

Per event (a stream processor, so it runs in the event's own context and each table write
reaches the changelog partition of the event's own partition): validate (bad records to
the dead-letter topic, with the reason), sessionize, count popularity. Per micro-batch
(``stream.take``): encode the updated sessions, retrieve, rerank, publish. Users the model
cannot serve yet get recent popularity; every reply says which path served it. Model
updates are followed by every worker (``streams.hot_swap``).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from contextlib import suppress
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import faust
import orjson
from faust.sensors import Sensor

from model.pipeline import Recommendation
from streams.events import InvalidEvent, parse
from streams.hot_swap import Serving, follow_model_updates
from streams.metrics import WorkerMetrics
from streams.popularity import DecayedPopularity
from streams.producer import SENT_AT_HEADER, RecordProducer, dead_letter_headers
from streams.recs_store import RecsWriter
from streams.sessions import SessionPolicy, SessionState, apply_event

log = logging.getLogger(__name__)

POPULAR_EVERY_S = 1.0  # how often a worker stores its popularity list for the API


@dataclass(frozen=True)
class WorkerConfig:
    bootstrap: str
    group_id: str
    interactions: str
    dlq: str
    recommendations: str
    model_updates: str
    partitions: int
    state_dir: Path
    redis_url: str | None
    recs_channel: str = "streamrec:recs"
    batch_size: int = 256
    batch_within_s: float = 0.01
    top_n: int = 10
    recs_ttl_s: int = 24 * 3600
    exclude_seen: bool = True
    session: SessionPolicy = field(default_factory=SessionPolicy)


class FixedList:
    """Serves one constant list to everyone: with it the worker does everything but the
    model work, which measures the ceiling Faust and Kafka allow (``--pass-through``)."""

    version = "pass-through"

    def __init__(self, items: int = 10) -> None:
        self.items = [f"fixed-{i}" for i in range(items)]

    def recommend(self, users: Sequence[str], sessions: Sequence[Sequence[str]], k: int = 10,
                  exclude_seen: bool = True, timings: dict[str, float] | None = None
                  ) -> list[Recommendation]:
        rec = Recommendation(self.items[:k], [1.0] * min(k, len(self.items)))
        return [rec] * len(users)


class FlushBeforeCommit(Sensor):
    """Delivers the published lists before Faust commits the offsets of their events.

    Lists go out through librdkafka (``RecordProducer``), not Faust's producer: Faust's
    queues each send in Python and pauses the consumer while more than 100 are pending,
    which made it the pass-through's bottleneck (measured). Faust calls
    ``on_commit_initiated`` right before it reads the acked offsets it commits, with no
    await in between, so flushing here keeps the guarantee Faust gives its own sends: no
    offset is committed before its list is delivered. A flush that fails raises, the
    offsets stay uncommitted, and the events are processed again after a restart.
    """

    def __init__(self, producer: RecordProducer) -> None:
        super().__init__()
        self.producer = producer

    def on_commit_initiated(self, consumer: Any) -> Any:
        failed_before = self.producer.stats.failed
        remaining = self.producer.flush()
        if remaining or self.producer.stats.failed > failed_before:
            raise RuntimeError(f"recommendation lists not delivered ({remaining} pending, "
                               f"last error {self.producer.stats.last_error}): not committing")
        return None


def create_app(cfg: WorkerConfig, bundle: Any, load_bundle: Callable[[], Any] | None = None,
               metrics: WorkerMetrics | None = None) -> faust.App:
    """The Faust app, its topics, the sessions table, the recommend agent and, when
    ``load_bundle`` is given, the task that swaps in each new champion."""
    app = faust.App(
        cfg.group_id, broker=f"kafka://{cfg.bootstrap}", store="memory://",
        datadir=str(cfg.state_dir), web_enabled=False, producer_linger_ms=5,
        topic_partitions=cfg.partitions, consumer_auto_offset_reset="earliest",
    )
    interactions = app.topic(cfg.interactions, key_serializer="raw", value_serializer="raw")
    dlq = app.topic(cfg.dlq, key_serializer="raw", value_serializer="raw")
    sessions = app.Table("sessions", default=None, partitions=cfg.partitions)
    metrics = metrics or WorkerMetrics()
    serving = Serving(bundle, metrics)
    popularity = DecayedPopularity()
    recs_writer = RecsWriter(cfg.redis_url, cfg.recs_ttl_s, cfg.recs_channel)
    popular_written = 0.0  # monotonic time of the last popularity write
    lists_out = RecordProducer(cfg.bootstrap)
    app.sensors.add(FlushBeforeCommit(lists_out))
    positions: dict[Any, int] = {}  # last offset read per partition, for the lag gauge

    async def sessionize(raw: bytes) -> dict | None:
        """Per event, inside the event's context: validate, dead-letter, update state."""
        event_ctx = faust.current_event()
        message = event_ctx.message
        positions[message.tp] = message.offset
        metrics.events.inc()
        try:
            event = parse(raw)
        except InvalidEvent as exc:
            metrics.dead_letters.labels(exc.reason.value).inc()
            dlq.send_soon(key=message.key, value=raw,
                          headers=dead_letter_headers(exc.reason.value, exc.detail, "worker"))
            return None
        previous = sessions.get(event.user_id)
        state = SessionState.from_dict(previous) if previous is not None else None
        new_state, changed = apply_event(state, event, cfg.session)
        if not changed:
            metrics.duplicates.inc()
            return None
        sessions[event.user_id] = new_state.to_dict()
        popularity.add(event.item_id, event.ts)
        sent = dict(message.headers or []).get(SENT_AT_HEADER)
        return {"user_id": event.user_id, "items": new_state.items, "event_id": event.event_id,
                "item_id": event.item_id, "sent_us": int(sent) if sent else None}

    @app.agent(interactions)
    async def recommend(stream: faust.StreamT) -> None:
        stream.add_processor(sessionize)
        async for batch in stream.take(cfg.batch_size, within=cfg.batch_within_s):
            metrics.batch_size.observe(len(batch))
            updates = [u for u in batch if u is not None]
            if updates:
                await _publish(updates)
            _update_lag()

    def _update_lag() -> None:
        """Lag of the partitions this worker still owns. After a rebalance, partitions that
        moved to another worker leave the gauge: asking their highwater raises, and an
        exception here would crash the agent (it did, in a two-worker run)."""
        assigned = app.consumer.assignment()
        for tp in [tp for tp in positions if tp not in assigned]:
            del positions[tp]
            with suppress(KeyError):
                metrics.lag.remove(str(tp.partition))
        for tp, offset in positions.items():
            metrics.lag.labels(str(tp.partition)).set(app.consumer.highwater(tp) - offset - 1)

    if load_bundle is not None:
        @app.task
        async def swap_models() -> None:
            await follow_model_updates(cfg.bootstrap, cfg.model_updates, serving, load_bundle,
                                       cfg.top_n)

    async def _publish(updates: list[dict]) -> None:
        nonlocal popular_written
        bundle = serving.bundle  # read once: a swap lands between micro-batches
        timings: dict[str, float] = {}
        recs = bundle.recommend([u["user_id"] for u in updates], [u["items"] for u in updates],
                                cfg.top_n, exclude_seen=cfg.exclude_seen, timings=timings)
        for stage, seconds in timings.items():
            metrics.stage_seconds.labels(stage).observe(seconds)
        start = time.perf_counter()
        now_us = time.time_ns() // 1000
        lists, paths = [], {"model": 0, "popularity": 0}
        for update, rec in zip(updates, recs):
            if rec is not None:
                items, path = list(zip(rec.items, rec.scores)), "model"
            else:
                items = popularity.top(cfg.top_n, exclude=update["items"] if cfg.exclude_seen
                                       else ())
                path = "popularity"
            paths[path] += 1
            payload = orjson.dumps({
                "user_id": update["user_id"], "path": path, "model_version": bundle.version,
                "items": [{"item_id": i, "score": round(float(s), 6)} for i, s in items],
                "event_id": update["event_id"], "event_item_id": update["item_id"],
                "sent_us": update["sent_us"], "published_us": now_us})
            lists.append((update["user_id"], payload))
            # Queued, not awaited: librdkafka batches (linger 5 ms); FlushBeforeCommit
            # delivers it all before the offsets of these events are committed.
            lists_out.produce(cfg.recommendations, update["user_id"].encode(), payload)
        for path, count in paths.items():
            metrics.published.labels(path).inc(count)
        popular = None
        if start - popular_written >= POPULAR_EVERY_S:  # a top-k scan: not per batch
            popular_written = start
            popular = orjson.dumps({
                "model_version": bundle.version, "computed_us": now_us,
                "items": [{"item_id": i, "score": round(s, 6)}
                          for i, s in popularity.top(cfg.top_n)]})
        try:
            await recs_writer.write(lists, popular)
        except Exception as exc:  # noqa: BLE001 - Redis down must not stop the stream
            metrics.redis_errors.inc()
            log.warning("writing %d lists to Redis failed: %s", len(lists), exc)
        metrics.stage_seconds.labels("publish").observe(time.perf_counter() - start)

    return app
