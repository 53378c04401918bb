"""The trainer against the real broker, Redis and an MLflow store: gate, promotion, refusals."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from pathlib import Path

import orjson
import pytest
import redis

from infra.mlflow_store import MlflowStore
from services.champion import LOCK_KEY, promotion_lock
from services.processes import trainer_round
from services.settings import Settings, load_settings
from services.trainer import Trainer
from streams.consumer import read_topic
from streams.messages import NO_MODEL, version_string
from streams.producer import EventProducer
from streams.registry import RANKER_NAME, RETRIEVER_NAME, alias_versions
from streams.status import RoundSummary, TrainerStatus, WorkerStatus
from streams.synthetic import SyntheticConfig, generate

MODELS = [RETRIEVER_NAME, RANKER_NAME]


def _trainer(env: dict[str, str], status: Path, *args: str) -> RoundSummary:
    """``streamrec trainer --once --epochs 2 <args>``: the round its status file reports."""
    return trainer_round(env, status, "--epochs", "2", *args, timeout_s=900)


def test_the_promotion_lock_is_exclusive_and_expires(
    settings: Settings, caplog: pytest.LogCaptureFixture,
) -> None:
    client = redis.Redis.from_url(settings.redis)
    with caplog.at_level(logging.WARNING, logger="streamrec.trainer"):
        with promotion_lock(settings.redis, ttl_s=30.5) as held:
            assert held and 29_000 < client.pttl(LOCK_KEY) <= 30_500
            with promotion_lock(settings.redis) as second:
                assert not second
            client.pexpire(LOCK_KEY, 1)  # its ttl runs out ...
            time.sleep(0.05)
            assert client.set(LOCK_KEY, "another-trainer", nx=True, ex=30)  # ... and one takes it
    try:
        assert client.get(LOCK_KEY) == b"another-trainer"  # the first holder left it alone
    finally:
        client.delete(LOCK_KEY)
    assert "promotion lock expired" in caplog.text
    with promotion_lock(settings.redis) as again:  # released: free for the next one
        assert again
    assert client.get(LOCK_KEY) is None


def test_a_lock_taken_by_a_try_whose_reply_was_lost_is_held_not_left_to_expire(
    settings: Settings, monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The first ``SET`` takes the lock and its reply is lost: the retry must find the
    lock its own. With a new token each try, it was "another trainer's" for 300 s."""
    from redis.exceptions import ConnectionError as RedisConnectionError
    from redis.lock import Lock

    client = redis.Redis.from_url(settings.redis)
    real, calls = Lock.do_acquire, []

    def lost_reply(self: Lock, token: bytes) -> bool:
        taken = real(self, token)
        calls.append(taken)
        if len(calls) == 1:
            raise RedisConnectionError("reply lost")
        return taken

    monkeypatch.setattr(Lock, "do_acquire", lost_reply)
    with promotion_lock(settings.redis) as held:
        assert held and calls == [True, False]  # the retry's SET NX found it taken
        assert client.get(LOCK_KEY) is not None
    assert client.get(LOCK_KEY) is None  # and released by its holder


def test_trainer_promotes_rejects_and_refuses_with_reasons(
    settings: Settings, new_topic: Callable[..., str], tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import os

    topics = {"STREAMREC_TOPIC_INTERACTIONS": new_topic(2), "STREAMREC_TOPIC_DLQ": new_topic(),
              "STREAMREC_TOPIC_MODEL_UPDATES": new_topic()}
    env = {**os.environ, **topics, "STREAMREC_DATA_DIR": str(tmp_path / "state"),
           "STREAMREC_TRAINER_MIN_EVENTS": "500"}
    store = MlflowStore.local(tmp_path / "state" / "mlflow")

    status = tmp_path / "once.status.json"
    empty = _trainer(env, status)
    assert empty.outcome == "skipped" and "fewer than trainer_min_events" in empty.reason

    events = list(generate(SyntheticConfig(users=80, items=60, events=2500, seed=5)))
    with EventProducer(settings.kafka, topics["STREAMREC_TOPIC_INTERACTIONS"],
                       topics["STREAMREC_TOPIC_DLQ"]) as producer:
        for e in events:
            producer.send(e)
        producer.produce(topics["STREAMREC_TOPIC_INTERACTIONS"], b"u1", b"{broken")

    first = _trainer(env, status, "--refit-epochs", "0")
    assert (first.outcome, first.reason) == ("promoted", "no champion yet"), first
    assert first.versions == {RETRIEVER_NAME: "1", RANKER_NAME: "1"}
    assert alias_versions(store, MODELS) == {RETRIEVER_NAME: "1", RANKER_NAME: "1"}
    announced = list(read_topic(settings.kafka, topics["STREAMREC_TOPIC_MODEL_UPDATES"],
                                from_beginning=True, limit=1, idle_timeout_s=20))
    assert orjson.loads(announced[0].value)["versions"] == {RETRIEVER_NAME: "1", RANKER_NAME: "1"}

    # A challenger that must be 1000% better: registered, tagged with why, not promoted.
    second = _trainer(env, status, "--min-gain", "10")
    assert second.outcome == "rejected" and "does not beat champion" in second.reason, second
    assert second.versions == {RETRIEVER_NAME: "2", RANKER_NAME: "2"}
    assert alias_versions(store, MODELS) == {RETRIEVER_NAME: "1", RANKER_NAME: "1"}

    v2 = store.client().get_model_version(RANKER_NAME, "2")
    assert v2.tags["gate_verdict"] == "rejected" and "does not beat" in v2.tags["gate_reason"]
    run = store.client().get_run(v2.run_id)
    assert {"gate_challenger_full_NDCG_at_10", "gate_champion_full_NDCG_at_10",
            "gate_challenger_sampled_HR_at_10"} <= set(run.data.metrics)
    artifacts = {a.path for a in store.client()
                 .list_artifacts(v2.run_id)}
    assert "champion_vs_challenger.png" in artifacts

    # Promotion is a compare-and-set under a lock: two trainers cannot both promote.
    for key, value in topics.items():
        monkeypatch.setenv(key, value)
    monkeypatch.setenv("STREAMREC_DATA_DIR", str(tmp_path / "state"))
    trainer = Trainer(load_settings())
    challenger = {RETRIEVER_NAME: "2", RANKER_NAME: "2"}
    moved, why = trainer.promote(challenger, expected={RETRIEVER_NAME: "0", RANKER_NAME: "0"})
    assert not moved and why.endswith("while this challenger trained against "
                                      "streamrec-retriever:v0+streamrec-ranker:v0"), why
    lock = redis.Redis.from_url(settings.redis)
    lock.set(LOCK_KEY, "another-trainer", ex=30)
    try:
        locked, why = trainer.promote(challenger, expected={RETRIEVER_NAME: "1", RANKER_NAME: "1"})
    finally:
        lock.delete(LOCK_KEY)
    assert not locked and "lock held" in why
    assert alias_versions(store, MODELS) == {RETRIEVER_NAME: "1", RANKER_NAME: "1"}

    # The lock expired while a slow registry read the alias: another trainer may take it
    # and move the aliases too, so this one moves nothing.
    def slow_read(store: object, names: object, alias: str = "champion") -> dict[str, str]:
        lock.delete(LOCK_KEY)  # its time ran out
        return {RETRIEVER_NAME: "1", RANKER_NAME: "1"}

    with monkeypatch.context() as patched:
        patched.setattr("streams.registry.alias_versions", slow_read)
        lost, why = trainer.promote(challenger, expected={RETRIEVER_NAME: "1", RANKER_NAME: "1"})
    assert not lost and "lock expired before the alias moved" in why
    assert alias_versions(store, MODELS) == {RETRIEVER_NAME: "1", RANKER_NAME: "1"}

    # A round that crashes promotes nothing and says why.
    def broken_history() -> list:
        raise RuntimeError("disk on fire")

    monkeypatch.setattr(trainer, "history", broken_history)
    failed = trainer.run_round()
    assert failed.outcome == "failed" and "disk on fire" in failed.reason
    assert alias_versions(store, MODELS) == {RETRIEVER_NAME: "1", RANKER_NAME: "1"}


def test_worker_without_champion_then_trainer_loop_swaps_it_mid_stream_without_losing_events(
    settings: Settings, new_topic: Callable[..., str], tmp_path: Path,
) -> None:
    import os
    import time
    import uuid
    from collections import Counter

    from services.processes import ServiceProcess

    topics = {"STREAMREC_TOPIC_INTERACTIONS": new_topic(2), "STREAMREC_TOPIC_DLQ": new_topic(),
              "STREAMREC_TOPIC_RECOMMENDATIONS": new_topic(2),
              "STREAMREC_TOPIC_MODEL_UPDATES": new_topic()}
    env = {**os.environ, **topics, "STREAMREC_DATA_DIR": str(tmp_path / "state"),
           "STREAMREC_TRAINER_MIN_EVENTS": "500", "STREAMREC_WORKER_METRICS_PORT": "0",
           "STREAMREC_INTERACTIONS_PARTITIONS": "2",
           "STREAMREC_WORKER_GROUP": f"test-loop-{uuid.uuid4().hex[:8]}",
           # the round below must pass the gate: at the log's own dropout (0.5 for the first
           # champion's 17 events a user) the champion came closer to the challenger, and
           # the gain's interval held zero ([-0.0012, +0.0473] over 219 cases)
           "STREAMREC_RETRIEVER_DROPOUT": "0.2"}
    # Tastes drift halfway: the first champion knows only the old ones.
    log = list(generate(SyntheticConfig(users=80, items=300, events=3000, drift_at=0.5, seed=3)))
    a, b, c = log[:1500], log[1500:2400], log[2400:]

    def send(events: list) -> None:
        with EventProducer(settings.kafka, topics["STREAMREC_TOPIC_INTERACTIONS"],
                           topics["STREAMREC_TOPIC_DLQ"]) as producer:
            for e in events:
                producer.send(e)

    # The worker starts before any champion: it serves popularity, then the first
    # promotion's announcement swaps the model in.
    worker = ServiceProcess.start(env, tmp_path / "worker.log", "worker", status=True)
    trainer = None
    try:
        worker.wait_joined(settings.kafka, env["STREAMREC_WORKER_GROUP"])
        assert worker.wait_status(WorkerStatus, lambda w: w.model_version == NO_MODEL, 10)
        send(a)
        first = _trainer(env, tmp_path / "once.status.json")
        assert first.outcome == "promoted", first
        champion = version_string(first.versions)
        assert worker.wait_status(WorkerStatus, lambda w: w.model_version == champion, 120), \
            worker.output()[-3000:]
        trainer = ServiceProcess.start(env, tmp_path / "trainer.log", "trainer",
                                       "--interval-min", "0", "--every-events", "600",
                                       "--epochs", "2", status=True)
        assert trainer.wait_status(TrainerStatus, lambda t: t.state == "ready", 120), \
            trainer.output()[-2000:]
        send(b)  # 900 new events: the trainer's next round starts
        done = trainer.wait_status(TrainerStatus, lambda t: t.rounds >= 1, 600)
        assert done and done.last_round and done.last_round.outcome == "promoted", \
            trainer.output()[-3000:]
        second = version_string(done.last_round.versions)

        def swapped(timeout_s: float) -> WorkerStatus | None:
            return worker.wait_status(WorkerStatus, lambda w: w.model_version == second,
                                      timeout_s)

        sent, deadline = 0, time.monotonic() + 60
        while sent < len(c) - 100 and time.monotonic() < deadline:  # flowing while it swaps
            send(c[sent:sent + 20])
            sent += 20
            if swapped(0.5):
                break
        assert swapped(60), worker.output()[-3000:]
        send(c[sent:])
        values = [orjson.loads(r.value) for r in read_topic(
            settings.kafka, topics["STREAMREC_TOPIC_RECOMMENDATIONS"],
            from_beginning=True, limit=len(log), idle_timeout_s=60)]
    finally:
        if trainer is not None:
            trainer.stop()
        worker.stop()
    # Every event answered exactly once, before, during and after the swaps.
    assert Counter(v["event_id"] for v in values) == Counter(e.event_id for e in log)
    assert {v["model_version"] for v in values} == {NO_MODEL, champion, second}
    by_event = {v["event_id"]: v["model_version"] for v in values}
    assert {by_event[e.event_id] for e in a} == {NO_MODEL}
    assert {v["path"] for v in values if v["model_version"] == NO_MODEL} == {"popularity"}
    assert "serving popularity until the trainer announces" in worker.output()
    assert {by_event[e.event_id] for e in c[-100:]} == {second}
