"""Start, stop and conclude experiments: the rules both the CLI and the API follow.

- At most one experiment runs at a time (each user sees one list per event).
- Every variant's model must exist in the registry before anything is declared: a name
  that does not resolve is refused in one line and nothing changes.
- Concluding reads the status once more; with ``promote`` the winner's models become the
  champion (moved alias and announcement), so the workers swap to it. What is promoted is
  the version the winner's lists were judged on, not what its alias names by then, and a
  winner judged on several versions is not promoted at all.
"""

from __future__ import annotations

import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from contextvars import ContextVar
from typing import Any

from pydantic import ValidationError

from infra.kafka_client import KafkaConnection
from infra.mlflow_store import MlflowStore
from infra.redis_lock import new_token, owned, release, take
from streams.experiment import POPULARITY, Experiment, Variant, one_line
from streams.experiment_report import ExperimentReport, status
from streams.experiment_store import declarations, declare, running, withdraw
from streams.experiments import STAND_IN
from streams.messages import CHAMPION, version_string
from streams.registry import (
    NoChampion,
    alias_versions,
    parse_versions,
    promoted_since,
    resolve_versions,
)

START_WAIT_S = 30.0  # how long a declaration waits for another to finish (the API: less)


def declaration_lock(topic: str) -> str:
    """The Redis key of the lock that starts, stops and conclusions on ``topic`` take
    turns under (the key kept from when only starts took it, so a process of the older
    release still shares it)."""
    return f"streamrec:experiments:starting:{topic}"


class ExperimentRefused(ValueError):
    """A request that breaks a rule; the message is one line."""


class ExperimentConflict(ExperimentRefused):
    """Refused by the experiments' present state, not by the request itself (another one
    runs, the name is taken, no verdict yet): the same request may pass later. The API
    answers it 409, the other refusals 400."""


class UnknownExperiment(ExperimentRefused):
    """No experiment of that name is declared (the API answers 404)."""


def parse_variant(text: str) -> tuple[str, str, float]:
    """``name=model:share`` (``treatment=challenger:0.5``) as its parts; the model may
    itself hold colons (``streamrec-retriever:v3+streamrec-ranker:v2``)."""
    name, _, rest = text.partition("=")
    model, _, share = rest.rpartition(":")
    try:
        if name and model:
            return name, model, float(share)
    except ValueError:
        pass
    raise ExperimentRefused(f"variant {text!r}: give name=model:share, e.g. "
                            "treatment=challenger:0.5")


def new_experiment(name: str, variants: Sequence[tuple[str, str, float]], mode: str = "ab",
                   salt: str | None = None, holdback: float = 0.0,
                   started_us: int | None = None) -> Experiment:
    """A running experiment declared now (or at ``started_us``); ``ExperimentRefused``
    for a broken rule."""
    try:
        return Experiment(name=name, variants=[Variant(name=n, model=m, share=s)
                                               for n, m, s in variants],
                          mode=mode, salt=salt or name, holdback=holdback,  # type: ignore[arg-type]
                          started_us=started_us or time.time_ns() // 1000)
    except ValidationError as exc:
        raise ExperimentRefused(one_line(exc)) from None


def check_models(store: MlflowStore, experiment: Experiment) -> dict[str, str]:
    """{variant: the registry versions its model names now}; refuses a model the registry
    does not have."""
    found = {}
    for v in experiment.variants:
        if v.model == POPULARITY:
            found[v.name] = POPULARITY
            continue
        try:
            found[v.name] = version_string(resolve_versions(store, v.model))
        except NoChampion as exc:
            raise ExperimentRefused(f"variant {v.name}: {exc}") from None
    return found


def start(kafka: KafkaConnection, topic: str, store: MlflowStore, experiment: Experiment,
          redis: Any, wait_s: float = START_WAIT_S) -> dict[str, str]:
    """Declare ``experiment`` after checking its models and that none other runs; returns
    the versions each variant resolves to now. ``redis`` (a sync client) holds the lock
    that makes starts take turns, waited for ``wait_s`` at most."""
    with one_declaration_at_a_time(redis, topic, wait_s):
        known = declarations(kafka, topic)
        live = running(known)
        if live is not None:
            raise ExperimentConflict(f"experiment {live.name!r} is running: stop it first")
        if experiment.name in known:
            raise ExperimentConflict(f"an experiment named {experiment.name!r} exists "
                                     "already: choose another name")
        versions = check_models(store, experiment)
        _declare_in_turn(kafka, topic, experiment)
        _read_back(kafka, topic, experiment)
    return versions


# The declaration lock held by this context's ``one_declaration_at_a_time``, if any.
_TURN: ContextVar[Any] = ContextVar("declaration_turn", default=None)


@contextmanager
def one_declaration_at_a_time(redis: Any, topic: str, wait_s: float = START_WAIT_S,
                              ttl_s: float = 120.0) -> Iterator[None]:
    """redis-py's lock around a declaration's read, check and write (a start, a stop, a
    conclusion), so callers (API replicas, the CLI, a trainer) take turns: a second start
    finds the first declared, which the read-back alone misses when its declaration lands
    after the first has read back; and a stop that read before a conclusion landed wrote
    the experiment back without its winner. The lock expires after ``ttl_s`` should its
    holder die; a Redis that does not answer raises its own error before anything is
    declared. Nested in a turn this context holds already (the trainer's trial reads,
    moves its aliases and declares in one turn), it takes nothing more."""
    if _TURN.get() is not None:
        yield
        return
    lock, token = redis.lock(declaration_lock(topic), timeout=ttl_s), new_token()
    deadline = time.monotonic() + wait_s
    while not take(redis, lock, token):
        if time.monotonic() >= deadline:
            raise ExperimentConflict(f"another experiment start, stop or conclusion held the "
                                     f"lock for {wait_s:g} s: retry")
        time.sleep(0.1)
    turn = _TURN.set(lock)
    try:
        yield
    finally:
        _TURN.reset(turn)
        release(lock, ttl_s, "the experiment declaration lock")


def still_in_turn() -> None:
    """Raise unless the declaration lock this context took is still its own: it expired
    (a registry or Redis slow past its TTL), and another caller may hold it now."""
    lock = _TURN.get()
    if lock is not None and not owned(lock):
        raise ExperimentConflict("the experiment declaration lock expired before this was "
                                 "declared (a slow registry or Redis): nothing changed; retry")


def _declare_in_turn(kafka: KafkaConnection, topic: str, experiment: Experiment) -> None:
    """``declare``, unless the declaration lock taken for it has expired meanwhile: a stop
    that read the running declaration would write it back over this one."""
    still_in_turn()
    declare(kafka, topic, experiment)


def _read_back(kafka: KafkaConnection, topic: str, experiment: Experiment) -> None:
    """Refuse ``experiment`` if another start declared meanwhile (the later declared
    withdraws). Starts take turns under the lock; this still catches a process that does
    not take it (one of an older release during a rolling upgrade)."""
    first = running(declarations(kafka, topic))
    if first is not None and first.name != experiment.name:
        withdraw(kafka, topic, experiment.name)
        raise ExperimentConflict(f"experiment {first.name!r} started meanwhile: stop it first")
    if first is not None and first.started_us != experiment.started_us:  # same name, later
        raise ExperimentConflict(f"experiment {experiment.name!r} was started meanwhile by "
                                 "another caller, whose declaration stands: see its status")


def find(kafka: KafkaConnection, topic: str, name: str) -> Experiment:
    known = declarations(kafka, topic)
    if name not in known:
        raise UnknownExperiment(f"no experiment named {name!r} "
                                f"(known: {', '.join(sorted(known)) or 'none'})")
    return known[name]


def stop(kafka: KafkaConnection, topic: str, redis: Any, name: str, winner: str | None = None,
         wait_s: float = START_WAIT_S) -> Experiment:
    """Stop experiment ``name`` (its lists are no longer tagged; its figures stay), under
    the declaration lock (``redis``, a sync client)."""
    with one_declaration_at_a_time(redis, topic, wait_s):
        return _stop(kafka, topic, name, winner)


def _stop(kafka: KafkaConnection, topic: str, name: str, winner: str | None) -> Experiment:
    experiment = find(kafka, topic, name)
    try:
        stopped = Experiment.model_validate({
            **experiment.model_dump(), "state": "stopped", "winner": winner or experiment.winner,
            "stopped_us": experiment.stopped_us or time.time_ns() // 1000})
    except ValidationError as exc:
        raise ExperimentRefused(one_line(exc)) from None
    _declare_in_turn(kafka, topic, stopped)
    return stopped


def conclude(kafka: KafkaConnection, topic: str, redis: Any, store: MlflowStore, name: str,
             winner: str | None = None, promote: bool = False, wait_s: float = START_WAIT_S
             ) -> tuple[ExperimentReport, Experiment, dict[str, str]]:
    """Stop ``name`` with its winner (the test's, unless ``winner`` overrides it); returns
    the last report, the stopped declaration and, with ``promote``, the registry versions
    to make the champion (``to_promote``; empty when there is nothing to promote). Refused
    while the test has not decided and no winner is given, and before anything changes
    when ``promote`` cannot say which version was judged. Under the declaration lock."""
    with one_declaration_at_a_time(redis, topic, wait_s):
        return _conclude(kafka, topic, redis, store, name, winner, promote)


def _conclude(kafka: KafkaConnection, topic: str, redis: Any, store: MlflowStore, name: str,
              winner: str | None, promote: bool
              ) -> tuple[ExperimentReport, Experiment, dict[str, str]]:
    experiment = find(kafka, topic, name)
    if winner is not None and experiment.winner is not None and winner != experiment.winner:
        raise ExperimentConflict(f"experiment {name!r} was concluded already, with winner "
                                 f"{experiment.winner!r}: that stands")
    report = status(redis, experiment)
    # concluded already: its recorded winner, whatever the test says at this look
    chosen = winner or experiment.winner or report.winner
    if chosen is None and report.sample_ratio_mismatch:
        raise ExperimentConflict(
            f"experiment {name!r} has a sample-ratio mismatch (p = {report.sample_ratio_p:.2g}):"
            " its split is broken, so its verdict is not trusted; name the winner to conclude")
    if chosen is None:
        raise ExperimentConflict(f"experiment {name!r} has no verdict yet ({report.verdict}): "
                                "wait, or name the winner")
    names = {v.name: v for v in experiment.variants}
    if chosen not in names:
        raise ExperimentRefused(f"{chosen!r} is not a variant of {name!r}: "
                                f"{', '.join(names)}")
    served = next(v.served for v in report.variants if v.name == chosen)
    versions = to_promote(store, names[chosen], served) if promote else {}
    if versions and experiment.winner is not None:
        _not_promoted_since(store, experiment, versions)
    return report, _stop(kafka, topic, name, chosen), versions


def _not_promoted_since(store: MlflowStore, experiment: Experiment,
                        versions: dict[str, str]) -> None:
    """Refuse to promote again the winner of an experiment concluded earlier when its
    versions were made the champion since and the champion has moved on: run again later
    (a script's retry, a person), the conclusion put them back over every champion
    promoted since. A repeat still promotes when the first promotion never happened (the
    lock was held, the registry failed)."""
    now = alias_versions(store, list(versions))
    if now != versions and promoted_since(store, versions, experiment.stopped_us or 0):
        raise ExperimentConflict(
            f"experiment {experiment.name!r}'s winner {version_string(versions)} was promoted "
            f"after it concluded, and the champion has moved on since (to "
            f"{version_string(now or {})}): concluding again does not put it back; test it "
            "again in an experiment that names it")


def to_promote(store: MlflowStore, variant: Variant, served: dict[str, int]) -> dict[str, str]:
    """The registry versions that promoting ``variant`` makes the champion: the one its
    lists were judged on (``served``: version -> lists, from the tallies; a stand-in's
    lists are not judged). Resolving its alias at conclude time instead promoted whatever
    the alias named by then, e.g. a challenger the trainer registered after the test.
    Empty for popularity and for the champion alias, which is the champion already.
    Refused (one line) when its own lists came from several versions, when a stand-in
    served them all, or when no list is on record and the variant names an alias: the
    test judged no one version of its model, or none that can still be told."""
    if variant.model in (POPULARITY, CHAMPION):
        return {}
    own = sorted((v for v in served if not v.startswith(STAND_IN)), key=lambda v: -served[v])
    if len(own) > 1:
        counts = ", ".join(f"{v} ({served[v]:,} lists)" for v in own)
        raise ExperimentConflict(
            f"variant {variant.name} served several versions during the test: {counts}; "
            "its figures judge the mix, so none is promoted: conclude without promoting, and "
            "test the version you want in an experiment that names it")
    if not own and served:
        raise ExperimentConflict(f"variant {variant.name}'s lists all came from a stand-in "
                                 f"({', '.join(served)}), never from its model: nothing of "
                                 "it was judged, so nothing is promoted")
    if not own and parse_versions(variant.model) is None:
        raise ExperimentConflict(f"no list of variant {variant.name} is on record (its "
                                 "tallies are gone, or none were written), and its alias "
                                 f"{variant.model!r} names whatever it names now: nothing is "
                                 "promoted; promote the version you mean by name")
    try:
        return resolve_versions(store, own[0] if own else variant.model)
    except NoChampion as exc:  # e.g. the judged version deleted since: a 409, not a 503
        raise ExperimentConflict(f"variant {variant.name}: {exc}") from None
