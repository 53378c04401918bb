"""The retrieve-then-rerank pipeline, in its two forms side by side: a change to one
belongs next to the other.

- ``PipelineScorer`` (Keras): the retriever (SASRec) embeds the session, FAISS returns
  ``candidates`` items, the ranker (NeuMF) reorders them. The offline protocols, the
  ranker's early stopping and the trainer's gate score this.
- ``ServingBundle`` (NumPy): the same computation over exported weights, for the stream
  workers: encoder (``model.retrieval.encoder``, incremental per user), item index,
  ranker (``model.ranking.scorer``) and the id maps behind one call per micro-batch,
  ``recommend(users, sessions, k)``. No Keras call on this path. Sessions arrive as
  ``LiveSession`` records (external item ids with their event types and times, and the
  newest event's context); items the model has never seen are skipped, and a session
  with none it knows gets ``None`` (the caller serves popularity). Each piece is tested
  equal to its Keras model.

Both combine the ranker's task heads into one score with ``head_weights`` (settings), and
the serving form returns each item's per-head scores and, per list, the session items
that drove it (the encoder's last attention block, newest position).

A bundle whose retriever was trained with a catalogue also takes items while it serves
(``add_items``): a new item is embedded from its content alone and joins the index at
once, so the model path can recommend it with no retrain; a changed record re-embeds
its item. Each list says per item which ``path`` served it: ``model`` (an item the
models trained on) or ``content`` (known by its content alone).
"""

from __future__ import annotations

import copy
import time
from collections import OrderedDict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from itertools import chain, repeat
from math import isfinite, nan

import keras
import numpy as np

from model.content import ItemContent
from model.data import IdMap, Side
from model.features import FeatureSpec, LiveSession
from model.fitting import predict_rows
from model.ranking.inputs import RECENT_ITEMS, Candidates, candidate_lists, served_scores
from model.ranking.neumf import NeuMF, head_vector
from model.ranking.scorer import NumpyNeuMF, export_neumf
from model.retrieval.encoder import IncrementalEncoder, NumpySASRec, SessionCache, export_sasrec
from model.retrieval.index import IndexConfig, ItemIndex
from model.retrieval.sasrec import SASRec
from model.retrieval.training import SASRecScorer


def excludes_seen(ranker: NeuMF | NumpyNeuMF | None, choice: bool | None) -> bool:
    """Whether a model's live lists leave the user's own items out: ``choice`` when the
    operator made one (``STREAMREC_RECS_EXCLUDE_SEEN`` true or false), else what its ranker
    chose on validation (``NeuMF.recommends_seen``, under ``auto``). A retriever alone
    always leaves them out, whatever the choice: it has no seen-before features to place
    them by, and listed by their raw scores they took the top of every list."""
    if ranker is None:
        return True
    return choice if choice is not None else not ranker.recommends_seen


class PipelineScorer:
    """SASRec retrieves ``candidates`` items, NeuMF reorders them (``served_scores``: among
    unseen items, maybe in SASRec's order); the rest keep their SASRec order below.
    ``ServingBundle`` computes the same in NumPy for the workers.

    ``exclude_seen`` drops the user's history from the candidates (what a live feed
    wants). The offline protocol masks history itself but keeps a held-out item the user
    had seen before, so for evaluation the user's newest items join the candidates
    (``candidate_lists``), as they do in training.
    """

    name = "pipeline"

    def __init__(self, sasrec: SASRecScorer, index: ItemIndex, ranker: NeuMF,
                 candidates: int = 100, exclude_seen: bool = True,
                 head_weights: Mapping[str, float] | None = None) -> None:
        self.sasrec, self.index, self.ranker, self.candidates = sasrec, index, ranker, candidates
        self.exclude_seen = exclude_seen
        self.spec = FeatureSpec.from_dict(ranker.features or {})
        self.heads = head_vector(ranker.tasks, head_weights)
        self.table = keras.ops.convert_to_numpy(sasrec.model.item_embeddings())

    @classmethod
    def of(cls, sasrec: SASRec, ranker: NeuMF, candidates: int = 100,
           exclude_seen: bool = True, head_weights: Mapping[str, float] | None = None
           ) -> PipelineScorer:
        """From two trained models, e.g. a champion loaded from the registry."""
        index = ItemIndex.build(keras.ops.convert_to_numpy(sasrec.item_embeddings()))
        return cls(SASRecScorer(sasrec), index, ranker, candidates, exclude_seen, head_weights)

    def with_heads(self, head_weights: Mapping[str, float]) -> PipelineScorer:
        """The same pipeline serving another combination of the heads (one head alone, to
        evaluate it)."""
        return PipelineScorer(self.sasrec, self.index, self.ranker, self.candidates,
                              self.exclude_seen, head_weights)

    def excluding_seen(self, exclude: bool) -> PipelineScorer:
        """The same pipeline with (false) or without (true) the user's newest items among
        its candidates, as a live list has them by ``STREAMREC_RECS_EXCLUDE_SEEN``: a
        shallow copy, sharing the models, the index and the item table."""
        other = copy.copy(self)
        other.exclude_seen = exclude
        return other

    def head_logits(self, users: np.ndarray, sessions: np.ndarray,
                    histories: list[np.ndarray], side: Side | None = None
                    ) -> tuple[np.ndarray, Candidates]:
        """(each head's logit [batch, depth, tasks], the candidates with their features),
        in retrieval order."""
        scores, ids = candidate_lists(self.index, self.table, sessions, histories,
                                      self.candidates, 0 if self.exclude_seen else RECENT_ITEMS,
                                      self.ranker.seen_window)
        found = Candidates.build(self.spec, users, sessions, ids, scores, histories, side,
                                 seen_excluded=self.exclude_seen, window=self.ranker.seen_window)
        logits = predict_rows(self.ranker, found.flat(self.ranker))
        return logits.reshape(*ids.shape, -1), found

    def rerank(self, users: np.ndarray, sessions: np.ndarray, histories: list[np.ndarray],
               side: Side | None = None) -> tuple[np.ndarray, np.ndarray]:
        """(served scores, item ids), each [batch, depth], best first (``served_scores``)."""
        logits, found = self.head_logits(users, sessions, histories, side)
        ranked = served_scores(found, logits @ self.heads, self.ranker.retrieval_order)
        order = np.argsort(-ranked, axis=1, kind="stable")
        return np.take_along_axis(ranked, order, 1), np.take_along_axis(found.ids, order, 1)

    def score(self, users: np.ndarray, histories: list[np.ndarray],
              side: Side | None = None) -> np.ndarray:
        sessions = self.sasrec.embed(histories, side)
        full = sessions @ self.table.T
        ranked, ids = self.rerank(users, sessions, histories, side)
        # Candidates sit above every other item, in the served order (``rerank``).
        top = full.max(axis=1, keepdims=True) + 1.0
        rows = np.arange(len(users))[:, None]
        rank_bonus = np.linspace(1.0, 0.0, ids.shape[1])[None, :] * (ids > 0)
        full[rows, ids] = np.where(ids > 0, top + rank_bonus, full[rows, ids])
        return full


def limit_threads(threads: int) -> None:
    """Cap the compute threads of NumPy's BLAS and FAISS's OpenMP in this process.

    A worker serves micro-batches on one core; spare BLAS and OpenMP threads spin after
    each call and compete with the event loop and the broker (one thread each halved the
    model path's cost per event: docs/BENCHMARKS.md, "Streaming worker"). More throughput
    comes from more workers and partitions.
    """
    import faiss
    import threadpoolctl

    threadpoolctl.threadpool_limits(threads)
    faiss.omp_set_num_threads(threads)


# One row's explanation: the dense item ids a last-block attention covers, and its weights.
Attention = tuple[np.ndarray, np.ndarray]


@dataclass
class _Burst:
    """One user's run of events in a micro-batch to append to ``cache``: (row, token)
    pairs, None for an event that adds no item the model knows; ``rest``, the user's rows
    after the run; ``answer``, the cache's last answer when the run starts without a token."""

    cache: SessionCache
    steps: list[tuple[int, int | None]]
    rest: list[int]
    answer: tuple[np.ndarray, Attention] | None


@dataclass(frozen=True)
class Recommendation:
    """One list: items best first with their combined scores; ``heads`` per task, aligned
    with the items; ``because``: the session items that drove it, with their attention."""

    items: list[str]
    scores: list[float]
    heads: dict[str, list[float]] | None = None
    because: list[tuple[str, float]] | None = None
    paths: list[str] | None = None  # per item: "model" or "content" (``ServingBundle``)

    def finite(self) -> bool:
        """Every score and head score is a number: a NaN or infinite one would reach users
        as an arbitrary order (and JSON has no NaN), so such a list is never served."""
        heads = self.heads or {}
        return all(map(isfinite, self.scores)) and all(
            all(map(isfinite, h)) for h in heads.values())


# The answer for a session the model cannot read (a non-finite embedding): no items and a
# NaN score, so ``finite()`` is False wherever the list is checked.
UNREADABLE = Recommendation([], [nan])

CACHE_MB = 1024  # the per-user encoder caches' memory, by default


def _check_pair(ranker: NumpyNeuMF, users: IdMap, items: IdMap) -> None:
    """Refuse a ranker with fewer user or item rows than the retriever's id maps: it was
    trained on another log, and its lookups would fail or score other users' rows. A
    registry alias naming such a pair was served, every batch of an unseen user failing
    into popularity with a traceback (``make faults``, poisoned models)."""
    short = [f"{what}: {rows} rows for {need}" for what, rows, need in (
        ("users", ranker.num_users, len(users)), ("items", ranker.num_items, len(items)))
        if rows and rows < need]
    if short:
        raise ValueError(f"the ranker was not trained with the retriever's id maps "
                         f"({'; '.join(short)})")


class ServingBundle:
    """``cached_users`` and ``cache_mb`` bound the per-user encoder caches kept in memory
    (least recently used go first; a full window's cache is ~51 KB, so 100k long sessions
    would hold ~5 GB); a user without a usable cache is encoded from their session items.
    ``spec`` is the ranker's ``FeatureSpec`` (without a ranker, one naming the retriever's
    event types); ``explain`` how many session items each list names as its reasons (0:
    none)."""

    def __init__(self, encoder: NumpySASRec, index: ItemIndex, ranker: NumpyNeuMF | None,
                 users: IdMap, items: IdMap, version: str, candidates: int = 100,
                 cached_users: int = 100_000, spec: FeatureSpec | None = None,
                 head_weights: Mapping[str, float] | None = None, explain: int = 3,
                 cache_mb: float = CACHE_MB) -> None:
        if ranker is not None:
            _check_pair(ranker, users, items)
            ranker = ranker.within(len(users), len(items))
        if encoder.items.shape[0] != len(items) + 1:  # row 0 is padding
            raise ValueError(f"the retriever's item table has {encoder.items.shape[0]} rows "
                             f"for an id map of {len(items)} items (+1 for padding): "
                             "new items would read other items' rows")
        self.encoder, self.index, self.ranker = encoder, index, ranker
        self.users, self.items, self.version, self.candidates = users, items, version, candidates
        self.spec, self.explain = spec or FeatureSpec(), explain
        self.heads = head_vector(ranker.tasks, head_weights) if ranker is not None else None
        self.incremental = IncrementalEncoder(encoder)
        self.cached_users, self.cache_budget = cached_users, int(cache_mb * 2**20)
        self.caches: OrderedDict[str, SessionCache] = OrderedDict()
        self._cache_sizes: dict[str, int] = {}  # each cache's bytes when last put back
        self.cache_bytes = 0  # their sum
        self.trained_items = len(items)  # ids past this are known by content alone
        self._item_names = np.empty(0, dtype=object)

    def add_items(self, records: Sequence[ItemContent]) -> int:
        """Embed catalogue records into the encoder's table and the index, so the next
        lists can hold them: a new item, or one training never met, by its content alone;
        a trained one by its id vector (plus its new content, in the retriever's ``sum``
        mode; the last record of an id wins). Returns how many were
        embedded: none when the retriever was trained without a catalogue. Cached
        sessions keep the vectors they were encoded with until their window rolls."""
        content = self.encoder.content
        latest = {r.item_id: r for r in records}
        if content is None or not latest:
            return 0
        tokens, numeric = content.spec.arrays(list(latest.values()))
        dense = np.array([self.items.get(i) for i in latest], np.int64)
        trained = self._learned(dense)
        # A record with nothing the model reads (an image alone, a title of punctuation):
        # as training does (``content.described``), it places no item, which would sit in
        # the index as the zero vector; a learnt item keeps its id vector all the same.
        kept = (tokens != 0).any(axis=1) | (numeric != 0).any(axis=1) | trained
        if not kept.all():
            latest = {i: r for (i, r), k in zip(latest.items(), kept, strict=True) if k}
            tokens, numeric, dense, trained = (a[kept] for a in (tokens, numeric, dense,
                                                                 trained))
            if not latest:
                return 0
        vectors = content.embed(tokens, numeric)
        if self.encoder.id_vectors is not None:  # "map": a trained item keeps its id vector
            ids = self.encoder.id_vectors[dense[trained]]
            vectors[trained] = ids if content.spec.mode == "map" else vectors[trained] + ids
        known = dense > 0
        # Only rows whose vector moves touch the index: a worker re-reads the whole items
        # topic at start, mostly trained items whose id vectors stay, and an HNSW or GPU
        # index is rebuilt to change any row. Within float32 rounding is not a move:
        # NumPy's id + content (``sum`` mode) may round unlike Keras's table.
        moved = known.copy()
        moved[known] = ~np.isclose(self.encoder.items[dense[known]], vectors[known],
                                   rtol=1e-5, atol=1e-6).all(axis=1)
        dense[~known] = [self.items.add(i) for i, d in zip(latest, dense) if d == 0]
        if self.ranker is not None:
            self.ranker = self.ranker.with_items(list(latest.values()), dense)
        if moved.any() or not known.all():  # else no vector changes: no copy of the table
            table = np.concatenate([self.encoder.items, vectors[~known]])
            table[dense[moved]] = vectors[moved]
            self.encoder = replace(self.encoder, items=table)
            self.incremental = IncrementalEncoder(self.encoder)
        self._refile(dense[moved], vectors[moved])
        return len(latest)

    def _refile(self, moved: np.ndarray, vectors: np.ndarray) -> None:
        """The index brought level with the encoder's table: the ``moved`` ids' new
        ``vectors`` in place (or the whole index rebuilt, where its kind cannot), then
        every row past its end added, so rows an earlier call failed to add (the index
        raised after the id map took them) are added by the next."""
        table = self.encoder.items
        indexed = moved <= self.index.num_items  # the others are added from the table below
        if indexed.any() and not self.index.update(moved[indexed], vectors[indexed]):
            self.index = ItemIndex.build(table, self.index.cfg)
        elif len(table) - 1 > self.index.num_items:
            self.index.add(table[self.index.num_items + 1:])

    def _learned(self, dense: np.ndarray) -> np.ndarray:
        """Which dense ids the models learned from events: in the trained table and met
        in training (``map`` mode placed the others by their content, where they had
        any). The others follow their catalogue record and are served as ``content``."""
        learned = (dense > 0) & (dense <= self.trained_items)
        unmet = self.encoder.unmet
        if unmet is not None:
            learned[learned] = ~unmet[dense[learned]]
        return learned

    def adopt_caches(self, other: ServingBundle) -> int:
        """Take over ``other``'s per-user encoder caches; returns how many. For a bundle
        whose retriever is ``other``'s (the same registry version: the same weights and
        item ids), as after a swap that changed only the ranker: each cached session
        then stays incremental, where a new bundle would rebuild every user's cache on
        their next event. A retriever of another shape adopts nothing."""
        mine, theirs = self.encoder, other.encoder
        if (mine.max_len, mine.num_types, mine.items.shape[1]) != (
                theirs.max_len, theirs.num_types, theirs.items.shape[1]):
            return 0
        self.caches, self._cache_sizes = other.caches, other._cache_sizes
        self.cache_bytes = other.cache_bytes
        return len(self.caches)

    def similar(self, item_id: str, k: int = 10) -> Recommendation | None:
        """The ``k`` items nearest to ``item_id`` in the retriever's item space (None for
        an item it does not know): a new item's neighbours come from its content."""
        dense = self.items.get(item_id)
        if not dense:
            return None
        scores, ids = self.index.search(self.encoder.items[dense][None], k,
                                        exclude=[np.array([dense])])
        return self._lists(np.arange(ids.shape[1])[None], ids, scores, None, [None])[0]

    def _encode(self, users: list[str], tokens: list[np.ndarray], added: list[bool],
                explain: list[Attention]) -> np.ndarray:
        """Session embeddings, each user's cache extended by the newest token when it holds
        the rest of the session, else rebuilt; ``added[i]``: row i's event added an item
        the model knows (else its session is the one the cache answered last). Users with
        one event in the batch step together; users with several (bursts, common in real
        logs) have them appended together too (``IncrementalEncoder.extend_all``).
        ``explain`` receives each row's attention weights with the dense item ids they
        cover: the cache's window, which after a roll may differ from the session's newest
        items."""
        out = np.zeros((len(users), self.encoder.items.shape[1]), np.float32)
        weights: list[Attention] = [(np.zeros(0, np.int64), np.zeros(0))] * len(users)
        rows_of: dict[str, list[int]] = {}
        for row, user in enumerate(users):
            rows_of.setdefault(user, []).append(row)
        singles = [rows[0] for rows in rows_of.values() if len(rows) == 1]
        if singles:
            self._step(users, singles, tokens, added, out, weights)
        bursts = {user: rows for user, rows in rows_of.items() if len(rows) > 1}
        while bursts:
            bursts = self._bursts(bursts, tokens, added, out, weights)
        self._bound_caches(rows_of)
        explain.extend(weights)
        return out

    def _bound_caches(self, touched: Iterable[str]) -> None:
        """Count the bytes of the caches this batch used (grown, or rebuilt: the change
        from the size last counted for the user), then drop the least recently used until
        the caches fit ``cached_users`` and ``cache_mb``."""
        for user in touched:
            cache = self.caches.get(user)
            if cache is not None:
                size = cache.nbytes
                self.cache_bytes += size - self._cache_sizes.get(user, 0)
                self._cache_sizes[user] = size
        while self.caches and (len(self.caches) > self.cached_users
                               or self.cache_bytes > self.cache_budget):
            user, _ = self.caches.popitem(last=False)
            self.cache_bytes -= self._cache_sizes.pop(user, 0)

    def _open(self, user: str, hist: list[int], added: bool) -> tuple[SessionCache, int | None]:
        """``user``'s cache for a session whose tokens are ``hist``, moved to the most
        recently used end, and the token to append to it: the newest, to a cache that
        holds the rest of the session (rebuilt when it does not); or None when the event
        added no item the model knows (``added`` False) and the cache kept its answer for
        the session: nothing to encode. Told, not read from the tokens: a session ending
        in a run of one item (repeat views) also reads as continuing its cache, and an
        event on an unknown item then encoded the newest item once more."""
        cache = self.caches.pop(user, None)
        if cache is not None and not added and self._answered(cache, hist):
            self.caches[user] = cache
            return cache, None
        if cache is None or not self._continues(cache.items, hist[:-1], cache.trimmed):
            # The newest max_len - 1 items: the step then adds the newest without a roll,
            # so the window is the session's last max_len, as the Keras model reads it.
            # A full window here rolled at once to half of it (a session longer than the
            # window, STREAMREC_SESSION_MAX_ITEMS above it, met with no cache).
            window = hist[:-1][1 - self.encoder.max_len:]
            cache = self.incremental.prefill(window)
            cache.trimmed = len(window) < len(hist) - 1
        self.caches[user] = cache
        return cache, hist[-1]

    def _answered(self, cache: SessionCache, hist: list[int]) -> bool:
        """Whether ``cache`` holds all of ``hist`` and kept the answer it gave for it."""
        return (cache.output is not None and (cache.attention is not None or not self.explain)
                and self._continues(cache.items, hist, cache.trimmed))

    def _attention(self, window: list[int], weights: np.ndarray) -> Attention:
        """Attention ``weights`` over the newest tokens of ``window``, as dense item ids."""
        tokens = np.asarray(window[len(window) - len(weights):], np.int64)
        return tokens // self.encoder.num_types, weights

    def _last(self, cache: SessionCache) -> tuple[np.ndarray, Attention]:
        """The embedding and attention ``cache`` gave for its newest token."""
        weights = cache.attention if cache.attention is not None else np.zeros(0)
        return cache.output, self._attention(cache.items, weights)  # type: ignore[return-value]

    def _step(self, users: list[str], rows: list[int], tokens: list[np.ndarray],
              added: list[bool], out: np.ndarray, weights: list[Attention]) -> None:
        """One event each for distinct users, in one batched step."""
        stepped, caches, appended = [], [], []
        for row in rows:
            cache, token = self._open(users[row], tokens[row].tolist(), added[row])
            if token is None:
                out[row], weights[row] = self._last(cache)
            else:
                stepped.append(row)
                caches.append(cache)
                appended.append(token)
        if not stepped:
            return
        found: list[np.ndarray] = []
        out[stepped] = self.incremental.step(caches, np.array(appended),
                                             found if self.explain else None)
        for row, cache, w in zip(stepped, caches, found):
            weights[row] = self._attention(cache.items, w)

    def _bursts(self, bursts: dict[str, list[int]], tokens: list[np.ndarray],
                added: list[bool], out: np.ndarray, weights: list[Attention]
                ) -> dict[str, list[int]]:
        """Several events of each of several users, oldest first: each user's first run of
        events that continue the cache, all appended in one call. Returns the rows left
        per user (a later event whose session does not continue the cache: rare)."""
        plans = {user: self._plan(user, rows, tokens, added) for user, rows in bursts.items()}
        found: list[list[tuple[list[int], np.ndarray]]] = [[] for _ in plans]
        embedded = self.incremental.extend_all(
            [plan.cache for plan in plans.values()],
            [[t for _, t in plan.steps if t is not None] for plan in plans.values()],
            found if self.explain else None)
        for plan, emb, why in zip(plans.values(), embedded, found):
            last, done = plan.answer, 0
            for row, token in plan.steps:  # a row with no token: the answer before it
                if token is not None:
                    window, w = why[done] if why else ([], np.zeros(0))
                    last = emb[done], self._attention(window, w)
                    done += 1
                assert last is not None  # a plan starts with a token or a cached answer
                out[row], weights[row] = last
        return {user: plan.rest for user, plan in plans.items() if plan.rest}

    def _plan(self, user: str, rows: list[int], tokens: list[np.ndarray],
              added: list[bool]) -> _Burst:
        """The run of ``user``'s events from ``rows[0]`` whose sessions continue the cache
        as it stands after the one before (or add nothing the model knows)."""
        cache, token = self._open(user, tokens[rows[0]].tolist(), added[rows[0]])
        steps = [(rows[0], token)]
        held, trimmed = ((list(cache.items), cache.trimmed) if token is None
                         else self._after(cache.items, cache.trimmed, token))
        at = 1
        while at < len(rows):
            hist = tokens[rows[at]].tolist()
            if added[rows[at]] and self._continues(held, hist[:-1], trimmed):
                steps.append((rows[at], hist[-1]))
                held, trimmed = self._after(held, trimmed, hist[-1])
            elif not added[rows[at]] and self._continues(held, hist, trimmed):
                steps.append((rows[at], None))
            else:
                break
            at += 1
        return _Burst(cache, steps, rows[at:], self._last(cache) if token is None else None)

    def _after(self, items: list[int], trimmed: bool, token: int) -> tuple[list[int], bool]:
        """A cache's tokens after one more step (``IncrementalEncoder.step``'s roll), and
        whether it has left older items out (``SessionCache.trimmed``)."""
        window = self.encoder.max_len
        rolls = len(items) >= window
        return [*(items[-(window // 2):] if rolls else items), token], trimmed or rolls

    def _continues(self, cached: list[int], before: list[int], trimmed: bool) -> bool:
        """Whether a cache holding ``cached`` holds the session up to its newest event, so
        one step encodes it. Its newest items must be the session's. Once a session is full
        it slides by one item per event while the cache rolls by half its window
        (``IncrementalEncoder``), so a cache may also hold older items the session has
        dropped: allowed for a session at least half a window long, where a matching suffix
        is no coincidence (a new session never continues an old cache). Without this every
        event of a full session rebuilt its cache: 394 µs per event at 200 events instead
        of 31 at 10 (benchmarks.serving). A cache shorter than the session must have left
        older items out (``trimmed``: it rolled, or was filled from a long session's newest
        items) and hold over half a window; a shorter one ending the same way holds another
        session: the smoke test's one item, or this session before a late event placed
        ahead of all its items, which the answer would then leave out for good."""
        if not cached or not before:
            return False
        n = min(len(cached), len(before))
        if cached[-n:] != before[-n:]:
            return False
        half = self.encoder.max_len // 2
        if len(cached) < len(before):
            return trimmed and len(cached) > half
        return len(cached) == len(before) or len(before) >= half

    @classmethod
    def from_models(cls, sasrec: SASRec, ranker: NeuMF | None, users: IdMap, items: IdMap,
                    version: str, index_cfg: IndexConfig = IndexConfig(),
                    candidates: int = 100, head_weights: Mapping[str, float] | None = None,
                    cache_mb: float = CACHE_MB) -> ServingBundle:
        encoder = export_sasrec(sasrec)
        spec = (FeatureSpec.from_dict(ranker.features or {}) if ranker is not None
                else FeatureSpec(event_types=sasrec.event_types))
        return cls(encoder, ItemIndex.build(encoder.items, index_cfg),
                   export_neumf(ranker) if ranker is not None else None, users, items,
                   version, candidates, spec=spec, head_weights=head_weights,
                   cache_mb=cache_mb)

    def _histories(self, sessions: list[LiveSession]
                   ) -> tuple[list[int], list[np.ndarray], Side, list[bool]]:
        """(rows the model knows an item of, their dense histories, their ``Side``, whether
        each row's newest event is an item the model knows, i.e. added to its history): items
        it never saw leave the history together with their types and times, but the
        newest event's time, gap and type stay those of the event itself, as its context
        does (``Side.newest``): one real event, as in training. Runs per
        event over every item of every session, so each sequence is converted for the
        whole micro-batch in one pass; a session then costs a few slices, not a dozen
        NumPy calls of its own."""
        sizes = [len(s.items) for s in sessions]
        total = sum(sizes)
        ids = np.fromiter(map(self.items.index.get, chain.from_iterable(s.items for s in sessions),
                              repeat(0)), np.int64, total)
        # A types or times list of another length than the items (none, or a defect) is
        # read as unknown: in one pass it would shift every later session's.
        kinds = self.spec.type_codes(chain.from_iterable(
            s.types if len(s.types) == n else repeat(None, n)
            for s, n in zip(sessions, sizes)), total)
        stamps = np.fromiter(chain.from_iterable(
            s.times if len(s.times) == n else repeat(0, n)
            for s, n in zip(sessions, sizes)), np.int64, total)
        ends = np.cumsum(sizes).tolist()
        kept_before = np.concatenate([[0], np.cumsum(ids > 0)])[[0, *ends]].tolist()
        known, hist, types, times, numeric, cats, newest, added = [], [], [], [], [], [], [], []
        for r, (s, a, b) in enumerate(zip(sessions, [0, *ends], ends)):
            kept = kept_before[r + 1] - kept_before[r]
            if not kept:
                continue
            rows = slice(a, b) if kept == b - a else np.flatnonzero(ids[a:b]) + a
            known.append(r)
            added.append(bool(ids[b - 1]) and s.added)
            newest.append((stamps[b - 1], stamps[max(b - 2, a)], kinds[b - 1]))
            hist.append(ids[rows])
            types.append(kinds[rows])
            times.append(stamps[rows])
            numeric.append(self.spec.numeric_values(s.context))
            cats.append(self.spec.category_ids(s.context))
        # Widths spelled out: a micro-batch with no known item has no row to infer them from.
        side = Side(types, times, np.asarray(numeric, np.float64).reshape(
                        len(known), len(self.spec.numeric)),
                    np.asarray(cats, np.int64).reshape(len(known), len(self.spec.categorical)),
                    np.asarray(newest, np.int64).reshape(len(known), 3))
        return known, hist, side, added

    def recommend(self, users: Sequence[str], sessions: Sequence[LiveSession | Sequence[str]],
                  k: int = 10, exclude_seen: bool | None = True,
                  timings: dict[str, float] | None = None) -> list[Recommendation | None]:
        """Lists for a micro-batch (a plain item list is a session of unknown types and
        times); ``exclude_seen`` None: as the ranker chose (``NeuMF.recommends_seen``);
        ``timings``, when given, receives the seconds spent in each stage (session: the
        sessions as arrays; encode, retrieve, rank)."""
        exclude_seen = excludes_seen(self.ranker, exclude_seen)
        clock = _Stopwatch(timings)
        live = [s if isinstance(s, LiveSession) else LiveSession(tuple(s)) for s in sessions]
        known, hist, side, added = self._histories(live)
        clock.lap("session")
        out: list[Recommendation | None] = [None] * len(live)
        if not known:
            return out
        tokens = [self.incremental.token(h, t) for h, t in zip(hist, side.types)]
        attention: list[Attention] = []
        emb = self._encode([users[r] for r in known], tokens, added, attention)
        clock.lap("encode")
        # A list longer than the ranker's candidates asks retrieval for as many: it was
        # filled with popular items past them (STREAMREC_RECS_TOP_N above 100).
        depth, window = ((max(self.candidates, k), self.ranker.seen_window)
                         if self.ranker is not None else (k, 0))
        scores, ids = candidate_lists(self.index, self.encoder.items, emb, hist, depth,
                                      0 if exclude_seen else RECENT_ITEMS, window)
        clock.lap("retrieve")
        heads = None
        if self.ranker is not None and self.heads is not None:
            user_ids = np.array([self.users.get(users[r]) for r in known], dtype=np.int32)
            found = Candidates.build(self.spec, user_ids, emb, ids, scores, hist, side,
                                     seen_excluded=exclude_seen, window=window)
            # An item the ranker has no row for (its model reads no content) is unknown: 0.
            heads = self.ranker.score(user_ids, np.where(ids <= self.ranker.num_items, ids, 0),
                                      emb, found.scores, found.context, found.categories,
                                      found.pair)
            scores = served_scores(found, heads @ self.heads, self.ranker.retrieval_order)
        # A NaN score sorts first, not last: sorted last, a ranker scoring NaN served empty
        # lists (every top slot an empty one), and neither the swap's smoke test nor the
        # worker's check on each list saw a NaN (``make faults``, poisoned models).
        order = np.argsort(-np.where(np.isnan(scores), np.inf, scores), axis=1,
                           kind="stable")[:, :k]
        # A session embedding that is not finite (an item row gone bad) retrieves nothing,
        # and its empty list read as sound: said unreadable instead, so the worker counts it
        # and answers with popularity.
        broken = (~np.isfinite(emb).all(axis=1)).tolist()
        for r, bad, made in zip(known, broken, self._lists(order, ids, scores, heads,
                                                           self._reasons(attention))):
            out[r] = UNREADABLE if bad else made
        clock.lap("rank")
        return out

    def _reasons(self, attention: list[Attention]) -> list[list[tuple[str, float]] | None]:
        """Per row, the ``explain`` session items with the most attention, strongest
        first: each row's weights over the dense item ids they cover. One argsort for the
        whole batch; a row that holds an item at several positions (a view, then its cart
        add) names it once, with their sum (``_summed_reasons``), found by one sort of the
        batch's ids."""
        if not self.explain or not attention:
            return [None] * len(attention)
        width = max(len(w) for _, w in attention)
        padded = np.full((len(attention), max(width, 1)), -1.0, np.float32)
        ids = np.zeros(padded.shape, np.int64)
        for row, (window, weights) in enumerate(attention):
            padded[row, width - len(weights):] = weights
            ids[row, width - len(weights):] = window[:len(weights)]
        held = np.sort(ids, axis=1)
        repeats = ((held[:, 1:] == held[:, :-1]) & (held[:, 1:] > 0)).any(axis=1).tolist()
        best = np.argsort(-padded, axis=1, kind="stable")[:, :self.explain]
        names, out = self.items.ids, []
        for row, ((window, weights), picks) in enumerate(zip(attention, best.tolist())):
            if repeats[row]:
                out.append(self._summed_reasons(window.tolist(), weights))
                continue
            offset = width - len(weights)
            out.append([(names[window[i - offset] - 1], float(padded[row, i]))
                        for i in picks if i >= offset] or None)
        return out

    def _summed_reasons(self, window: list[int], weights: np.ndarray
                        ) -> list[tuple[str, float]] | None:
        """``_reasons`` for a window that holds an item more than once: each item once,
        with the attention of all its positions."""
        total: dict[int, float] = {}
        for item, weight in zip(window, weights.tolist()):
            total[item] = total.get(item, 0.0) + weight
        best = sorted(total.items(), key=lambda pair: -pair[1])[:self.explain]
        return [(self.items.ids[item - 1], weight) for item, weight in best] or None

    def _lists(self, order: np.ndarray, ids: np.ndarray, scores: np.ndarray,
               heads: np.ndarray | None, reasons: list[list[tuple[str, float]] | None]
               ) -> list[Recommendation]:
        """Each row's list in ``order`` (its top positions), empty slots (id 0) left out:
        items, scores, per-head scores, paths and the reasons. Gathered and converted for
        the whole batch at once: per-row NumPy calls cost more than the lists' numbers."""
        chosen = np.take_along_axis(ids, order, 1)
        every_name = self._names()
        names = (every_name[np.maximum(chosen - 1, 0)] if len(every_name) else
                 np.full(chosen.shape, "", object)).tolist()
        values = np.take_along_axis(scores, order, 1).tolist()
        paths = np.where(self._learned(chosen), "model", "content").tolist()
        tasks = self.ranker.tasks if self.ranker is not None else ()
        per_head: list = [None] * len(order)
        if heads is not None and len(tasks) > 1:
            picked = np.take_along_axis(heads, order[..., None], 1).transpose(0, 2, 1)
            per_head = [dict(zip(tasks, row)) for row in picked.tolist()]
        out = []
        for row, keep in enumerate((chosen > 0).tolist()):
            if all(keep):
                out.append(Recommendation(names[row], values[row], per_head[row], reasons[row],
                                          paths[row]))
                continue
            at = [i for i, kept in enumerate(keep) if kept]
            head_rows = per_head[row]
            out.append(Recommendation(
                [names[row][i] for i in at], [values[row][i] for i in at],
                {t: [v[i] for i in at] for t, v in head_rows.items()} if head_rows else None,
                reasons[row], [paths[row][i] for i in at]))
        return out

    def _names(self) -> np.ndarray:
        """The external item ids as an array (dense id - 1), rebuilt when items join."""
        if len(self._item_names) != len(self.items):
            self._item_names = np.asarray(self.items.ids, dtype=object)
        return self._item_names


class _Stopwatch:
    """Adds the seconds since the last lap to ``into[stage]``; does nothing without ``into``."""

    def __init__(self, into: dict[str, float] | None) -> None:
        self.into, self.last = into, time.perf_counter()

    def lap(self, stage: str) -> None:
        if self.into is not None:
            now = time.perf_counter()
            self.into[stage] = self.into.get(stage, 0.0) + now - self.last
            self.last = now
