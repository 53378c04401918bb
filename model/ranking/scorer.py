"""NeuMF reranking in plain NumPy over exported weights, for the stream workers.

A Keras call per micro-batch costs milliseconds of fixed overhead, and scoring
``batch x candidates`` pairs through the full network repeats per-user work per
candidate. Here what depends only on the user and session (their GMF and first MLP
layer terms) is computed once per row, what depends only on the item (its first MLP
layer term) once per model, and only the rest per candidate. ``NumpyNeuMF.score``
equals ``NeuMF.call`` (a test holds them to 1e-5).

A ranker trained with a catalogue folds each item's content into its first-layer term,
so content costs nothing per event; ``with_items`` adds the terms of items it meets in
the catalogue while serving (content alone) and re-folds items whose record changed.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace

import keras
import numpy as np

from model.content import ItemContent, NumpyContent
from model.ranking.neumf import CATEGORY_DIM, NeuMF
from model.weights import layer_arrays


@dataclass(frozen=True)
class NumpyNeuMF:
    gmf_user: np.ndarray | None      # [users + 1, g]
    gmf_item: np.ndarray | None      # [items + 1, g]
    mlp_user: np.ndarray | None      # [users + 1, h1]: user embedding @ its rows of layer 1
    mlp_item: np.ndarray | None      # [items + 1, h1]: item embedding @ its rows of layer 1
    mlp_session: np.ndarray | None   # [session_dim, h1]
    mlp_context: np.ndarray | None   # [context_dim, h1]
    mlp_categories: np.ndarray | None  # [keys * buckets, h1]: category table @ its rows
    mlp_pair: np.ndarray | None      # [pair_dim, h1]
    mlp_bias: np.ndarray | None      # [h1]
    mlp_rest: tuple[tuple[np.ndarray, np.ndarray], ...]  # layers after the first
    fuse_gmf: np.ndarray | None      # [g, tasks]
    fuse_mlp: np.ndarray | None      # [h_last, tasks]
    fuse_score: np.ndarray | None    # [tasks]
    fuse_pair: np.ndarray | None     # [pair_dim, tasks]: linear pair terms (wide, given)
    fuse_bias: np.ndarray            # [tasks]
    tasks: tuple[str, ...]
    buckets: int
    # With a catalogue: ``mlp_item`` already holds id + content; these make the term of
    # an item known by content alone, and re-fold a trained item's new content.
    item_content: NumpyContent | None = None
    item_kernel: np.ndarray | None = None  # [h1 / 2, h1]: the item part of layer 1
    item_ids: np.ndarray | None = None     # [items + 1, h1]: the id embeddings' terms
    fuse_context: np.ndarray | None = None  # [context_dim, tasks]: the conditional heads'
    seen_window: int = 0  # the newest items its seen-before features read (``NeuMF``)
    retrieval_order: bool = False  # unseen items keep the retriever's order (``NeuMF``)
    recommends_seen: bool = False  # live lists may hold the session's items (``NeuMF``)

    @property
    def num_users(self) -> int:
        """Users with a row (0: a ranker without user embeddings)."""
        table = self.mlp_user if self.mlp_user is not None else self.gmf_user
        return len(table) - 1 if table is not None else 0

    @property
    def num_items(self) -> int:
        """Items with a row (ids past it take row 0, the unknown item)."""
        table = self.mlp_item if self.mlp_item is not None else self.gmf_item
        return len(table) - 1 if table is not None else 0

    def within(self, users: int, items: int) -> NumpyNeuMF:
        """This ranker with no rows past ``users`` and ``items`` (its retriever's id maps):
        a ranker trained later than its retriever (an experiment's variant pinned by hand)
        has rows for ids the retriever gives new catalogue items, which they would read."""
        if self.num_users <= users and self.num_items <= items:
            return self

        def cut(table: np.ndarray | None, rows: int) -> np.ndarray | None:
            return None if table is None else table[:rows + 1]

        return replace(self, gmf_user=cut(self.gmf_user, users),
                       mlp_user=cut(self.mlp_user, users), gmf_item=cut(self.gmf_item, items),
                       mlp_item=cut(self.mlp_item, items), item_ids=cut(self.item_ids, items))

    def with_items(self, records: Sequence[ItemContent], dense: np.ndarray) -> NumpyNeuMF:
        """This ranker with rows for catalogue ``records`` at dense ids ``dense``: ids
        past its table (new items, in order) get their content's term alone (and a zero
        GMF row: no id), known ones id plus new content. Unchanged without a catalogue."""
        if self.item_content is None or self.item_kernel is None or self.mlp_item is None:
            return self
        terms = self.item_content.embed_items(records) @ self.item_kernel
        known = dense <= self.num_items
        if self.item_ids is not None:  # only trained items have an id term
            trained = dense < len(self.item_ids)
            terms[trained] += self.item_ids[dense[trained]]
        fresh = int((~known).sum())
        mlp = np.concatenate([self.mlp_item, terms[~known]])
        mlp[dense[known]] = terms[known]
        gmf = (np.concatenate([self.gmf_item, np.zeros((fresh, self.gmf_item.shape[1]),
                                                       np.float32)])
               if self.gmf_item is not None and fresh else self.gmf_item)  # no id: no change
        return replace(self, mlp_item=mlp, gmf_item=gmf)

    def score(self, users: np.ndarray, items: np.ndarray, session: np.ndarray | None = None,
              retrieval: np.ndarray | None = None, context: np.ndarray | None = None,
              categories: np.ndarray | None = None, pair: np.ndarray | None = None
              ) -> np.ndarray:
        """Logits [batch, candidates, tasks] for ``users`` [batch], candidate ``items``
        [batch, candidates], ``session`` [batch, d], ``retrieval`` scores
        [batch, candidates], the newest event's ``context`` [batch, context_dim] and
        ``categories`` [batch, keys], and ``pair`` features [batch, candidates, pair_dim]."""
        out: np.ndarray = self.fuse_bias  # broadcast up by the first term added
        if self.gmf_user is not None and self.gmf_item is not None:
            # sum_g u[g] i[g] w[g, t] as one batched matmul: items [b, c, g] @ (u * w) [b, g, t]
            user = self.gmf_user[users][:, :, None] * self.fuse_gmf
            out = out + self.gmf_item[items] @ user
        if self.mlp_user is not None and self.mlp_item is not None:
            row = self._row(users, session, context, categories)
            h = self.mlp_item[items]
            h += row[:, None, :]
            if self.mlp_pair is not None:
                h += pair[..., :len(self.mlp_pair)] @ self.mlp_pair  # older models: fewer
            h = np.maximum(h, 0, out=h).reshape(-1, row.shape[1])
            for kernel, bias in self.mlp_rest:
                h = h @ kernel
                h += bias
                np.maximum(h, 0, out=h)
            out = out + (h @ self.fuse_mlp).reshape(*items.shape, -1)
        if self.fuse_score is not None:
            out = out + retrieval[..., None] * self.fuse_score
        if self.fuse_pair is not None:
            out = out + pair[..., :len(self.fuse_pair)] @ self.fuse_pair
        if self.fuse_context is not None:
            out = out + (context @ self.fuse_context)[:, None, :]
        return np.broadcast_to(out, (*items.shape, len(self.tasks))).astype(np.float32)

    def _row(self, users: np.ndarray, session: np.ndarray | None, context: np.ndarray | None,
             categories: np.ndarray | None) -> np.ndarray:
        """What the first MLP layer gets from the row alone: computed once per session."""
        row = self.mlp_user[users] + self.mlp_bias
        if self.mlp_session is not None:
            row = row + session @ self.mlp_session
        if self.mlp_context is not None:
            row = row + context @ self.mlp_context
        if self.mlp_categories is not None:
            offsets = np.arange(categories.shape[1]) * self.buckets
            row = row + self.mlp_categories[categories + offsets].sum(axis=1)
        return row


def export_neumf(model: NeuMF) -> NumpyNeuMF:
    """Copy a trained model's weights out, folding what can be precomputed."""
    if model.branch in ("both", "mlp") and not model.mlp:
        raise ValueError("serving needs at least one hidden MLP layer. Received: "
                         f"mlp_layers={model.mlp_layers}")
    gmf_user = gmf_item = None
    first = _FirstLayer()
    rest: list[tuple[np.ndarray, np.ndarray]] = []
    if model.branch in ("both", "gmf"):
        gmf_user, gmf_item = layer_arrays(model.gmf_user)[0], layer_arrays(model.gmf_item)[0]
    if model.branch in ("both", "mlp"):
        first = _FirstLayer.of(model)
        rest = [(k, b) for k, b in (layer_arrays(layer) for layer in model.mlp[1:])]
    heads = _heads(model)
    score = heads["score"][0] if heads["score"] is not None else None
    return NumpyNeuMF(gmf_user, gmf_item, first.user, first.item, first.session, first.context,
                      first.categories, first.pair, first.bias, tuple(rest), heads["gmf"],
                      heads["mlp"], score, heads["pair"], heads["bias"], model.tasks,
                      max(model.buckets, 1), first.content, first.item_kernel,
                      first.item_ids, heads["context"], model.seen_window,
                      model.retrieval_order, model.recommends_seen)


def _heads(model: NeuMF) -> dict[str, np.ndarray | None]:
    """Every head's weights on each input, [rows, tasks] (``bias``: [tasks]); None for an
    input no head reads. Conditional heads sit beside the next head, with zeros where
    they read nothing (the GMF term) and it reads nothing (the context)."""
    kernel, bias = layer_arrays(model.out)
    heads = {**_rows_of(kernel, {
        "gmf": model.gmf_dim if model.branch in ("both", "gmf") else 0,
        "mlp": model.mlp_layers[-1] if model.branch in ("both", "mlp") else 0,
        "score": int(model.use_score), "pair": model.pair_dim if model.wide else 0,
        "context": 0}), "bias": bias}
    if not model.conditional:
        return heads
    kernel, bias = layer_arrays(model.given)
    given = {**_rows_of(kernel, {"gmf": 0, "mlp": model.mlp_layers[-1],
                                 "score": int(model.use_score), "pair": model.pair_dim,
                                 "context": model.context_dim}), "bias": bias}
    return {name: _beside(heads[name], given[name], len(bias)) for name in heads}


def _rows_of(kernel: np.ndarray, widths: dict[str, int]) -> dict[str, np.ndarray | None]:
    """``kernel``'s rows cut in order into the named inputs (None for a width of 0)."""
    out, at = {}, 0
    for name, width in widths.items():
        out[name] = kernel[at:at + width] if width else None
        at += width
    return out


def _beside(next_head: np.ndarray | None, given: np.ndarray | None, heads: int
            ) -> np.ndarray | None:
    """The next head's column and the ``heads`` conditional ones, zeros for a side that
    does not read the input."""
    if next_head is None and given is None:
        return None
    rows = (next_head if next_head is not None else given).shape[:-1]
    return np.concatenate([next_head if next_head is not None else np.zeros((*rows, 1)),
                           given if given is not None else np.zeros((*rows, heads))],
                          axis=-1).astype(np.float32)


@dataclass(frozen=True)
class _FirstLayer:
    """The first MLP layer's kernel split by input, each part folded with its table."""

    user: np.ndarray | None = None
    item: np.ndarray | None = None
    session: np.ndarray | None = None
    context: np.ndarray | None = None
    categories: np.ndarray | None = None
    pair: np.ndarray | None = None
    bias: np.ndarray | None = None
    content: NumpyContent | None = None
    item_kernel: np.ndarray | None = None
    item_ids: np.ndarray | None = None

    @classmethod
    def of(cls, model: NeuMF) -> _FirstLayer:
        users, items = layer_arrays(model.mlp_user)[0], layer_arrays(model.mlp_item)[0]
        kernel, bias = layer_arrays(model.mlp[0])
        content = None
        if model.content:
            table = model.catalogue
            ids = items
            items = ids + keras.ops.convert_to_numpy(model.item_content(table.tokens,
                                                                        table.numeric))
            encoder = model.item_content
            numeric = (layer_arrays(encoder.numeric_map)[0] if encoder.num_numeric
                       else np.zeros((0, items.shape[1]), np.float32))
            content = NumpyContent(table.spec, layer_arrays(encoder.token_embedding)[0],
                                   numeric)
        widths = [users.shape[1], items.shape[1], model.session_dim, model.context_dim,
                  CATEGORY_DIM if model.categories else 0, model.pair_dim]
        parts = np.split(kernel, np.cumsum(widths)[:-1])
        categories = (layer_arrays(model.category_table)[0] @ parts[4]
                      if model.categories else None)
        return cls(users @ parts[0], items @ parts[1], parts[2] if model.session_dim else None,
                   parts[3] if model.context_dim else None, categories,
                   parts[5] if model.pair_dim else None, bias, content,
                   parts[1] if content else None, ids @ parts[1] if content else None)
