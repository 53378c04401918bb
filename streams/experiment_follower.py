"""Every worker follows the ``experiments`` topic and serves the running experiment.

Like the model and catalogue followers, each worker reads the whole compacted topic with a
consumer outside any group, from its beginning, so a starting worker learns the running
experiment and every worker serves it. When a declaration starts an experiment, the
bundles its variants name are loaded off the event loop (a variant naming the champion
alias follows the champion's own hot swap; one naming popularity needs none), and the
experiment goes live in one assignment the recommend loop reads once per micro-batch. A
variant named by another alias (``challenger``) looks every minute where it points, and
swaps on its own when it moved.
Until a variant's bundle has loaded, or when it fails to load or to answer a smoke test
(the worker hands the slot a loader that runs it, as the champion's swap does), its users
get the control's list, tagged ``served_by`` (counted in
``streamrec_worker_experiment_lists_total`` by ``served_by``); a failed load is retried
with backoff. A loaded bundle gets the
catalogue's items, as the champion's does, so new items reach every variant. Every
``flush_every_s`` the worker writes its tallies to Redis, where ``streamrec experiment
status`` merges every worker's.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from functools import partial
from typing import Any

from aiokafka import AIOKafkaConsumer, TopicPartition

from infra.kafka_client import KafkaConnection
from streams.backoff import Backoff
from streams.catalog_follower import Catalogue, load_with, off_loop
from streams.experiment import POPULARITY, Experiment
from streams.experiment_store import newest, running, write_tallies
from streams.experiments import LiveExperiment
from streams.messages import CHAMPION
from streams.metrics import WorkerMetrics

log = logging.getLogger(__name__)

FLUSH_EVERY_S = 5.0
READY_MOST_S = 15.0  # the longest the stream waits at start for the running experiment
ALIAS_RECHECK_S = 60.0  # how often a variant named by an alias looks where it points now


class ExperimentSlot:
    """The experiment the worker serves now (None: none runs), and the loading of its
    variants' bundles."""

    def __init__(self, load_bundle_for: Callable[[str], Any], metrics: WorkerMetrics,
                 clock: Callable[[], float] = time.monotonic,
                 resolve: Callable[[str], str] | None = None,
                 recheck_s: float = ALIAS_RECHECK_S,
                 catalogue: Catalogue | None = None) -> None:
        self.load_bundle_for, self.metrics, self.clock = load_bundle_for, metrics, clock
        self.catalogue = catalogue
        self.resolve, self.recheck_s = resolve, recheck_s
        self.live: LiveExperiment | None = None
        self.failed: dict[str, str] = {}  # variant -> last load error
        self.backoff = Backoff(5.0, 300.0, clock)
        self.checked = clock()
        # Set once the declarations on the topic at start have been read: until then the
        # stream waits (``wait_ready``), so its first lists know the running experiment.
        self.ready = asyncio.Event()

    async def wait_ready(self, most_s: float = READY_MOST_S) -> None:
        """Wait for ``ready`` (at once when set), at most ``most_s`` in all: a topic that
        cannot be read must not stop the stream; its lists go out untagged meanwhile."""
        if self.ready.is_set():
            return
        try:
            await asyncio.wait_for(self.ready.wait(), most_s)
        except TimeoutError:
            log.warning("experiments not read within %.0f s: serving the champion meanwhile",
                        most_s)
            self.ready.set()

    def bundles(self) -> list[Any]:
        """The variants' bundles loaded now (the champion's is not among them)."""
        return [] if self.live is None else list(self.live.bundles.values())

    async def _load(self, ref: str) -> Any:
        """The bundle ``ref`` names, loaded off the event loop, with the catalogue's items."""
        return await load_with(self.catalogue, lambda: self.load_bundle_for(ref))

    def missing(self) -> list[str]:
        """The variants of the live experiment that still need a bundle."""
        if self.live is None:
            return []
        return [v.name for v in self.live.experiment.variants
                if v.model not in (CHAMPION, POPULARITY) and v.name not in self.live.bundles]

    def declare(self, experiment: Experiment | None) -> LiveExperiment | None:
        """Serve ``experiment`` (None or stopped: stop serving); returns the experiment it
        replaced, whose tallies the caller flushes one last time."""
        before = self.live
        if experiment is None or experiment.state != "running":
            self.live = None
            if before is not None:
                log.warning("experiment %s stopped here: the champion serves everyone",
                            before.name)
        elif before is None or _started(before.experiment) != _started(experiment):
            self.live, self.failed = LiveExperiment(experiment), {}
            self.backoff.succeeded()
            log.warning("experiment %s started here: %s", experiment.name,
                        ", ".join(f"{v.name}={v.model} ({v.share:.0%})"
                                  for v in experiment.variants))
        else:  # the same experiment, declared again (e.g. concluded): keep its tallies
            before.experiment = experiment
        return before if before is not self.live else None

    async def load_missing(self) -> None:
        """Load the bundles still missing, off the event loop; retried with backoff."""
        live = self.live
        names = self.missing()
        if live is None or not names or not self.backoff.ready():
            return
        refs = {v.name: v.model for v in live.experiment.variants}
        for name in names:
            try:
                bundle = await self._load(refs[name])
                if self.live is not live:  # stopped or replaced while it loaded: its
                    return  # failures and backoff are no longer this experiment's
                live.bundles[name] = bundle
                self.failed.pop(name, None)
                log.warning("experiment %s: variant %s loaded (%s)", live.name, name, refs[name])
            except Exception as exc:  # noqa: BLE001 - the control serves meanwhile
                if self.live is not live:
                    return
                self.failed[name] = f"{type(exc).__name__}: {exc}"
                self.metrics.experiment_load_failures.labels(name).inc()
                log.error("experiment %s: variant %s (%s) failed to load, the control serves "
                          "its users: %s", live.name, name, refs[name], exc)
        if self.missing():
            self.backoff.failed()
        else:
            self.backoff.succeeded()

    async def follow_aliases(self) -> None:
        """Every ``recheck_s``: a variant named by an alias (``challenger``) whose alias
        moved loads the models it names now and swaps them in, on its own (a ``champion``
        variant follows the champion's swaps already). A failed look or load keeps the
        bundle serving."""
        live = self.live
        if live is None or self.resolve is None or self.clock() - self.checked < self.recheck_s:
            return
        self.checked = self.clock()
        for v in live.experiment.variants:
            bundle = live.bundles.get(v.name)
            if bundle is None or ":" in v.model:  # not loaded yet, or pinned versions
                continue
            try:
                now = await off_loop(partial(self.resolve, v.model))
                if now != bundle.version:
                    live.bundles[v.name] = await self._load(v.model)
                    log.warning("experiment %s: variant %s swapped %s -> %s", live.name, v.name,
                                bundle.version, live.bundles[v.name].version)
            except Exception as exc:  # noqa: BLE001 - the loaded bundle serves on
                log.error("experiment %s: variant %s could not follow alias %r: %s",
                          live.name, v.name, v.model, exc)


async def follow_experiments(kafka: KafkaConnection, topic: str, slot: ExperimentSlot,
                             redis: Any, worker_id: str,
                             flush_every_s: float = FLUSH_EVERY_S) -> None:
    """Follow ``topic`` from its beginning: serve the running experiment, load its
    bundles, flush its tallies to ``redis`` (an async client; None: keep them local).
    ``slot.ready`` is set once the topic has been read to the end it had at start (or is
    found missing), so the worker's first lists already know the running experiment."""
    consumer = AIOKafkaConsumer(group_id=None, enable_auto_commit=False, **kafka.aiokafka())
    await consumer.start()
    known: dict[str, Experiment] = {}
    flushed = time.monotonic()
    loading: asyncio.Task[None] | None = None
    try:
        tps = await _from_beginning(consumer, topic, slot)
        ends = await consumer.end_offsets(tps)
        await _ready_when_read(consumer, ends, slot)  # an empty topic: ready at once
        while True:
            batch = await consumer.getmany(timeout_ms=1000)
            failed = dict(slot.failed)  # a new experiment clears them: the ended one's
            ended = _apply(newest(m for records in batch.values() for m in records), known,
                           slot)
            if ended is not None:
                await _flush(redis, ended, worker_id, failed)
            await _ready_when_read(consumer, ends, slot)
            loading = _keep_loading(slot, loading)
            if slot.live is not None and time.monotonic() - flushed >= flush_every_s:
                await _flush(redis, slot.live, worker_id, slot.failed)
                flushed = time.monotonic()
    finally:
        if loading is not None:
            loading.cancel()
        slot.ready.set()  # a follower gone must not hold the stream
        if slot.live is not None:  # the worker stops: what it tallied since the last
            await _flush(redis, slot.live, worker_id, slot.failed)  # flush, or it is lost
        await consumer.stop()


def _keep_loading(slot: ExperimentSlot, loading: asyncio.Task[None] | None
                  ) -> asyncio.Task[None]:
    """The bundles' loading, in a task of its own beside the topic's reading: awaited in
    the reading loop, a load (minutes against a registry that retries) held back a stop
    declared meanwhile, and the variant went on serving its users. One round at a time;
    a round that raised outside a load's own handling stops the follower, as before."""
    if loading is not None and not loading.done():
        return loading
    if loading is not None:
        loading.result()
    return asyncio.create_task(_load_round(slot))


async def _load_round(slot: ExperimentSlot) -> None:
    await slot.load_missing()
    await slot.follow_aliases()


async def _ready_when_read(consumer: AIOKafkaConsumer, ends: dict[TopicPartition, int],
                           slot: ExperimentSlot) -> None:
    """Set ``slot.ready`` once every partition is read to the end it had at start. Checked
    before the first fetch too: on an empty topic that fetch waits out its whole timeout,
    and the stream waited with it (the first lists of a fresh worker took 1.1 s)."""
    if not slot.ready.is_set() and all([await consumer.position(tp) >= end
                                        for tp, end in ends.items()]):
        slot.ready.set()


async def _from_beginning(consumer: AIOKafkaConsumer, topic: str, slot: ExperimentSlot
                          ) -> list[TopicPartition]:
    """Assign every partition of ``topic`` from its beginning, once it exists; while it
    does not, no experiment can run, and the stream need not wait (``slot.ready``)."""
    while topic not in await consumer.topics():
        if not slot.ready.is_set():
            log.warning("experiments topic %r does not exist; looking again every 30 s", topic)
            slot.ready.set()
        await asyncio.sleep(30)
    tps = [TopicPartition(topic, p) for p in sorted(consumer.partitions_for_topic(topic)
                                                    or {0})]
    consumer.assign(tps)
    await consumer.seek_to_beginning(*tps)
    return tps


def _apply(found: dict[str, Experiment | None], known: dict[str, Experiment],
           slot: ExperimentSlot) -> LiveExperiment | None:
    """Fold a poll's declarations into ``known`` and serve the running one; returns the
    experiment that stopped being served, if any."""
    if not found:
        return None
    for name, experiment in found.items():
        if experiment is None:
            known.pop(name, None)
        else:
            known[name] = experiment
    return slot.declare(running(known))


async def _flush(redis: Any, live: LiveExperiment, worker_id: str,
                 failed: dict[str, str]) -> None:
    """Write ``live``'s tallies; a Redis failure is logged, never raised (they are kept
    and written again at the next flush)."""
    if redis is None:
        return
    try:
        await write_tallies(redis, live.name, worker_id, live.tallies, failed)
    except Exception as exc:  # noqa: BLE001 - Redis down must not stop the follower
        log.warning("experiment %s: tallies not written to Redis: %s", live.name, exc)


def _started(experiment: Experiment) -> tuple[str, str, int]:
    """What tells one start of an experiment from another: its name, salt and start time
    (a stop or conclude keeps all three). By name and salt alone, a second start of the
    same name (two callers at once) kept the first one's variant models and tallies."""
    return experiment.name, experiment.salt, experiment.started_us
