"""What the experiment routes (``services.api.experiments``) stand on: the blocking calls
they make, each a call of the same functions ``streamrec experiment`` makes
(``streams.experiment_control``, ``streams.experiment_report``, ``services.champion``), so
the API and the CLI follow one set of rules. Built with the other backends
(``backends.Backends``); the routes run each method in a thread, off the event loop:
reading the declarations reads the compacted topic to its end with a consumer of its own,
the status is a few sync Redis round trips, starting checks the registry.

Writes (start, stop, conclude) are serialized within the process, so two requests racing
here cannot both find no experiment running and both start one.
"""

from __future__ import annotations

import math
import numbers
import threading
from typing import Any

import redis

from infra.mlflow_store import MlflowStore
from services.champion import promote as make_champion
from services.settings import Settings
from streams import experiment_control as control
from streams.experiment import Experiment
from streams.experiment_report import status
from streams.experiment_store import declarations, running

REDIS_TIMEOUT_S = 5.0  # as the CLI's: a status is a few round trips


def finite(value: Any) -> Any:
    """``value`` (dicts, lists, numbers, as a report's ``to_dict`` gives) with every
    non-finite float (NaN before any data, an interval's infinite bound) as None and numpy
    scalars as Python numbers: JSON has no NaN or infinity, and a client must not have to
    parse them."""
    if isinstance(value, dict):
        return {key: finite(v) for key, v in value.items()}
    if isinstance(value, list | tuple):
        return [finite(v) for v in value]
    if value is None or isinstance(value, bool | str):
        return value
    if isinstance(value, numbers.Integral):
        return int(value)
    if isinstance(value, numbers.Real):
        number = float(value)
        return number if math.isfinite(number) else None
    return value


class ExperimentCalls:
    """The experiments topic, the tallies' Redis (a sync client, as the report reads it)
    and the registry, reached with the API's settings."""

    def __init__(self, settings: Settings, store: MlflowStore) -> None:
        self.settings, self.store = settings, store
        self.kafka, self.topic = settings.kafka, settings.topic_experiments
        self.redis = redis.Redis.from_url(settings.redis, socket_timeout=REDIS_TIMEOUT_S,
                                          socket_connect_timeout=REDIS_TIMEOUT_S)
        self._writing = threading.Lock()
        # a 409 "retry" before the request's 504: a start it answered late still ran
        self.lock_wait_s = min(control.START_WAIT_S, settings.api_request_timeout_s / 3)

    def declared(self) -> dict[str, Any]:
        """Every declaration, oldest first, and the running one's name (``Experiments``)."""
        found = declarations(self.kafka, self.topic)
        live = running(found)
        return {"experiments": [e.model_dump(mode="json") for e in
                                sorted(found.values(), key=lambda e: e.started_us)],
                "running": live.name if live else None}

    def start(self, experiment: Experiment) -> dict[str, Any]:
        """Declare ``experiment`` under the rules (``ExperimentStarted``)."""
        with self._writing:
            versions = control.start(self.kafka, self.topic, self.store, experiment,
                                     self.redis, self.lock_wait_s)
        return {"experiment": experiment.model_dump(mode="json"), "versions": versions}

    def status(self, name: str) -> dict[str, Any]:
        """The report at this look (``ExperimentStatus``); each look is folded into the
        always-valid tests, which is what lets a dashboard poll it."""
        experiment = control.find(self.kafka, self.topic, name)
        return finite(status(self.redis, experiment).to_dict())

    def stop(self, name: str) -> dict[str, Any]:
        """Stop ``name`` without a winner; the stopped declaration."""
        with self._writing:
            return control.stop(self.kafka, self.topic, self.redis, name,
                                wait_s=self.lock_wait_s).model_dump(mode="json")

    def conclude(self, name: str, winner: str | None, promote: bool) -> dict[str, Any]:
        """Stop ``name`` with its winner and, with ``promote``, make the winner's models the
        champion (``ExperimentConcluded``). A failure to promote is raised as a
        ``RuntimeError`` that says the experiment did conclude: the client then knows only
        the promotion is left to do (concluding again with the same winner does it)."""
        with self._writing:
            report, stopped, versions = control.conclude(self.kafka, self.topic, self.redis,
                                                         self.store, name, winner, promote,
                                                         self.lock_wait_s)
        announced = None
        if versions:
            try:
                announced = make_champion(self.settings, versions)
            except control.ExperimentConflict as exc:  # another promotion holds the lock:
                raise control.ExperimentConflict(  # a state of things, 409, not a 503
                    f"experiment {name!r} concluded ({stopped.winner} wins), but the "
                    f"promotion was refused: {exc}; conclude again to promote") from exc
            except Exception as exc:  # noqa: BLE001 - any registry failure: said, in one line
                raise RuntimeError(f"experiment {name!r} concluded ({stopped.winner} wins), "
                                   f"but moving the champion alias failed: {exc}") from exc
        return {"experiment": stopped.model_dump(mode="json"), "verdict": report.verdict,
                "promoted": dict(versions) if announced is not None else {},
                "announced": announced}

    def close(self) -> None:
        self.redis.close()
