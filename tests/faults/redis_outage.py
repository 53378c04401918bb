"""Fault injection: Redis refusing connections, and Redis black-holed, under a worker and
the API (issue #16, `make faults`).

Both reach Redis through a TCP proxy (``RedisProxy``) that can pass traffic, refuse it
(every connection reset, none accepted), or black-hole it: connections stay open and
new ones are accepted, but nothing goes through until the hole closes, when what was held
is delivered, as TCP retransmission would deliver it. A pass-through worker drains a
backlog with Redis healthy, a second one while Redis is out (the outage lasts at least
``--outage-s``), and a third once Redis is back. Pass:

- the topic path keeps at least 80% of its healthy throughput during the outage, against
  the mean of the drains before and after it: a single drain before it varied by ±6% from
  run to run, and one such pair of 60,000-event drains gave 0.79x (docs/RELIABILITY.md);
- the API answers a list request during the outage with its tagged fallback;
- after the outage a new user's list reaches Redis, and a live feed opened before the
  outage delivers that user's next list.

    .venv/bin/python -m tests.faults.redis_outage --mode blackhole [--outage-s 60]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Literal
from urllib.parse import urlsplit, urlunsplit

import httpx
import numpy as np
import orjson
import redis

from services.processes import ServiceProcess, free_port
from services.settings import Settings
from streams.consumer import read_topic
from streams.events import Event, new_event
from streams.producer import EventProducer, sent_at_header
from streams.recs_store import recs_key
from streams.synthetic import SyntheticConfig, generate
from tests.faults.worker_chaos import chaos_env, drop_topics, run_with_logs

Mode = Literal["pass", "refuse", "blackhole"]
MIN_RATIO = 0.8


class RedisProxy:
    """A TCP proxy on its own thread and event loop; ``set_mode`` switches what it does."""

    def __init__(self, target: tuple[str, int]) -> None:
        self.target, self.port = target, free_port()
        self.mode: Mode = "pass"
        self.loop = asyncio.new_event_loop()
        self._open: set[asyncio.StreamWriter] = set()
        self._flowing = asyncio.Event()  # set while not black-holed
        self._server: asyncio.Server | None = None
        threading.Thread(target=self.loop.run_forever, daemon=True).start()
        self._call(self._start())

    def _call(self, coro: object) -> None:
        asyncio.run_coroutine_threadsafe(coro, self.loop).result(10)  # type: ignore[arg-type]

    async def _start(self) -> None:
        self._flowing.set()
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", self.port)

    def set_mode(self, mode: Mode) -> None:
        self._call(self._switch(mode))

    async def _switch(self, mode: Mode) -> None:
        self.mode = mode
        if mode == "blackhole":
            self._flowing.clear()
            return
        self._flowing.set()
        if mode == "refuse":  # every connection reset; the port closed to new ones
            for writer in list(self._open):
                writer.transport.abort()
            if self._server is not None:
                self._server.close()
                self._server = None
        elif self._server is None:
            self._server = await asyncio.start_server(self._serve, "127.0.0.1", self.port)

    async def _serve(self, client_r: asyncio.StreamReader, client_w: asyncio.StreamWriter
                     ) -> None:
        await self._flowing.wait()  # a black-holed connect: accepted, then silence
        up_r, up_w = await asyncio.open_connection(*self.target)
        self._open.update((client_w, up_w))
        try:
            await asyncio.gather(self._pipe(client_r, up_w), self._pipe(up_r, client_w))
        finally:
            for w in (client_w, up_w):
                self._open.discard(w)
                w.transport.abort()

    async def _pipe(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(ConnectionError, OSError):
            while data := await reader.read(65536):
                await self._flowing.wait()  # held while black-holed, then delivered
                writer.write(data)
                await writer.drain()
        writer.transport.abort()


def published_rate(values: list[dict]) -> float:
    """Lists per second over the middle 90% of their publish times."""
    published = np.sort(np.array([v["published_us"] for v in values], dtype=np.float64))
    lo, hi = int(len(published) * 0.05), int(len(published) * 0.95)
    return (hi - lo) / ((published[hi] - published[lo]) / 1e6)


def drain(producer: EventProducer, events: list[Event], seen: Iterator[dict]) -> float:
    """Send ``events`` as a backlog; the worker's lists per second while it drains them."""
    for event in events:
        producer.send(event, headers=[sent_at_header()])
    producer.flush()
    wanted = {e.event_id for e in events}
    values = []
    for value in seen:
        if value.get("event_id") in wanted:
            values.append(value)
            if len(values) == len(wanted):
                return published_rate(values)
    raise SystemExit(f"only {len(values):,} of {len(wanted):,} events were answered")


def lists(settings: Settings, topic: str) -> Iterator[dict]:
    for record in read_topic(settings.kafka, topic, from_beginning=True, idle_timeout_s=60):
        yield orjson.loads(record.value)


class Feed:
    """A live feed read on a thread: the lists it delivered, in order."""

    def __init__(self, url: str) -> None:
        self.lists: list[dict] = []
        self.opened = threading.Event()
        threading.Thread(target=self._read, args=(url,), daemon=True).start()
        if not self.opened.wait(30):
            raise SystemExit(f"the feed {url} did not open")

    def _read(self, url: str) -> None:
        with (contextlib.suppress(httpx.HTTPError),  # the API stopping ends the stream
              httpx.stream("GET", url, timeout=httpx.Timeout(10, read=None)) as reply):
            self.opened.set()
            for line in reply.iter_lines():
                if line.startswith("data: "):
                    self.lists.append(orjson.loads(line[6:]))

    def delivered_within(self, event_id: str, wait_s: float) -> float | None:
        start = time.monotonic()
        while time.monotonic() - start < wait_s:
            if any(d.get("event_id") == event_id for d in self.lists):
                return time.monotonic() - start
            time.sleep(0.1)
        return None


def via(url: str, port: int) -> str:
    """``url`` with its host and port replaced by the proxy's."""
    parts = urlsplit(url)
    auth = parts.netloc.rpartition("@")[0]
    return urlunsplit(parts._replace(netloc=f"{auth + '@' if auth else ''}127.0.0.1:{port}"))


def run(settings: Settings, args: argparse.Namespace, logs: Path) -> dict[str, object]:
    target = urlsplit(settings.redis)
    proxy = RedisProxy((target.hostname or "127.0.0.1", target.port or 6379))
    api_port = free_port()
    env = {**chaos_env(settings, logs / "state"), "STREAMREC_REDIS_URL": via(settings.redis,
                                                                              proxy.port),
           "STREAMREC_API_PORT": str(api_port)}
    for embedded_only in ("STREAMREC_REDIS_PASSWORD", "STREAMREC_REDIS_TLS"):  # in the URL
        env.pop(embedded_only, None)
    api_url, run_id = f"http://127.0.0.1:{api_port}", uuid.uuid4().hex[:8]
    events = list(generate(SyntheticConfig(users=5_000, items=2_000,
                                           events=3 * args.events, seed=3)))
    healthy, outage, healthy_again = (events[i * args.events:(i + 1) * args.events]
                                      for i in range(3))
    worker = ServiceProcess.start(env, logs / "worker.log", "worker", "--pass-through")
    api = ServiceProcess.start(env, logs / "api.log", "api")
    producer = EventProducer(settings.kafka, env["STREAMREC_TOPIC_INTERACTIONS"],
                             env["STREAMREC_TOPIC_DLQ"])
    seen = lists(settings, env["STREAMREC_TOPIC_RECOMMENDATIONS"])
    try:
        worker.wait_joined(settings.kafka, env["STREAMREC_WORKER_GROUP"])
        api.wait_http(f"{api_url}/healthz")
        feed_user = f"{run_id}-feed"
        feed = Feed(f"{api_url}/v1/users/{feed_user}/feed")
        rate_healthy = drain(producer, healthy, seen)
        proxy.set_mode(args.mode)
        began = time.monotonic()
        asked = time.monotonic()
        during = httpx.get(f"{api_url}/v1/users/{run_id}-new/recommendations", timeout=30)
        answered_s = time.monotonic() - asked
        rate_outage = drain(producer, outage, seen)
        time.sleep(max(args.outage_s - (time.monotonic() - began), 0))
        proxy.set_mode("pass")
        after = new_event(f"{run_id}-after", "i1")
        followed = new_event(feed_user, "i1")
        for event in (after, followed):
            producer.send(event, headers=[sent_at_header()])
        producer.flush()
        stored_s = stored_within(redis.Redis.from_url(settings.redis), after.user_id,
                                 args.wait_s)
        feed_s = feed.delivered_within(followed.event_id, args.wait_s)
        rate_again = drain(producer, healthy_again, seen)
    finally:
        producer.close()
        api.stop()
        worker.stop()
        drop_topics(settings, env)
    healthy_rates = (rate_healthy, rate_again)
    return {"healthy": healthy_rates, "outage": rate_outage,
            "ratio": rate_outage / (sum(healthy_rates) / 2), "api_status": during.status_code,
            "api_path": during.json().get("path"), "api_s": answered_s,
            "stored_s": stored_s, "feed_s": feed_s}


def stored_within(client: redis.Redis, user: str, wait_s: float) -> float | None:
    start = time.monotonic()
    while time.monotonic() - start < wait_s:
        with contextlib.suppress(redis.RedisError):
            if client.exists(recs_key(user)):
                return time.monotonic() - start
        time.sleep(0.1)
    return None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mode", choices=("refuse", "blackhole"), default="blackhole")
    parser.add_argument("--outage-s", type=float, default=60.0)
    parser.add_argument("--events", type=int, default=100_000, help="backlog per phase")
    parser.add_argument("--wait-s", type=float, default=60.0,
                        help="how long the recovery checks wait")
    args, f = run_with_logs(run, parser)
    fmt = lambda s: "never" if s is None else f"{s:.1f} s"  # noqa: E731
    print(f"Redis {args.mode} for {args.outage_s:.0f} s: topic path {f['outage']:,.0f} lists/s "
          f"against {f['healthy'][0]:,.0f} healthy before and {f['healthy'][1]:,.0f} after "
          f"({f['ratio']:.2f}x their mean); API during the outage "
          f"{f['api_status']} path {f['api_path']} in {f['api_s']:.2f} s; after it, a new "
          f"list in Redis in {fmt(f['stored_s'])}, the open feed delivered it in "
          f"{fmt(f['feed_s'])}", flush=True)
    ok = (f["ratio"] >= MIN_RATIO and f["api_status"] == 200 and f["api_path"] == "fallback"
          and f["stored_s"] is not None and f["feed_s"] is not None)
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    main()
