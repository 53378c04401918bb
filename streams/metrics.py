"""A stream worker's Prometheus metrics, served on ``/metrics``.

Each worker keeps its metrics in a registry of its own, so tests can build several apps in
one process; ``new_registry`` adds the standard ``process_*`` and ``python_*`` collectors to
each (the API's registry too). Names follow Prometheus conventions as exposed: a
``streamrec_`` prefix, snake_case, base units last (``_seconds``, not ms), counters ending
in ``_total``; ``tests/unit/test_metrics.py`` checks every name. Scrape a worker with
``curl localhost:<port>/metrics``; ``infra/monitoring/`` holds a Prometheus and Grafana
setup built on these names, and a test keeps its queries in step with them.
"""

from __future__ import annotations

import logging

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    GCCollector,
    Histogram,
    PlatformCollector,
    ProcessCollector,
    start_http_server,
)

log = logging.getLogger(__name__)

_STAGE_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0)
# From the producer's send to the list's publication: milliseconds when caught up, seconds
# or more while a backlog drains.
_END_TO_END_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
                       5.0, 10.0, 30.0)


def new_registry() -> CollectorRegistry:
    """A registry with the standard collectors: ``process_*`` (CPU, memory, open files;
    Linux only), ``python_info`` and ``python_gc_*``."""
    registry = CollectorRegistry()
    ProcessCollector(registry=registry)
    PlatformCollector(registry=registry)
    GCCollector(registry=registry)
    return registry


class WorkerMetrics:
    def __init__(self) -> None:
        r = self.registry = new_registry()
        self.events = Counter("streamrec_worker_events_total", "Records consumed from the "
                              "interactions topic", registry=r)
        self.dead_letters = Counter("streamrec_worker_dead_letters_total", "Records sent to "
                                    "the dead-letter topic", ["reason"], registry=r)
        self.duplicates = Counter("streamrec_worker_duplicates_total", "Redelivered event "
                                  "ids ignored", registry=r)
        self.sessions_reset = Counter("streamrec_worker_sessions_reset_total", "Stored "
                                      "sessions that could not be read, so an event started "
                                      "a new one", registry=r)
        self.sessions_expired = Counter("streamrec_worker_sessions_expired_total", "Idle "
                                        "sessions removed from the table and its changelog "
                                        "(STREAMREC_SESSION_TTL_DAYS)", registry=r)
        self.context_ignored = Counter("streamrec_worker_context_ignored_total", "Event "
                                       "context keys a session does not keep: undeclared, "
                                       "or of the wrong type", ["reason"], registry=r)
        self.late_events = Counter("streamrec_worker_late_events_total", "Events older "
                                   "than their session's newest, placed among its items by "
                                   "time", registry=r)
        self.published = Counter("streamrec_worker_published_total", "Lists published, by "
                                 "the path that served them", ["path"], registry=r)
        self.model_failures = Counter("streamrec_worker_model_failures_total", "Micro-batches "
                                      "the model failed on, answered by popularity instead",
                                      registry=r)
        self.nonfinite_lists = Counter("streamrec_worker_nonfinite_lists_total", "Model lists "
                                       "with a NaN or infinite score, answered by popularity "
                                       "instead", registry=r)
        self.topped_up = Counter("streamrec_worker_topped_up_lists_total", "Model lists "
                                 "shorter than asked, filled up with recent popularity",
                                 registry=r)
        self.redis_errors = Counter("streamrec_worker_redis_errors_total", "Micro-batches "
                                    "whose lists could not be written to Redis", registry=r)
        self.redis_skipped = Counter("streamrec_worker_redis_skipped_total", "Micro-batches "
                                     "that skipped Redis while it was failing (the lists "
                                     "still reach the topic)", registry=r)
        self.redis_deferred = Counter("streamrec_worker_redis_deferred_total", "Micro-batches "
                                      "whose lists went with a later Redis write, the one "
                                      "before being still under way", registry=r)
        self.redis_unstored_dropped = Counter(
            "streamrec_worker_redis_unstored_dropped_total", "Lists that missed Redis and "
            "were dropped, oldest first, from those kept for the next write", registry=r)
        self.catalogue = Counter("streamrec_worker_catalogue_records_total", "Catalogue "
                                 "records by outcome: invalid (read from the items topic and "
                                 "refused); per bundle they were handed to (the champion, "
                                 "each experiment variant, each swap), embedded (it serves "
                                 "them), skipped (its model reads no content) or failed",
                                 ["outcome"], registry=r)
        self.experiment_lists = Counter("streamrec_worker_experiment_lists_total", "Lists "
                                        "served inside an experiment, by variant and by the "
                                        "variant whose model served them (the control when "
                                        "the user's own failed to load)",
                                        ["experiment", "variant", "served_by"], registry=r)
        self.experiment_load_failures = Counter(
            "streamrec_worker_experiment_load_failures_total", "Failed loads of an "
            "experiment variant's model (its users get the control meanwhile)", ["variant"],
            registry=r)
        self.swaps = Counter("streamrec_worker_model_swaps_total", "Model updates applied "
                             "or refused", ["outcome"], registry=r)
        self.batch_size = Histogram("streamrec_worker_batch_size_events", "Events per "
                                    "micro-batch", buckets=(1, 4, 16, 64, 128, 256, 512, 1024),
                                    registry=r)
        self.stage_seconds = Histogram("streamrec_worker_stage_seconds", "Time per "
                                       "micro-batch in each stage", ["stage"],
                                       buckets=_STAGE_BUCKETS, registry=r)
        self.send_to_publish = Histogram("streamrec_worker_send_to_publish_seconds", "From "
                                         "the producer's send (the sent_us header) to the "
                                         "list's publication, per list",
                                         buckets=_END_TO_END_BUCKETS, registry=r)
        self.lag = Gauge("streamrec_worker_consumer_lag_records", "Records behind the end of "
                         "each interactions partition, at the last micro-batch",
                         ["partition"], registry=r)
        self.model = Gauge("streamrec_worker_model_info", "1 for the model version served",
                           ["version"], registry=r)
        self.gc_seconds = Histogram("streamrec_worker_gc_seconds", "Garbage-collection "
                                    "pauses of the worker process", ["generation"],
                                    buckets=_STAGE_BUCKETS, registry=r)

    def watch_gc(self) -> None:
        """Time every garbage collection: a full one over a big heap stalls the event loop
        (and so latency) for as long as it runs."""
        import gc
        import time

        started: dict[str, float] = {}

        def on_gc(phase: str, info: dict) -> None:
            if phase == "start":
                started["t"] = time.perf_counter()
            elif "t" in started:
                self.gc_seconds.labels(str(info["generation"])).observe(
                    time.perf_counter() - started.pop("t"))

        gc.callbacks.append(on_gc)

    def serve_model(self, version: str) -> None:
        self.model.clear()
        self.model.labels(version).set(1)

    def serve(self, port: int, host: str = "127.0.0.1") -> bool:
        """Serve ``/metrics`` on ``host:port`` (port 0: not at all; loopback unless told,
        as the page has no auth); whether it is served. A busy port is logged, not fatal:
        a worker without metrics still serves recommendations."""
        if port <= 0:
            return False
        try:
            start_http_server(port, addr=host, registry=self.registry)
        except OSError as exc:
            log.error("metrics not served: port %d: %s (a second worker on this host "
                      "needs a --metrics-port of its own)", port, exc)
            return False
        return True
