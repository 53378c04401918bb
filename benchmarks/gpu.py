"""Training and retrieval on an accelerator, beside the same work on this machine's CPU.

Three parts, each printing its figures and writing them as JSON (``--out``):

- ``train``: SASRec (d=64, L=50) and NeuMF training throughput on synthetic inputs at the
  default and at a large batch size, then both models trained on a real log with early
  stopping, timing every validation point. Given ``--reference`` (the JSON of a CPU run),
  it reports the time this run took to reach the reference's best validation NDCG@10.
- ``faiss``: flat and IVF indexes (``model.retrieval.index.ItemIndex``, GPU when present)
  over clustered synthetic item vectors; queries per second at batch 256 and recall@100
  against exact search, for several ``nprobe``.
- ``cap``: searches whose exclusion lists push FAISS GPU past its selection cap, checked
  against exact search (on a CPU it checks the plain path).

    # the CPU reference, on this machine (TensorFlow backend)
    .venv/bin/python -m benchmarks.gpu train --data ../shared/data/ml-latest-small/ratings.csv \\
        --format movielens --out cpu-train.json
    .venv/bin/python -m benchmarks.gpu faiss --items 1000000 --out cpu-faiss.json
    # the GPU run: benchmarks/device/run.sh (Keras on JAX, faiss-gpu-cu12)

Figures: docs/BENCHMARKS.md, "On the GPU".
"""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import faiss  # faiss-cpu, or faiss-gpu-cu12 with the gpu extra: the module ItemIndex uses
import keras
import numpy as np

from model.data import build_sequences, leave_last_out
from model.fitting import TrainResult, start_training
from model.ranking.neumf import NeuMF
from model.ranking.training import NeuMFConfig, fit_neumf
from model.retrieval.index import IndexConfig, ItemIndex, gpu_count
from model.retrieval.sasrec import LOSSES, SASRec
from model.retrieval.training import SASRecConfig, fit_sasrec, pooled_negatives
from model.sampling import SeenItems
from streams.readers import read_valid_events

QUERY_BATCH, TOP_K = 256, 100


def _timed_fit(model: keras.Model, x: dict[str, np.ndarray], y: np.ndarray, batch: int) -> float:
    """Examples per second of one epoch of ``model.fit``, after a two-batch warm-up epoch
    that compiles the train step (its time is not counted)."""
    model.fit({k: v[:2 * batch] for k, v in x.items()}, y[:2 * batch], batch_size=batch,
              epochs=1, verbose=0)
    start = time.perf_counter()
    model.fit(x, y, batch_size=batch, epochs=1, verbose=0, shuffle=False)
    return len(y) / (time.perf_counter() - start)


def sasrec_throughput(batch: int, steps: int, items: int = 10_000) -> float:
    """Sequences per second: SASRec's default shape (d=64, L=50, 2 blocks, sampled softmax
    over 1,024 negatives pooled over the batch, as ``fit_sasrec`` draws them) on random
    sequences, ``steps`` full batches."""
    cfg, rng, n = SASRecConfig(dropout=0.2), np.random.default_rng(0), batch * steps
    start_training(cfg.seed)
    model = SASRec(items, cfg.max_len, cfg.dim, cfg.blocks, cfg.heads, cfg.dropout)
    model.compile(optimizer=keras.optimizers.Adam(cfg.learning_rate), loss=LOSSES[cfg.loss])
    seq = rng.integers(1, items + 1, (n, cfg.max_len)).astype("int32")
    pool, pool_seen = pooled_negatives(np.arange(n), SeenItems(list(seq), items),
                                       cfg.pool_draws(batch), batch, rng)
    x = {"seq": seq, "pos": np.roll(seq, -1, axis=1), "pool": pool.astype("int32"),
         "pool_seen": pool_seen}
    return _timed_fit(model, x, np.ones((n, cfg.max_len), "float32"), batch)


def neumf_throughput(batch: int, steps: int, users: int = 100_000,
                     items: int = 50_000) -> float:
    """(user, item) samples per second: the paper's NeuMF (GMF 32 + MLP 64-32-16) with
    binary cross-entropy, on random pairs, ``steps`` full batches."""
    cfg, rng, n = NeuMFConfig(), np.random.default_rng(0), batch * steps
    start_training(cfg.seed)
    model = NeuMF(users, items, cfg.gmf_dim, cfg.mlp_layers)
    model.compile(optimizer=keras.optimizers.Adam(cfg.learning_rate),
                  loss=keras.losses.BinaryCrossentropy(from_logits=True))
    x = {"user": rng.integers(0, users + 1, n).astype("int32"),
         "item": rng.integers(1, items + 1, n).astype("int32")}
    return _timed_fit(model, x, rng.integers(0, 2, (n, 1)).astype("float32"), batch)


def time_to(curve: list[dict[str, float]], target: float) -> float | None:
    """Seconds until validation NDCG@10 first reached ``target``; None if it never did."""
    return next((p["seconds"] for p in curve if p.get("valid_ndcg10", -1.0) >= target), None)


def _quality(result: TrainResult, seed: int) -> dict[str, Any]:
    best = result.best_valid["full"]["NDCG@10"]
    return {"seed": seed, "best_epoch": result.best_epoch, "best_valid_ndcg10": best,
            "curve": result.curve, "seconds": result.seconds,
            "samples_per_s": result.samples_per_s}


def train_part(args: argparse.Namespace) -> dict[str, Any]:
    print(f"backend {keras.backend.backend()}, devices {keras.distribution.list_devices()}"
          if keras.backend.backend() == "jax" else f"backend {keras.backend.backend()}")
    out: dict[str, Any] = {"backend": keras.backend.backend(), "throughput": {}}
    for name, fn, batches in (("sasrec", sasrec_throughput, args.sasrec_batches),
                              ("neumf", neumf_throughput, args.neumf_batches)):
        for batch in batches if args.steps > 0 else []:
            rate = fn(batch, args.steps)
            out["throughput"][f"{name}@{batch}"] = rate
            print(f"  {name:6} batch {batch:>6}: {rate:>12,.0f} examples/s in model.fit")
    split = leave_last_out(build_sequences(read_valid_events(args.data, args.format)))
    reference = json.loads(Path(args.reference).read_text()) if args.reference else {}
    fits: dict[str, Callable[[int], TrainResult]] = {
        "sasrec": lambda seed: fit_sasrec(split, SASRecConfig(epochs=args.epochs, seed=seed)),
        "neumf": lambda seed: fit_neumf(split, NeuMFConfig(epochs=min(args.epochs, 30),
                                                           seed=seed))}
    for name, fit in fits.items():
        out[name] = [_quality(fit(seed), seed) for seed in args.seeds]
        _report_quality(name, out[name], reference.get(name))
    return out


def _report_quality(name: str, runs: list[dict[str, Any]],
                    reference: list[dict[str, Any]] | None) -> None:
    for run in runs:
        print(f"  {name:6} seed {run['seed']}: best valid NDCG@10 {run['best_valid_ndcg10']:.4f} "
              f"at epoch {run['best_epoch']}, {run['seconds']:.1f} s in all")
    if reference is None:
        return
    # Runs on two backends differ by their random streams, so the target is the median
    # best of the reference's seeds (and 95% of it), not one lucky seed's.
    median = float(np.median([r["best_valid_ndcg10"] for r in reference]))
    for label, target in (("the reference's median best", median),
                          ("95% of it", 0.95 * median)):
        times = [time_to(r["curve"], target) for r in runs]
        ref_times = [time_to(r["curve"], target) for r in reference]
        print(f"         to {label} {target:.4f}: {_seconds(times)} "
              f"(reference {_seconds(ref_times)})")


def _seconds(times: list[float | None]) -> str:
    return " / ".join("never" if t is None else f"{t:.1f} s" for t in times)


def topic_centres(dim: int, rng: np.random.Generator, clusters: int = 1_000) -> np.ndarray:
    """The topics items and queries share."""
    return rng.standard_normal((clusters, dim), dtype=np.float32)


def clustered_vectors(n: int, centres: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Item-like vectors: topic ``centres`` plus unit noise of the same scale, so
    neighbourhoods exist as in learned embeddings (uniform noise has none, and no index
    beats exact search on it). Queries are drawn around the same centres as the items, as
    sessions sit among the items they meet. Row 0 is the padding row ``ItemIndex`` skips."""
    clusters, dim = centres.shape
    out = np.empty((n + 1, dim), np.float32)
    for lo in range(1, n + 1, 1_000_000):
        hi = min(n + 1, lo + 1_000_000)
        out[lo:hi] = centres[rng.integers(0, clusters, hi - lo)]
        out[lo:hi] += rng.standard_normal((hi - lo, dim), dtype=np.float32)
    out[0] = 0.0
    return out


def search_all(index: Any, queries: np.ndarray) -> tuple[np.ndarray, float]:
    """Raw FAISS search in batches of 256: (ids, queries per second) after one warm-up."""
    index.search(queries[:QUERY_BATCH], TOP_K)
    ids, start = [], time.perf_counter()
    for lo in range(0, len(queries), QUERY_BATCH):
        ids.append(index.search(queries[lo:lo + QUERY_BATCH], TOP_K)[1])
    return np.concatenate(ids), len(queries) / (time.perf_counter() - start)


def recall(found: np.ndarray, truth: np.ndarray) -> float:
    """Mean share of each query's exact top-k that the index found."""
    return float(np.mean([len(np.intersect1d(f, t)) / truth.shape[1]
                          for f, t in zip(found, truth)]))


def set_nprobe(index: Any, nprobe: int) -> None:
    space = faiss.GpuParameterSpace() if gpu_count() else faiss.ParameterSpace()
    space.set_index_parameter(index, "nprobe", nprobe)


def faiss_part(args: argparse.Namespace) -> dict[str, Any]:
    gpu = gpu_count() > 0
    print(f"FAISS {faiss.__version__}, {'GPU' if gpu else 'CPU'}, dim {args.dim}, "
          f"top-{TOP_K}, batch {QUERY_BATCH}")
    out: dict[str, Any] = {"gpu": gpu}
    rng = np.random.default_rng(0)
    precisions = [p for p in args.precisions if gpu or p == "fp32"]  # fp16: GPU only
    for n in args.items:
        centres = topic_centres(args.dim, rng)
        table = clustered_vectors(n, centres, rng)
        queries = clustered_vectors(args.queries, centres, rng)[1:]
        out[str(n)] = _one_size(table, queries, precisions, args.nlist, args.nprobe)
        del table
    return out


def _one_size(table: np.ndarray, queries: np.ndarray, precisions: list[str],
              nlists: list[int], nprobes: list[int]) -> dict[str, Any]:
    """Exact top-100 from the float32 flat index, then every variant against it."""
    n, truth, row = len(table) - 1, None, {}
    # fp32 first, whatever the order asked: it is the truth the others are graded against
    for precision in sorted(precisions, key=lambda p: p != "fp32"):
        cfg = IndexConfig(kind="flat", float16=precision == "fp16")
        found, qps = search_all(ItemIndex.build(table, cfg).index, queries)
        truth = found if truth is None else truth
        row[f"flat/{precision}"] = {"qps": qps, "recall": recall(found, truth)}
        print(f"  {n:>11,} items, flat {precision}: {qps:>10,.0f} q/s, recall@{TOP_K} "
              f"{row[f'flat/{precision}']['recall']:.4f}")
    flat_qps = row["flat/fp32"]["qps"]
    for nlist, precision in ((c, p) for c in nlists for p in precisions):
        start = time.perf_counter()
        cfg = IndexConfig(kind="ivf", nlist=nlist or None, float16=precision == "fp16")
        ivf = ItemIndex.build(table, cfg).index
        cells = getattr(ivf, "nlist", None) or faiss.extract_index_ivf(ivf).nlist
        print(f"    IVF {cells} cells {precision}, built in {time.perf_counter() - start:.1f} s")
        for nprobe in nprobes:
            set_nprobe(ivf, nprobe)
            found, qps = search_all(ivf, queries)
            row[f"ivf{cells}/{precision}/{nprobe}"] = {"qps": qps, "recall": recall(found, truth)}
            print(f"      nprobe {nprobe:>4}: {qps:>10,.0f} q/s, recall@{TOP_K} "
                  f"{recall(found, truth):.4f}, {qps / flat_qps:.1f}x flat fp32")
    return row


def cap_part(args: argparse.Namespace) -> dict[str, Any]:
    """``ItemIndex`` past FAISS GPU's selection cap (k 2048): rows whose exclusion list
    pushes the over-fetch past it are answered from the host copy, the rest on the
    device; every row must equal exact search. On a GPU, first show the cap is real."""
    rng = np.random.default_rng(3)
    table = clustered_vectors(args.items, topic_centres(64, rng), rng)
    queries = rng.standard_normal((64, 64), dtype=np.float32)
    lengths = [3_000 if i % 4 == 0 else 20 for i in range(len(queries))]  # a quarter long
    banned = [rng.choice(args.items, n, replace=False) + 1 for n in lengths]
    device = ItemIndex.build(table, IndexConfig(kind="flat", numpy_max=0))
    exact = ItemIndex.build(table, IndexConfig(kind="flat", use_gpu=False, numpy_max=0))
    out: dict[str, Any] = {"gpu": device.host is not None, "items": args.items}
    if device.host is not None:
        try:
            device.index.search(queries[:1], 3_100)
            out["raw_past_cap"] = "answered"
        except RuntimeError as exc:
            out["raw_past_cap"] = f"refused: {str(exc).splitlines()[0][:120]}"
    got, want = device.search(queries, TOP_K, banned), exact.search(queries, TOP_K, banned)
    out["ids_equal"] = float(np.mean(got[1] == want[1]))
    out["scores_close"] = bool(np.allclose(got[0], want[0], atol=1e-3))
    out["excluded_returned"] = int(sum(np.isin(g, b).sum() for g, b in zip(got[1], banned)))
    print(json.dumps(out))
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="part", required=True)
    train = sub.add_parser("train", help="training throughput and time to quality")
    train.add_argument("--data", required=True)
    train.add_argument("--format", required=True)
    train.add_argument("--epochs", type=int, default=200)
    train.add_argument("--steps", type=int, default=50,
                       help="timed batches per throughput run; 0 skips throughput")
    train.add_argument("--sasrec-batches", type=int, nargs="+", default=[128, 1024])
    train.add_argument("--neumf-batches", type=int, nargs="+", default=[1024, 16384])
    train.add_argument("--seeds", type=int, nargs="+", default=[42],
                       help="one early-stopped training of each model per seed")
    train.add_argument("--reference", help="JSON of an earlier run: time to its NDCG@10")
    search = sub.add_parser("faiss", help="FAISS flat and IVF: queries/s and recall@100")
    search.add_argument("--items", type=int, nargs="+", default=[1_000_000])
    search.add_argument("--dim", type=int, default=64)
    search.add_argument("--queries", type=int, default=10_240)
    search.add_argument("--nprobe", type=int, nargs="+", default=[8, 16, 32, 64, 128, 256])
    search.add_argument("--nlist", type=int, nargs="+", default=[0],
                        help="IVF cells to try; 0: ItemIndex's default, 4 * sqrt(items)")
    search.add_argument("--precisions", nargs="+", default=["fp32", "fp16"],
                        choices=["fp32", "fp16"], help="fp16 runs on a GPU only")
    cap = sub.add_parser("cap", help="searches past the GPU's selection cap, against exact")
    cap.add_argument("--items", type=int, default=200_000)
    compare = sub.add_parser("compare", help="time to quality of two saved train runs")
    compare.add_argument("run")
    compare.add_argument("--reference", required=True)
    for part in (train, search, cap):
        part.add_argument("--out", help="write the figures here as JSON")
    args = parser.parse_args()
    if args.part == "compare":
        run, reference = (json.loads(Path(p).read_text()) for p in (args.run, args.reference))
        for name in ("sasrec", "neumf"):
            _report_quality(name, run[name], reference[name])
        return
    figures = {"train": train_part, "faiss": faiss_part, "cap": cap_part}[args.part](args)
    if args.out:
        Path(args.out).write_text(json.dumps(figures, indent=1))


if __name__ == "__main__":
    main()
