"""Producer throughput: our event paths beside a raw confluent-kafka loop, same run.

    .venv/bin/python -m benchmarks.produce --events 1000000 --rounds 3

Three loops, each into a fresh 4-partition topic on the configured broker, with the
same producer settings (idempotent, acks=all, murmur2, linger 5 ms):
  raw       : Producer.produce(pre-encoded bytes) + poll(0)   (the baseline)
  produce   : EventProducer.send(Event)      (serialize with orjson, count deliveries)
  validate  : EventProducer.send_checked(raw JSON bytes)  (parse + validate, then send)
Events are built before timing and frozen out of the garbage collector. The broker runs
on the same two cores, so single runs swing by +-30%: the loops are interleaved for
``--rounds`` rounds and the median of each is reported.
"""

from __future__ import annotations

import argparse
import gc
import statistics
import time
import uuid
from collections.abc import Callable

from confluent_kafka import Producer

from infra.topics import TopicSpec, delete_topics, ensure_topics
from services.settings import load_settings
from streams.producer import PRODUCER_DEFAULTS, EventProducer
from streams.synthetic import SyntheticConfig, generate


def _timed(prepare: Callable[[str], Callable[[], None]], topic: str, n: int) -> float:
    """Events/s of the loop ``prepare`` returns, once its producer is made and warm (its
    connection and idempotence handshake were timed until 2026-12-06, a review)."""
    loop = prepare(topic)
    start = time.perf_counter()
    loop()
    return n / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=1_000_000)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    settings = load_settings()
    kafka, n = settings.kafka, args.events

    print(f"building {n:,} synthetic events ...", flush=True)
    events = list(generate(SyntheticConfig(users=20_000, items=10_000, events=n)))
    encoded = [(e.key, e.to_json()) for e in events]
    raw_lines = [v for _, v in encoded]
    gc.collect()
    gc.freeze()
    print(f"mean payload {sum(map(len, raw_lines)) / n:.0f} bytes", flush=True)

    dlq = f"bench.produce.dlq.{uuid.uuid4().hex[:8]}"
    created = [dlq]

    def fresh_topic(name: str) -> str:
        topic = f"bench.produce.{name}.{uuid.uuid4().hex[:8]}"
        ensure_topics(kafka, [TopicSpec(topic, 4), TopicSpec(dlq, 1)])
        created.append(topic)
        return topic

    def raw_loop(topic: str) -> Callable[[], None]:
        p = Producer(kafka.librdkafka(**PRODUCER_DEFAULTS))
        p.produce(topic, b"warm-up", b"warm-up")
        p.flush()
        produce, poll = p.produce, p.poll

        def loop() -> None:
            for key, value in encoded:
                while True:
                    try:
                        produce(topic, value, key)
                        break
                    except BufferError:
                        poll(0.05)
                poll(0)
            assert p.flush(60) == 0
        return loop

    def ours(send: Callable[[EventProducer], None]) -> Callable[[str], Callable[[], None]]:
        def prepare(topic: str) -> Callable[[], None]:
            p = EventProducer(kafka, topic, dlq)
            p.send(events[0])  # the same warm-up as the raw loop
            p.flush()

            def loop() -> None:
                send(p)
                p.close()
                assert p.stats.failed == 0 and p.stats.delivered == n + 1, p.stats
            return loop
        return prepare

    def send_events(p: EventProducer) -> None:
        for e in events:
            p.send(e)

    def send_checked(p: EventProducer) -> None:
        for raw in raw_lines:
            p.send_checked(raw)

    loops = {"raw": raw_loop, "produce": ours(send_events), "validate": ours(send_checked)}
    results: dict[str, list[float]] = {name: [] for name in loops}
    for r in range(args.rounds):
        for name, body in loops.items():
            results[name].append(_timed(body, fresh_topic(name), n))
        print(f"round {r + 1}: " + ", ".join(f"{k} {v[-1]:,.0f}/s" for k, v in results.items()),
              flush=True)
    median = {name: statistics.median(v) for name, v in results.items()}
    print("median events/s into the local broker:")
    for name, value in median.items():
        print(f"  {name:<10} {value:>12,.0f} events/s   ({value / median['raw']:.2f}x raw)")
    delete_topics(kafka, created)


if __name__ == "__main__":
    main()
