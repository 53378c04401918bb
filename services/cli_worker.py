"""``streamrec worker``: a stream worker. Thin: read settings, load the champion bundle,
wire the Faust app, run it (Faust's worker handles signals and shutdown)."""

from __future__ import annotations

import fcntl
import gc
import logging
import os
import re
import socket
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.console import Console

from infra.errors import StackError
from infra.tls import private_dir
from services.logs import LogLevel, configure
from services.settings import Settings, load_settings
from services.stack import mlflow_store

if TYPE_CHECKING:
    from streams.worker import WorkerConfig

app = typer.Typer()
console = Console(stderr=True)


def _plain_name(worker_id: str) -> str:
    """``--worker-id`` names a folder under the data dir and the worker's static group
    membership: ``../x`` or an absolute path put its state and its lock elsewhere."""
    if not re.fullmatch(r"[A-Za-z0-9_-][A-Za-z0-9._-]{0,63}", worker_id):
        raise typer.BadParameter("1 to 64 letters, digits, '.', '_' or '-', not starting "
                                 f"with '.'; got {worker_id!r}")
    return worker_id


@app.command()
def worker(
    worker_id: Annotated[str, typer.Option(
        callback=_plain_name,
        help="names this worker's state folder: letters, digits, '.', '_', '-'")] = "0",
    log_level: Annotated[LogLevel, typer.Option()] = LogLevel.warning,
    metrics_port: Annotated[int | None, typer.Option(
        min=0, max=65535,
        help="serve /metrics here (0: off; default STREAMREC_WORKER_METRICS_PORT)")] = None,
    pass_through: Annotated[bool, typer.Option(
        help="serve a fixed list instead of the model: the Faust + Kafka ceiling, for "
             "benchmarks")] = False,
    status_file: Annotated[Path | None, typer.Option(
        help="keep this file's JSON (streams.status.WorkerStatus) current: the model "
             "served and the swaps made or refused, for programs that wait on them "
             "(default: write nothing)")] = None,
) -> None:
    """Consume interactions, keep sessions, publish recommendations (runs until stopped)."""
    from faust.worker import Worker

    from model.pipeline import limit_threads
    from streams.messages import version_string
    from streams.metrics import WorkerMetrics
    from streams.registry import load_bundle, resolve_versions
    from streams.worker import FixedList, create_app

    settings = load_settings()
    logs = configure(settings.log_format, log_level, "worker", worker_id=worker_id)
    limit_threads(settings.worker_compute_threads)
    store = mlflow_store(settings)

    def champion() -> object:
        return _warn_unkept(load_bundle(store, head_weights=settings.ranker_head_weights,
                                        cache_mb=settings.worker_encoder_cache_mb), settings)

    def bundle_for(ref: str) -> object:  # an experiment's variant: an alias or versions
        return _warn_unkept(load_bundle(store, ref, head_weights=settings.ranker_head_weights,
                                        cache_mb=settings.worker_encoder_cache_mb), settings)

    def version_of(ref: str) -> str:  # where a variant's alias points now
        return version_string(resolve_versions(store, ref))

    failed = False
    if pass_through:
        bundle: object = FixedList(settings.recs_top_n)
    else:
        bundle, why, failed = first_champion(champion, settings.recs_top_n)
        if why is not None:
            logs.say(console, f"worker {worker_id}: {why}", logging.WARNING)
    _check_partitions(settings)
    if (why := _ensure_dead_letter_topic(settings)) is not None:
        logs.say(console, f"worker {worker_id}: {why}", logging.WARNING)
    cfg = _worker_config(settings, worker_id, status_file)
    metrics = WorkerMetrics()
    metrics.watch_gc()
    port = settings.worker_metrics_port if metrics_port is None else metrics_port
    served = metrics.serve(port, settings.worker_metrics_host)
    faust_app = create_app(cfg, bundle, load_bundle=None if pass_through else champion,
                           metrics=metrics, load_bundle_for=None if pass_through else bundle_for,
                           resolve=version_of, retry_champion=failed)
    logs.say(console, f"worker {worker_id}: model {bundle.version}, group {cfg.group_id}, "
             f"{cfg.interactions} -> {cfg.recommendations}"
             + (f", metrics on :{port}/metrics" if served else ""))
    # What start-up loaded (TensorFlow, Keras, MLflow, Faust, the model) lives as long as
    # the process. Frozen, full collections skip it: they stalled the loop ~350 ms each
    # (p99 372 ms at 500/s after a 48k-event backlog, measured with the GC metric).
    gc.freeze()
    Worker(faust_app, loglevel=log_level.value, quiet=True,
           logging_config=logs.config).execute_from_commandline()


_claimed: list[object] = []  # the state folders' lock files, open while the process lives


def _claim(state_dir: Path, worker_id: str) -> None:
    """Lock the worker's state folder for this process: a second worker given the same id
    on this machine would share its RocksDB tables, which RocksDB refuses, after Faust
    retries for 30 s. It stops at once with one line instead."""
    lock = (state_dir / ".lock").open("a")
    try:
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        raise SystemExit(f"error: worker {worker_id}: its state folder {state_dir} is in use "
                         "by another worker on this machine; give each worker its own "
                         "--worker-id") from None
    _claimed.append(lock)


def _check_partitions(settings: Settings) -> None:
    """Stop in one line when the interactions topic exists with another partition count
    than ``STREAMREC_INTERACTIONS_PARTITIONS``: the sessions changelog is made with the
    setting's, and Faust refuses the first event of a partition past it
    (``PartitionsMismatch``), so the worker exited and restarted for ever. A broker that
    does not answer yet is not waited for here: the worker waits for it."""
    from confluent_kafka import Consumer, KafkaException

    from streams.consumer import existing_topic

    topic = settings.topic_interactions
    # A consumer's metadata request never creates the topic, where an admin client's (a
    # producer's) may, on a cluster with auto.create.topics.enable, at the broker's count.
    probe = Consumer(settings.kafka.librdkafka(**{"group.id": "streamrec-partitions-probe",
                                                  "allow.auto.create.topics": False}))
    try:
        meta = existing_topic(probe, topic)
    except (KafkaException, StackError):
        return  # not made yet (Faust makes it with the setting's count), or no broker yet
    finally:
        probe.close()
    if len(meta.partitions) != settings.interactions_partitions:
        raise SystemExit(f"error: topic {topic} has {len(meta.partitions)} partitions, "
                         f"STREAMREC_INTERACTIONS_PARTITIONS says "
                         f"{settings.interactions_partitions}: set it to "
                         f"{len(meta.partitions)} (a worker's sessions are partitioned as "
                         "the topic is)")


def _ensure_dead_letter_topic(settings: Settings) -> str | None:
    """Make the dead-letter topic when it does not exist (as the stack declares it); what
    to tell the operator, None when all is well. Faust made it at a worker's first letter
    while letters went through its producer; the lists' producer, which sends them now,
    never makes a topic, so on a cluster without it the first bad event stopped the
    worker. A broker that does not answer yet is not waited for here: the worker waits."""
    from infra.topics import ensure_topics

    spec = next(t for t in settings.topics() if t.name == settings.topic_dlq)
    try:
        made = ensure_topics(settings.kafka, [spec])
    except StackError as exc:
        return (f"the dead-letter topic {spec.name} could not be checked or made ({exc}); "
                "if it does not exist, the first bad event stops this worker")
    return f"made the dead-letter topic {spec.name}" if made else None


def first_champion(load: Callable[[], object], top_n: int
                   ) -> tuple[object, str | None, bool]:
    """(the bundle a starting worker serves, why it is no model (None when it is the
    champion), whether the champion failed). The champion as a hot swap takes one: loaded,
    then answering the smoke test. One that fails either serves popularity meanwhile, and
    the model follower retries it with backoff (``RETRY_CHAMPION``). Raised, a champion that
    cannot load (a missing artifact, a pair that does not match, a format an older
    release cannot read during a rolling upgrade) crash-looped every worker restarted,
    where the ones running kept serving."""
    from infra.urls import mask_urls
    from streams.hot_swap import smoke_test
    from streams.registry import NoChampion
    from streams.worker import NoModel

    try:
        bundle = load()
        smoke_test(bundle, top_n)
    except NoChampion as exc:
        return NoModel(), (f"{exc}; serving popularity until the trainer announces the first "
                           "champion"), False
    except Exception as exc:  # noqa: BLE001 - popularity serves, the follower retries
        return NoModel(), (f"the champion could not be served ({type(exc).__name__}: "
                           f"{mask_urls(str(exc))}); serving popularity while it is retried "
                           "with backoff"), True
    return bundle, None, False


def _warn_unkept(bundle: object, settings: Settings) -> object:
    """``bundle``, after a warning for each thing its ranker reads that this worker's
    sessions leave out: context keys (``STREAMREC_CONTEXT_NUMERIC``, ``_CATEGORICAL``),
    which a model trained with ``price`` would read as missing, the training mean, on every
    event, with only the ignored-keys metric to tell; and items older than the session
    keeps (``STREAMREC_SESSION_MAX_ITEMS``), which its seen-before features read as never
    met."""
    log, version = logging.getLogger(__name__), getattr(bundle, "version", "?")
    spec, kept = getattr(bundle, "spec", None), settings.feature_spec()
    # by kind too: a key the model reads as numeric, declared categorical here, has its
    # numbers dropped (``wrong_type``) on every event
    if spec is not None and (unkept := sorted({*spec.numeric} - {*kept.numeric}
                                              | {*spec.categorical} - {*kept.categorical})):
        log.warning("the model %s reads context keys %s that this worker's sessions leave "
                    "out: declare them in STREAMREC_CONTEXT_NUMERIC or "
                    "STREAMREC_CONTEXT_CATEGORICAL, as the model was trained",
                    version, ", ".join(unkept))
    window = getattr(getattr(bundle, "ranker", None), "seen_window", 0)
    if window > settings.session_max_items:
        log.warning("the model %s was trained on the newest %d items of each history, but "
                    "this worker's sessions keep %d: set STREAMREC_SESSION_MAX_ITEMS=%d",
                    version, window, settings.session_max_items, window)
    return bundle


def _worker_config(settings: Settings, worker_id: str, status_file: Path | None
                   ) -> WorkerConfig:
    """The worker's settings, with a state folder of its own (created here)."""
    from streams.sessions import SessionPolicy
    from streams.worker import WorkerConfig

    state_dir = private_dir(settings.data_dir / "workers") / worker_id
    state_dir.mkdir(exist_ok=True)
    _claim(state_dir, worker_id)
    return WorkerConfig(
        kafka=settings.kafka, group_id=settings.worker_group,
        interactions=settings.topic_interactions, dlq=settings.topic_dlq,
        recommendations=settings.topic_recommendations,
        model_updates=settings.topic_model_updates, partitions=settings.interactions_partitions,
        state_dir=state_dir, redis_url=settings.redis,
        recs_channel=settings.recs_channel, batch_size=settings.worker_batch_size,
        batch_within_s=settings.worker_batch_within_ms / 1000, top_n=settings.recs_top_n,
        session_timeout_s=settings.worker_session_timeout_s,
        commit_interval_s=settings.worker_commit_interval_s,
        recs_ttl_s=settings.recs_ttl_s,
        exclude_seen=settings.exclude_seen,
        session_ttl_ms=int(settings.session_ttl_days * 24 * 3600 * 1000),
        session_sweep_s=settings.session_sweep_s,
        session=SessionPolicy(gap_ms=int(settings.session_gap_min * 60_000),
                              max_items=settings.session_max_items,
                              features=settings.feature_spec()),
        status_file=status_file, items=settings.topic_items,
        experiments=settings.topic_experiments,
        # one per start: a restarted container keeps its hostname and pid 1, and a field
        # of the same name would overwrite what the previous run tallied
        worker_id=f"{worker_id}@{socket.gethostname()}:{os.getpid()}:{time.time_ns()}",
        instance_id=(f"{worker_id}@{socket.gethostname()}"
                     if settings.worker_static_membership else None),
        store=settings.worker_store, standby_replicas=settings.worker_standby_replicas,
        replication=settings.topic_replication)
