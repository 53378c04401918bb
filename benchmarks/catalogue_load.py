"""How long a loading bundle holds up the event loop while it takes the catalogue: what a
worker's events and the API's requests wait for at each swap (issue #20's catalogue at
production sizes).

A worker, the API and each experiment variant load a new bundle off the event loop, then
hand it every catalogue record read so far (items its training never saw, by content).
Done on the loop, that hand-over stalled everything for as long as it took; now
``Catalogue.load`` embeds the records read before the load on the loading thread and only
those read meanwhile on the loop. Both ways run here, alternated, on one bundle's models,
while a coroutine ticks every millisecond and records the longest gap between ticks:

    .venv/bin/python -m benchmarks.catalogue_load --items 100000 --repeats 3
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import time
from collections.abc import Awaitable, Callable
from typing import Any

from benchmarks.serving import _catalogue, _models
from model.data import IdMap
from model.pipeline import ServingBundle
from streams.catalog_follower import Catalogue
from streams.metrics import WorkerMetrics

TICK_S = 0.001


async def _longest_pause(work: Callable[[], Awaitable[Any]]) -> tuple[float, float]:
    """(the longest gap past ``TICK_S`` between ticks of a coroutine while ``work`` runs,
    the seconds ``work`` took)."""
    worst, running = 0.0, True

    async def tick() -> None:
        nonlocal worst
        last = time.perf_counter()
        while running:
            await asyncio.sleep(TICK_S)
            now = time.perf_counter()
            worst, last = max(worst, now - last - TICK_S), now

    ticker = asyncio.create_task(tick())
    await asyncio.sleep(0.05)  # ticking before the work starts
    start = time.perf_counter()
    await work()
    took = time.perf_counter() - start
    running = False
    await ticker
    return worst, took


def _records(items: int, new_share: float) -> list[Any]:
    """Messages of the items topic: a record for every trained item, and ``new_share``
    more for items known by content alone."""
    from types import SimpleNamespace

    records = _catalogue(range(int(items * (1 + new_share))))
    return [SimpleNamespace(key=r.item_id.encode(), value=r.to_json()) for r in records]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--items", type=int, default=100_000, help="trained items")
    parser.add_argument("--new-share", type=float, default=0.01,
                        help="records for items beyond the trained ones")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    sasrec, ranker = _models(args.items, 1_000, features=False, content=True)

    def load() -> ServingBundle:  # maps of its own: new items join a bundle's item map
        return ServingBundle.from_models(
            sasrec, ranker, IdMap.from_list([f"u{i}" for i in range(1_000)]),
            IdMap.from_list([f"i{i}" for i in range(args.items)]), "bench")

    catalogue = Catalogue(WorkerMetrics(), caught_up=True)
    catalogue.take(_records(args.items, args.new_share))
    print(f"{args.items:,} trained items, {len(catalogue.records):,} catalogue records")

    async def on_the_loop() -> None:  # the hand-over as it was
        bundle = await asyncio.get_running_loop().run_in_executor(None, load)
        catalogue.embed_all(bundle)

    async def off_the_loop() -> None:
        await catalogue.load(load)

    ways = {"on the loop (before)": on_the_loop, "Catalogue.load (now)": off_the_loop}
    pauses: dict[str, list[float]] = {name: [] for name in ways}
    for repeat in range(args.repeats):
        for name, way in ways.items():
            worst, took = asyncio.run(_longest_pause(way))
            pauses[name].append(worst)
            print(f"  {repeat + 1}. {name:<22} longest pause {worst * 1000:8.1f} ms, "
                  f"load and hand-over {took:.2f} s")
    before, now = (statistics.median(p) for p in pauses.values())
    print(f"median longest pause: before {before * 1000:.1f} ms, now {now * 1000:.1f} ms "
          f"({before / now:.1f}x shorter)")


if __name__ == "__main__":
    main()
