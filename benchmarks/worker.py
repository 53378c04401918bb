"""Stream worker throughput and latency: Faust pass-through beside the full pipeline.

    python -m benchmarks.worker [--events 200000] [--latency-events 15000] [--rate 500]
    python -m benchmarks.worker --data ../shared/data/ml-latest-small/ratings.csv \
        --format movielens      # a real log instead: its users' own session lengths

Both modes run in the same invocation, on the same events, against the local broker:
- pass-through (``streamrec worker --pass-through``): consume, validate, sessionize into the
  changelog-backed table, publish a fixed list to the topic and Redis: the ceiling Faust
  and Kafka allow here;
- full: the same plus SASRec encode, FAISS retrieval and NeuMF rerank.

1. A synthetic log (20,000 users, 10,000 items), or ``--data`` (a real log in time order,
   its older half for training); a champion trained on the training part into a
   benchmark MLflow store (reused by later runs of the same shape).
2. Throughput: ``--events`` events are produced as a backlog to fresh topics, then a
   worker drains it. Sustained events/s is taken over the middle 90% of the published
   lists (start-up and tail excluded), by their publish times, read once the worker is
   done; also the worker's CPU µs/event, peak RSS, mean micro-batch and full garbage
   collections (its /metrics).
3. Latency: a fresh worker; events replayed at ``--rate``/s; send->publish percentiles.
4. With ``--load 0.5,0.8``: latency again at those fractions of the mode's own backlog
   events/s from step 2, for ``--load-seconds`` each (the replaying producer then shares
   the cores with the worker and the broker, as a live source on this machine would).
"""

from __future__ import annotations

import argparse
import gc
import hashlib
import os
import time
import uuid
from pathlib import Path
from urllib.request import urlopen

import numpy as np
import orjson
from prometheus_client.parser import text_string_to_metric_families

from services.processes import CLI, ServiceProcess, free_port, isolated_run
from services.settings import Settings, load_settings
from services.stack import build_stack
from streams.consumer import TopicSizes, read_topic
from streams.events import Event
from streams.producer import EventProducer
from streams.replay import replay
from streams.synthetic import SyntheticConfig, generate

USERS, ITEMS, TRAIN_EVENTS = 20_000, 10_000, 100_000
# Below this share of lists from the model, a full row is flagged: a user's first event on
# an item the champion never met gets popularity, a missing champion gets it for all.
MODEL_SHARE = 0.9


def code_fingerprint() -> str:
    """A short hash of the code that trains and serves a champion (``model/`` and the
    training run): keyed by it, a champion cached by other code (another commit, a git
    worktree's old tree) is trained anew, never served as this code's."""
    root, digest = Path(__file__).resolve().parents[1], hashlib.blake2b(digest_size=5)
    for path in sorted([*(root / "model").rglob("*.py"), root / "services" / "training_run.py"]):
        digest.update(path.read_bytes())
    return digest.hexdigest()


def champion_env(settings: Settings, train: list[Event], epochs: int, shape: str
                  ) -> dict[str, str]:
    """Environment pointing at a benchmark MLflow store holding a champion for this shape,
    trained by this code (``code_fingerprint``)."""
    import subprocess

    home = settings.data_dir / "bench" / (f"worker-{shape}-{len(train)}e-{epochs}ep-"
                                          f"{code_fingerprint()}")
    home.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "STREAMREC_MLFLOW_TRACKING_URI": f"sqlite:///{home / 'mlflow.db'}",
           "STREAMREC_MLFLOW_EXPERIMENT": f"bench-{home.name}"}
    if (home / "trained").exists():
        return env
    data = home / "train.jsonl"
    data.write_bytes(b"".join(e.to_json() + b"\n" for e in train))
    print(f"training the champion on {len(train):,} events ({epochs} epochs) ...", flush=True)
    start = time.perf_counter()
    done = subprocess.run([*CLI, "train", "--data", str(data), "--format", "jsonl", "--model",
                           "all", "--epochs", str(epochs), "--champion"], env=env,
                          capture_output=True, text=True)
    if done.returncode != 0:
        raise SystemExit(f"training failed:\n{done.stderr[-3000:]}")
    print(f"  trained in {time.perf_counter() - start:.0f} s", flush=True)
    (home / "trained").touch()
    return env


def _await_lists(settings: Settings, topic: str, count: int, quiet_s: float = 60.0) -> None:
    """Wait until ``topic`` holds ``count`` lists, asking only its end offsets: reading and
    decoding the lists while the worker runs took the worker's cores (two here) away from
    it, so the lists are read once it is done (their timestamps say when each was made)."""
    with TopicSizes(settings.kafka) as sizes:
        size, since = 0, time.monotonic()
        while size < count:
            time.sleep(0.2)
            now = sizes.size(topic)
            if now > size:
                size, since = now, time.monotonic()
            elif time.monotonic() - since > quiet_s:
                raise SystemExit(f"only {size:,} of {count:,} lists arrived on {topic}")


def _published(settings: Settings, topic: str, count: int) -> list[dict]:
    values = [orjson.loads(r.value) for r in read_topic(
        settings.kafka, topic, from_beginning=True, limit=count, idle_timeout_s=60)]
    if len(values) < count:
        raise SystemExit(f"only {len(values):,} of {count:,} lists arrived on {topic}")
    return values


def _run(settings: Settings, env: dict[str, str], events: list[Event], mode: str,
         rate: float | None, folder: Path) -> dict[str, float]:
    """One worker over ``events``: a backlog when ``rate`` is None, else paced."""
    port = free_port()  # its own /metrics: another worker may hold the default port
    env = {**env, **isolated_run(settings, f"bench-{mode}-{uuid.uuid4().hex[:6]}"),
           "STREAMREC_WORKER_METRICS_PORT": str(port)}
    args = ["--pass-through"] if mode == "pass-through" else []
    producer = EventProducer(settings.kafka, env["STREAMREC_TOPIC_INTERACTIONS"],
                             env["STREAMREC_TOPIC_DLQ"], source="bench")
    if rate is None:
        replay(iter(events), producer)  # the backlog, before the worker starts
    log = folder / f"{mode}-{'backlog' if rate is None else rate}.log"
    worker = ServiceProcess.start(env, log, "worker", "--worker-id",
                                  env["STREAMREC_WORKER_GROUP"], *args)
    try:
        worker.wait_joined(settings.kafka, env["STREAMREC_WORKER_GROUP"])
        cpu_before = worker.cpu_seconds()
        if rate is not None:
            replay(iter(events), producer, rate=rate)
        topic = env["STREAMREC_TOPIC_RECOMMENDATIONS"]
        _await_lists(settings, topic, len(events))
        cpu = worker.cpu_seconds() - cpu_before
        peak = worker.peak_rss_mib()
        from_worker = _worker_metrics(port)
        values = _published(settings, topic, len(events))
    finally:
        output = worker.stop()
    if "Traceback" in output:
        print(output[-3000:])
    paths = {p: sum(v["path"] == p for v in values) for p in ("model", "popularity")}
    if mode == "full" and paths["model"] < MODEL_SHARE * len(values):
        # no champion loaded, or the model failing on batches: popularity answers with a
        # warning in the worker's log only, and the row would time the popularity path
        print(f"WARNING: {mode} ({'backlog' if rate is None else f'{rate:,.0f}/s'}): the "
              f"model answered {paths['model']:,} of {len(values):,} lists; this row is "
              f"not the model path's (worker log: {log})", flush=True)
    published = np.sort(np.array([v["published_us"] for v in values], dtype=np.float64))
    lo, hi = int(len(published) * 0.05), int(len(published) * 0.95)
    latency = np.array([(v["published_us"] - v["sent_us"]) / 1000 for v in values])
    sent = np.array([v["sent_us"] for v in values], dtype=np.float64)
    p50, p95, p99 = np.percentile(latency, [50, 95, 99])
    # The first events of a paced run wait up to ~0.3 s (a fresh worker's first batches);
    # shown apart so that short runs do not read as a steady-state tail.
    warm = latency[sent >= sent.min() + 1e6]
    span_s = (sent.max() - sent.min()) / 1e6
    return {"events_per_s": (hi - lo) / ((published[hi] - published[lo]) / 1e6),
            # what the paced producer reached (on 2 shared cores it can fall behind the
            # rate asked, and the latency is then that of a lighter load), and for how long
            "sent_per_s": (len(sent) - 1) / span_s if span_s > 0 else float("nan"),
            "seconds": span_s,
            "cpu_us_per_event": cpu / len(events) * 1e6, "peak_rss_mib": peak,
            "p50_ms": p50, "p95_ms": p95, "p99_ms": p99,
            "p99_after_1s_ms": float(np.percentile(warm, 99)) if len(warm) else float("nan"),
            **from_worker, "paths": paths}


def _worker_metrics(port: int) -> dict[str, float]:
    """The worker's mean micro-batch and its full garbage collections (count, seconds), from
    its /metrics on ``port`` (NaN where it cannot be read): the model path's cost per event
    depends on the batch, a paced run's batches are smaller than a backlog's, and a full
    collection stalls every event waiting behind it."""
    try:
        with urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as reply:
            text = reply.read().decode()
    except OSError:  # taken between our probe and the worker's start: only context is lost
        return dict.fromkeys(("events_per_batch", "full_gcs", "full_gc_s"), float("nan"))
    samples = {(s.name, s.labels.get("generation")): s.value
               for family in text_string_to_metric_families(text) for s in family.samples}
    count = samples.get(("streamrec_worker_batch_size_events_count", None), 0.0)
    total = samples.get(("streamrec_worker_batch_size_events_sum", None), 0.0)
    return {"events_per_batch": total / count if count else float("nan"),
            "full_gcs": samples.get(("streamrec_worker_gc_seconds_count", "2"), 0.0),
            "full_gc_s": samples.get(("streamrec_worker_gc_seconds_sum", "2"), 0.0)}


def _gcs(row: dict) -> str:
    """A run's full collections as "count, seconds in all"."""
    return f"{row['full_gcs']:.0f}, {row['full_gc_s']:.2f} s"


def split_log(args: argparse.Namespace) -> tuple[list[Event], list[Event], str]:
    """(training part, live part, a label of the shape): the synthetic log, or ``--data``
    in time order split in halves, at most ``--events`` live."""
    if args.data is None:
        log = list(generate(SyntheticConfig(users=USERS, items=ITEMS,
                                            events=TRAIN_EVENTS + args.events, seed=3)))
        return log[:TRAIN_EVENTS], log[TRAIN_EVENTS:], f"{USERS}u-{ITEMS}i"
    from streams.readers import read_valid_events

    if args.fmt is None:
        raise SystemExit("--data needs --format")
    log = sorted(read_valid_events(args.data, args.fmt), key=lambda e: e.ts)
    half = len(log) // 2
    users, items = len({e.user_id for e in log}), len({e.item_id for e in log})
    return log[:half], log[half:][:args.events], f"{args.data.parent.name}-{users}u-{items}i"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--events", type=int, default=200_000, help="backlog per mode")
    parser.add_argument("--latency-events", type=int, default=15_000)
    parser.add_argument("--rate", type=float, default=500.0, help="events/s for the latency run")
    parser.add_argument("--epochs", type=int, default=2, help="champion training epochs")
    parser.add_argument("--modes", default="pass-through,full")
    parser.add_argument("--data", type=Path, help="a real log instead of the synthetic one")
    parser.add_argument("--format", dest="fmt", help="its format (streamrec replay --help)")
    parser.add_argument("--load", default="",
                        help="also pace at these fractions of the measured capacity: 0.5,0.8")
    parser.add_argument("--load-seconds", type=float, default=20.0,
                        help="how long each --load run replays")
    args = parser.parse_args()
    loads = [float(f) for f in args.load.split(",") if f]
    if any(not 0 < f <= 1 for f in loads):
        raise SystemExit(f"--load takes fractions in (0, 1], got {args.load!r}")

    settings = load_settings()
    build_stack(settings).up()
    train, live, shape = split_log(args)
    gc.freeze()  # a long-lived list of events: keep the collector off it
    env = champion_env(settings, train, args.epochs, shape)
    folder = settings.data_dir / "bench" / "logs"
    folder.mkdir(parents=True, exist_ok=True)
    rows = {}
    for mode in args.modes.split(","):
        print(f"{mode}: backlog of {len(live):,} events ...", flush=True)
        rows[(mode, "backlog")] = _run(settings, env, live, mode, None, folder)
        print(f"{mode}: {args.latency_events:,} events at {args.rate:,.0f}/s ...", flush=True)
        rows[(mode, "paced")] = _run(settings, env, live[:args.latency_events], mode,
                                     args.rate, folder)
        for load in loads:
            rate = load * rows[(mode, "backlog")]["events_per_s"]
            count = min(len(live), int(rate * args.load_seconds))
            print(f"{mode}: {count:,} events at {load:.0%} of capacity ({rate:,.0f}/s) ...",
                  flush=True)
            rows[(mode, load)] = {**_run(settings, env, live[:count], mode, rate, folder),
                                  "rate": rate}
    print(f"\nworker, {len(live):,}-event backlog and {args.latency_events:,} events at "
          f"{args.rate:,.0f}/s; {shape}, {settings.interactions_partitions} partitions, "
          "one worker")
    print(f"{'mode':<14}{'events/s':>10}{'CPU µs/ev':>11}{'peak RSS':>11}{'ev/batch':>9}"
          f"{'p50 ms':>9}{'p95 ms':>9}{'p99 ms':>9}{'p99 >1 s':>10}{'full GCs':>13}"
          "  (latency at the paced rate)")
    for mode in args.modes.split(","):
        b, p = rows[(mode, "backlog")], rows[(mode, "paced")]
        print(f"{mode:<14}{b['events_per_s']:>10,.0f}{b['cpu_us_per_event']:>11,.0f}"
              f"{b['peak_rss_mib']:>8,.0f}MiB{b['events_per_batch']:>9.1f}{p['p50_ms']:>9.1f}"
              f"{p['p95_ms']:>9.1f}{p['p99_ms']:>9.1f}{p['p99_after_1s_ms']:>10.1f}{_gcs(p):>13}"
              f"  paths {b['paths']}")
    if loads:
        print(f"\nsend->publish at fractions of each mode's backlog events/s (asked; sent: "
              f"what the producer reached), up to {args.load_seconds:.0f} s each (fewer when "
              "the log runs out)")
        print(f"{'mode':<14}{'load':>6}{'asked/s':>9}{'sent/s':>9}{'s':>6}{'p50 ms':>9}"
              f"{'p95 ms':>9}{'p99 ms':>9}{'p99 after 1 s':>15}{'events/batch':>14}"
              f"{'full GCs':>13}")
        for mode in args.modes.split(","):
            for load in loads:
                r = rows[(mode, load)]
                print(f"{mode:<14}{load:>6.0%}{r['rate']:>9,.0f}{r['sent_per_s']:>9,.0f}"
                      f"{r['seconds']:>6.1f}{r['p50_ms']:>9.1f}"
                      f"{r['p95_ms']:>9.1f}{r['p99_ms']:>9.1f}{r['p99_after_1s_ms']:>15.1f}"
                      f"{r['events_per_batch']:>14.1f}{_gcs(r):>13}")
    if ("full", "backlog") in rows and ("pass-through", "backlog") in rows:
        ratio = rows[("full", "backlog")]["events_per_s"] / \
            rows[("pass-through", "backlog")]["events_per_s"]
        print(f"full / pass-through throughput: {ratio:.2f}x")
    print(f"worker logs: {folder}")


if __name__ == "__main__":
    main()
