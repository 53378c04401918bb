"""Restart to first answer: how long a stopped worker takes to answer again, with its
sessions in memory or in RocksDB, at 100k and 1M users.

    python -m benchmarks.restart [--users 100000,1000000] [--stores memory,rocksdb]

For each number of users and each store, on fresh topics and a fresh consumer group:
1. one event per user is sent as a backlog, and a pass-through worker drains it (its table
   then holds one session per user, and the changelog one record per user);
2. the worker is stopped (SIGTERM: it commits) and started again; at once an event of an
   existing user is sent, and the time from the start to that event's list on the
   recommendations topic is the restart-to-first-answer;
3. for RocksDB, once more with the worker's state folder deleted first: a worker on a new
   machine, which rebuilds its store from the whole changelog.

A memory worker replays the whole changelog on every start; a RocksDB worker reads only
the changelog after the offset its store holds. The worker's peak RSS after the restart
is shown beside.
"""

from __future__ import annotations

import argparse
import os
import shutil
import time
import uuid

from confluent_kafka import Consumer, TopicPartition

from services.processes import ServiceProcess, isolated_run
from services.settings import Settings, load_settings
from services.stack import build_stack
from streams.events import new_event
from streams.producer import EventProducer


def _committed(consumer: Consumer, topic: str, partitions: int) -> int:
    """How many events of ``topic`` the consumer's group has committed, over all partitions."""
    offsets = consumer.committed([TopicPartition(topic, p) for p in range(partitions)],
                                 timeout=10)
    return sum(max(tp.offset, 0) for tp in offsets)


def _drain(settings: Settings, env: dict[str, str], users: int, worker_id: str,
           folder: str) -> None:
    """The backlog of one event per user, drained by a pass-through worker, then stopped."""
    producer = EventProducer(settings.kafka, env["STREAMREC_TOPIC_INTERACTIONS"],
                             env["STREAMREC_TOPIC_DLQ"], source="bench")
    with producer:
        for i in range(users):
            producer.send(new_event(f"u{i}", f"i{i % 5000}", "view"))
    worker = ServiceProcess.start(env, settings.data_dir / "bench" / folder / "load.log",
                                  "worker", "--pass-through", "--worker-id", worker_id)
    group = Consumer(settings.kafka.librdkafka(**{"group.id": env["STREAMREC_WORKER_GROUP"]}))
    try:  # one client asks every second (it never joins the group)
        start = time.perf_counter()
        while _committed(group, env["STREAMREC_TOPIC_INTERACTIONS"],
                         settings.interactions_partitions) < users:
            if time.perf_counter() - start > 3600:
                raise SystemExit("the backlog was not drained within an hour")
            time.sleep(1)
        print(f"  {users:,} sessions stored in {time.perf_counter() - start:.0f} s", flush=True)
    finally:
        group.close()
        worker.stop()


def _at_end(settings: Settings, topic: str, partitions: int) -> Consumer:
    """A consumer of ``topic`` positioned at its current end: it reads only what comes."""
    consumer = Consumer(settings.kafka.librdkafka(**{"group.id": f"bench-{uuid.uuid4().hex}",
                                                     "enable.auto.commit": False}))
    ends = [TopicPartition(topic, p, consumer.get_watermark_offsets(
        TopicPartition(topic, p), timeout=10)[1]) for p in range(partitions)]
    consumer.assign(ends)
    return consumer


def _first_answer(settings: Settings, env: dict[str, str], worker_id: str, folder: str,
                  log: str) -> tuple[float, float]:
    """(seconds from the worker's start to the probe's list, its peak RSS in MiB)."""
    probe = new_event("u0", "i-probe", "click")
    lists = _at_end(settings, env["STREAMREC_TOPIC_RECOMMENDATIONS"],
                    settings.recommendations_partitions)
    start = time.time()
    worker = ServiceProcess.start(env, settings.data_dir / "bench" / folder / log, "worker",
                                  "--pass-through", "--worker-id", worker_id)
    try:
        with EventProducer(settings.kafka, env["STREAMREC_TOPIC_INTERACTIONS"],
                           env["STREAMREC_TOPIC_DLQ"], source="bench") as producer:
            producer.send(probe)
        deadline = time.time() + 600
        while time.time() < deadline:
            msg = lists.poll(0.5)
            if msg is not None and msg.error() is None and probe.event_id.encode() in msg.value():
                return msg.timestamp()[1] / 1000 - start, worker.peak_rss_mib()
        raise SystemExit("the probe event was not answered within 10 min")
    finally:
        lists.close()
        worker.stop()


def measure(settings: Settings, users: int, store: str) -> list[tuple[str, float, float]]:
    run = f"bench-restart-{store}-{uuid.uuid4().hex[:6]}"
    env = {**os.environ, "STREAMREC_WORKER_STORE": store, **isolated_run(settings, run)}
    worker_id = run
    (settings.data_dir / "bench" / run).mkdir(parents=True, exist_ok=True)
    print(f"{store}, {users:,} users: loading ...", flush=True)
    _drain(settings, env, users, worker_id, run)
    rows = [("restart", *_first_answer(settings, env, worker_id, run, "restart.log"))]
    if store == "rocksdb":
        shutil.rmtree(settings.data_dir / "workers" / worker_id)
        rows.append(("new machine", *_first_answer(settings, env, worker_id, run,
                                                   "new-machine.log")))
    shutil.rmtree(settings.data_dir / "workers" / worker_id, ignore_errors=True)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--users", default="100000,1000000")
    parser.add_argument("--stores", default="memory,rocksdb")
    args = parser.parse_args()
    settings = load_settings()
    build_stack(settings).up()
    results = []
    for users in map(int, args.users.split(",")):
        for store in args.stores.split(","):
            for case, seconds, rss in measure(settings, users, store):
                results.append((users, store, case, seconds, rss))
                print(f"  {case}: first answer {seconds:.1f} s after start, peak RSS "
                      f"{rss:.0f} MiB", flush=True)
    print("\nusers      store    case          first answer (s)  peak RSS (MiB)")
    for users, store, case, seconds, rss in results:
        print(f"{users:>9,}  {store:<8} {case:<13} {seconds:>16.1f}  {rss:>14.0f}")


if __name__ == "__main__":
    main()
