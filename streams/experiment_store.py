"""Where experiments live: declarations on the compacted ``experiments`` topic (key = the
experiment's name, so compaction keeps the newest state of each), tallies in Redis (hash
``streamrec:experiment:<name>``, one field per worker run: its counts; and its users' rows
in a hash of its own, ``...:rows:<worker>``, one field per user and tally). The CLI and
the API write and read here; workers follow the topic (``streams.experiment_follower``)
and write their tallies.
"""

from __future__ import annotations

import logging
import time
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
# A worker run that wrote its tallies this long before the newest write has stopped (a
# live one writes every few seconds): its load failures are history, not the present.
STALE_S = 60.0


def tally_key(name: str) -> str:
    return f"{TALLY_PREFIX}{name}"


def tests_key(name: str) -> str:
    """Where ``streams.experiment_report`` keeps the sequential tests' states of ``name``."""
    return f"{tally_key(name)}:tests"


def declare(kafka: KafkaConnection, topic: str, experiment: Experiment,
            timeout_s: float = 10.0) -> None:
    """Put ``experiment`` on the topic; raises ``NotDelivered`` when the broker did not
    take it."""
    _put(kafka, topic, experiment.name, experiment.to_json(), "declaration", timeout_s)


def _put(kafka: KafkaConnection, topic: str, name: str, value: bytes | None, what: str,
         timeout_s: float) -> None:
    """One record for experiment ``name`` (None: a tombstone), delivered or raised."""
    from streams.producer import NotDelivered, RecordProducer

    producer = RecordProducer(kafka)
    producer.produce(topic, name.encode(), value)
    if producer.flush(timeout_s) or producer.stats.failed:
        raise NotDelivered(f"the broker did not take the {what} of {name!r}: "
                           f"{producer.stats.last_error}")


def newest(records: Iterable[Any]) -> dict[str, Experiment | None]:
    """The newest declaration per experiment name among ``records`` (anything with ``key``
    and ``value``, in offset order); None for a tombstone. An unreadable record (one a
    newer release wrote) is logged and forgets its name as a tombstone does: skipped, the
    older declaration stood (a stop read as still running) until compaction removed it,
    and readers then disagreed by compaction's timing."""
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
            log.warning("experiment record %r unreadable, so the experiment is unknown here "
                        "(a newer release's?): %s", name, exc)
            found.pop(name, None)
            found[name] = None
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


def rows_key(name: str, worker_id: str) -> str:
    """The hash of one worker run's per-user rows of experiment ``name``."""
    return f"{tally_key(name)}:rows:{worker_id}"


async def write_tallies(client: Any, name: str, worker_id: str, tallies: Tallies,
                        failed: dict[str, str] | None = None) -> None:
    """Store one worker's tallies of experiment ``name`` (an async Redis client), with the
    variants whose model it failed to load ({variant: error}): their users get the
    control's list, and ``status`` must say so.

    Only the rows of users changed since the last write go out, each a field of the
    worker's rows hash: writing every row at every flush cost 0.35 s of the event loop
    per 200,000 users every 5 s, and one value past ~2M users would pass Redis's 512 MB
    limit. Rows a failed write took are marked changed again, for the next."""
    key, rows = tally_key(name), rows_key(name, worker_id)
    changed = tallies.take_changed()
    payload = {"tallies": tallies.to_dict(rows=False), "failed": failed or {}, "rows": rows,
               "written_ms": time.time_ns() // 1_000_000}
    fields = {orjson.dumps([tally, user]): orjson.dumps(row)
              for tally, by_user in changed.items() for user, row in by_user.items()}
    try:
        async with client.pipeline(transaction=True) as pipe:
            if fields:
                pipe.hset(rows, mapping=fields)
            pipe.hset(key, worker_id, orjson.dumps(payload))
            for written in (key, rows, tests_key(name)):  # the tests' states: as long
                pipe.expire(written, TALLY_TTL_S)
            await pipe.execute()
    except BaseException:
        tallies.mark_changed(changed)
        raise


def read_tallies(client: Any, name: str) -> tuple[Tallies, int, dict[str, str]]:
    """The merged tallies of every worker for experiment ``name`` (a sync Redis client),
    how many worker runs reported (a restarted worker reports anew), and the load failures
    ({variant: error}) of the runs still writing when the last one wrote (``current``)."""
    merged, failed = Tallies(), {}
    fields = client.hgetall(tally_key(name))
    payloads = [orjson.loads(raw) for raw in fields.values()]
    for payload in payloads:
        tallies = Tallies.from_dict(payload["tallies"])
        if "rows" in payload:  # else a worker's write from before rows were kept apart
            rows: dict[str, dict[str, list[float]]] = {}
            for field, row in client.hgetall(payload["rows"]).items():
                tally, user = orjson.loads(field)
                rows.setdefault(tally, {})[user] = orjson.loads(row)
            tallies.fill(rows)
        merged = merged.merge(tallies)
    for payload in current(payloads):
        failed.update(payload["failed"])
    return merged, len(fields), failed


def current(payloads: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The worker runs that wrote within ``STALE_S`` of the newest write: a run that died
    (its worker restarted under a new run id, which then loaded the variant) kept saying
    the variant failed for as long as the tallies are kept. Measured against the newest
    write, not the clock, so a stopped experiment's last runs still say theirs. A run of
    an older release, which wrote no time, counts as current."""
    newest = max((p.get("written_ms", 0) for p in payloads), default=0)
    return [p for p in payloads
            if "written_ms" not in p or p["written_ms"] >= newest - STALE_S * 1000]
