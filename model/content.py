"""Item content, declared once for training and serving: what a catalogue says of an
item (categories, brand, title and text, price and other numbers) as fixed-width arrays,
and the encoder that turns those arrays into a vector in the retriever's item space.

Why hashing: categories, brands and words form an open vocabulary that grows with the
catalogue. Each becomes a field-tagged token (``c=shoes``, ``b=acme``, ``w=glue``,
``w=gorilla_glue``; optionally character trigrams of words such as ``g=<gl``, which tie
``glue`` to ``glues`` and survive a typo) hashed by CRC32 (stable across processes,
unlike ``hash``) into ``buckets`` rows: nothing to fit, grow or ship besides the spec,
and an item first seen at serving time hashes to the same rows it would have in training.

The same ``ContentSpec.arrays`` feeds the Keras layer (``ItemContentEncoder``, inside
SASRec) and the NumPy twin (``NumpyContent``) that embeds new items in a running worker;
a test holds the two equal.
"""

from __future__ import annotations

import math
import re
import zlib
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass, replace
from typing import Any, Protocol

import keras
import numpy as np
from keras import ops

from model.features import robust_moments

_WORD = re.compile(r"[^\W_]+", re.UNICODE)
_MIN_SHARE = 0.05  # a numeric attribute becomes a feature when this share of items has it
_MAX_NUMERIC = 8
MODES = ("map", "sum")


def _words(text: str) -> Iterator[str]:
    """``text``'s words, lazily."""
    return (m.group() for m in _WORD.finditer(text))


class ItemContent(Protocol):
    """What the model reads of a catalogue record (``streams.catalog.ItemRecord``)."""

    item_id: str
    title: str | None
    text: str | None
    categories: Sequence[str]
    brand: str | None
    price: float | None
    attributes: Mapping[str, float]


def _number(value: Any) -> float:
    """Signed log1p of a finite number (prices and counts are heavy-tailed; a year stays
    monotonic), NaN when missing."""
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        return math.nan
    return math.copysign(math.log1p(abs(value)), value)


@dataclass(frozen=True)
class ContentSpec:
    """How records become arrays: ``tokens`` per item (hashed ids, 0 = padding) and
    ``numeric`` values (normalised with the moments of the catalogue it was fitted on).
    Kept in the retriever's config, so a model always embeds new items as it was trained."""

    buckets: int = 1 << 15
    max_tokens: int = 16
    bigrams: bool = True
    # Slots for character trigrams of title then text words, after the ``max_tokens``
    # word slots (which titles alone can fill). Off by default: they lifted cold items on
    # Amazon's long texts and sank them on MovieLens' short titles (docs/BENCHMARKS.md).
    char_tokens: int = 0
    numeric: tuple[str, ...] = ()  # "price" or attribute names
    numeric_mean: tuple[float, ...] = ()
    numeric_std: tuple[float, ...] = ()
    # How the retriever uses content: "map" (a trained item is its id embedding; content
    # is mapped onto that space, for items never trained on) or "sum" (every item is id +
    # content, ids dropped at random in training). See ``model.retrieval.sasrec``.
    mode: str = "map"

    def __post_init__(self) -> None:
        if self.buckets < 2 or self.max_tokens < 1 or self.char_tokens < 0:
            raise ValueError(f"need buckets >= 2, max_tokens >= 1 and char_tokens >= 0. "
                             f"Received: buckets={self.buckets}, max_tokens={self.max_tokens}, "
                             f"char_tokens={self.char_tokens}")
        if self.mode not in MODES:
            raise ValueError(f"mode must be one of {MODES}. Received: mode={self.mode!r}")

    @property
    def width(self) -> int:
        """Token slots per item: words, then character trigrams."""
        return self.max_tokens + self.char_tokens

    def tokens(self, item: ItemContent) -> list[int]:
        """Hashed token ids (1..buckets-1), most telling first: categories, brand, title
        words, then text words (at most ``max_tokens``), then the words' character
        trigrams (at most ``char_tokens``); duplicates once."""
        out: dict[int, None] = {}
        self._hash_into(out, self._word_keys(item), self.max_tokens)
        if self.char_tokens:
            marked = (f"<{w}>" for field in self._fields(item) for w in _words(field))
            grams = (f"g={m[i:i + 3]}" for m in marked for i in range(len(m) - 2))
            self._hash_into(out, grams, len(out) + self.char_tokens)
        return list(out)

    def _word_keys(self, item: ItemContent) -> Iterator[str]:
        """The keys of ``tokens`` before trigrams, in order, made as they are taken: the
        slots are full long before a long description's end (all of them cost 769 µs an
        item at 8,192 characters, against 23 at 200)."""
        yield from (f"c={c.strip().lower()}" for c in item.categories if c.strip())
        if item.brand and item.brand.strip():
            yield f"b={item.brand.strip().lower()}"
        for field in self._fields(item):
            yield from (f"w={w}" for w in _words(field))
            if self.bigrams:
                words = _words(field)
                previous = next(words, None)
                for word in words:
                    yield f"w={previous}_{word}"
                    previous = word

    @staticmethod
    def _fields(item: ItemContent) -> tuple[str, str]:
        return (item.title or "").lower(), (item.text or "").lower()

    def _hash_into(self, out: dict[int, None], keys: Iterable[str], limit: int) -> None:
        """Adds the hashed ``keys`` to ``out`` (an ordered set) until it holds ``limit``."""
        for key in keys:
            if len(out) >= limit:
                return
            out.setdefault(1 + zlib.crc32(key.encode()) % (self.buckets - 1))

    def raw_numeric(self, item: ItemContent) -> list[float]:
        """Declared numbers, transformed but not normalised (NaN = missing)."""
        return [_number(item.price if key == "price" else item.attributes.get(key))
                for key in self.numeric]

    def fit(self, items: Sequence[ItemContent]) -> ContentSpec:
        """This spec with its numeric keys chosen (price and attributes that at least 5%
        of ``items`` carry, at most 8) and their moments taken from ``items``."""
        counts: dict[str, int] = {}
        for item in items:
            for key in (["price"] if item.price is not None else []) + list(item.attributes):
                counts[key] = counts.get(key, 0) + 1
        keys = sorted((k for k, n in counts.items() if n >= _MIN_SHARE * len(items)),
                      key=lambda k: (-counts[k], k))[:_MAX_NUMERIC]
        spec = replace(self, numeric=tuple(keys), numeric_mean=(), numeric_std=())
        values = np.array([spec.raw_numeric(i) for i in items], np.float64).reshape(
            len(items), len(keys))
        # clipped as context numbers are: one price of 1e300 (a sentinel) among prices of
        # 5 to 200 made every other item's z-score about 0
        moments = [robust_moments(column[~np.isnan(column)]) for column in values.T]
        return replace(spec, numeric_mean=tuple(m for m, _ in moments),
                       numeric_std=tuple(s for _, s in moments))

    def arrays(self, items: Sequence[ItemContent | None]) -> tuple[np.ndarray, np.ndarray]:
        """(tokens [n, width] int32, numeric [n, len(numeric)] float32) for ``items``
        in row order; a None row (an item with no record) is all zeros."""
        tokens = np.zeros((len(items), self.width), np.int32)
        raw = np.full((len(items), len(self.numeric)), np.nan)
        for row, item in enumerate(items):
            if item is not None:
                ids = self.tokens(item)
                tokens[row, :len(ids)] = ids
                raw[row] = self.raw_numeric(item)
        mean = np.asarray(self.numeric_mean or [0.0] * len(self.numeric))
        std = np.asarray(self.numeric_std or [1.0] * len(self.numeric))
        # A fitted spread of 0 (a flag every item that has it sets alike): every value reads
        # 0, as every training row did, where dividing by 1 fed a row of weights that never
        # learnt (``FeatureSpec`` reads context numbers the same way). Specs saved before
        # this hold 1.0 there and read as they trained.
        std = np.where(std > 0, std, np.inf)
        numeric = np.nan_to_num((raw - mean) / std, nan=0.0).clip(-5, 5).astype(np.float32)
        return tokens, numeric

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> ContentSpec:
        tuples = ("numeric", "numeric_mean", "numeric_std")
        # saved before trigrams: none were there; before ``mode`` (2026-12-01): every item
        # was id + content, and read as ``map`` such a model served its ids alone
        return cls(**{"char_tokens": 0, "mode": "sum",
                      **{k: tuple(v) if k in tuples else v for k, v in d.items()}})


def described(tokens: Any, numeric: Any) -> Any:
    """[...]: whether each item has content, a token or a numeric value (ids' rows of
    ``tokens`` [..., width] and ``numeric`` [..., k]); arrays or tensors alike."""
    return ops.logical_or(ops.any(ops.not_equal(tokens, 0), axis=-1),
                          ops.any(ops.not_equal(numeric, 0), axis=-1))


@dataclass(frozen=True)
class ContentTable:
    """Content arrays for dense item ids 0..n (row 0, padding, and items with no record
    are zeros), built by ``catalogue_table``."""

    spec: ContentSpec
    tokens: np.ndarray   # [n + 1, width] int32
    numeric: np.ndarray  # [n + 1, len(spec.numeric)] float32

    @property
    def covered(self) -> int:
        """Items (padding excluded) the catalogue describes."""
        return int(ops.convert_to_numpy(described(self.tokens[1:], self.numeric[1:])).sum())


def catalogue_table(records: Iterable[ItemContent], item_ids: Sequence[str],
                    spec: ContentSpec | None = None, char_tokens: int = 0) -> ContentTable:
    """The content of each id in ``item_ids`` (dense id i = position i - 1, as
    ``IdMap.ids``), from whichever ``records`` name it; when no spec is given, one with
    ``char_tokens`` trigram slots is fitted on the records."""
    by_id = {r.item_id: r for r in records}
    spec = spec or ContentSpec(char_tokens=char_tokens).fit(list(by_id.values()))
    tokens, numeric = spec.arrays([None, *(by_id.get(i) for i in item_ids)])
    return ContentTable(spec, tokens, numeric)


@keras.saving.register_keras_serializable(package="streamrec")
class ItemContentEncoder(keras.layers.Layer):
    """(tokens [..., T], numeric [..., N]) -> [..., dim]: the mean of the tokens'
    embeddings plus a linear map of the numbers (no bias: an item with no content maps
    to the zero vector, so its id embedding alone speaks for it)."""

    def __init__(self, buckets: int, num_numeric: int, dim: int, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        if buckets < 2 or num_numeric < 0 or dim < 1:
            raise ValueError(f"need buckets >= 2, num_numeric >= 0, dim >= 1. Received: "
                             f"buckets={buckets}, num_numeric={num_numeric}, dim={dim}")
        self.buckets, self.num_numeric, self.dim = buckets, num_numeric, dim

    def build(self, input_shape: Any = None) -> None:
        self.token_embedding = keras.layers.Embedding(self.buckets, self.dim,
                                                      name="token_embedding")
        self.token_embedding.build((None,))
        if self.num_numeric:
            self.numeric_map = keras.layers.Dense(self.dim, use_bias=False, name="numeric_map")
            self.numeric_map.build((None, self.num_numeric))

    def call(self, tokens: Any, numeric: Any) -> Any:
        present = ops.cast(ops.not_equal(tokens, 0), "float32")
        summed = ops.sum(self.token_embedding(tokens) * ops.expand_dims(present, -1), axis=-2)
        out = summed / ops.maximum(ops.sum(present, axis=-1, keepdims=True), 1.0)
        if self.num_numeric:
            out = out + self.numeric_map(ops.cast(numeric, "float32"))
        return out

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "buckets": self.buckets,
                "num_numeric": self.num_numeric, "dim": self.dim}


def carry_numeric_rows(new: ItemContentEncoder, new_keys: Sequence[str],
                       old: ItemContentEncoder, old_keys: Sequence[str]) -> None:
    """After a warm start (``model.weights.copy_weights``): row i of ``numeric_map`` weighs
    numeric key i, and each round fits its spec anew, its keys in the order of how many
    items carry them, so copied by shape a row could weigh another key. Each key the old
    encoder had takes its row; a key new to this one starts at zero, the old model's
    function kept until it is learnt."""
    if not new.num_numeric or tuple(new_keys) == tuple(old_keys) or new.dim != old.dim:
        return
    rows = np.zeros((len(new_keys), new.dim), np.float32)
    if old.num_numeric:
        theirs = ops.convert_to_numpy(old.numeric_map.kernel)
        for row, key in enumerate(new_keys):
            if key in old_keys:
                rows[row] = theirs[list(old_keys).index(key)]
    new.numeric_map.kernel.assign(rows)


class ItemContentTable:
    """A model's copy of the catalogue's arrays (non-trainable weights of ``layer``, so
    they travel with the saved model) and the id dropout that teaches content to stand
    alone: the retriever and the ranker both hold one. ``seeds`` belongs to ``layer``
    (Keras tracks a layer's seed generators, which JAX training needs)."""

    def __init__(self, layer: keras.layers.Layer, rows: int, spec: ContentSpec,
                 id_dropout: float, seeds: keras.random.SeedGenerator) -> None:
        self.rows, self.spec, self.id_dropout, self.seeds = rows, spec, id_dropout, seeds
        self.tokens = layer.add_weight(shape=(rows, spec.width), dtype="int32",
                                       initializer="zeros", trainable=False,
                                       name="content_tokens")
        self.numeric = layer.add_weight(shape=(rows, len(spec.numeric)), initializer="zeros",
                                        trainable=False, name="content_numeric")

    def lookup(self, ids: Any) -> tuple[Any, Any]:
        """(tokens, numeric) of item ``ids`` (cast: Keras builds a loaded model on float
        placeholders)."""
        ids = ops.cast(ids, "int32")
        return ops.take(self.tokens, ids, axis=0), ops.take(self.numeric, ids, axis=0)

    def keep(self, tokens: Any, numeric: Any, training: bool) -> Any:
        """[..., 1]: 0 where an item (with ``tokens`` and ``numeric``) loses its id
        embedding, with probability ``id_dropout`` in training where it has content; None:
        keep all."""
        if not training or not self.id_dropout:
            return None
        has = described(tokens, numeric)
        draw = keras.random.uniform(ops.shape(has), seed=self.seeds)
        kept = ops.logical_not(ops.logical_and(has, draw < self.id_dropout))
        return ops.expand_dims(ops.cast(kept, "float32"), -1)

    def load(self, table: ContentTable) -> None:
        """The catalogue's arrays for ids 0..rows-1 (rows past the table: none)."""
        tokens = np.zeros((self.rows, table.spec.width), np.int32)
        numeric = np.zeros((self.rows, len(table.spec.numeric)), np.float32)
        n = min(self.rows, len(table.tokens))
        tokens[:n], numeric[:n] = table.tokens[:n], table.numeric[:n]
        self.tokens.assign(tokens)
        self.numeric.assign(numeric)


@dataclass(frozen=True)
class NumpyContent:
    """``ItemContentEncoder`` over exported weights, with the spec that makes its inputs:
    how a worker embeds an item the model has never trained on."""

    spec: ContentSpec
    tokens: np.ndarray   # [buckets, dim]
    numeric: np.ndarray  # [N, dim] (N may be 0)

    def embed(self, tokens: np.ndarray, numeric: np.ndarray) -> np.ndarray:
        present = (tokens != 0).astype(np.float32)[..., None]
        summed = (self.tokens[tokens] * present).sum(axis=-2)
        out = summed / np.maximum(present.sum(axis=-2), 1.0)
        if len(self.numeric):
            out = out + numeric @ self.numeric
        return out.astype(np.float32)

    def embed_items(self, items: Sequence[ItemContent]) -> np.ndarray:
        """[len(items), dim] content vectors of catalogue records."""
        return self.embed(*self.spec.arrays(items))
