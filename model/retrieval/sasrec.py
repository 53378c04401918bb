"""SASRec (Kang & McAuley 2018): a causal self-attention encoder over a user's item sequence.

The session embedding (the encoder output at the newest position) lives in the same space
as the item embeddings, so next-item scores are dot products and retrieval is a
nearest-neighbour search over the item table.

Sequences are left-padded with item 0; positions are counted from the first real item, so
the embedding of a session does not depend on how much padding precedes it (which the
incremental serving path relies on). With ``num_types`` > 0 each position also adds an
embedding of its event type (a purchase is not a view; code 0 = unknown), so the session
embedding knows how the user met each item.

With a catalogue (``content``, a ``model.content.ContentSpec`` as a dict) the model also
has a content encoder (``ItemContentEncoder``), used as the spec's ``mode`` says:

- ``map`` (default): a trained item is its id embedding alone; after training, the
  content encoder is fitted to map each item's content onto its id embedding
  (attribute-to-feature mapping, Gantner et al. 2010; van den Oord et al. 2013), and an
  item never trained on gets the mapped vector. Warm items rank exactly as without a
  catalogue.
- ``sum``: every item is id + content embedding, on both sides (in the sequence and as a
  target); in training each item with content loses its id with probability
  ``id_dropout`` (DropoutNet, Volkovs et al. 2017), so content alone learns to place it.
  Measured on three data sets (docs/BENCHMARKS.md, issue #20): sampled metrics rise, but
  full-ranking NDCG@10 fell on two of them, as shared tokens lift many unpopular items.
Written with ``keras`` and ``keras.ops`` only.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import keras
import numpy as np
from keras import ops

from model.content import ContentSpec, ContentTable, ItemContentEncoder, ItemContentTable, described

FULL_TABLE_MAX = 100_000


@keras.saving.register_keras_serializable(package="streamrec")
class SASRecEncoder(keras.layers.Layer):
    """[batch, max_len] item ids -> [batch, max_len, dim] causal sequence embeddings."""

    def __init__(self, num_items: int, max_len: int = 200, dim: int = 64, blocks: int = 2,
                 heads: int = 1, dropout: float = 0.2, num_types: int = 0,
                 content: dict[str, Any] | None = None, id_dropout: float = 0.0,
                 **kwargs: Any) -> None:
        super().__init__(**kwargs)
        if num_items < 1 or blocks < 1:
            raise ValueError(f"num_items and blocks must be >= 1. Received: "
                             f"num_items={num_items}, blocks={blocks}")
        if max_len < 2:  # serving's caches roll to half the window: one item is none
            raise ValueError(f"max_len must be >= 2. Received: max_len={max_len}")
        if dim % heads:
            raise ValueError(f"dim must be divisible by heads. Received: dim={dim}, heads={heads}")
        if not 0 <= dropout < 1:
            raise ValueError(f"dropout must be in [0, 1). Received: dropout={dropout}")
        self.num_items, self.max_len, self.dim = num_items, max_len, dim
        self.blocks, self.heads, self.dropout = blocks, heads, dropout
        if not 0 <= id_dropout < 1:
            raise ValueError(f"id_dropout must be in [0, 1). Received: id_dropout={id_dropout}")
        self.num_types, self.content, self.id_dropout = num_types, content, id_dropout
        self.content_spec = ContentSpec.from_dict(content) if content else None
        # Id dropout's draws follow keras.utils.set_random_seed where there are any. A
        # generator made without a seed takes a number from Python's own, which moves the
        # seed of every layer made after it: a model without content keeps a fixed one.
        drops = self.content_spec is not None and self.content_spec.mode == "sum" \
            and id_dropout > 0  # "map" serves ids and never drops them
        self.seeds = keras.random.SeedGenerator(None if drops else 1)

    def build(self, input_shape: Any) -> None:
        d = self.dim
        self.item_embedding = keras.layers.Embedding(self.num_items + 1, d, name="item_embedding")
        self.pos_embedding = keras.layers.Embedding(self.max_len, d, name="pos_embedding")
        self.item_embedding.build((None,))
        self.pos_embedding.build((None,))
        if self.num_types:
            self.type_embedding = keras.layers.Embedding(self.num_types, d, name="type_embedding")
            self.type_embedding.build((None,))
        if self.content_spec is not None:
            spec = self.content_spec
            self.content_encoder = ItemContentEncoder(spec.buckets, len(spec.numeric), d,
                                                      name="content")
            self.content_encoder.build()
            self.catalogue = ItemContentTable(self, self.num_items + 1, spec, self.id_dropout,
                                              self.seeds)
        self.drop = keras.layers.Dropout(self.dropout)
        self.attn_norm, self.attn, self.ffn_norm, self.ffn_in, self.ffn_out = [], [], [], [], []
        for b in range(self.blocks):
            self.attn_norm.append(keras.layers.LayerNormalization(epsilon=1e-8, name=f"attn_norm_{b}"))
            self.attn.append(keras.layers.MultiHeadAttention(
                self.heads, d // self.heads, dropout=self.dropout, name=f"attention_{b}"))
            self.ffn_norm.append(keras.layers.LayerNormalization(epsilon=1e-8, name=f"ffn_norm_{b}"))
            self.ffn_in.append(keras.layers.Dense(d, activation="relu", name=f"ffn_in_{b}"))
            self.ffn_out.append(keras.layers.Dense(d, name=f"ffn_out_{b}"))
            self.attn_norm[b].build((None, None, d))
            self.attn[b].build((None, None, d), (None, None, d), (None, None, d))
            self.ffn_norm[b].build((None, None, d))
            self.ffn_in[b].build((None, None, d))
            self.ffn_out[b].build((None, None, d))
        self.final_norm = keras.layers.LayerNormalization(epsilon=1e-8, name="final_norm")
        self.final_norm.build((None, None, d))

    def call(self, seq: Any, types: Any = None, training: bool = False,
             table: Any = None) -> Any:
        """``table``: every item's vector for this step (``item_table``), when the caller
        computed it once for the sequence, its targets and its negatives alike."""
        valid = ops.cast(ops.not_equal(seq, 0), "float32")
        mask = ops.expand_dims(valid, -1)
        positions = ops.cast(ops.maximum(ops.cumsum(valid, axis=1) - 1.0, 0.0), "int32")
        items = (self.item_vectors(seq, training) if table is None
                 else ops.take(table, ops.cast(seq, "int32"), axis=0))
        x = items * math.sqrt(self.dim) + self.pos_embedding(positions)
        if self.num_types:
            x = x + self.type_embedding(ops.zeros_like(seq) if types is None else types)
        x = self.drop(x, training=training) * mask
        length = ops.shape(seq)[1]
        causal = ops.tril(ops.ones((length, length), dtype="bool"))
        attend = ops.logical_and(ops.expand_dims(causal, 0),
                                 ops.expand_dims(ops.cast(valid, "bool"), 1))
        for b in range(self.blocks):
            q = self.attn_norm[b](x)
            x = q + self.attn[b](q, x, x, attention_mask=attend, training=training)
            h = self.ffn_norm[b](x)
            f = self.ffn_out[b](self.drop(self.ffn_in[b](h), training=training))
            x = (h + self.drop(f, training=training)) * mask
        return self.final_norm(x) * mask

    def item_vectors(self, ids: Any, training: bool = False) -> Any:
        """[...] item ids -> [..., dim]: id embedding, plus content when there is a
        catalogue (id dropped at random in training where content exists)."""
        out = self.item_embedding(ids)
        if self.content_spec is None or self.content_spec.mode == "map":
            return out
        tokens, numeric = self.catalogue.lookup(ids)
        if (keep := self.catalogue.keep(tokens, numeric, training)) is not None:
            out = out * keep
        return out + self.content_encoder(tokens, numeric)

    def item_table(self, training: bool = False) -> Any:
        """[num_items + 1, dim]: every item's vector; in training each item with content
        loses its id with probability ``id_dropout`` (for the whole step where the model
        computes the table once a step: below ``FULL_TABLE_MAX`` items)."""
        return self.item_vectors(ops.arange(self.num_items + 1), training)

    def set_content(self, table: ContentTable) -> None:
        """Load the catalogue's arrays for ids 0..num_items (rows past the table: none)."""
        self.catalogue.load(table)

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "num_items": self.num_items, "max_len": self.max_len,
                "dim": self.dim, "blocks": self.blocks, "heads": self.heads,
                "dropout": self.dropout, "num_types": self.num_types,
                "content": self.content, "id_dropout": self.id_dropout}


@keras.saving.register_keras_serializable(package="streamrec")
class SASRec(keras.Model):
    """Training and serving faces of one encoder.

    ``call({"seq", "pos", "neg"[, "types"]})`` -> logits [batch, max_len, 1 + negatives]
    for training (column 0: the true next item); with ``"pool"`` [batch, S] and
    ``"pool_seen"`` instead of ``"neg"``, every row's S draws are negatives for the whole
    batch (1 + batch * S), but those a row has met (``_pooled_logits``).
    ``encode(seq, types)`` -> [batch, dim] session embeddings (newest position).
    ``item_embeddings()`` -> [num_items + 1, dim], row 0 = padding.
    """

    def __init__(self, num_items: int, max_len: int = 200, dim: int = 64, blocks: int = 2,
                 heads: int = 1, dropout: float = 0.2, num_types: int = 0,
                 content: dict[str, Any] | None = None, id_dropout: float = 0.0,
                 event_types: Sequence[str] = (), unmet_items: Sequence[int] = (),
                 **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.encoder = SASRecEncoder(num_items, max_len, dim, blocks, heads, dropout,
                                     num_types, content, id_dropout, name="encoder")
        self.max_len = max_len
        # The event types behind the type codes (code = position + 1): a bundle serving
        # this retriever without a ranker codes live events as training did.
        self.event_types = tuple(event_types)
        # The item ids of the table training never met (``fit_content_map``: those with
        # content were placed by it), recorded because nothing in the weights tells them
        # from trained items: a serving worker moves them with their catalogue records, as
        # it moves new items.
        self.unmet_items = tuple(int(i) for i in unmet_items)

    def call(self, inputs: dict[str, Any], training: bool = False) -> Any:
        enc = self.encoder
        if not enc.built:
            enc.build(None)
        # With content, an item's vector costs a bag of token embeddings: below
        # FULL_TABLE_MAX items, computing all once per step is cheaper than per lookup
        # (a batch looks up 2 * L + negatives ids per row).
        whole = (enc.item_table(training) if enc.content_spec is not None
                 and enc.content_spec.mode == "sum" and enc.num_items < FULL_TABLE_MAX
                 else None)
        h = enc(inputs["seq"], inputs.get("types"), training=training, table=whole)  # [B, L, d]

        def table(ids: Any) -> Any:
            return enc.item_vectors(ids, training) if whole is None else ops.take(whole, ids, axis=0)

        pos = ops.sum(h * table(inputs["pos"]), axis=-1, keepdims=True)    # [B, L, 1]
        if "pool" in inputs:
            pooled = _pooled_logits(h, inputs["pool"], inputs["pool_seen"], table)
            return ops.concatenate([pos, pooled], axis=-1)
        neg = inputs["neg"]
        if len(neg.shape) == 3:                                            # per position [B, L, S]
            neg_logits = ops.einsum("bld,blsd->bls", h, table(neg))
        else:                                                              # per sequence [B, S]
            neg_logits = ops.einsum("bld,bsd->bls", h, table(neg))
        return ops.concatenate([pos, neg_logits], axis=-1)

    def encode(self, seq: Any, types: Any = None) -> Any:
        return self.encoder(seq, types, training=False)[:, -1, :]

    def item_embeddings(self) -> Any:
        """[num_items + 1, dim]: every known item's vector (id plus content in ``sum``)."""
        spec = self.encoder.content_spec
        if spec is None or spec.mode == "map":
            return self.encoder.item_embedding.embeddings
        return self.encoder.item_table()

    def content_vectors(self, tokens: Any, numeric: Any) -> Any:
        """[n, dim] vectors of items known by content alone (``ContentSpec.arrays``)."""
        return self.encoder.content_encoder(tokens, numeric)

    def fit_content_map(self, epochs: int = 200, batch_size: int = 256,
                        learning_rate: float = 1e-2,
                        item_weights: np.ndarray | None = None,
                        learned: np.ndarray | None = None) -> float:
        """``map`` mode, after training: fit the content encoder so each item's content
        maps onto its id embedding (mean squared error over items with content); returns
        the final loss. With ``item_weights``, items of the table that training never met
        (weight 0: e.g. met only as users' held-out last items) take their content's
        mapped vector instead of an id vector that was only ever pushed away as a
        negative; the rest of the table is left as it is. ``learned`` ([num_items]) marks
        items a warm start's model met, from events this round's split may no longer
        hold (the topic's retention): kept, not placed. On REES46 a third of the test
        targets are such items: test full NDCG@10 +2.3 to +6.3%, HR@10 +10 to +13% over
        three seeds (docs/BENCHMARKS.md, "Items training never met").

        ``item_weights`` ([num_items], ids 1..n; e.g. training interactions) weigh each
        item's error. Unweighted, content maps onto the average catalogued item, and most
        of those were met once or twice, so their id vectors barely left their random
        start. A new item is met as often as items like it are met, so weighted by
        interactions content maps onto the vectors of the items users meet (REES46 cold
        items: full NDCG@10 0.020 -> 0.059, docs/BENCHMARKS.md)."""
        enc = self.encoder
        tokens = ops.convert_to_numpy(enc.catalogue.tokens)[1:]
        numeric = ops.convert_to_numpy(enc.catalogue.numeric)[1:]
        has = ops.convert_to_numpy(described(tokens, numeric))
        if not has.any():
            return 0.0
        targets = ops.convert_to_numpy(enc.item_embedding.embeddings)[1:][has]
        mapper = _ContentMap(enc.content_encoder)
        mapper.compile(optimizer=keras.optimizers.Adam(learning_rate), loss="mse")
        weights = None
        if item_weights is not None and (w := np.asarray(item_weights, np.float32)[has]).any():
            weights = w / w.mean()  # the loss on the unweighted scale
        history = mapper.fit({"tokens": tokens[has], "numeric": numeric[has]}, targets,
                             sample_weight=weights, epochs=epochs, batch_size=batch_size,
                             verbose=0)
        if item_weights is not None:
            unmet = np.asarray(item_weights) == 0
            if learned is not None:  # a warm start's: met by the model it started from
                unmet &= ~np.asarray(learned, bool)
            self._place_unmet(np.flatnonzero(has & unmet), tokens, numeric)
            self.unmet_items = tuple((np.flatnonzero(unmet) + 1).tolist())
        return float(history.history["loss"][-1])

    def _place_unmet(self, rows: np.ndarray, tokens: np.ndarray, numeric: np.ndarray) -> None:
        """Rows ``rows`` of the catalogue (0-based over items 1..n) into the item table as
        their content's mapped vectors."""
        if not len(rows):
            return
        table = ops.convert_to_numpy(self.encoder.item_embedding.embeddings).copy()
        table[rows + 1] = ops.convert_to_numpy(self.content_vectors(tokens[rows], numeric[rows]))
        self.encoder.item_embedding.embeddings.assign(table)

    def get_config(self) -> dict[str, Any]:
        enc = self.encoder
        return {**super().get_config(), "num_items": enc.num_items, "max_len": enc.max_len,
                "dim": enc.dim, "blocks": enc.blocks, "heads": enc.heads, "dropout": enc.dropout,
                "num_types": enc.num_types, "content": enc.content, "id_dropout": enc.id_dropout,
                "event_types": list(self.event_types), **({"unmet_items": list(self.unmet_items)} if self.unmet_items else {})}


def _pooled_logits(h: Any, pool: Any, pool_seen: Any, table: Any) -> Any:
    """[B, L, B * S] logits of every item drawn by any row of the batch (``pool`` [B, S])
    for every row: B times the negatives for one lookup of B * S vectors and one matrix
    product (per-sequence negatives look up B * S vectors for S each). ``pool_seen``
    [B, >= B * S] marks, in the draws' order, those each row has met anywhere in its
    history (``training.pooled_negatives``): no negatives for it, as ``SeenItems`` keeps
    them out of its own draws."""
    ids = ops.reshape(pool, (-1,))
    seen = ops.cast(pool_seen[:, :ops.shape(ids)[0]], "bool")             # [B, B * S]
    logits = ops.matmul(h, ops.transpose(table(ids)))                     # [B, L, B * S]
    return ops.where(seen[:, None, :], -1e9, logits)


class _ContentMap(keras.Model):
    """The content encoder alone, as a model to fit (its weights stay SASRec's)."""

    def __init__(self, encoder: ItemContentEncoder) -> None:
        super().__init__(name="content_map")
        self.encoder = encoder

    def call(self, inputs: dict[str, Any]) -> Any:
        return self.encoder(inputs["tokens"], inputs["numeric"])


@keras.saving.register_keras_serializable(package="streamrec")
def sampled_bce(mask: Any, logits: Any) -> Any:
    """SASRec's loss: -log σ(positive) - mean log(1 - σ(negatives)), over real positions."""
    pos = -ops.log_sigmoid(logits[..., 0])
    neg = -ops.mean(ops.log_sigmoid(-logits[..., 1:]), axis=-1)
    return ops.sum((pos + neg) * mask) / ops.maximum(ops.sum(mask), 1.0)


@keras.saving.register_keras_serializable(package="streamrec")
def sampled_softmax(mask: Any, logits: Any) -> Any:
    """Cross-entropy of the true next item against the sampled negatives, over real positions."""
    ce = -ops.log_softmax(logits, axis=-1)[..., 0]
    return ops.sum(ce * mask) / ops.maximum(ops.sum(mask), 1.0)


LOSSES = {"bce": sampled_bce, "softmax": sampled_softmax}
