"""Typed responses of the API besides the list: they drive the OpenAPI document, its
examples, and the schema checks of the fuzz test. Routes build their JSON by hand and
return it as is; these models say what that JSON is. The list itself is the workers'
record, ``streams.messages.RecommendationList``, declared there once."""

from __future__ import annotations

from typing import Any, Literal, get_args

from pydantic import BaseModel, Field

from services.api.ingest import Rejection
from streams.experiment import Experiment, Variant

# An answer of the list routes, for the OpenAPI document (the record documents its fields;
# ``title`` is the API's, from the catalogue: ``catalogue.TitledItem``).
LIST_EXAMPLE: dict[str, Any] = {
    "user_id": "u42", "path": "model",
    "model_version": "streamrec-retriever:v3+streamrec-ranker:v2",
    "items": [{"item_id": "i7", "score": 4.21, "title": "Heat (1995)"},
              {"item_id": "i19", "score": 3.87}],
    "event_id": "0b7e6a4c-5f0e-4a55-9d8e-2f8a3c1d9e10", "event_item_id": "i3",
    "sent_us": 1794999999990000, "published_us": 1795000000000000}


class Accepted(BaseModel):
    accepted: int = Field(description="events produced to the interactions topic")

    model_config = {"json_schema_extra": {"examples": [{"accepted": 2}]}}


class Rejected(BaseModel):
    """Nothing was produced: fix the listed events and send the batch again."""

    accepted: Literal[0] = 0
    rejected: list[Rejection]

    model_config = {"json_schema_extra": {"examples": [{"accepted": 0, "rejected": [
        {"index": 1, "reason": "unknown_event_type", "detail": "event_type 'like'"}]}]}}


class ItemOutcome(BaseModel):
    """One catalogue record's fate: produced to the items topic, or refused and why."""

    index: int = Field(0, description="position in the posted array (0 for PUT)")
    item_id: str | None = Field(description="the record's id, when it had a readable one")
    accepted: bool
    reason: str | None = Field(None, description="machine-readable, as in the dead-letter "
                               "header; only when refused")
    detail: str | None = None

    model_config = {"json_schema_extra": {"examples": [
        {"index": 0, "item_id": "4", "accepted": True},
        {"index": 1, "item_id": "5", "accepted": False, "reason": "bad_value",
         "detail": "price must be >= 0, got -1"}]}}


class ItemsResult(BaseModel):
    """Per record: the accepted ones were produced, the refused ones were not (resend
    them fixed; records are upserts by item id, so resending an accepted one is harmless)."""

    accepted: int
    rejected: int
    results: list[ItemOutcome]


class SimilarItem(BaseModel):
    item_id: str
    score: float = Field(description="similarity in the retriever's item space (higher is "
                         "nearer)")
    path: Literal["model", "content"] = Field(description="model: an item the champion "
                                              "trained on; content: a catalogue item "
                                              "embedded by its content alone")
    title: str | None = Field(None, description="only where the catalogue has one")


class SimilarItems(BaseModel):
    """The items nearest to ``item_id`` in the champion's item space, nearest first (the
    item itself left out)."""

    item_id: str
    model_version: str
    items: list[SimilarItem]

    model_config = {"json_schema_extra": {"examples": [{
        "item_id": "4", "model_version": "streamrec-retriever:v3+streamrec-ranker:v2",
        "items": [{"item_id": "17", "score": 0.92, "path": "model", "title": "Heat (1995)"},
                  {"item_id": "new-1", "score": 0.81, "path": "content"}]}]}}


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


# Experiments (``services.api.experiments``). The declaration itself is the record every
# worker reads, ``streams.experiment.Experiment``, declared there once; a status's floats
# are null where the statistics have no finite value yet (an interval before any list, the
# sample-ratio check of an interleaving), since JSON has no NaN or infinity.


class ExperimentStart(BaseModel):
    """The body of ``POST /v1/experiments``. Only the shape is checked here; the rules (name
    pattern, at least two variants with distinct names, shares and holdback adding up to 1,
    interleaving comparing exactly two, every model in the registry) are the declaration's
    and ``streams.experiment_control``'s, so the CLI and the API refuse the same things."""

    name: str = Field(description="a-z, 0-9, _ . - (at most 63 characters)")
    variants: list[Variant] = Field(description="the first is the control; model: a "
                                    "registry alias (champion, challenger), versions "
                                    "(streamrec-retriever:v3+streamrec-ranker:v2) or "
                                    "popularity")
    mode: str = Field("ab", description="ab: each user sees their variant; interleave: "
                      "everyone sees a team draft of two",
                      json_schema_extra={"enum": list(get_args(
                          Experiment.model_fields["mode"].annotation))})
    salt: str | None = Field(None, description="bucketing salt (default: the name)")
    holdback: float = Field(0.0, description="share of users kept out (champion, uncounted)")

    model_config = {"extra": "forbid", "json_schema_extra": {"examples": [{
        "name": "ranker-v3", "variants": [
            {"name": "control", "model": "champion", "share": 0.5},
            {"name": "treatment", "model": "challenger", "share": 0.5}]}]}}


class ExperimentConclusion(BaseModel):
    """The optional body of ``POST /v1/experiments/{name}/conclude``."""

    winner: str | None = Field(None, description="the winning variant (default: the "
                               "always-valid test's verdict)")
    promote: bool = Field(False, description="make the winner's models the champion, so "
                          "every worker swaps to them")

    model_config = {"extra": "forbid"}


class Experiments(BaseModel):
    experiments: list[Experiment] = Field(description="every declared experiment, oldest "
                                          "first")
    running: str | None = Field(description="the one running now (at most one runs)")


class ExperimentStarted(BaseModel):
    experiment: Experiment
    versions: dict[str, str] = Field(description="variant -> the registry versions its "
                                     "model names now (or popularity)")


class MetricFigures(BaseModel):
    mean: float | None
    low: float | None = Field(description="95% interval, for display (the decision is "
                              "the always-valid test's)")
    high: float | None


class VariantFigures(BaseModel):
    name: str
    model: str
    users: int
    lists: int
    metrics: dict[str, MetricFigures] = Field(description="HR@10, NDCG@10, MRR, click@5, "
                                              "conversion@5, once the variant has users")
    served: dict[str, int] = Field(default_factory=dict, description="model version (or "
                                   "popularity) -> the lists it answered for this variant: "
                                   "an alias serves what it names when a worker loads it, "
                                   "and the control stands in for a variant not loaded")


class Evidence(BaseModel):
    verdict: str
    p_value: float | None = Field(description="always-valid: may be read at every look")
    estimate: float | None
    low: float | None
    high: float | None
    drifted: bool = Field(False, description="the effect moved between looks (one's interval "
                          "excludes another's): the verdict describes the past, no winner")
    wins: list[int] | None = Field(None, description="interleaving only: credits of the "
                                   "two models")
    users: int | None = Field(None, description="interleaving only: users who gave a "
                              "credit, the test's unit")


class ExperimentStatus(BaseModel):
    """Per variant its users, lists and metrics; the always-valid test of each variant
    against the control on each metric (or the interleaving credits); the sample-ratio
    check (A/B only); the verdict, decided by NDCG@10 in A/B."""

    experiment: Experiment
    workers: int = Field(description="workers whose tallies were merged")
    variants: list[VariantFigures]
    tests: dict[str, Evidence] = Field(description='"<variant> vs <control>: <metric>", '
                                          'or "interleaving"')
    sample_ratio_p: float | None
    sample_ratio_mismatch: bool = Field(description="true: users are not split as "
                                        "declared, so the split is broken")
    verdict: str
    winner: str | None
    load_failures: dict[str, str] = Field(default_factory=dict, description="variant -> "
                                          "why a worker could not load its model: the "
                                          "control serves its users there")


class ExperimentConcluded(BaseModel):
    experiment: Experiment = Field(description="the declaration, stopped, with its winner")
    verdict: str = Field(description="the test's verdict at this last look")
    promoted: dict[str, str] = Field(description="registered name -> version now the "
                                     "champion: the version the winner's lists were judged "
                                     "on; empty unless promoted (a winner served by "
                                     "popularity or by the champion alias leaves the "
                                     "champion as it is)")
    announced: bool | None = Field(description="whether the workers were told of the new "
                                   "champion; null when nothing was promoted")
