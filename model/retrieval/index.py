"""Nearest-neighbour retrieval of items for session embeddings, over FAISS.

``ItemIndex.build(item_table)`` indexes rows 1..n of an item-embedding table (row 0 is
padding) for maximum inner product. The kind follows catalogue size unless given:
exact (``flat``) up to ``exact_max`` items, where exact search is cheap and recall is 1;
``ivf`` beyond, whose recall is measured against exact search in the tests; ``hnsw`` on
request. On a machine where ``faiss.get_num_gpus() > 0`` flat and IVF indexes move to GPU.

A CPU flat index of up to ``numpy_max`` items, or a single query at any size, is searched
in NumPy over FAISS's own stored vectors: one BLAS product and ``argpartition``. FAISS picks
each query's top k in a scalar loop that costs more than the product at these sizes, and
runs a lone query without BLAS; past ~17,000 items its selection wins on micro-batches
(docs/BENCHMARKS.md, "Retrieval in NumPy for small catalogues").

A running worker grows the index with items it meets in the catalogue (``add``: ids go
on from n + 1) and re-embeds items whose record changed (``update``: in a CPU flat or IVF
index; HNSW and GPU indexes say they cannot, and the caller rebuilds from its table).
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
    numpy_max: int = 15_000  # a CPU flat index this small is searched in NumPy
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


# FAISS's GPU indexes return at most this many neighbours per query (GPU_MAX_SELECTION_K).
GPU_MOST_K = 2048


class ItemIndex:
    """``host``: the vectors, kept on the host beside a GPU index (None on the CPU). A
    query that must skip more items than the GPU can over-fetch (a long history in the
    offline evaluation) is answered from them, exactly."""

    def __init__(self, index: faiss.Index, kind: str, num_items: int, dim: int,
                 cfg: IndexConfig = IndexConfig(), host: np.ndarray | None = None) -> None:
        self.index, self.kind, self.num_items, self.dim = index, kind, num_items, dim
        self.cfg, self.host = cfg, host

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
        return cls(index, kind, n, d, cfg, host=vectors if use_gpu else None)

    def add(self, vectors: np.ndarray) -> None:
        """Index items n + 1, n + 2, ... (rows of ``vectors``)."""
        vectors = np.ascontiguousarray(vectors, dtype=np.float32)
        self.index.add(vectors)
        if self.host is not None:
            self.host = np.vstack([self.host, vectors])
        self.num_items += len(vectors)

    def update(self, ids: np.ndarray, vectors: np.ndarray) -> bool:
        """Replace the vectors of indexed ``ids``; False where this kind of index cannot
        (HNSW removes nothing, FAISS's GPU indexes neither), and the caller rebuilds.

        A CPU flat index is rewritten in place. A CPU IVF index drops the old entries and
        files the new vectors under the same ids in the cells nearest them, keeping its
        trained centroids: rebuilding meant k-means again over every item."""
        if self.host is not None:
            return False
        labels = np.asarray(ids, dtype=np.int64) - 1
        vectors = np.ascontiguousarray(vectors, dtype=np.float32)
        if isinstance(self.index, faiss.IndexFlat):
            self._stored()[labels] = vectors
        elif isinstance(self.index, faiss.IndexIVF):
            self.index.remove_ids(faiss.IDSelectorBatch(labels))
            self.index.add_with_ids(vectors, labels)
        else:
            return False
        return True

    def search(self, queries: np.ndarray, k: int,
               exclude: list[np.ndarray] | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Top-k (scores, item ids) per query; ids in ``exclude[i]`` are skipped for row i.

        Excluded items never leave a row short. Missing results (tiny catalogues) have id 0
        and score -inf.
        """
        q = np.ascontiguousarray(queries, dtype=np.float32)
        small = self.num_items <= self.cfg.numpy_max or len(q) == 1
        if isinstance(self.index, faiss.IndexFlat) and self.num_items > 0 and small:
            scores, ids = _numpy_top_k(self._stored(), q, k, exclude)
        else:
            scores, ids = self._faiss_top_k(q, k, exclude)
        if ids.shape[1] < k:
            pad = k - ids.shape[1]
            ids = np.pad(ids, ((0, 0), (0, pad)))
            scores = np.pad(scores, ((0, 0), (0, pad)), constant_values=-np.inf)
        return scores, ids

    def _stored(self) -> np.ndarray:
        """The flat index's vectors as a [n, d] view (re-read per call: ``add`` moves them)."""
        stored = faiss.rev_swig_ptr(self.index.get_xb(), self.num_items * self.dim)
        return stored.reshape(self.num_items, self.dim)

    def _faiss_top_k(self, q: np.ndarray, k: int, exclude: list[np.ndarray] | None
                     ) -> tuple[np.ndarray, np.ndarray]:
        """FAISS's search, over-fetched by the longest exclusion list, excluded ids dropped.
        On a GPU, rows that would over-fetch past its cap go to the host's copy."""
        extra = max((len(e) for e in exclude), default=0) if exclude else 0
        if self.host is not None and exclude and k + extra > GPU_MOST_K:
            return self._split_at_cap(q, k, exclude)
        scores, idx = self.index.search(q, min(k + extra, self.num_items))
        ids = np.where(idx >= 0, idx + 1, 0)
        if exclude:
            ids[_excluded(ids, exclude, self.num_items + 1)] = 0
        scores = np.where(ids > 0, scores, -np.inf)
        order = np.argsort(-scores, axis=1, kind="stable")[:, :k]
        return np.take_along_axis(scores, order, axis=1), np.take_along_axis(ids, order, axis=1)

    def _split_at_cap(self, q: np.ndarray, k: int, exclude: list[np.ndarray]
                      ) -> tuple[np.ndarray, np.ndarray]:
        """``_faiss_top_k`` for a batch with some exclusion lists past the GPU's cap:
        those rows exact, over the host's vectors; the rest on the GPU. Only distinct ids
        of the index count towards a row's over-fetch."""
        inside = [np.unique(e[(e >= 1) & (e <= self.num_items)]) for e in exclude]
        long = np.array([k + len(e) > GPU_MOST_K for e in inside])
        k = min(k, self.num_items)
        scores = np.full((len(q), k), -np.inf, dtype=np.float32)
        ids = np.zeros((len(q), k), dtype=np.int64)
        for rows, search in ((long, lambda *a: _numpy_top_k(self.host, *a)),
                             (~long, self._faiss_top_k)):
            if rows.any():
                got_scores, got_ids = search(q[rows], k, [inside[i] for i in np.flatnonzero(rows)])
                width = got_ids.shape[1]
                scores[rows, :width], ids[rows, :width] = got_scores, got_ids
        return scores, ids


# Queries scored per NumPy product: a [32, 15,000] block of scores (1.9 MB) stays in
# cache for the selection; a micro-batch's [256, 10,000] did not (0.55x -> 0.90x FAISS's).
_QUERY_CHUNK = 32


def _numpy_top_k(vectors: np.ndarray, q: np.ndarray, k: int,
                 exclude: list[np.ndarray] | None) -> tuple[np.ndarray, np.ndarray]:
    """Exact top-k by inner product, excluded ids scored -inf; ids are rows + 1."""
    parts = [_numpy_chunk(vectors, q[i:i + _QUERY_CHUNK], k,
                          exclude[i:i + _QUERY_CHUNK] if exclude else None)
             for i in range(0, max(len(q), 1), _QUERY_CHUNK)]
    return np.vstack([s for s, _ in parts]), np.vstack([i for _, i in parts])


def _numpy_chunk(vectors: np.ndarray, q: np.ndarray, k: int,
                 exclude: list[np.ndarray] | None) -> tuple[np.ndarray, np.ndarray]:
    """One chunk of ``_numpy_top_k``; exclusions outside the index are ignored, as FAISS's
    search never returns them."""
    scores = q @ vectors.T
    n = scores.shape[1]
    if exclude:
        rows = np.repeat(np.arange(len(q)), [len(e) for e in exclude])
        cols = np.concatenate([np.asarray(e, np.int64) for e in exclude]) - 1
        inside = (cols >= 0) & (cols < n)
        scores[rows[inside], cols[inside]] = -np.inf
    k = min(k, n)
    top = np.argpartition(scores, n - k, axis=1)[:, n - k:]
    top_scores = np.take_along_axis(scores, top, axis=1)
    order = np.argsort(-top_scores, axis=1, kind="stable")
    top_scores = np.take_along_axis(top_scores, order, axis=1)
    ids = np.where(top_scores > -np.inf, np.take_along_axis(top, order, axis=1) + 1, 0)
    return np.where(ids > 0, top_scores, -np.inf), ids  # a NaN score too: an empty slot


def _excluded(ids: np.ndarray, exclude: list[np.ndarray], stride: int) -> np.ndarray:
    """Mask of ``ids[row, j] in exclude[row]``, for all rows in one ``isin``: each row's ids
    are offset by ``row * stride`` so rows cannot match each other (a per-row loop cost
    more than the search itself: docs/BENCHMARKS.md, "Streaming worker")."""
    offsets = np.arange(len(ids), dtype=np.int64) * stride
    rows = [np.asarray(e, np.int64) for e in exclude]
    # An id outside 1..stride-1 would land in the next row's range: dropped.
    banned = np.concatenate([e[(e >= 1) & (e < stride)] + o for e, o in zip(rows, offsets)])
    return np.isin(ids + offsets[:, None], banned)


def gpu_count() -> int:
    get = getattr(faiss, "get_num_gpus", None)
    return int(get()) if get is not None else 0


# Batched queries run through BLAS only above this many query-dims; the default (20)
# leaves micro-batches on the slow path (about 3x slower per query at batch 256: STACK.md).
faiss.cvar.distance_compute_blas_threshold = 16
