"""Model costs on this machine: SASRec training speed, and session-encoder inference cost
per event at several batch sizes: eager Keras, the compiled ``predict_on_batch``, and the
NumPy forward over exported weights (``model/retrieval/encoder.py``) that the workers use.

    .venv/bin/python -m benchmarks.models --data ../shared/data/ml-latest-small/ratings.csv \\
        --format movielens --epochs 3

Run with ``KERAS_BACKEND=jax`` (and a GPU) for the same figures on JAX.
"""

from __future__ import annotations

import argparse
import time

import keras
import numpy as np

from model.data import build_sequences, leave_last_out
from model.retrieval.encoder import IncrementalEncoder, export_sasrec
from model.retrieval.training import SASRecConfig, fit_sasrec
from streams.readers import read_valid_events


def _per_event_us(fn, batch: np.ndarray, repeats: int) -> float:  # type: ignore[no-untyped-def]
    fn(batch)  # warm-up: tracing / compilation
    start = time.perf_counter()
    for _ in range(repeats):
        fn(batch)
    return (time.perf_counter() - start) / repeats / len(batch) * 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", required=True)
    parser.add_argument("--format", required=True)
    parser.add_argument("--epochs", type=int, default=3)
    args = parser.parse_args()
    seqs = build_sequences(read_valid_events(args.data, args.format))
    split = leave_last_out(seqs)
    cfg = SASRecConfig(epochs=args.epochs, eval_every=10**6, patience=10**6)
    print(f"backend {keras.backend.backend()}; {seqs.num_users:,} users, "
          f"{seqs.num_items:,} items; SASRec d={cfg.dim} L={cfg.max_len} blocks={cfg.blocks} "
          f"loss={cfg.loss}")
    result = fit_sasrec(split, cfg)
    print(f"training: {result.seconds / args.epochs:.2f} s/epoch incl. sampling and validation, "
          f"{result.samples_per_s:,.0f} sequences/s "
          f"({result.samples_per_s * cfg.max_len:,.0f} positions/s) in model.fit after its "
          "first epoch")

    model = result.model
    inp = keras.Input((cfg.max_len,), dtype="int32")
    compiled = keras.Model(inp, model.encoder(inp)[:, -1, :])
    rng = np.random.default_rng(0)
    print("session-encoder inference, µs per event:")
    exported = export_sasrec(model)
    incremental = IncrementalEncoder(exported)
    print(f"  {'batch':>6} {'eager call':>12} {'predict_on_batch':>18} {'numpy':>10} "
          f"{'incremental':>12}")
    for batch_size in (1, 32, 256):
        batch = rng.integers(1, seqs.num_items + 1, (batch_size, cfg.max_len)).astype("int32")
        repeats = max(5, 2000 // batch_size)
        eager = _per_event_us(lambda b: model.encode(b), batch, repeats)
        fast = _per_event_us(compiled.predict_on_batch, batch, repeats)
        numpy_us = _per_event_us(exported.encode, batch, repeats)
        # Sessions with 0..max_len-1 cached events; one new event each (rolls included).
        caches = [incremental.prefill(batch[i, :i % cfg.max_len].tolist())
                  for i in range(batch_size)]
        inc_us = _per_event_us(lambda b, c=caches: incremental.step(c, b[:, -1]), batch, repeats)
        print(f"  {batch_size:>6} {eager:>12,.0f} {fast:>18,.0f} {numpy_us:>10,.0f} "
              f"{inc_us:>12,.0f}")


if __name__ == "__main__":
    main()
