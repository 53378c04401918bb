"""Where experiments live: declarations on the compacted ``experiments`` topic (key = the
experiment's name, so compaction keeps the newest state of each), tallies in Redis (hash
``streamrec:experiment:<name>``, one field per worker). The CLI and the API write and read
here; workers follow the topic (``streams.experiment_follower``) and write their tallies.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from typing import Any

import orjson

from infra.kafka_client import KafkaConnection
from streams.consumer import read_to_end
from streams.experiment import Experiment, InvalidExperiment, parse_experiment
from streams.experiments import Tallies

log = logging.getLogger(__name__)

TALLY_PREFIX = "streamrec:experiment:"
TALLY_TTL_S = 90 * 24 * 3600  # an experiment's figures outlive it by three months


def tally_key(name: str) -> str:
    return f"{TALLY_PREFIX}{name}"


def tests_key(name: str) -> str:
    """Where ``streams.experiment_report`` keeps the sequential tests' states of ``name``."""
    return f"{tally_key(name)}:tests"


def declare(kafka: KafkaConnection, topic: str, experiment: Experiment,
            timeout_s: float = 10.0) -> None:
    """Put ``experiment`` on the topic; raises ``RuntimeError`` when the broker did not
    take it."""
    _put(kafka, topic, experiment.name, experiment.to_json(), "declaration", timeout_s)


def _put(kafka: KafkaConnection, topic: str, name: str, value: bytes | None, what: str,
         timeout_s: float) -> None:
    """One record for experiment ``name`` (None: a tombstone), delivered or raised."""
    from streams.producer import RecordProducer

    producer = RecordProducer(kafka)
    producer.produce(topic, name.encode(), value)
    if producer.flush(timeout_s) or producer.stats.failed:
        raise RuntimeError(f"the broker did not take the {what} of {name!r}: "
                           f"{producer.stats.last_error}")


def newest(records: Iterable[Any]) -> dict[str, Experiment | None]:
    """The newest declaration per experiment name among ``records`` (anything with ``key``
    and ``value``, in offset order); None for a tombstone; an unreadable record is logged
    and skipped."""
    found: dict[str, Experiment | None] = {}
    for record in records:
        name = (record.key or b"").decode(errors="replace")
        if record.value is None:  # forgotten: declared again, it comes after the others,
            found.pop(name, None)  # as in a follower's ``known`` (``running`` reads order)
            found[name] = None
            continue
        try:
            found[name] = parse_experiment(record.value)
        except InvalidExperiment as exc:
            log.warning("experiment record %r skipped: %s", name, exc)
    return found


def declarations(kafka: KafkaConnection, topic: str) -> dict[str, Experiment]:
    """The newest declaration of every experiment on the topic (a tombstone forgets its
    experiment)."""
    return {name: e for name, e in newest(read_to_end(kafka, topic)).items() if e is not None}


def running(found: dict[str, Experiment]) -> Experiment | None:
    """The running experiment among ``found``, in topic order (one partition): at most one
    runs, and where two starts raced, the first declared is the one every reader serves
    and the other withdraws (``streams.experiment_control.start``)."""
    return next((e for e in found.values() if e.state == "running"), None)


def withdraw(kafka: KafkaConnection, topic: str, name: str, timeout_s: float = 10.0) -> None:
    """Forget experiment ``name`` (a tombstone): a start that lost a race takes its
    declaration back, so its name stays free and stopping the other revives nothing."""
    _put(kafka, topic, name, None, "withdrawal", timeout_s)


async def write_tallies(client: Any, name: str, worker_id: str, tallies: Tallies,
                        failed: dict[str, str] | None = None) -> None:
    """Store one worker's tallies of experiment ``name`` (an async Redis client), with the
    variants whose model it failed to load ({variant: error}): their users get the
    control's list, and ``status`` must say so."""
    key = tally_key(name)
    payload = {"tallies": tallies.to_dict(), "failed": failed or {}}
    async with client.pipeline(transaction=False) as pipe:
        pipe.hset(key, worker_id, orjson.dumps(payload))
        pipe.expire(key, TALLY_TTL_S)
        pipe.expire(tests_key(name), TALLY_TTL_S)  # the tests' states, as long as the tallies
        await pipe.execute()


def read_tallies(client: Any, name: str) -> tuple[Tallies, int, dict[str, str]]:
    """The merged tallies of every worker for experiment ``name`` (a sync Redis client),
    how many worker runs reported (a restarted worker reports anew), and the load failures
    they reported ({variant: error})."""
    merged, failed = Tallies(), {}
    fields = client.hgetall(tally_key(name))
    for raw in fields.values():
        payload = orjson.loads(raw)
        merged = merged.merge(Tallies.from_dict(payload["tallies"]))
        failed.update(payload["failed"])
    return merged, len(fields), failed
