"""Typed responses of the API: they drive the OpenAPI document, its examples, and the
schema checks of the fuzz test. Hot routes build their JSON by hand and return it as is;
these models say what that JSON is."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, Field

Path = Literal["model", "popularity", "fallback"]


class ScoredItem(BaseModel):
    item_id: str
    score: float


class RecommendationList(BaseModel):
    """A user's latest list. ``path``: ``model`` (the stream workers' list for this
    session), ``popularity`` (no list yet: recent popularity), ``fallback`` (Redis is down:
    the popularity this API process last saw)."""

    user_id: str
    path: Path
    model_version: str | None = Field(description="model that computed the list, when known")
    items: list[ScoredItem]
    event_id: str | None = Field(description="the event whose arrival produced this list")
    published_us: int | None = Field(description="when it was computed, epoch microseconds")

    model_config = {"json_schema_extra": {"examples": [{
        "user_id": "u42", "path": "model", "model_version": "3",
        "items": [{"item_id": "i7", "score": 4.21}, {"item_id": "i19", "score": 3.87}],
        "event_id": "0b7e6a4c-5f0e-4a55-9d8e-2f8a3c1d9e10",
        "published_us": 1795000000000000}]}}


class Accepted(BaseModel):
    accepted: int = Field(description="events produced to the interactions topic")

    model_config = {"json_schema_extra": {"examples": [{"accepted": 2}]}}


class Rejection(BaseModel):
    index: int = Field(description="position in the posted array (0 for a single event)")
    reason: str = Field(description="machine-readable, as in the dead-letter header")
    detail: str


class Rejected(BaseModel):
    """Nothing was produced: fix the listed events and send the batch again."""

    accepted: Literal[0] = 0
    rejected: list[Rejection]

    model_config = {"json_schema_extra": {"examples": [{"accepted": 0, "rejected": [
        {"index": 1, "reason": "unknown_event_type", "detail": "event_type 'like'"}]}]}}


class Problem(BaseModel):
    detail: str


class Health(BaseModel):
    status: Literal["ok"] = "ok"


class Readiness(BaseModel):
    ready: bool
    kafka: bool
    redis: bool
    model_version: str | None


class LiveFigures(BaseModel):
    """What the dashboard shows, over the last ``window_s`` seconds of published lists."""

    window_s: float
    lists_per_s: float = Field(description="lists published per second: events answered")
    latency_ms: dict[str, float | None] = Field(description="send-to-publish p50/p95/p99")
    dlq_per_s: float | None = Field(description="dead letters per second, None until known")
    model_version: str | None
    last_swap_us: int | None = Field(description="when lists from a new model first appeared")
    online_hr10: float | None = Field(description="share of events whose item was in the "
                                      "list shown to that user before it (prequential)")
    judged: int = Field(description="events behind online_hr10")
    feed_clients: int
