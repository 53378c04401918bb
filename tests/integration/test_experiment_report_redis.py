"""``status`` against the real Redis: a look folds onto the tests' states as they are when
it writes them, even when another reader wrote in between (WATCH and retry)."""

from __future__ import annotations

import uuid
from typing import Any

import orjson
import pytest
import redis

from services.settings import Settings
from streams import experiment_report
from streams.experiment_control import new_experiment
from streams.experiment_store import tally_key


def test_a_concurrent_look_is_folded_in_not_written_over(
        settings: Settings, monkeypatch: pytest.MonkeyPatch) -> None:
    experiment = new_experiment(f"race-{uuid.uuid4().hex[:8]}",
                                [("control", "champion", 0.5), ("other", "popularity", 0.5)])
    key = f"{tally_key(experiment.name)}:tests"
    theirs = {"other vs control: NDCG@10": {"decided": "B wins", "looks": 7}}
    seen: list[dict[str, Any]] = []
    real_look = experiment_report.look
    client = redis.Redis.from_url(settings.redis, socket_timeout=5)
    other = redis.Redis.from_url(settings.redis, socket_timeout=5)

    def look(exp: Any, tallies: Any, workers: int, states: dict, failed: Any) -> Any:
        seen.append(states)
        if len(seen) == 1:  # another reader stores its look while this one folds
            other.set(key, orjson.dumps(theirs))
        report, new_states = real_look(exp, tallies, workers, states, failed)
        return report, {**new_states, "folded onto": sorted(states)}

    monkeypatch.setattr(experiment_report, "look", look)
    try:
        experiment_report.status(client, experiment)
        stored = orjson.loads(client.get(key))
    finally:
        client.delete(key)
        client.close()
        other.close()
    assert seen == [{}, theirs]  # the first fold was dropped and done again on theirs
    assert stored["folded onto"] == sorted(theirs)
