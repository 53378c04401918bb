"""The Faust worker: interactions in, sessions in a changelog-backed table, recommendations
out to the ``recommendations`` topic and Redis, in micro-batches.

Per event (a stream processor, so it runs in the event's own context and each table write
reaches the changelog partition of the event's own partition): validate (bad records to
the dead-letter topic, with the reason), sessionize. Per micro-batch (``stream.take``):
encode the updated sessions, retrieve, rerank, publish, then count the batch's events in
recent popularity. Users the model cannot serve yet get that popularity; every reply says
which path served it. Model updates are followed by every worker (``streams.hot_swap``).

The decisions live in ``streams.steps`` (``EventStep``, ``BatchStep``), free of Faust;
this module only wires them to Faust's stream, table, topics and commit hook.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import os
import time
from collections.abc import Awaitable, Callable, Sequence
from contextlib import suppress
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import faust
from faust.types import TableT

from infra.kafka_client import KafkaConnection
from model.features import LiveSession
from model.pipeline import Recommendation
from streams.catalog_follower import Catalogue, follow_catalogue
from streams.dead_letters import refailed_headers
from streams.experiment_follower import ExperimentSlot, follow_experiments
from streams.freeze import FreezeGuard
from streams.hot_swap import Serving, follow_model_updates, smoke_tested
from streams.lean_faust import (
    LeanMonitor,
    RawBytes,
    check_producer_buffer_cheaply,
    fetch_again_when_buffers_drain,
    hand_over_eagerly,
)
from streams.log_context import in_partition
from streams.messages import NO_MODEL
from streams.metrics import WorkerMetrics
from streams.popularity import DecayedPopularity
from streams.producer import RecordProducer, cut_letter, dead_letter_headers
from streams.recs_store import RecsWriter
from streams.session_table import SessionExpiry, SessionTable
from streams.sessions import TABLE, SessionPolicy
from streams.steps import (
    AnsweredEvents,
    BatchStep,
    DeadLetter,
    EventStep,
    SessionUpdate,
    StoreUnavailable,
)

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class WorkerConfig:
    kafka: KafkaConnection
    group_id: str
    interactions: str
    dlq: str
    recommendations: str
    model_updates: str
    partitions: int
    state_dir: Path
    redis_url: str | None = field(repr=False)  # may carry a password
    recs_channel: str = "streamrec:recs"
    batch_size: int = 256
    batch_within_s: float = 0.01
    session_timeout_s: float = 60.0  # Faust's default; the settings' default is 10 s
    commit_interval_s: float = 2.8  # Faust's default
    top_n: int = 10
    recs_ttl_s: int = 24 * 3600
    exclude_seen: bool | None = None  # None: as each served model chose (``auto``)
    session: SessionPolicy = field(default_factory=SessionPolicy)
    status_file: Path | None = None  # where ``Serving`` reports its model and swaps
    items: str | None = None  # the catalogue topic every worker follows (None: no catalogue)
    experiments: str | None = None  # the experiments topic (None: serve the champion only)
    worker_id: str = "0"  # names this worker's tallies in Redis
    instance_id: str | None = None  # Kafka's group.instance.id (None: dynamic membership)
    store: str = "rocksdb"  # where the sessions table lives: rocksdb (under state_dir) | memory
    standby_replicas: int = 1  # workers keeping a standby copy of each partition's sessions
    replication: int = 1  # the replication factor of the topics Faust creates (changelogs)
    session_ttl_ms: int = 0  # idle sessions expire after this, in event time (0: never)
    session_sweep_s: float = 300.0  # how often idle sessions are looked for


class FixedList:
    """Serves one constant list to everyone: with it the worker does everything but the
    model work, which measures the ceiling Faust and Kafka allow (``--pass-through``)."""

    version = "pass-through"

    def __init__(self, items: int = 10) -> None:
        self.items = [f"fixed-{i}" for i in range(items)]

    def recommend(self, users: Sequence[str], sessions: Sequence[LiveSession], k: int = 10,
                  exclude_seen: bool | None = True, timings: dict[str, float] | None = None
                  ) -> list[Recommendation]:
        rec = Recommendation(self.items[:k], [1.0] * min(k, len(self.items)))
        return [rec] * len(users)

    def add_items(self, records: Sequence[Any]) -> int:
        return 0


class NoModel:
    """What a worker serves before the first champion: no model answer, so every list
    comes from recent popularity (path ``popularity``) until a promotion is announced and
    swapped in like any other."""

    version = NO_MODEL

    def recommend(self, users: Sequence[str], sessions: Sequence[LiveSession], k: int = 10,
                  exclude_seen: bool | None = True, timings: dict[str, float] | None = None
                  ) -> list[Recommendation | None]:
        return [None] * len(users)

    def add_items(self, records: Sequence[Any]) -> int:
        return 0


EXIT_UNANSWERED = 70  # EX_SOFTWARE: a micro-batch went unanswered; start me again


def exit_redelivering(what: str) -> Callable[[BaseException], None]:
    """An ``on_failure`` that logs that ``what`` failed, then leaves before the next
    commit: the events not answered are redelivered to whichever worker takes them."""
    def leave(exc: BaseException) -> None:
        log.critical("%s failed: exiting without committing, so its events are redelivered",
                     what, exc_info=exc)
        logging.shutdown()
        os._exit(EXIT_UNANSWERED)
    return leave


exit_unanswered = exit_redelivering("publishing a micro-batch")


async def publish_or_exit(publisher: BatchStep, updates: Sequence[SessionUpdate], bundle: Any,
                          experiment: Any,
                          on_failure: Callable[[BaseException], None] = exit_unanswered
                          ) -> None:
    """Faust acknowledges these events once the batch's body ends, whatever way it ends
    (``take`` acks them in a ``finally``). Had ``publish`` raised (a list librdkafka
    refuses, e.g. over ``message.max.bytes``; a bug), the agent would restart past
    them, and their offsets would commit with no list and no dead letter. Exiting instead
    redelivers them, as after a kill -9: at least once. The model's own failures never get
    here: popularity answers those (``BatchStep.recommend``)."""
    try:
        await publisher.publish(updates, bundle, experiment)
    except Exception as exc:  # noqa: BLE001 - any failure leaves the batch unanswered
        on_failure(exc)


class NotDelivered(RuntimeError):
    """Records an offset commit depends on have not reached Kafka yet: that commit waits."""


COMMIT_WAIT_S = 2.0  # how long a commit awaits acknowledgements
COMMIT_TAIL_S = 2.0  # then at most this long, blocking, for the records sent meanwhile


class DeliverBeforeCommit:
    """Delivers the published lists, and the session changelog records (``SessionTable``),
    before Faust commits the offsets of their events; while Kafka is unreachable the
    commit is skipped, not the worker stopped.

    Lists go out through librdkafka (``RecordProducer``), not Faust's producer: Faust's
    queues each send in Python and pauses the consumer while more than 100 are pending,
    which made it the pass-through's bottleneck (measured). ``install`` wraps the
    consumer's ``force_commit``: it first waits, without blocking the event loop, for the
    records already produced, then flushes the few produced meanwhile. Faust reads the
    acked offsets it commits right after, with no await in between, so no offset is
    committed before its list is delivered.

    A commit whose records Kafka has not acknowledged in time returns False: the offsets
    stay uncommitted, and Faust tries again at its next commit. The first version raised,
    and a 35 s broker outage ended both workers of ``make faults`` (issue #16). A record
    that failed for good raises, as before: its events must be processed again, after a
    restart. Failures are counted from this object's start, as any one of them is fatal:
    a report served by a poll between commits is as fatal as one served here.
    """

    def __init__(self, producer: RecordProducer, wait_s: float = COMMIT_WAIT_S,
                 tail_s: float = COMMIT_TAIL_S, clock: Callable[[], float] = time.monotonic,
                 on_delivered: Callable[[], None] = lambda: None) -> None:
        self.producer, self.wait_s, self.tail_s, self.clock = producer, wait_s, tail_s, clock
        self.on_delivered = on_delivered  # told when everything produced is acknowledged
        self.failed_before = producer.stats.failed
        self.skipped = 0  # commits skipped in a row

    def install(self, consumer: Any) -> None:
        force_commit = consumer.force_commit

        async def deliver_then_commit(*args: Any, **kwargs: Any) -> bool:
            if not await self.delivered():
                return False
            self.on_delivered()
            try:
                return await force_commit(*args, **kwargs)
            except NotDelivered as exc:  # Faust's own producer (``drain_fully``)
                return self._skip(str(exc))

        consumer.force_commit = deliver_then_commit

    async def delivered(self) -> bool:
        """True when every record produced so far is acknowledged; False when Kafka has not
        acknowledged them in time. Raises when one failed for good."""
        produced_before = self.producer.stats.produced
        deadline = self.clock() + self.wait_s
        # Records produced while waiting are left to the flush: under load they never end.
        while (waiting := self.producer.pending() - (self.producer.stats.produced
                                                     - produced_before)) > 0:
            self._check_failures()
            if self.clock() >= deadline:  # no blocking flush: Kafka is not answering
                return self._skip(f"Kafka has not acknowledged {waiting} records "
                                  f"in {self.wait_s:.0f} s")
            await asyncio.sleep(0.005)
        remaining = self.producer.flush(self.tail_s)
        self._check_failures()
        if remaining:
            return self._skip(f"Kafka has not acknowledged {remaining} records")
        if self.skipped:
            log.info("Kafka acknowledged every record again after %d skipped commits",
                     self.skipped)
        self.skipped = 0
        return True

    def _check_failures(self) -> None:
        if self.producer.stats.failed > self.failed_before:
            raise RuntimeError(f"records not delivered (last error "  # lists or sessions
                               f"{self.producer.stats.last_error}): not committing")

    def _skip(self, why: str) -> bool:
        """Skip this commit; said at the 1st, 2nd, 4th, 8th ... skip in a row, for an
        outage of minutes must not fill the log."""
        self.skipped += 1
        if self.skipped & (self.skipped - 1) == 0:
            log.warning("%s: offsets not committed (%d commits skipped in a row); the next "
                        "commit tries again", why, self.skipped)
        return False


CHANGELOG_DRAIN_MOST_S = 30.0


def drain_fully(buffer: Any, most_s: float = CHANGELOG_DRAIN_MOST_S,
                clock: Callable[[], float] = time.monotonic) -> None:
    """Make ``buffer.flush()`` (Faust's producer buffer; the worker's own lists, letters and
    changelog records no longer go through it: ``SessionTable``, ``SendLetter``) return
    only once every write in it has been handed to the Kafka producer. Call it before the
    app starts: the buffer's send task binds ``_send_pending`` when it starts.

    Faust commits offsets after ``producer.flush()``, but its buffer's flush gives up as
    soon as 0.1 s passes without a send, however many writes are still queued, and a write
    being sent has already left the queue it counts. Under load the offsets of events whose
    session writes had not yet gone out were committed, and a restarted worker resumed one
    event short (``test_restarted_worker_recovers_sessions_from_the_changelog``,
    intermittent). Past ``most_s`` it raises ``NotDelivered`` instead. Before a commit,
    that commit is skipped (``DeliverBeforeCommit``) and the offsets stay uncommitted;
    when Faust flushes for a rebalance or a stop, the error ends the worker (Faust
    crashes on it), and the events are redelivered to whichever worker takes them.
    """
    flush_atmost, send_pending = buffer.flush_atmost, buffer._send_pending
    sending = 0

    async def counted_send(fut: Any) -> None:
        nonlocal sending
        sending += 1
        try:
            await send_pending(fut)
        finally:
            sending -= 1

    async def flush() -> None:
        deadline = clock() + most_s
        while buffer.size or sending:
            if clock() > deadline:
                raise NotDelivered(f"{buffer.size + sending} writes of Faust's producer not "
                                   f"sent in {most_s:.0f} s")
            if buffer.size:
                await flush_atmost(None)  # returns after 0.1 s without a send
            else:
                await asyncio.sleep(0.005)  # the last one is on its way

    buffer._send_pending, buffer.flush = counted_send, flush


def keep_queues_on_resume(flow_control: Any) -> None:
    """Make ``flow_control.resume()`` (the app's mode ``FlowControlEvent``) resume flow
    without emptying the stream queues. An explicit ``clear()`` (Faust's, on a revoke) still
    empties them.

    On a new assignment Faust resumes the stream partitions, seeks them to their committed
    offsets, and only then resumes flow, which also clears every stream queue. When the
    assignment had a changelog to restore, flow was already resumed for the restore. The
    fetcher therefore queued events during the seek, and the final resume wiped those not
    yet processed (233 in a run with the seek slowed by 0.3 s). The consumer's read
    offsets had passed them, so copies fetched again were dropped as already read. A
    restarted worker left 75 or 162 of 250 events unanswered, in about 1 run of 3 of
    ``test_restarted_worker_recovers_sessions_from_the_changelog`` (issue #16).

    Kept, those events are processed. A copy fetched again after the seek is a redelivery,
    dropped or answered once more (``AnsweredEvents``). No stale event of an earlier
    assignment can be among them: a revoke clears the queues itself, and Faust skips
    events of an older generation.
    """

    def resume() -> None:
        flow_control._suspend.clear()
        flow_control._resume.set()

    flow_control.resume = resume


def seek_uncommitted_to_start(consumer: Any, topic: str) -> None:
    """Make the consumer's seek to committed offsets also rewind the ``topic`` partitions
    that have none to their start, as ``auto_offset_reset=earliest`` would.

    Faust seeks each new assignment to its committed offsets, and seeks again when a fetch
    returns while flow is stopped, dropping those records, which count as read. aiokafka
    skips the seek of a partition without a committed offset (or committed at 0), so its
    fetch position stays past records Faust dropped or cleared from the stream queues
    during the rebalance, and no fetch ever returns them. In a new group two workers
    left the first 8 events of a partition unanswered that way (issue #16's hot-swap
    test, 92 of 100, in each full run of ``tests/integration/test_worker.py``). Rewound,
    they are fetched again; any already answered are redeliveries (``AnsweredEvents``).
    Only the stream topic is rewound: Faust positions the changelog partitions itself.
    """
    seek_to_committed = consumer.seek_to_committed

    async def seek_and_rewind() -> Any:
        committed = await seek_to_committed()
        for tp, offset in committed.items():
            if tp.topic == topic and not offset:
                await consumer.seek(tp, 0)  # before the log start: reset to earliest
        return committed

    consumer.seek_to_committed = seek_and_rewind


def commit_each_ack_once(consumer: Any) -> None:
    """Make the consumer's next-commit computation (``_new_offset``) count each acknowledged
    offset of a partition once, and drop those already committed.

    Faust commits the first run of consecutive offsets in a partition's acknowledged list.
    It adds an offset once per ``ack``, but also folds in each read gap's range, and
    neither step checks the other. After a worker was SIGSTOPped and another took its
    partitions over, each offset stood twice in one partition's list: a run of
    consecutive numbers ends at the first repeat, so each commit moved one offset (2,338
    to 2,364 in 13 s while the list grew to 4,936), and a later takeover redelivered
    thousands of events (issue #16). Which path put the repeats there was not shown; a
    read gap over offsets also acknowledged is one (the unit test). A gap folded in
    during this very call can still shorten one commit; the next call cleans the list.
    """
    new_offset = consumer._new_offset

    def new_offset_once(tp: Any) -> int | None:
        tidy_acked(consumer, tp)
        return new_offset(tp)

    consumer._new_offset = new_offset_once


def tidy_acked(consumer: Any, tp: Any) -> None:
    """When a partition's acknowledged offsets hold repeats or committed ones, keep each
    uncommitted one once, sorted, and Faust's index (its check against acknowledging an
    offset twice) equal to them; a clean list is left as it is."""
    acked = consumer._acked.get(tp)
    if not acked:
        return
    once = uncommitted_once(acked, consumer._committed_offset.get(tp))
    if len(once) == len(acked):
        return
    log.info("partition %s: %d of %d acknowledged offsets were repeats or already "
             "committed; each is counted once", tp.partition, len(acked) - len(once),
             len(acked))
    acked[:] = once
    consumer._acked_index[tp] = set(once)


def uncommitted_once(acked: Sequence[int], committed: int | None) -> list[int]:
    """The acknowledged offsets at or past ``committed`` (the next offset to read), sorted,
    each once."""
    return sorted({offset for offset in acked if committed is None or offset >= committed})


class PartitionLag:
    """The consumer-lag gauge: the last offset read per partition, against its highwater."""

    def __init__(self, metrics: WorkerMetrics) -> None:
        self.metrics = metrics
        self.positions: dict[Any, int] = {}  # last offset read per partition

    def read(self, tp: Any, offset: int) -> None:
        self.positions[tp] = offset

    def update(self, consumer: Any) -> None:
        """Lag of the partitions this worker still owns. After a rebalance, partitions that
        moved to another worker leave the gauge: asking their highwater raises, and an
        exception here would crash the agent (it did, in a two-worker run)."""
        assigned = consumer.assignment()
        for tp in [tp for tp in self.positions if tp not in assigned]:
            del self.positions[tp]
            with suppress(KeyError):
                self.metrics.lag.remove(str(tp.partition))
        for tp, offset in self.positions.items():
            highwater = consumer.highwater(tp)  # None until the first fetch after assignment
            if highwater is not None:
                self.metrics.lag.labels(str(tp.partition)).set(highwater - offset - 1)


# Sends one dead letter (key, value, headers). The worker's goes through the producer of the
# lists, so a commit waits for its letters as for its lists (``DeliverBeforeCommit``):
# sent through Faust's producer, a letter that failed (a long outage, an ACL refusal) was
# only logged by Faust, and its event's offset committed with no list and no letter.
SendLetter = Callable[[bytes | None, bytes | None, list[tuple[str, bytes]]], None]


def sessionizer(step: EventStep, sessions: TableT, send_letter: SendLetter,
                metrics: WorkerMetrics,
                lag: PartitionLag, guard: FreezeGuard | None = None,
                on_failure: Callable[[BaseException], None] =
                exit_redelivering("reading or writing a session")
                ) -> Callable[[bytes], Awaitable[SessionUpdate | None]]:
    """``step`` as a stream processor. It runs per event inside the event's context, so the
    table write reaches the changelog partition of the event's own partition. ``guard``
    stops a worker waking from a long freeze before its write (``streams.freeze``).

    A table read or write that raises (Faust's ``PartitionsMismatch`` after partitions
    were added to the events topic, librdkafka refusing the changelog record, a full
    disk, a store that cannot be read) ends the worker through ``on_failure``. Raised
    into Faust, it ended the stream's drainer: the worker kept its partitions and
    answered nothing, and a restarted agent could commit past the unacknowledged event."""

    async def sessionize(raw: bytes) -> SessionUpdate | None:
        message = faust.current_event().message
        in_partition(message.tp.partition)  # for log lines: one context variable set
        lag.read(message.tp, message.offset)
        metrics.events.inc()
        try:
            outcome = step(raw, sessions.get, message.headers, message.key or b"",  # b"": unkeyed
                           message.timestamp)
        except StoreUnavailable as exc:
            on_failure(exc)
            return None
        if isinstance(outcome, SessionUpdate):
            if guard is not None:
                guard.check()
            try:
                sessions[outcome.user_id] = outcome.state
            except Exception as exc:  # noqa: BLE001 - any failure leaves the event unanswered
                on_failure(exc)
                return None
            if outcome.reset:
                metrics.sessions_reset.inc()
                log.warning("the stored session of a user could not be read: a new one began")
            for reason in outcome.ignored:
                metrics.context_ignored.labels(reason).inc()
            if outcome.late:
                metrics.late_events.inc()
            return outcome
        if isinstance(outcome, DeadLetter):
            metrics.dead_letters.labels(outcome.reason).inc()
            letter, headers, key = cut_letter(raw, [*dead_letter_headers(
                outcome.reason, outcome.detail, "worker"),
                *refailed_headers(dict(message.headers or ()))], message.key)
            try:  # the lists' producer raises at once (a letter it refuses): never into
                send_letter(key, letter, headers)  # Faust, which would end the drainer
            except Exception as exc:  # noqa: BLE001 - the event stays unanswered
                on_failure(exc)
        else:
            metrics.duplicates.inc()
        return None

    return sessionize


def faust_credentials(kafka: KafkaConnection) -> faust.types.auth.CredentialsT | None:
    """The same security properties as every other client, in Faust's terms."""
    if kafka.uses_sasl:
        return faust.SASLCredentials(username=kafka.get("sasl.username"),
                                     password=kafka.get("sasl.password"),
                                     ssl_context=kafka.ssl_context(), mechanism=kafka.mechanism)
    if kafka.uses_tls:
        return faust.SSLCredentials(kafka.ssl_context())
    return None


def create_app(cfg: WorkerConfig, bundle: Any, load_bundle: Callable[[], Any] | None = None,
               metrics: WorkerMetrics | None = None,
               load_bundle_for: Callable[[str], Any] | None = None,
               resolve: Callable[[str], str] | None = None,
               retry_champion: bool = False) -> faust.App:
    """The Faust app, its topics, the sessions table, the recommend agent and, when
    ``load_bundle`` is given, the task that swaps in each new champion; with
    ``load_bundle_for`` (a model reference to a bundle) and ``cfg.experiments``, the task
    that serves the running experiment (``resolve``: a model reference to the version
    string it names now, so variants named by an alias follow it)."""
    app = _faust_app(cfg)
    interactions = app.topic(cfg.interactions, schema=RawBytes())
    # Lists and changelog records. No delivery timeout: through a Kafka outage of any length
    # they wait in librdkafka, and commits wait for them (``DeliverBeforeCommit``). A
    # RocksDB table notes its changelog offsets from the reports of successes.
    lists_out = RecordProducer(cfg.kafka, {"message.timeout.ms": 0,
                                           "delivery.report.only.error": cfg.store == "memory"})
    sessions = app.tables.add(SessionTable(app, name=TABLE, default=None,
                                           partitions=cfg.partitions, beacon=app.tables.beacon,
                                           changelog_out=lists_out))
    _patch_faust(app, cfg, lists_out, sessions)
    metrics = metrics or WorkerMetrics()
    catalogue = Catalogue(metrics)
    serving = Serving(bundle, metrics, cfg.status_file, catalogue)
    lag = PartitionLag(metrics)
    answered = AnsweredEvents()
    guard = FreezeGuard(cfg.session_timeout_s / 2)
    sessionize = sessionizer(EventStep(cfg.session, answered), sessions,
                             functools.partial(lists_out.produce, cfg.dlq), metrics, lag, guard)
    recs_writer = RecsWriter(cfg.redis_url, cfg.recs_ttl_s, cfg.recs_channel)
    publisher = BatchStep(cfg.recommendations, cfg.top_n, cfg.exclude_seen,
                          DecayedPopularity(), lists_out, recs_writer, metrics,
                          answered=answered)
    load_variant = _no_bundles if load_bundle_for is None else \
        smoke_tested(load_bundle_for, cfg.top_n)
    experiment = ExperimentSlot(load_variant, metrics, resolve=resolve, catalogue=catalogue)

    @app.agent(interactions)
    async def recommend(stream: faust.StreamT) -> None:
        # Once: an agent Faust restarts after a crash is given the same stream again, and
        # a second sessionize would take the first one's updates for raw events.
        if sessionize not in stream._processors:  # type: ignore[attr-defined]
            stream.add_processor(sessionize)
        async for batch in stream.take(cfg.batch_size, within=cfg.batch_within_s):
            metrics.batch_size.observe(len(batch))
            updates = [u for u in batch if u is not None]
            if updates:  # serving.bundle read once: a swap lands between micro-batches
                await experiment.wait_ready()
                guard.check()  # frozen since sessionizing: these lists are another's now
                await publish_or_exit(publisher, updates, serving.bundle, experiment.live)
            lag.update(app.consumer)

    _add_upkeep(app, cfg, guard, publisher, sessions, metrics)
    _add_followers(app, cfg, serving, catalogue, experiment, recs_writer, load_bundle,
                   experiments=load_bundle_for is not None, retry_champion=retry_champion)
    return app


def _faust_app(cfg: WorkerConfig) -> faust.App:
    """The Faust app with the worker's settings. ``env={}``: Faust otherwise lets
    unprefixed environment variables (``BROKER_URL``, ``TOPIC_PARTITIONS``,
    ``APP_DATADIR``...) override what is passed here, so a worker could read from one
    cluster and write its lists to another; the settings object is the one source."""
    return faust.App(
        cfg.group_id, broker=f"kafka://{cfg.kafka.bootstrap}", store=f"{cfg.store}://",
        broker_credentials=faust_credentials(cfg.kafka),
        datadir=str(cfg.state_dir / cfg.group_id), web_enabled=False, producer_linger_ms=5,
        broker_session_timeout=cfg.session_timeout_s,
        # Faust refuses a session timeout above the request timeout (90 s by default)
        broker_request_timeout=max(90.0, cfg.session_timeout_s + 30),
        broker_heartbeat_interval=cfg.session_timeout_s / 3,
        broker_commit_interval=cfg.commit_interval_s,
        topic_partitions=cfg.partitions, topic_replication_factor=cfg.replication,
        consumer_auto_offset_reset="earliest", env={},
        table_standby_replicas=cfg.standby_replicas,
        consumer_group_instance_id=cfg.instance_id, Monitor=LeanMonitor,
    )


def _patch_faust(app: faust.App, cfg: WorkerConfig, lists_out: RecordProducer,
                 sessions: SessionTable) -> None:
    """Faust's consumer and producer as the worker needs them: commits wait for the lists
    and changelog records they cover, and the per-message machinery made lean (each patch
    says why, here and in ``streams.lean_faust``)."""
    DeliverBeforeCommit(lists_out, on_delivered=sessions.persist_offsets).install(app.consumer)
    drain_fully(app.producer.buffer)
    check_producer_buffer_cheaply(app.producer.buffer)
    keep_queues_on_resume(app.flow_control)
    seek_uncommitted_to_start(app.consumer, cfg.interactions)
    commit_each_ack_once(app.consumer)
    hand_over_eagerly(app.consumer)
    fetch_again_when_buffers_drain(app.consumer)


def _add_upkeep(app: faust.App, cfg: WorkerConfig, guard: FreezeGuard, publisher: BatchStep,
                sessions: SessionTable, metrics: WorkerMetrics) -> None:
    """The worker's own timers: the freeze guard, lists Redis could not take yet (and at
    shutdown, those still waiting), and idle sessions leaving the table
    (``cfg.session_ttl_ms``; 0: kept for ever)."""
    @app.task
    async def guard_against_freezes() -> None:
        guard.start()

    @app.timer(interval=1.0)
    async def write_unstored_lists() -> None:
        await publisher.retry_unstored()

    @app.on_before_shutdown.connect
    async def write_last_lists(sender: faust.App, **_: Any) -> None:
        await publisher.finish()

    if cfg.session_ttl_ms:
        expiry = SessionExpiry(sessions, cfg.session_ttl_ms, guard.check)

        @app.timer(interval=cfg.session_sweep_s)
        async def expire_idle_sessions() -> None:
            metrics.sessions_expired.inc(await expiry.sweep())


def _add_followers(app: faust.App, cfg: WorkerConfig, serving: Serving, catalogue: Catalogue,
                   experiment: ExperimentSlot, recs_writer: RecsWriter,
                   load_bundle: Callable[[], Any] | None, experiments: bool,
                   retry_champion: bool = False) -> None:
    """Tasks that follow the other topics: model updates (with ``load_bundle``; with
    ``retry_champion``, the champion that failed to load at start retried), the
    catalogue (``cfg.items``) and the experiments (``cfg.experiments``, when this worker
    can load a variant's models); without the last, nothing is waited for."""
    if load_bundle is not None:
        @app.task
        async def swap_models() -> None:
            await follow_model_updates(cfg.kafka, cfg.model_updates, serving, load_bundle,
                                       cfg.top_n, retry_champion)

    if cfg.items is not None:
        @app.task
        async def follow_items() -> None:
            await follow_catalogue(cfg.kafka, cfg.items, catalogue,
                                   lambda: [serving.bundle, *experiment.bundles()])

    if cfg.experiments is None or not experiments:
        experiment.ready.set()  # no experiments here: nothing to wait for
    else:
        @app.task
        async def serve_experiments() -> None:
            await follow_experiments(cfg.kafka, cfg.experiments, experiment,
                                     recs_writer.client, cfg.worker_id)


def _no_bundles(ref: str) -> Any:
    raise RuntimeError(f"this worker loads no models ({ref!r})")
