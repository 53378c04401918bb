"""Model hot swap: every worker follows ``model-updates`` and swaps in a new champion.

Each worker reads the topic with a consumer of its own outside any group, so each
announcement reaches every worker (a group would hand it to one of them). At start the
follower also rereads the newest announcement, which covers one made while the worker
was loading its first model. A new bundle is loaded off the event loop, smoke-tested with
one recommendation, given the catalogue the worker follows (``streams.catalog_follower``),
and swapped in one assignment that the recommend loop reads once per micro-batch; a bundle that fails to load or to answer keeps the old one serving, and its
announcement is retried with backoff until it loads or a newer one arrives. Each
outcome is logged, counted in the worker's metrics and, with ``--status-file``, written
to the worker's status record (``streams.status.WorkerStatus``).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from aiokafka import AIOKafkaConsumer, TopicPartition

from infra.kafka_client import KafkaConnection
from infra.urls import mask_url, mask_urls
from model.features import LiveSession
from streams import log_context
from streams.backoff import Backoff
from streams.catalog_follower import Catalogue, load_with
from streams.events import EVENT_TYPES
from streams.messages import CHAMPION, ModelAnnouncement
from streams.metrics import WorkerMetrics
from streams.registry import parse_versions
from streams.status import StatusFile, WorkerStatus, now_us

log = logging.getLogger(__name__)


def announce(kafka: KafkaConnection, topic: str, versions: dict[str, str], tracking_uri: str,
             timeout_s: float = 10.0) -> bool:
    """Tell every worker that the champion moved to ``versions`` ({registered name:
    version}); True once the broker has the message. The registry's address goes out
    without its credentials: every reader of the topic would see them."""
    from streams.producer import RecordProducer

    message = ModelAnnouncement(CHAMPION, versions, mask_url(tracking_uri))
    producer = RecordProducer(kafka)
    producer.produce(topic, CHAMPION.encode(), message.to_json())
    return producer.flush(timeout_s) == 0 and producer.stats.failed == 0


class Serving:
    """The bundle in service; replaced whole, never mutated.

    Its state is reported three ways: log lines (each names the version served, through
    ``streams.log_context``) and Prometheus metrics for operators, and,
    with ``status_file``, a ``WorkerStatus`` record for programs that wait on a swap (the
    demo, the tests, the benchmarks), so none of them has to grep the logs.
    """

    def __init__(self, bundle: Any, metrics: WorkerMetrics,
                 status_file: Path | None = None, catalogue: Catalogue | None = None) -> None:
        self.bundle, self.metrics, self.catalogue = bundle, metrics, catalogue
        metrics.serve_model(bundle.version)
        log_context.serving(bundle.version)
        self.status = StatusFile(status_file, WorkerStatus(bundle.version, updated_us=now_us()))

    def announced_version(self, message: bytes) -> str:
        """The version string an announcement names (``name:vN+name:vN``), '' if unreadable."""
        try:
            return ModelAnnouncement.from_json(message).version
        except ValueError:
            return ""

    async def apply(self, message: bytes, load_bundle: Callable[[], Any], top_n: int) -> bool:
        """Load the champion an announcement names and swap it in, unless it is served;
        False when it failed to load or to answer (the old one serves on)."""
        if self.announced_version(message) == self.bundle.version:
            return True
        try:
            # Loading takes seconds: off the event loop, so consuming never stalls; so does
            # the catalogue the new bundle takes (its items training never saw).
            fresh = await load_with(self.catalogue, load_bundle)
            smoke_test(fresh, top_n)
            if fresh.version == self.bundle.version:
                return True
            self._prepare(fresh)
        except Exception as exc:  # noqa: BLE001 - keep serving the old model
            self._refused(message, exc)
            return False
        old, self.bundle = self.bundle.version, fresh
        self.metrics.swaps.labels("applied").inc()
        self.metrics.serve_model(fresh.version)
        log_context.serving(fresh.version)
        self.status.update(model_version=fresh.version,
                           swaps_applied=self.status.current.swaps_applied + 1)
        log.warning("model swapped: %s -> %s", old, fresh.version)
        return True

    def _prepare(self, fresh: Any) -> None:
        """Hand ``fresh`` the encoder caches of the served bundle when the retriever is the
        same one (the catalogue's items it took as it loaded)."""
        if same_retriever(self.bundle.version, fresh.version):
            adopted = fresh.adopt_caches(self.bundle)
            log.info("the retriever is unchanged: %d session caches carried over", adopted)

    def _refused(self, message: bytes, exc: Exception) -> None:
        """Count and report a bundle that failed to load or to answer; the old one serves on."""
        self.metrics.swaps.labels("failed").inc()
        self.status.update(swaps_failed=self.status.current.swaps_failed + 1,
                           last_error=mask_urls(f"{type(exc).__name__}: {exc}"))
        log.error("model update %r not applied, keeping %s: %s", message,
                  self.bundle.version, exc)  # URLs in it are masked by the record factory


def smoke_test(bundle: Any, top_n: int) -> None:
    """Raise unless ``bundle`` answers one known user with a finite, non-empty list, both
    with the session's items left out and listed: which of the two a worker serves is its
    setting's, or under ``auto`` the model's (``NeuMF.recommends_seen``), and listing them
    runs the ranker's seen-before features, which the other never does."""
    user, item = bundle.users.ids[0], bundle.items.ids[0]
    smoke = LiveSession([item], [EVENT_TYPES[0]], [now_us() // 1000])
    for exclude_seen in (True, False):
        answer = bundle.recommend([user], [smoke], top_n, exclude_seen=exclude_seen)[0]
        if answer is None or not answer.items:
            raise ValueError("smoke recommendation came back empty")
        if not answer.finite():
            raise ValueError("smoke recommendation has NaN or infinite scores")


def smoke_tested(load: Callable[[str], Any], top_n: int) -> Callable[[str], Any]:
    """``load`` (a model reference to its bundle), refusing a bundle that fails
    ``smoke_test``: an experiment's variant that loads but cannot answer is refused as a
    champion's swap is, and the control serves its users. Served, its users would get
    popularity under the variant's name, and the experiment would measure popularity."""
    def load_and_test(ref: str) -> Any:
        bundle = load(ref)
        smoke_test(bundle, top_n)
        return bundle
    return load_and_test


def same_retriever(old: str, new: str) -> bool:
    """Whether two bundle versions (``retriever:vN+ranker:vN``) share the retriever version,
    so the new bundle can keep the old one's encoder caches. Unparsable versions (no model,
    the pass-through list) never do."""
    before, after = parse_versions(old), parse_versions(new)
    return before is not None and after is not None and \
        next(iter(before.items())) == next(iter(after.items()))


class PendingUpdate:
    """The newest announcement not yet applied: a load that failed (the registry
    unreachable, an artifact not yet visible) is retried with backoff (``Backoff``) until
    it loads or a newer announcement replaces it, which is tried at once."""

    def __init__(self, first_s: float = 5.0, most_s: float = 300.0,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.message: bytes | None = None
        self.backoff = Backoff(first_s, most_s, clock)

    def offer(self, message: bytes) -> None:
        self.message = message
        self.backoff.succeeded()

    def due(self) -> bytes | None:
        return self.message if self.message is not None and self.backoff.ready() else None

    def settle(self, applied: bool) -> None:
        if applied:
            self.message = None
            self.backoff.succeeded()
        else:
            self.backoff.failed()


def newest_announcement(batch: Mapping[Any, Sequence[Any]]) -> bytes | None:
    """The value of the newest record of a poll (records per partition, in offset order),
    or None: only the newest matters, as it names the current champion. Every
    announcement has one key, so one partition holds them and its last record is the
    newest; the producer's timestamps may run out of order (another announcer's clock)
    and only choose between partitions."""
    lasts = [records[-1] for records in batch.values() if records]
    return max(lasts, key=lambda m: m.timestamp).value if lasts else None


# What a worker whose first champion failed to load retries (``follow_model_updates``):
# the champion as its alias names it, announced or not (the topic keeps announcements for
# its retention only, and a promotion may never have been announced).
RETRY_CHAMPION = b'{"retry": "the champion its alias names, which failed to load at start"}'


async def follow_model_updates(kafka: KafkaConnection, topic: str, serving: Serving,
                               load_bundle: Callable[[], Any], top_n: int,
                               retry_champion: bool = False) -> None:
    """Apply each announcement on ``topic`` (runs until cancelled); ``retry_champion``:
    the first champion failed to load, so it is retried with backoff from the start."""
    consumer = AIOKafkaConsumer(group_id=None, enable_auto_commit=False, **kafka.aiokafka())
    await consumer.start()
    try:
        await consumer.topics()  # loads metadata, so the topic's partitions are known
        tps = [TopicPartition(topic, p) for p in sorted(consumer.partitions_for_topic(topic)
                                                        or {0})]
        consumer.assign(tps)
        for tp, end in (await consumer.end_offsets(tps)).items():
            consumer.seek(tp, max(end - 1, 0))  # the newest announcement, again
        pending = PendingUpdate()
        if retry_champion:
            pending.offer(RETRY_CHAMPION)
        while True:
            batch = await consumer.getmany(timeout_ms=1000)
            if (newest := newest_announcement(batch)) is not None:
                pending.offer(newest)
            if (message := pending.due()) is not None:
                pending.settle(await serving.apply(message, load_bundle, top_n))
    finally:
        await consumer.stop()
