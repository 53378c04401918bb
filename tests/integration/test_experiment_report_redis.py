"""Experiments against the real Redis: a look folds onto the tests' states as they are
when it writes them, even when another reader wrote in between (WATCH and retry); a
worker writes only its changed rows; starts take turns under a lock."""

from __future__ import annotations

import time
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


def test_a_worker_writes_only_the_rows_that_changed_and_a_reader_gets_them_all(
        settings: Settings) -> None:
    """Every flush wrote every row the worker held (0.35 s of its event loop per 200,000
    users, every 5 s). Now only changed rows go out; the reader merges them with the
    worker's counts, a failed write's rows go with the next, and a worker's write in the
    old, one-value form still reads."""
    import asyncio

    import redis.asyncio as aioredis

    from model.experiments.interleaving import CREDIT_TO_A
    from streams.experiment_store import read_tallies, rows_key, write_tallies
    from streams.experiments import Tallies

    name = f"rows-{uuid.uuid4().hex[:8]}"
    tallies = Tallies()
    tallies.variant("control").add("u1", {"HR@10": 1.0})
    tallies.variant("treatment").add("u2", {"HR@10": 0.0})
    tallies.credits.add("u3", {CREDIT_TO_A: 1.0})
    tallies.serve("treatment", "chal:v2", 1)
    client = redis.Redis.from_url(settings.redis, socket_timeout=5)

    async def write(broken: bool = False) -> None:
        remote = aioredis.Redis.from_url("redis://127.0.0.1:1" if broken else settings.redis,
                                         socket_timeout=1)
        try:
            await write_tallies(remote, name, "w1", tallies, {"treatment": "OSError"})
        finally:
            await remote.aclose()

    try:
        asyncio.run(write())
        assert client.hlen(rows_key(name, "w1")) == 3
        tallies.variant("control").add("u1", {"HR@10": 0.0})  # changed: u1 only
        with pytest.raises((redis.exceptions.ConnectionError, OSError)):  # refused
            asyncio.run(write(broken=True))
        tallies.variant("control").add("u4", {"HR@10": 1.0})
        assert tallies.take_changed() == {"control": {"u1": [1.0, 2.0] + [0.0] * 8,
                                                      "u4": [1.0, 1.0] + [0.0] * 8}}
        tallies.mark_changed({"control": {"u1": [], "u4": []}})
        asyncio.run(write())
        merged, workers, failed = read_tallies(client, name)
        assert workers == 1 and failed == {"treatment": "OSError"}
        assert merged.to_dict() == tallies.to_dict()
        # A run that died ten minutes before the last write (its worker restarted under
        # a new run id): its failure is history, so status no longer says it.
        dead = {"tallies": Tallies().to_dict(rows=False), "failed": {"other": "gone"},
                "rows": rows_key(name, "w-dead"), "written_ms": time.time_ns() // 10**6 - 600_000}
        client.hset(tally_key(name), "w-dead", orjson.dumps(dead))
        _, workers, failed = read_tallies(client, name)
        assert workers == 2 and failed == {"treatment": "OSError"}
        client.hdel(tally_key(name), "w-dead")
        old = Tallies()  # a worker run from before: all its rows in its one value
        old.variant("control").add("u9", {"HR@10": 1.0})
        client.hset(f"{tally_key(name)}", "w0", orjson.dumps({"tallies": old.to_dict(),
                                                              "failed": {}}))
        merged, workers, _ = read_tallies(client, name)
        assert workers == 2 and merged.variants["control"].users == 3
        client.delete(rows_key(name, "w1"))
        asyncio.run(write())  # nothing changed since: no row is written again
        assert client.hlen(rows_key(name, "w1")) == 0
    finally:
        client.delete(tally_key(name), rows_key(name, "w1"))
        client.close()


def test_a_declaration_that_cannot_take_the_lock_is_refused_and_a_lost_lock_is_said(
        settings: Settings, caplog: pytest.LogCaptureFixture) -> None:
    """The lock that makes experiment starts, stops and conclusions take turns
    (``one_declaration_at_a_time``), on the real Redis: held elsewhere past the wait, each
    is refused as a conflict (retry) before it reads anything (a stop that read before a
    conclusion landed wrote the experiment back without its winner); one that outlives
    the lock's expiry logs that it released nothing."""
    import logging
    import time

    from streams.experiment_control import (
        ExperimentConflict,
        conclude,
        declaration_lock,
        one_declaration_at_a_time,
        stop,
    )

    client = redis.Redis.from_url(settings.redis)
    topic = f"test-lock-{uuid.uuid4().hex[:8]}"
    elsewhere = client.lock(declaration_lock(topic), timeout=30)
    assert elsewhere.acquire(blocking=False)
    held = "start, stop or conclusion held the lock for 0.3 s: retry"
    try:
        with pytest.raises(ExperimentConflict, match=held):
            with one_declaration_at_a_time(client, topic, wait_s=0.3):
                pytest.fail("entered while the lock was held elsewhere")
        with pytest.raises(ExperimentConflict, match=held):  # no Kafka: refused first
            stop(None, topic, client, "x", wait_s=0.3)  # type: ignore[arg-type]
        with pytest.raises(ExperimentConflict, match=held):
            conclude(None, topic, client, None, "x", "a", wait_s=0.3)  # type: ignore[arg-type]
    finally:
        elsewhere.release()
    with caplog.at_level(logging.WARNING, "streams.experiment_control"):
        with one_declaration_at_a_time(client, topic, ttl_s=0.2):
            time.sleep(0.5)  # past the lock's expiry: a slow registry, say
    assert ("the experiment declaration lock expired (after 0.2 s) before it was released"
            in caplog.text)
    with one_declaration_at_a_time(client, topic, wait_s=0.3):  # expired: free for the next
        assert client.exists(declaration_lock(topic))
    assert not client.exists(declaration_lock(topic))
