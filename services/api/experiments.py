"""Experiments between live models on the API, the same operations as ``streamrec
experiment`` under the same rules (``streams.experiment_control``, reached through
``experiment_calls.ExperimentCalls``):

- ``GET /v1/experiments``: every declaration; ``POST /v1/experiments``: start one.
- ``GET /v1/experiments/{name}``: its status (what the dashboard's panel polls).
- ``POST /v1/experiments/{name}/stop``, ``.../conclude``: stop it, without or with a winner
  (and, asked to, promote the winner to champion).

Reading is a read like lists; writing changes what every user is served, so it needs an
unscoped event key, as the catalogue does (``auth.Access.shared_write_guard``). A refusal
is answered with the rule's one line: 404 for an unknown name, 409 when the experiments'
present state refuses it (another runs, the name is taken, no verdict yet), 400 for the
request itself (its shape, shares that do not add up, a model the registry lacks); Kafka,
Redis or the registry failing is a 503. Bodies are checked here rather than by FastAPI, so
a malformed one gets the same 400 and one line as a broken rule.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Annotated, Any, TypeVar

from fastapi import FastAPI, HTTPException, Request, Response
from fastapi import Path as PathParam
from pydantic import BaseModel, ValidationError

from infra.urls import mask_urls
from services.api.auth import Access
from services.api.backends import backends_of
from services.api.routes import json_response, read_capped
from services.api.schemas import (
    ExperimentConcluded,
    ExperimentConclusion,
    Experiments,
    ExperimentStart,
    ExperimentStarted,
    ExperimentStatus,
    Problem,
)
from services.api.timeouts import TIMEOUT_RESPONSE
from services.settings import Settings
from streams.experiment import NAME, Experiment, one_line
from streams.experiment_control import (
    ExperimentConflict,
    ExperimentRefused,
    UnknownExperiment,
    new_experiment,
)

log = logging.getLogger(__name__)

EXPERIMENTS_PATH = "/v1/experiments"
EXPERIMENT_PATH = "/v1/experiments/{name}"
SHARED = "the experiments"  # what a scoped key may not write
EXPERIMENT_NAME = Annotated[str, PathParam(pattern=NAME, description="the experiment's name",
                                           examples=["ranker-v3"])]
T = TypeVar("T")
M = TypeVar("M", bound=BaseModel)

UNKNOWN = {404: {"model": Problem, "description": "no experiment of that name"}}
UNAVAILABLE = {503: {"model": Problem, "description": "Kafka, Redis or the registry did "
                     "not answer; nothing was changed, unless the detail says otherwise"}}


def parse_body(body: bytes, model: type[M]) -> M:
    """``body`` as ``model``; ``ExperimentRefused`` naming the first problem otherwise."""
    try:
        return model.model_validate_json(body)
    except ValidationError as exc:
        raise ExperimentRefused(one_line(exc)) from None


def parse_start(body: bytes) -> Experiment:
    """The experiment a start request declares, under the declaration's rules (the
    registry's are checked on starting it)."""
    asked = parse_body(body, ExperimentStart)
    return new_experiment(asked.name, [(v.name, v.model, v.share) for v in asked.variants],
                          asked.mode, asked.salt, asked.holdback)


def parse_conclusion(body: bytes) -> ExperimentConclusion:
    """A conclude request's options; an empty body takes the defaults."""
    return parse_body(body, ExperimentConclusion) if body.strip() else ExperimentConclusion()


def refusal(exc: ExperimentRefused) -> HTTPException:
    status = (404 if isinstance(exc, UnknownExperiment) else
              409 if isinstance(exc, ExperimentConflict) else 400)
    return HTTPException(status, str(exc))


class _Calls:
    """The threads experiment calls run on, their own: with Kafka away each call blocks
    for up to a minute (and keeps its thread past the request's 504), and on the shared
    default pool (6 threads on 2 cores) a few dashboards polling every 5 s held every
    thread, stalling what else runs there (``/readyz``'s refresh, the first model load).
    Past ``most`` calls not yet finished, one is refused at once."""

    def __init__(self, workers: int = 2, most: int = 8) -> None:
        self.pool = ThreadPoolExecutor(workers, thread_name_prefix="experiment-call")
        self.most, self.unfinished, self._lock = most, 0, threading.Lock()

    async def run(self, call: Callable[..., T], *args: Any) -> T:
        with self._lock:
            if self.unfinished >= self.most:
                raise HTTPException(503, f"{self.unfinished} experiment calls are still "
                                         "waiting on Kafka, Redis or the registry; retry later",
                                    headers={"Retry-After": "5"})
            self.unfinished += 1
        future = self.pool.submit(call, *args)
        future.add_done_callback(self._finished)
        return await asyncio.wrap_future(future)

    def _finished(self, _: Future) -> None:
        with self._lock:
            self.unfinished -= 1


CALLS = _Calls()


async def off_loop(call: Callable[..., T], *args: Any) -> T:
    """``call(*args)`` on the experiment calls' threads (it blocks on Kafka, sync Redis or
    the registry); a refusal as its status and one line, any failure of those services
    as a 503."""
    try:
        return await CALLS.run(call, *args)
    except HTTPException:  # too many calls unfinished: its own 503
        raise
    except ExperimentRefused as exc:
        raise refusal(exc) from None
    except Exception as exc:  # noqa: BLE001 - whatever the Kafka, Redis or MLflow client raises
        log.warning("experiment call failed", exc_info=True)
        first = (str(exc).strip().splitlines() or [""])[0]
        # masked, then cut: cut inside a URL's password first, it lost its '@' and went
        # out unmasked
        raise HTTPException(503, mask_urls(f"{type(exc).__name__}: {first}")[:500]) from None


def _inlined(schema: dict[str, Any]) -> dict[str, Any]:
    """A pydantic JSON schema with its ``$defs`` put in place of their references, for a
    request body documented by hand (the OpenAPI document has no ``$defs`` to point at)."""
    defs = schema.pop("$defs", {})

    def resolve(node: Any) -> Any:
        if isinstance(node, dict):
            ref = node.get("$ref", "")
            if ref.startswith("#/$defs/"):
                return resolve(defs[ref.removeprefix("#/$defs/")])
            return {k: resolve(v) for k, v in node.items()}
        if isinstance(node, list):
            return [resolve(v) for v in node]
        return node

    return resolve(schema)


def _body(model: type[BaseModel], required: bool, description: str) -> dict[str, Any]:
    return {"requestBody": {"required": required, "description": description, "content": {
        "application/json": {"schema": _inlined(model.model_json_schema())}}}}


def add_experiment_routes(app: FastAPI, settings: Settings, access: Access) -> None:
    write = access.shared_write_guard(SHARED)
    reads = {**access.read_responses(), **TIMEOUT_RESPONSE, **UNAVAILABLE}
    writes = {**access.shared_write_responses(SHARED), **TIMEOUT_RESPONSE, **UNAVAILABLE}
    too_big = {413: {"model": Problem, "description": "a body over STREAMREC_API_MAX_BODY_BYTES"}}

    async def body_of(request: Request) -> bytes:
        return await read_capped(request, settings.api_max_body_bytes)

    @app.get(EXPERIMENTS_PATH, response_model=Experiments, summary="Every declared experiment",
             dependencies=access.read_guard(), responses=reads)
    async def list_experiments() -> Response:
        return json_response(await off_loop(backends_of(app).experiments.declared))

    @app.post(EXPERIMENTS_PATH, status_code=201, response_model=ExperimentStarted,
              summary="Start an experiment",
              description="Every worker serves it within a second or two. At most one "
                          "runs at a time; every variant's model must be in the registry.",
              dependencies=write, openapi_extra=_body(
                  ExperimentStart, True, "the experiment; the first variant is the control"),
              responses={400: {"model": Problem, "description": "a broken rule (bad shape, "
                               "shares not adding up, a model not in the registry); nothing "
                               "was declared"},
                         409: {"model": Problem, "description": "another experiment runs, "
                               "one of that name exists, or another start held the start "
                               "lock too long (retry); nothing was declared"},
                         **too_big, **writes})
    async def start_experiment(request: Request) -> Response:
        try:
            experiment = parse_start(await body_of(request))
        except ExperimentRefused as exc:
            raise refusal(exc) from None
        return json_response(await off_loop(backends_of(app).experiments.start, experiment), 201)

    @app.get(EXPERIMENT_PATH, response_model=ExperimentStatus, summary="An experiment's status",
             description="Per variant: users, lists, metrics with 95% intervals; the "
                         "always-valid tests, the sample-ratio check and the verdict. It may "
                         "be read as often as one likes without inflating false positives. "
                         "Figures with no finite value yet are null.",
             dependencies=access.read_guard(), responses={**UNKNOWN, **reads})
    async def experiment_status(name: EXPERIMENT_NAME) -> Response:
        return json_response(await off_loop(backends_of(app).experiments.status, name))

    @app.post(f"{EXPERIMENT_PATH}/stop", response_model=Experiment,
              summary="Stop an experiment without a winner",
              description="Workers go back to the champion alone; the figures stay readable.",
              dependencies=write, responses={**UNKNOWN, **writes})
    async def stop_experiment(name: EXPERIMENT_NAME) -> Response:
        return json_response(await off_loop(backends_of(app).experiments.stop, name))

    @app.post(f"{EXPERIMENT_PATH}/conclude", response_model=ExperimentConcluded,
              summary="Stop an experiment with its winner, and promote it if asked",
              dependencies=write, openapi_extra=_body(
                  ExperimentConclusion, False, "optional: the winner (default: the test's "
                  "verdict) and whether to make it the champion"),
              responses={400: {"model": Problem, "description": "a bad body, or a winner "
                               "that is not a variant"},
                         409: {"model": Problem, "description": "the test has no verdict "
                               "yet and no winner was named, or promote was asked of a "
                               "winner judged on several versions, or on none of its "
                               "own"}, **UNKNOWN, **too_big, **writes})
    async def conclude_experiment(name: EXPERIMENT_NAME, request: Request) -> Response:
        try:
            asked = parse_conclusion(await body_of(request))
        except ExperimentRefused as exc:
            raise refusal(exc) from None
        return json_response(await off_loop(backends_of(app).experiments.conclude, name,
                                            asked.winner, asked.promote))
