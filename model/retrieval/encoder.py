"""SASRec inference in plain NumPy over exported weights, for the stream workers.

A Keras call costs tens of milliseconds of fixed overhead; workers encode micro-batches
of sessions with this instead. ``export_sasrec`` copies the weights out of a trained
model once; ``NumpySASRec.encode`` gives the same session embeddings as
``SASRec.encode`` (a test holds them to 1e-5).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import keras
import numpy as np

from model.content import NumpyContent
from model.retrieval.sasrec import SASRec
from model.weights import layer_arrays

_NEG = np.float32(-1e9)


@dataclass(frozen=True)
class _Block:
    norm1: tuple[np.ndarray, np.ndarray]
    wq: np.ndarray   # [d, heads, k]
    bq: np.ndarray   # [heads, k]
    wk: np.ndarray
    bk: np.ndarray
    wv: np.ndarray
    bv: np.ndarray
    wo: np.ndarray   # [heads, k, d]
    bo: np.ndarray   # [d]
    norm2: tuple[np.ndarray, np.ndarray]
    w1: np.ndarray
    b1: np.ndarray
    w2: np.ndarray
    b2: np.ndarray


@dataclass(frozen=True)
class NumpySASRec:
    items: np.ndarray      # [num_items + 1, d], row 0 = padding
    positions: np.ndarray  # [max_len, d]
    blocks: tuple[_Block, ...]
    final_norm: tuple[np.ndarray, np.ndarray]
    types: np.ndarray | None = None  # [num_types, d] event-type embeddings, if trained with
    # With a catalogue: ``items`` already holds id + content; ``content`` embeds an item
    # the model never trained on, ``id_vectors`` [num_items + 1, d] re-embeds a known
    # item whose record changed (its id part plus its new content).
    content: NumpyContent | None = None
    id_vectors: np.ndarray | None = None
    # [num_items + 1] rows that training never met (``SASRec.unmet_items``; ``map`` mode
    # placed those with content by it): a record moves them as it moves a new item.
    unmet: np.ndarray | None = None

    @property
    def max_len(self) -> int:
        return len(self.positions)

    @property
    def num_types(self) -> int:
        """Event-type codes this encoder tells apart (1: it ignores types)."""
        return len(self.types) if self.types is not None else 1

    def encode(self, seq: np.ndarray, types: np.ndarray | None = None) -> np.ndarray:
        """[batch, max_len] left-padded item ids (and their type codes) -> [batch, d]
        session embeddings."""
        return self.forward(seq, types)[0]

    def forward(self, seq: np.ndarray, types: np.ndarray | None = None
                ) -> tuple[np.ndarray, list[tuple[np.ndarray, np.ndarray]]]:
        """Embeddings and, per block, the attention keys and values [batch, len, heads, k]
        (what the incremental encoder caches)."""
        x, mask, allowed = self._inputs(seq, types)
        cache: list[tuple[np.ndarray, np.ndarray]] = []
        for b in self.blocks:
            x = _block(b, x, mask, allowed, cache)
        out = _layer_norm(x[:, -1, :], *self.final_norm) * mask[:, -1, :]
        return out.astype(np.float32), cache

    def keys_values(self, seq: np.ndarray, types: np.ndarray | None = None
                    ) -> list[tuple[np.ndarray, np.ndarray]]:
        """``forward``'s keys and values without the last block's attention and
        feed-forward, which nothing here reads (a cache's next step computes its own
        output): about 40% of the work of filling or rolling a cache."""
        x, mask, allowed = self._inputs(seq, types)
        cache: list[tuple[np.ndarray, np.ndarray]] = []
        for b in self.blocks[:-1]:
            x = _block(b, x, mask, allowed, cache)
        cache.append(_keys_values(x, self.blocks[-1]))
        return cache

    def _inputs(self, seq: np.ndarray, types: np.ndarray | None
                ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """The first block's input, the mask of real positions and the causal mask."""
        valid = (seq != 0).astype(np.float32)
        mask = valid[..., None]
        positions = np.maximum(np.cumsum(valid, axis=1) - 1, 0).astype(np.int64)
        d = self.items.shape[1]
        x = self.items[seq] * np.float32(np.sqrt(d)) + self.positions[positions]
        if self.types is not None:
            x = x + self.types[np.zeros_like(seq) if types is None else types]
        length = seq.shape[1]
        allowed = np.tril(np.ones((length, length), dtype=bool))[None] & (valid[:, None, :] > 0)
        return x * mask, mask, allowed


def _block(b: _Block, x: np.ndarray, mask: np.ndarray, allowed: np.ndarray,
           cache: list[tuple[np.ndarray, np.ndarray]]) -> np.ndarray:
    """One self-attention block over [batch, len, d]; appends its keys and values."""
    q = _layer_norm(x, *b.norm1)
    attended, keys, values = _attention(q, x, b, allowed)
    cache.append((keys, values))
    x = q + attended
    h = _layer_norm(x, *b.norm2)
    return (h + np.maximum(h @ b.w1 + b.b1, 0) @ b.w2 + b.b2) * mask


def _layer_norm(x: np.ndarray, gamma: np.ndarray, beta: np.ndarray) -> np.ndarray:
    """Keras's LayerNormalization (epsilon 1e-8). Sums by ``np.add.reduce`` and a squared
    product rather than ``mean`` and ``** 2``: ~30% less per call, and every forward, step
    and append makes five calls (4.5% of a full worker's samples on ml-latest-small)."""
    d = np.float32(x.shape[-1])
    centred = x - np.add.reduce(x, axis=-1, keepdims=True) / d
    var = np.add.reduce(centred * centred, axis=-1, keepdims=True) / d
    return centred / np.sqrt(var + np.float32(1e-8)) * gamma + beta


def _softmax(scores: np.ndarray, allowed: np.ndarray) -> np.ndarray:
    """Softmax over the last axis, over the positions ``allowed`` only."""
    scores = np.where(allowed, scores, _NEG)
    scores = np.exp(scores - scores.max(axis=-1, keepdims=True))
    return scores / scores.sum(axis=-1, keepdims=True)


def _project(x: np.ndarray, w: np.ndarray, bias: np.ndarray) -> np.ndarray:
    """[batch, len, d] -> [batch, len, heads, k]."""
    batch, length, d = x.shape
    heads, k = bias.shape
    out = x.reshape(-1, d) @ w.reshape(d, heads * k) + bias.reshape(-1)
    return out.reshape(batch, length, heads, k)


def _keys_values(kv: np.ndarray, b: _Block) -> tuple[np.ndarray, np.ndarray]:
    """A block's keys and values for its input ``kv``, [batch, len, heads, k]."""
    return _project(kv, b.wk, b.bk), _project(kv, b.wv, b.bv)


def _attention(q: np.ndarray, kv: np.ndarray, b: _Block,
               allowed: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Multi-head attention as plain matmuls (einsum over 4-D arrays misses BLAS here);
    returns the output and the keys and values [batch, len, heads, k]."""
    batch, length, d = q.shape
    heads, k = b.bq.shape
    keys, values = _keys_values(kv, b)                           # [batch, len, heads, k]
    query = _project(q, b.wq, b.bq).transpose(0, 2, 1, 3)         # [batch, heads, len, k]
    weights = _softmax(query @ keys.transpose(0, 2, 3, 1) / np.float32(np.sqrt(k)),
                       allowed[:, None])
    context = (weights @ values.transpose(0, 2, 1, 3)).transpose(0, 2, 1, 3)
    context = context.reshape(-1, heads * k)
    out = (context @ b.wo.reshape(heads * k, d) + b.bo).reshape(batch, length, d)
    return out, keys, values


def _padded(chunks: list[list[int]], width: int) -> np.ndarray:
    """Token lists as one [len(chunks), width] array, zero-padded on the right."""
    if all(len(chunk) == width for chunk in chunks):  # one event each (``step``): no loop
        return np.array(chunks, np.int64)
    tokens = np.zeros((len(chunks), width), np.int64)
    for i, chunk in enumerate(chunks):
        tokens[i, :len(chunk)] = chunk
    return tokens


def export_sasrec(model: SASRec) -> NumpySASRec:
    """Copy a trained model's weights into arrays (float32)."""
    enc = model.encoder

    blocks = []
    for i in range(enc.blocks):
        wq, bq, wk, bk, wv, bv, wo, bo = layer_arrays(enc.attn[i])
        w1, b1 = layer_arrays(enc.ffn_in[i])
        w2, b2 = layer_arrays(enc.ffn_out[i])
        blocks.append(_Block(tuple(layer_arrays(enc.attn_norm[i])), wq, bq, wk, bk, wv, bv, wo, bo,
                             tuple(layer_arrays(enc.ffn_norm[i])), w1, b1, w2, b2))
    types = layer_arrays(enc.type_embedding)[0] if enc.num_types else None
    ids = layer_arrays(enc.item_embedding)[0]
    content = None
    if enc.content_spec is not None:
        numeric = (layer_arrays(enc.content_encoder.numeric_map)[0]
                   if enc.content_encoder.num_numeric else np.zeros((0, enc.dim), np.float32))
        content = NumpyContent(enc.content_spec,
                               layer_arrays(enc.content_encoder.token_embedding)[0], numeric)
    items = np.asarray(keras.ops.convert_to_numpy(model.item_embeddings()), np.float32)
    unmet = None
    if content is not None and model.unmet_items:
        unmet = np.zeros(len(items), bool)
        unmet[list(model.unmet_items)] = True
    return NumpySASRec(items, layer_arrays(enc.pos_embedding)[0],
                       tuple(blocks), tuple(layer_arrays(enc.final_norm)),  # type: ignore[arg-type]
                       types, content, ids if content is not None else None, unmet)


@dataclass
class SessionCache:
    """Per-session encoder state: the tokens in the window (``IncrementalEncoder.token``:
    item and event type in one int) and, per block, their keys and values; the first
    len(items) rows are live. Capacity grows by doubling up to the window
    (most sessions are short: a full window per user cost ~51 KB, 1 GB per 20k users)."""

    items: list[int]
    keys: np.ndarray    # [blocks, capacity, heads, k]
    values: np.ndarray
    # The embedding of ``items`` from the last step (None before one), and that step's
    # last-block attention over them when it was asked for: what an event that adds no
    # item the model knows is answered with, without encoding anything.
    output: np.ndarray | None = None
    attention: np.ndarray | None = None
    # Whether older items of the session were left out: the window rolled, or the cache
    # was filled from the session's newest items. A cache shorter than its session that
    # never left any out holds another session (``ServingBundle._continues``).
    trimmed: bool = False

    @property
    def nbytes(self) -> int:
        """The memory its arrays hold (what a byte budget on the caches counts)."""
        return self.keys.nbytes + self.values.nbytes

    def reserve(self, rows: int, window: int) -> None:
        """Make room for ``rows`` live rows (at most ``window``)."""
        capacity = self.keys.shape[1]
        if rows <= capacity:
            return
        grown = min(max(2 * capacity, rows), window)
        self.keys, self.values = _grown(self.keys, grown), _grown(self.values, grown)


def _grown(rows: np.ndarray, capacity: int) -> np.ndarray:
    """``rows`` [blocks, n, heads, k] copied into zeros of ``capacity`` rows: what
    ``np.pad`` does, at 1.7 instead of 37 µs a call (most sessions grow a cache once or
    twice, and at 10 events a session that cost 10 µs per event, a quarter of encoding)."""
    out = np.zeros((rows.shape[0], capacity, *rows.shape[2:]), rows.dtype)
    out[:, :rows.shape[1]] = rows
    return out


class IncrementalEncoder:
    """Encodes the newest event of many sessions at once, reusing cached keys and values.

    Attention is causal, so a new item needs only its own query/key/value per block and
    attention over what the session cached. When the window (``max_len``) is full the
    session rolls: the cache is rebuilt from its newest ``max_len // 2`` items, once per
    ``max_len // 2`` events (every cache that rolls in a step in one forward). ``step``
    returns exactly what ``NumpySASRec.encode`` returns for the items in each cache (tested).
    ``extend_all`` appends several events per session, for bursts; both run ``_advance``,
    one padded forward over every session's new tokens.
    """

    def __init__(self, model: NumpySASRec) -> None:
        self.m = model
        self.d = model.items.shape[1]
        self.heads, self.k = model.blocks[0].bq.shape
        self.blocks = len(model.blocks)

    def _project(self, x: np.ndarray, w: np.ndarray, b: np.ndarray) -> np.ndarray:
        return (x @ w.reshape(self.d, -1) + b.reshape(-1)).reshape(len(x), self.heads, self.k)

    def _embed(self, tokens: np.ndarray, positions: np.ndarray) -> np.ndarray:
        """The first block's input for ``tokens`` at ``positions``: item, position and
        event type."""
        m = self.m
        x = m.items[tokens // m.num_types] * np.float32(np.sqrt(self.d)) + m.positions[positions]
        return x + m.types[tokens % m.num_types] if m.types is not None else x

    def _block_out(self, b: _Block, q: np.ndarray, context: np.ndarray) -> np.ndarray:
        """A block's output from its normalised input and attention context: the output
        projection, the residual and the feed-forward layer."""
        x = q + context @ b.wo.reshape(-1, self.d) + b.bo
        h = _layer_norm(x, *b.norm2)
        return h + np.maximum(h @ b.w1 + b.b1, 0) @ b.w2 + b.b2

    def token(self, item: Any, event_type: Any = 0) -> Any:
        """One int per (item, type) pair (ints or arrays of them): what caches hold and
        ``step`` takes, so a cache matches a session only if the types match too. A type
        code this model was not trained with (a ranker from another run may declare more
        types) counts as unknown (0): added as is, it would read as the next item."""
        n = self.m.num_types
        known = (np.where(event_type < n, event_type, 0) if isinstance(event_type, np.ndarray)
                 else event_type if event_type < n else 0)
        return item * n + known

    def prefill(self, items: list[int]) -> SessionCache:
        """A cache holding ``items`` (tokens, oldest first; at most max_len kept)."""
        return self._fill([list(items[-self.m.max_len:])])[0]

    def _fill(self, windows: list[list[int]]) -> list[SessionCache]:
        """Caches holding ``windows`` (token lists of one length), from one forward."""
        n = len(windows[0])
        shape = (self.blocks, min(max(8, 2 * n), self.m.max_len), self.heads, self.k)
        caches = [SessionCache(w, np.zeros(shape, np.float32), np.zeros(shape, np.float32))
                  for w in windows]
        if n:
            tokens = np.asarray(windows)
            kv = self.m.keys_values(tokens // self.m.num_types, tokens % self.m.num_types)
            for bi, (keys, values) in enumerate(kv):
                for i, cache in enumerate(caches):
                    cache.keys[bi, :n] = keys[i]
                    cache.values[bi, :n] = values[i]
        return caches

    def extend_all(self, caches: list[SessionCache], items: list[list[int]],
                   explain: list[list[tuple[list[int], np.ndarray]]] | None = None
                   ) -> list[np.ndarray]:
        """Append several tokens to each of several sessions; returns per session
        [len(items[i]), d], row j what ``step`` returns for ``items[i][j]`` after
        ``items[i][:j]`` (tested equal), rolling windows as ``step`` does. For users with
        several events in one micro-batch (real logs: ~155 one-row steps per micro-batch of
        256 on ml-latest-small): one forward per round of window rolls for all of them.
        ``explain[i]`` receives per token the cache tokens it attended to and the last
        block's weights over them (mean over heads)."""
        out: list[list[np.ndarray]] = [[] for _ in caches]
        done = [0] * len(caches)
        while active := [i for i in range(len(caches)) if done[i] < len(items[i])]:
            self._roll([caches[i] for i in active])
            chunks = [items[i][done[i]:done[i] + self.m.max_len - len(caches[i].items)]
                      for i in active]
            windows = ([caches[i].items + chunk for i, chunk in zip(active, chunks)]
                       if explain is not None else [])
            emb, weights = self._advance([caches[i] for i in active], chunks, explain is not None)
            for row, (i, chunk) in enumerate(zip(active, chunks)):
                out[i].append(emb[row, :len(chunk)])
                if explain is not None and weights is not None:
                    start = len(windows[row]) - len(chunk)
                    explain[i].extend((windows[row][:start + j + 1], weights[row, j, :start + j + 1])
                                      for j in range(len(chunk)))
                done[i] += len(chunk)
        return [np.concatenate(o) if o else np.zeros((0, self.d), np.float32) for o in out]

    def _roll(self, caches: list[SessionCache]) -> None:
        """Rebuild each full window among ``caches`` from its newest half (once per
        ``max_len // 2`` events), all in one forward: they keep the same number of items.
        In a micro-batch of long sessions about one in ``max_len // 2`` rolls, and one
        forward of several costs little more than one of one."""
        full = [cache for cache in caches if len(cache.items) >= self.m.max_len]
        if full:
            half = self.m.max_len // 2
            for cache, fresh in zip(full, self._fill([c.items[-half:] for c in full])):
                cache.items, cache.keys, cache.values = fresh.items, fresh.keys, fresh.values
                cache.trimmed = True

    def step(self, caches: list[SessionCache], items: np.ndarray,
             explain: list[np.ndarray] | None = None) -> np.ndarray:
        """Append token ``items[i]`` to ``caches[i]`` (in place); returns [batch, d]
        embeddings. ``explain``, when given, receives per row the last block's attention
        of the newest position over the cache's items and itself (mean over heads)."""
        self._roll(caches)  # full windows keep their newest half
        out, weights = self._advance(caches, [[t] for t in np.asarray(items).tolist()],
                                     explain is not None)
        if explain is not None and weights is not None:
            explain.extend(c.attention for c in caches)
        return out[:, 0]

    def _advance(self, caches: list[SessionCache], chunks: list[list[int]], explain: bool
                 ) -> tuple[np.ndarray, np.ndarray | None]:
        """Append ``chunks[i]`` (tokens that fit in the window) to ``caches[i]``, in one
        causal forward over all of them padded to the longest chunk, attending to the
        cached keys and values. Returns the embeddings [U, N, d] and, when ``explain``, the
        last block's attention (mean over heads) [U, N, T]; rows past a chunk are padding."""
        m, rows = self.m, np.arange(len(caches))
        starts = [len(c.items) for c in caches]
        width = max(len(chunk) for chunk in chunks)
        at = np.array(starts)[:, None] + np.arange(width)[None, :]    # [U, N] positions
        longest = max(starts) + width
        keys, values = self._gather(caches, longest)                 # [U, blocks, T, h, k]
        allowed = (np.arange(longest)[None, None, :] <= at[:, :, None])[:, None]  # [U,1,N,T]
        # Rows stay 2-D, [U * N, d]: a 3-D array times a matrix is U small products.
        x = self._embed(_padded(chunks, width), np.minimum(at, m.max_len - 1)).reshape(-1, self.d)
        shape = (len(caches), width, self.heads, self.k)
        weights = None
        for bi, b in enumerate(m.blocks):
            q = _layer_norm(x, *b.norm1)
            query = self._project(q, b.wq, b.bq).reshape(shape).transpose(0, 2, 1, 3)  # U,h,N,k
            keys[rows[:, None], bi, at] = self._project(x, b.wk, b.bk).reshape(shape)
            values[rows[:, None], bi, at] = self._project(x, b.wv, b.bv).reshape(shape)
            # Batched matmuls reach BLAS, einsum here does not: half the time at a full
            # window (~100 vs ~45 µs per block for 64 sessions of 50 items).
            scores = query @ keys[:, bi].transpose(0, 2, 3, 1)               # [U, h, N, T]
            attention = _softmax(scores / np.float32(np.sqrt(self.k)), allowed)
            context = (attention @ values[:, bi].transpose(0, 2, 1, 3)).transpose(0, 2, 1, 3)
            if explain and bi == self.blocks - 1:
                weights = attention.mean(axis=1)
            x = self._block_out(b, q, context.reshape(len(x), -1))
        out = _layer_norm(x, *m.final_norm).astype(np.float32).reshape(len(caches), width, -1)
        for i, (c, chunk, start) in enumerate(zip(caches, chunks, starts)):
            end = start + len(chunk)
            c.reserve(end, m.max_len)
            c.keys[:, start:end] = keys[i, :, start:end]
            c.values[:, start:end] = values[i, :, start:end]
            c.items.extend(map(int, chunk))
            # Copies: views kept the whole micro-batch's arrays alive as long as any one
            # cache of it lived, memory the cache budget (``nbytes``) never counted.
            c.output = out[i, len(chunk) - 1].copy()
            c.attention = (weights[i, len(chunk) - 1, :end].copy() if weights is not None
                           else None)
        return out, weights

    def _gather(self, caches: list[SessionCache], longest: int) -> tuple[np.ndarray, np.ndarray]:
        """The caches' live keys and values, zero-padded to ``longest`` positions:
        [U, blocks, longest, heads, k] each."""
        keys = np.zeros((len(caches), self.blocks, longest, self.heads, self.k), np.float32)
        values = np.zeros_like(keys)
        for i, c in enumerate(caches):
            live = len(c.items)
            keys[i, :, :live] = c.keys[:, :live]
            values[i, :, :live] = c.values[:, :live]
        return keys, values
