"""Nearest-neighbour retrieval of items for session embeddings, over FAISS.

``ItemIndex.build(item_table)`` indexes rows 1..n of an item-embedding table (row 0 is
padding) for maximum inner product. The kind follows catalogue size unless given:
exact (``flat``) up to ``exact_max`` items, where exact search is cheap and recall is 1;
``ivf`` beyond, whose recall is measured against exact search in the tests; ``hnsw`` on
request. On a machine where ``faiss.get_num_gpus() > 0`` flat and IVF indexes move to GPU.

A running worker grows the index with items it meets in the catalogue (``add``: ids go
on from n + 1) and re-embeds items whose record changed (``update``: in place in a CPU
flat index; other kinds say they cannot, and the caller rebuilds from its table).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

try:
    import faiss
except ImportError as exc:  # the `cpu` or the `gpu` extra brings it: pyproject.toml
    raise ImportError("FAISS is not installed: pip install 'streamrec[cpu]', or "
                      "'streamrec[gpu]' on an NVIDIA machine") from exc

KINDS = ("auto", "flat", "ivf", "hnsw")


@dataclass(frozen=True)
class IndexConfig:
    kind: str = "auto"
    exact_max: int = 50_000
    nlist: int | None = None   # IVF cells; default 4 * sqrt(n)
    nprobe: int = 32
    hnsw_m: int = 32
    ef_search: int = 256
    use_gpu: bool | None = None  # None: when a GPU is present
    # GPU only: vectors in half precision, half the memory and bandwidth of an IVF scan;
    # recall against exact search: docs/BENCHMARKS.md "On the GPU".
    float16: bool = False

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"kind must be one of {KINDS}. Received: {self.kind!r}")


class ItemIndex:
    def __init__(self, index: faiss.Index, kind: str, num_items: int, dim: int,
                 cfg: IndexConfig = IndexConfig()) -> None:
        self.index, self.kind, self.num_items, self.dim = index, kind, num_items, dim
        self.cfg = cfg

    @classmethod
    def build(cls, item_table: np.ndarray, cfg: IndexConfig = IndexConfig()) -> ItemIndex:
        vectors = np.ascontiguousarray(item_table[1:], dtype=np.float32)
        n, d = vectors.shape
        kind = cfg.kind if cfg.kind != "auto" else ("flat" if n <= cfg.exact_max else "ivf")
        use_gpu = (cfg.use_gpu if cfg.use_gpu is not None else gpu_count() > 0) and kind != "hnsw"
        if kind == "flat":
            index: faiss.Index = faiss.IndexFlatIP(d)
        elif kind == "ivf":
            nlist = cfg.nlist or max(1, min(int(4 * np.sqrt(n)), n // 39))
            index = faiss.IndexIVFFlat(faiss.IndexFlatIP(d), d, nlist, faiss.METRIC_INNER_PRODUCT)
            if use_gpu:  # k-means on the GPU: on 10M items the CPU's would take minutes
                index.clustering_index = faiss.index_cpu_to_all_gpus(faiss.IndexFlatIP(d))
            index.train(vectors)
            index.nprobe = min(cfg.nprobe, nlist)
        else:
            index = faiss.IndexHNSWFlat(d, cfg.hnsw_m, faiss.METRIC_INNER_PRODUCT)
            index.hnsw.efSearch = cfg.ef_search
        if use_gpu:
            options = faiss.GpuMultipleClonerOptions()
            options.useFloat16 = cfg.float16
            index = faiss.index_cpu_to_all_gpus(index, co=options)
        index.add(vectors)
        return cls(index, kind, n, d, cfg)

    def add(self, vectors: np.ndarray) -> None:
        """Index items n + 1, n + 2, ... (rows of ``vectors``)."""
        self.index.add(np.ascontiguousarray(vectors, dtype=np.float32))
        self.num_items += len(vectors)

    def update(self, ids: np.ndarray, vectors: np.ndarray) -> bool:
        """Replace the vectors of indexed ``ids`` in place; False where this kind of index
        cannot (only a CPU flat index stores its vectors where they can be rewritten)."""
        if not isinstance(self.index, faiss.IndexFlat):
            return False
        stored = faiss.rev_swig_ptr(self.index.get_xb(), self.num_items * self.dim)
        stored.reshape(self.num_items, self.dim)[np.asarray(ids) - 1] = vectors
        return True

    def search(self, queries: np.ndarray, k: int,
               exclude: list[np.ndarray] | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Top-k (scores, item ids) per query; ids in ``exclude[i]`` are skipped for row i.

        Over-fetches by the longest exclusion list, so excluded items never leave a row
        short. Missing results (tiny catalogues) have id 0 and score -inf.
        """
        q = np.ascontiguousarray(queries, dtype=np.float32)
        extra = max((len(e) for e in exclude), default=0) if exclude else 0
        fetch = min(k + extra, self.num_items)
        scores, idx = self.index.search(q, fetch)
        ids = np.where(idx >= 0, idx + 1, 0)
        if exclude:
            ids[_excluded(ids, exclude, self.num_items + 1)] = 0
        scores = np.where(ids > 0, scores, -np.inf)
        order = np.argsort(-scores, axis=1, kind="stable")[:, :k]
        out_ids = np.take_along_axis(ids, order, axis=1)
        out_scores = np.take_along_axis(scores, order, axis=1)
        if out_ids.shape[1] < k:
            pad = k - out_ids.shape[1]
            out_ids = np.pad(out_ids, ((0, 0), (0, pad)))
            out_scores = np.pad(out_scores, ((0, 0), (0, pad)), constant_values=-np.inf)
        return out_scores, out_ids


def _excluded(ids: np.ndarray, exclude: list[np.ndarray], stride: int) -> np.ndarray:
    """Mask of ``ids[row, j] in exclude[row]``, for all rows in one ``isin``: each row's ids
    are offset by ``row * stride`` so rows cannot match each other (a per-row loop cost
    more than the search itself: docs/BENCHMARKS.md, "Streaming worker")."""
    offsets = np.arange(len(ids), dtype=np.int64) * stride
    banned = np.concatenate([np.asarray(e, np.int64) + o for e, o in zip(exclude, offsets)])
    return np.isin(ids + offsets[:, None], banned)


def gpu_count() -> int:
    get = getattr(faiss, "get_num_gpus", None)
    return int(get()) if get is not None else 0


# Batched queries run through BLAS only above this many query-dims; the default (20)
# leaves micro-batches on the slow path (about 3x slower per query at batch 256: STACK.md).
faiss.cvar.distance_compute_blas_threshold = 16
