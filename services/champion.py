"""Making a model the champion: the registry's ``champion`` alias moved under the promotion
lock, then announced. The trainer promotes unattended, by a compare-and-set on the alias
(``services.trainer``); a person concluding an experiment (``streamrec experiment conclude
--promote``, ``POST /v1/experiments/{name}/conclude``) moves it to the versions they chose
(``promote``). Both take the one lock, so neither pairs its retriever with the other's
ranker, and both put back an alias that a failed move left half moved.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from infra.mlflow_store import MlflowStore
from services.retrying import retry
from services.settings import Settings
from services.stack import mlflow_store
from streams.messages import version_string

log = logging.getLogger("streamrec.champion")
LOCK_KEY = "streamrec:trainer:promote"


@dataclass(frozen=True)
class Held:
    """Whether this process took the promotion lock (its truth value), and whether it
    still holds it: the lock expires, and a registry slow enough past it let another
    promoter take it and move the aliases too, a retriever of one round then paired with
    a ranker of the other."""

    taken: bool
    lock: Any

    def __bool__(self) -> bool:
        return self.taken

    def still(self) -> bool:
        from infra.redis_lock import owned

        return self.taken and owned(self.lock)


@contextmanager
def promotion_lock(redis_url: str, ttl_s: float = 300) -> Iterator[Held]:
    """Yields whether this process holds the promotion lock (redis-py's): false if another
    does. The lock expires after ``ttl_s`` should its holder die; a holder that outlives
    it releases nothing another has taken since, and says so."""
    import redis

    from infra.redis_lock import new_token, release, take

    client = redis.Redis.from_url(redis_url, socket_timeout=5, socket_connect_timeout=5)
    lock = client.lock(LOCK_KEY, timeout=ttl_s)
    token = new_token()
    held = False
    try:
        held = retry("taking the promotion lock", lambda: take(client, lock, token))
        yield Held(held, lock)
    finally:
        try:
            if held:  # what the block did stands (an alias moved: announce it)
                release(lock, ttl_s, "the promotion lock")
        finally:
            client.close()


def move_alias(store: MlflowStore, versions: Mapping[str, str],
               before: Mapping[str, str] | None, held: Held) -> None:
    """Point the champion alias at ``versions``, retried. A move that fails part-way (a new
    retriever, the old ranker) is put back to ``before``, unless the lock expired during
    the retries: another promoter may have moved it since, which a restore would undo."""
    from streams.registry import set_champion

    try:
        retry("moving the champion alias", lambda: set_champion(store, versions))
    except Exception:
        if before and held.still():
            _restore(store, before)
        elif before:
            log.error("moving the champion alias failed after the promotion lock expired: "
                      "not restoring %s over what another promoter may have promoted; check "
                      "both models' 'champion' alias", version_string(dict(before)))
        raise
    _stamp(store, versions)


def _stamp(store: MlflowStore, versions: Mapping[str, str]) -> None:
    """Tag the new champion's versions with when they were promoted: a conclusion repeated
    later reads it to tell that its winner was promoted already, and must not be put back
    over the champions since (``streams.experiment_control``). The alias has moved: a
    failure here is a warning, not a failed promotion."""
    from streams.registry import PROMOTED_US, tag_versions

    now = str(time.time_ns() // 1000)
    try:
        retry("tagging the champion", lambda: tag_versions(store, versions, {PROMOTED_US: now}))
    except Exception as exc:  # noqa: BLE001 - the promotion stands; said, in one line
        log.warning("%s is the champion, but tagging it with when failed (%s): concluding "
                    "its experiment again would promote it again", version_string(dict(versions)),
                    exc)


def _restore(store: MlflowStore, before: Mapping[str, str]) -> None:
    """Point the alias back at ``before`` after a move failed part-way, retried as the
    move was; a failure is logged loudly (the move's error is the one raised)."""
    from streams.registry import set_champion

    try:
        retry("restoring the champion alias", lambda: set_champion(store, before))
    except Exception as exc:  # noqa: BLE001 - the operator must fix the alias by hand
        log.error("the champion alias may name a retriever and a ranker of different "
                  "rounds: restoring %s failed: %s; set both models' 'champion' alias to "
                  "those versions (the MLflow UI or client)", version_string(dict(before)), exc)


def promote(settings: Settings, versions: Mapping[str, str]) -> bool:
    """Point the registry's ``champion`` alias at ``versions`` ({registered name: version})
    under the promotion lock (refused while another holds it), then announce them on the
    model-updates topic so every worker swaps. Returns whether the broker took the
    announcement: the alias has moved either way, and workers that missed it load the new
    champion when they restart."""
    from streams.experiment_control import ExperimentConflict
    from streams.hot_swap import announce
    from streams.registry import alias_versions

    store = mlflow_store(settings)
    with promotion_lock(settings.redis) as held:
        if not held:
            raise ExperimentConflict("another promotion holds the lock (a trainer's, or "
                                     "another conclusion): conclude again with the same "
                                     "winner to promote")
        before = retry("reading the champion alias",
                       lambda: alias_versions(store, list(versions)))
        move_alias(store, versions, before, held)
    return announce(settings.kafka, settings.topic_model_updates, dict(versions),
                    settings.mlflow_uri)
