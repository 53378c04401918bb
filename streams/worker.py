"""The Faust worker: interactions in, sessions in a changelog-backed table, recommendations
out to the ``recommendations`` topic and Redis, in micro-batches.

Per event (a stream processor, so it runs in the event's own context and table writes
reach the right changelog partition): validate (bad records to the dead-letter topic,
with the reason), sessionize, count popularity. Per micro-batch (``stream.take``): encode
the updated sessions, retrieve, rerank, publish. Users the model cannot serve yet get
recent popularity; every reply says which path served it.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import faust
import orjson

from streams.events import InvalidEvent, parse
from streams.popularity import DecayedPopularity
from streams.producer import SENT_AT_HEADER, dead_letter_headers
from streams.sessions import SessionPolicy, SessionState, apply_event

log = logging.getLogger(__name__)


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
    batch_size: int = 256
    batch_within_s: float = 0.05
    top_n: int = 10
    recs_ttl_s: int = 24 * 3600
    exclude_seen: bool = True
    session: SessionPolicy = field(default_factory=SessionPolicy)


@dataclass
class WorkerStats:
    events: int = 0
    dead_letters: int = 0
    duplicates: int = 0
    published: int = 0
    by_path: dict[str, int] = field(default_factory=dict)
    redis_errors: int = 0
    swaps: int = 0
    failed_swaps: int = 0


def create_app(cfg: WorkerConfig, bundle: Any,
               load_bundle: Callable[[], Any] | None = None) -> tuple[faust.App, WorkerStats]:
    """The Faust app, its topics, the sessions table, the recommend agent and, when
    ``load_bundle`` is given, the agent that swaps in a new champion on ``model-updates``."""
    app = faust.App(
        cfg.group_id, broker=f"kafka://{cfg.bootstrap}", store="memory://",
        datadir=str(cfg.state_dir), web_enabled=False, producer_linger_ms=5,
        topic_partitions=cfg.partitions, consumer_auto_offset_reset="earliest",
    )
    interactions = app.topic(cfg.interactions, key_serializer="raw", value_serializer="raw")
    recommendations = app.topic(cfg.recommendations, key_serializer="raw", value_serializer="raw")
    dlq = app.topic(cfg.dlq, key_serializer="raw", value_serializer="raw")
    updates = app.topic(cfg.model_updates, key_serializer="raw", value_serializer="raw")
    serving = {"bundle": bundle}  # swapped in one assignment, read once per micro-batch
    sessions = app.Table("sessions", default=None, partitions=cfg.partitions)
    popularity = DecayedPopularity()
    stats = WorkerStats()
    redis_client = _redis(cfg.redis_url)

    async def sessionize(raw: bytes) -> dict | None:
        """Per event, inside the event's context: validate, dead-letter, update state."""
        event_ctx = faust.current_event()
        stats.events += 1
        try:
            event = parse(raw)
        except InvalidEvent as exc:
            stats.dead_letters += 1
            key = event_ctx.message.key if event_ctx is not None else None
            dlq.send_soon(key=key, value=raw,
                          headers=dead_letter_headers(exc.reason.value, exc.detail, "worker"))
            return None
        previous = sessions.get(event.user_id)
        state = SessionState.from_dict(previous) if previous is not None else None
        new_state, changed = apply_event(state, event, cfg.session)
        if not changed:
            stats.duplicates += 1
            return None
        sessions[event.user_id] = new_state.to_dict()
        popularity.add(event.item_id, event.ts)
        headers = dict(event_ctx.message.headers or []) if event_ctx is not None else {}
        sent = headers.get(SENT_AT_HEADER)
        return {"user_id": event.user_id, "items": new_state.items, "event_id": event.event_id,
                "sent_us": int(sent) if sent else None}

    @app.agent(interactions)
    async def recommend(stream: faust.StreamT) -> None:
        stream.add_processor(sessionize)
        async for batch in stream.take(cfg.batch_size, within=cfg.batch_within_s):
            updates = [u for u in batch if u is not None]
            if updates:
                await _publish(updates)

    if load_bundle is not None:
        @app.agent(updates)
        async def swap_model(messages: faust.StreamT) -> None:
            async for raw in messages:
                try:
                    versions = orjson.loads(raw).get("versions", {})
                except (orjson.JSONDecodeError, AttributeError):
                    versions = {}
                announced = "+".join(f"{k}:v{v}" for k, v in versions.items())
                if announced == serving["bundle"].version:
                    continue  # already serving it (e.g. an old message read at start-up)
                try:
                    # Loading takes seconds: off the event loop, so consuming never stalls.
                    fresh = await asyncio.get_running_loop().run_in_executor(None, load_bundle)
                    smoke_user, smoke_item = fresh.users.ids[0], fresh.items.ids[0]
                    if fresh.recommend([smoke_user], [[smoke_item]], cfg.top_n)[0] is None:
                        raise ValueError("smoke recommendation came back empty")
                except Exception as exc:  # noqa: BLE001 - keep serving the old model
                    stats.failed_swaps += 1
                    log.error("model update %r not applied, keeping %s: %s", raw,
                              serving["bundle"].version, exc)
                    continue
                if fresh.version == serving["bundle"].version:
                    continue
                old, serving["bundle"] = serving["bundle"].version, fresh
                stats.swaps += 1
                log.warning("model swapped: %s -> %s", old, fresh.version)

    async def _publish(updates: list[dict]) -> None:
        bundle = serving["bundle"]
        recs = bundle.recommend([u["user_id"] for u in updates], [u["items"] for u in updates],
                                cfg.top_n, exclude_seen=cfg.exclude_seen)
        now_us = time.time_ns() // 1000
        payloads = []
        for update, rec in zip(updates, recs):
            if rec is not None:
                items, path = list(zip(rec.items, rec.scores)), "model"
            else:
                items = popularity.top(cfg.top_n, exclude=update["items"] if cfg.exclude_seen
                                       else ())
                path = "popularity"
            stats.by_path[path] = stats.by_path.get(path, 0) + 1
            payload = orjson.dumps({
                "user_id": update["user_id"], "path": path, "model_version": bundle.version,
                "items": [{"item_id": i, "score": round(float(s), 6)} for i, s in items],
                "event_id": update["event_id"], "sent_us": update["sent_us"],
                "published_us": now_us})
            payloads.append((update["user_id"], payload))
            # Buffered, not awaited per record: the producer batches (linger 5 ms).
            recommendations.send_soon(key=update["user_id"].encode(), value=payload)
        stats.published += len(payloads)
        if redis_client is not None:
            try:
                async with redis_client.pipeline(transaction=False) as pipe:
                    for user, payload in payloads:
                        pipe.set(f"recs:{user}", payload, ex=cfg.recs_ttl_s)
                    await pipe.execute()
            except Exception as exc:  # noqa: BLE001 - Redis down must not stop the stream
                stats.redis_errors += 1
                log.warning("writing %d lists to Redis failed: %s", len(payloads), exc)

    return app, stats


def _redis(url: str | None) -> Any:
    if url is None:
        return None
    import redis.asyncio as aioredis

    return aioredis.Redis.from_url(url, socket_timeout=1.0, socket_connect_timeout=1.0)
