"""The API under load on loopback: GET latency beside a bare Redis GET, and SSE fan-out.

    python -m benchmarks.api [--requests 20000] [--sse-clients 1000] [--sse-seconds 60]

Needs the local stack (``streamrec stack up``). Starts ``streamrec api`` as its own
process on fresh topics and a fresh Redis channel. 10,000 users' lists are stored in Redis
before it starts ("cold": reads go to Redis), and 10,000 more are stored and published
the way workers do once it runs ("hot": the API has seen them on the channel and serves
them from memory). A real worker is not needed to serve reads.

1. ``GET /v1/users/{u}/recommendations`` of hot users at 1 and 64 concurrent clients
   (keep-alive connections, aiohttp), beside the same number of clients doing bare Redis
   ``GET`` of the same keys (redis-py asyncio), in the same run: requests/s and p50/p99.
2. ``--sse-clients`` feeds, one per user, held for ``--sse-seconds`` while lists are
   published for random watched users the way a worker does (SET + PUBLISH in one
   pipeline, 200 lists/s): delay from publish to the client's receipt, p50/p99.

Client and API share this machine's cores, so the figures include the load generator's own
cost; both sides of each comparison pay it alike (the client runs with its garbage
collector off, so its pauses do not show up as server latency). When ``wrk`` is installed
(``apt-get install wrk``), the API GET rows are repeated with it: a C load generator that
leaves the API more of the CPU, for hot and for cold users.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import os
import random
import time
import uuid
from collections.abc import Awaitable, Callable

import aiohttp
import numpy as np
import orjson
import redis.asyncio as aioredis

from services.processes import ServiceProcess, free_port, isolated_run
from services.settings import load_settings
from streams.recs_store import recs_key

USERS = 10_000


def _payload(user: str, rng: random.Random) -> bytes:
    now = time.time_ns() // 1000
    return orjson.dumps({
        "user_id": user, "path": "model", "model_version": "bench",
        "items": [{"item_id": f"i{rng.randrange(10_000)}", "score": round(rng.random(), 6)}
                  for _ in range(10)],
        "event_id": str(uuid.uuid4()), "event_item_id": "i0", "sent_us": now - 5000,
        "published_us": now})


def _summary(latencies: list[float], seconds: float) -> dict:
    p50, p99 = np.percentile(np.asarray(latencies) * 1000, [50, 99])
    return {"rps": len(latencies) / seconds, "p50_ms": p50, "p99_ms": p99}


async def _closed_loop(call: Callable[[], Awaitable[None]], concurrency: int,
                       total: int) -> dict:
    """``concurrency`` clients, each issuing its share of ``total`` calls back to back."""
    latencies: list[float] = []

    async def client(n: int) -> None:
        for _ in range(n):
            start = time.perf_counter()
            await call()
            latencies.append(time.perf_counter() - start)

    start = time.perf_counter()
    await asyncio.gather(*(client(total // concurrency) for _ in range(concurrency)))
    return _summary(latencies, time.perf_counter() - start)


async def _get_benchmark(url: str, redis_url: str, total: int,
                         prefix: str) -> list[tuple[str, int, dict]]:
    rng = random.Random(1)
    rows = []
    for concurrency in (1, 64):
        connector = aiohttp.TCPConnector(limit=concurrency)
        async with aiohttp.ClientSession(connector=connector) as http:
            async def api_get() -> None:
                user = f"{prefix}-{rng.randrange(USERS)}"
                async with http.get(f"{url}/v1/users/{user}/recommendations") as reply:
                    await reply.read()
                    assert reply.status == 200

            await _closed_loop(api_get, concurrency, min(total, 2000))  # warm-up
            api = await _closed_loop(api_get, concurrency, total)
        pool = aioredis.BlockingConnectionPool.from_url(redis_url, max_connections=concurrency)
        client = aioredis.Redis(connection_pool=pool)

        async def redis_get(client: aioredis.Redis = client) -> None:
            await client.get(recs_key(f"{prefix}-{rng.randrange(USERS)}"))

        await _closed_loop(redis_get, concurrency, min(total, 2000))
        bare = await _closed_loop(redis_get, concurrency, total)
        await client.aclose()
        rows += [(f"API GET {prefix}", concurrency, api),
                 ("bare Redis GET", concurrency, bare)]
    return rows


async def _sse_benchmark(url: str, redis_url: str, channel: str, clients: int,
                         seconds: float, rate: float, cpu_seconds: Callable[[], float]
                         ) -> dict:
    """Hold ``clients`` feeds open, publish for ``seconds``, and time each list's fan-out;
    the API's CPU (``cpu_seconds``) is counted over the publishing window only, not over
    the clients' connecting or the shutdown."""
    delays: list[float] = []
    connected = asyncio.Event()
    opened = [0]
    timeout = aiohttp.ClientTimeout(total=None, sock_read=None)
    session = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0), timeout=timeout)

    async def feed(user: str) -> None:
        async with session.get(f"{url}/v1/users/{user}/feed") as reply:
            opened[0] += 1
            if opened[0] == clients:
                connected.set()
            first = True
            async for line in reply.content:
                if line.startswith(b"data: "):
                    if first:  # the current list, sent at connect: not a fan-out
                        first = False
                        continue
                    published = orjson.loads(line[6:])["published_us"]
                    delays.append(time.time_ns() / 1000 - published)

    tasks = [asyncio.create_task(feed(f"sse-{i}")) for i in range(clients)]
    await asyncio.wait_for(connected.wait(), 120)
    await asyncio.sleep(1.0)  # every slot open on the API side
    rng = random.Random(2)
    client = aioredis.Redis.from_url(redis_url)
    published = 0
    cpu_before, start = cpu_seconds(), time.perf_counter()
    while (elapsed := time.perf_counter() - start) < seconds:
        user = f"sse-{rng.randrange(clients)}"
        payload = _payload(user, rng)
        async with client.pipeline(transaction=False) as pipe:
            pipe.set(recs_key(user), payload)
            pipe.publish(channel, b"[" + payload + b"]")  # a micro-batch of one
            await pipe.execute()
        published += 1
        await asyncio.sleep(max(0.0, published / rate - elapsed))
    cpu_share = (cpu_seconds() - cpu_before) / (time.perf_counter() - start)
    await asyncio.sleep(1.0)
    still_open = sum(not t.done() for t in tasks)
    for t in tasks:
        t.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    await session.close()
    await client.aclose()
    d = np.asarray(delays) / 1000
    return {"clients": clients, "still_open": still_open, "published": published,
            "received": len(delays), "cpu_share": cpu_share, "p50_ms": float(np.percentile(d, 50)),
            "p99_ms": float(np.percentile(d, 99)), "max_ms": float(d.max())}


async def _seed(redis_url: str, prefix: str, channel: str | None = None) -> None:
    """Store USERS lists, and publish them on ``channel`` as a worker does when given."""
    rng = random.Random(0)
    client = aioredis.Redis.from_url(redis_url)
    async with client.pipeline(transaction=False) as pipe:
        for i in range(USERS):
            payload = _payload(f"{prefix}-{i}", rng)
            pipe.set(recs_key(f"{prefix}-{i}"), payload, ex=3600)
            if channel is not None:
                pipe.publish(channel, b"[" + payload + b"]")
        await pipe.execute()
    await client.aclose()


def _wrk(url: str, concurrency: int, prefix: str, seconds: int = 10) -> dict | None:
    """``wrk`` on random users' lists; None when wrk is not installed."""
    import re
    import shutil
    import subprocess
    import tempfile

    if shutil.which("wrk") is None:
        return None
    script = (f'request = function() return wrk.format("GET", "/v1/users/{prefix}-" .. '
              f'math.random(0, {USERS - 1}) .. "/recommendations") end')
    with tempfile.NamedTemporaryFile("w", suffix=".lua") as lua:
        lua.write(script)
        lua.flush()
        out = subprocess.run(["wrk", "-t1", f"-c{concurrency}", f"-d{seconds}s", "--latency",
                              "-s", lua.name, url], capture_output=True, text=True).stdout

    def ms(label: str) -> float:
        value, unit = re.search(rf"{label}\s+([\d.]+)(us|ms|s)", out).groups()
        return float(value) * {"us": 1e-3, "ms": 1.0, "s": 1e3}[unit]

    if "Non-2xx" in out:
        raise RuntimeError(f"wrk saw errors:\n{out}")
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))
    return {"rps": rps, "p50_ms": ms("50%"), "p99_ms": ms("99%")}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--requests", type=int, default=20_000)
    parser.add_argument("--sse-clients", type=int, default=1000)
    parser.add_argument("--sse-seconds", type=float, default=60)
    parser.add_argument("--sse-rate", type=float, default=200, help="lists published per s")
    args = parser.parse_args()

    settings = load_settings()
    run = f"bench-api-{uuid.uuid4().hex[:8]}"
    port = free_port()
    env = {**os.environ, **isolated_run(settings, run), "STREAMREC_API_PORT": str(port)}
    url = f"http://127.0.0.1:{port}"
    asyncio.run(_seed(settings.redis, "cold"))
    folder = settings.data_dir / "bench" / run
    folder.mkdir(parents=True, exist_ok=True)
    api = ServiceProcess.start(env, folder / "api.log", "api")
    try:
        api.wait_http(f"{url}/healthz")
        time.sleep(1.0)  # its channel subscription starts beside the first answers
        asyncio.run(_seed(settings.redis, "hot", env["STREAMREC_RECS_CHANNEL"]))
        gc.disable()
        rows = asyncio.run(_get_benchmark(url, settings.redis, args.requests, "hot"))
        for prefix in ("hot", "cold"):
            for concurrency in (1, 64):
                measured = _wrk(url, concurrency, prefix)
                if measured is not None:
                    rows.append((f"API GET {prefix} (wrk)", concurrency, measured))
        print(f"\nGET, {args.requests:,} requests per aiohttp row, {USERS:,} hot and "
              f"{USERS:,} cold users")
        print(f"{'':22} {'clients':>7} {'req/s':>9} {'p50 ms':>8} {'p99 ms':>8}")
        for name, concurrency, r in rows:
            print(f"{name:22} {concurrency:>7} {r['rps']:>9,.0f} {r['p50_ms']:>8.2f} "
                  f"{r['p99_ms']:>8.2f}")
        for concurrency in (1, 64):
            a, b = (r for n, c, r in rows if c == concurrency and "wrk" not in n)
            print(f"API / bare Redis at {concurrency}: {a['rps'] / b['rps']:.2f}x throughput, "
                  f"p99 {a['p99_ms'] / b['p99_ms']:.1f}x")
        sse = asyncio.run(_sse_benchmark(url, settings.redis, env["STREAMREC_RECS_CHANNEL"],
                                         args.sse_clients, args.sse_seconds, args.sse_rate,
                                         api.cpu_seconds))
        gc.enable()
        print(f"\nSSE: {sse['clients']:,} clients held {args.sse_seconds:.0f} s "
              f"({sse['still_open']:,} still open at the end), {sse['published']:,} lists "
              f"published at {args.sse_rate:.0f}/s, {sse['received']:,} received")
        print(f"fan-out delay publish -> client: p50 {sse['p50_ms']:.2f} ms, p99 "
              f"{sse['p99_ms']:.2f} ms, max {sse['max_ms']:.2f} ms; API CPU "
              f"{sse['cpu_share'] * 100:.0f}% of a core, peak RSS "
              f"{api.peak_rss_mib():.0f} MiB")
    finally:
        api.stop()


if __name__ == "__main__":
    main()
