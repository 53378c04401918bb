"""Exact retrieval per query: FAISS's flat search against the NumPy path, by catalogue size
and micro-batch size, one compute thread as in a worker.

``ItemIndex.search`` sends a CPU flat index of up to ``IndexConfig.numpy_max`` items, or a
lone query, to NumPy (one BLAS product, ``argpartition``); this prints both paths' cost
so the limit can be checked on another machine:

    .venv/bin/python -m benchmarks.retrieval
    .venv/bin/python -m benchmarks.retrieval --items 10000,20000 --batches 64,256 --k 100

It times the two paths directly (``ItemIndex._faiss_top_k`` and ``_numpy_top_k``, which
``search`` chooses between), on random unit vectors of 64 dimensions. Each query excludes
``--history`` items, as a session's own items are. Both paths are checked to return the
same ids (order aside) before timing.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable

import numpy as np

from model.pipeline import limit_threads
from model.retrieval.index import IndexConfig, ItemIndex, _numpy_top_k


def _best_of(fn: Callable[[], object], queries: int, seconds: float) -> float:
    """Fastest of five timed loops, in µs per query."""
    best = float("inf")
    for _ in range(5):
        rounds, start = 0, time.perf_counter()
        while time.perf_counter() - start < seconds / 5:
            fn()
            rounds += 1
        best = min(best, (time.perf_counter() - start) / rounds / queries * 1e6)
    return best


def _row(items: int, batch: int, k: int, history: int, seconds: float,
         rng: np.random.Generator) -> tuple[float, float]:
    vectors = rng.normal(size=(items + 1, 64)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True) + 1e-9
    index = ItemIndex.build(vectors, IndexConfig(kind="flat"))
    q = rng.normal(size=(batch, 64)).astype(np.float32)
    exclude = [rng.choice(items, history, replace=False) + 1 for _ in range(batch)]
    by_faiss = lambda: index._faiss_top_k(q, k, exclude)  # noqa: E731
    in_numpy = lambda: _numpy_top_k(index._stored(), q, k, exclude)  # noqa: E731
    if not (np.sort(by_faiss()[1], axis=1) == np.sort(in_numpy()[1], axis=1)).all():
        raise SystemExit(f"the two paths disagree at {items} items, batch {batch}")
    return _best_of(by_faiss, batch, seconds), _best_of(in_numpy, batch, seconds)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--items", default="10000,15000,20000,35000,50000")
    parser.add_argument("--batches", default="1,16,64,256")
    parser.add_argument("--k", type=int, default=100, help="candidates per query")
    parser.add_argument("--history", type=int, default=20, help="excluded items per query")
    parser.add_argument("--seconds", type=float, default=1.0, help="timing per path and row")
    args = parser.parse_args()
    limit_threads(1)
    rng = np.random.default_rng(0)
    print(f"{'items':>7} {'batch':>5}  {'FAISS µs/query':>14}  {'NumPy µs/query':>14}  NumPy/FAISS")
    for items in map(int, args.items.split(",")):
        for batch in map(int, args.batches.split(",")):
            faiss_us, numpy_us = _row(items, batch, args.k, args.history, args.seconds, rng)
            print(f"{items:>7} {batch:>5}  {faiss_us:>14.1f}  {numpy_us:>14.1f}  "
                  f"{numpy_us / faiss_us:>10.2f}x", flush=True)
    print(f"ItemIndex.search uses NumPy up to {IndexConfig().numpy_max:,} items, "
          "and for a lone query at any size")


if __name__ == "__main__":
    main()
