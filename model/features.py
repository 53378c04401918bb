"""Context features of an event, declared once for training and serving.

Both paths call the same functions: training (``model.data.build_sequences``) on every
event of a log, serving (``model.pipeline.ServingBundle``) on the newest event of each
live session, so a feature can never mean one thing offline and another online (a test
holds the two equal).

What an event contributes, as seen by the ranker:
- from ``ts``: hour of day and day of week (as sine/cosine pairs, so 23:00 sits next to
  00:00) and the gap since the user's previous event (log minutes);
- ``event_type``, as a code (0 = unknown): the retriever embeds it per position, the
  ranker one-hot;
- the event's ``context`` keys declared in the spec: numeric keys normalised with the
  mean and spread of the training log, categorical keys hashed into buckets (an
  embedding each in the ranker: no vocabulary to grow or ship).

A context value of the wrong type, or a key the spec does not declare, is left out of
the features (``FeatureSpec.split`` says which, so the worker can count them); it never
fails the event.
"""

from __future__ import annotations

import math
import zlib
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field, replace
from itertools import repeat
from typing import Any

import numpy as np

TASKS = ("next", "conversion")  # the ranker's heads: next interaction, and a conversion
TASK_WEIGHTS = {"next": 1.0, "conversion": 1.0}  # the heads' losses in joint training
# How the heads combine into the served score, unless settings say otherwise: the next
# interaction decides, conversion breaks near-ties towards what users buy.
HEAD_WEIGHTS = {"next": 1.0, "conversion": 0.5}
TIME_FEATURES = 5  # sin/cos hour, sin/cos weekday, log gap
_DAY_MS, _WEEK_MS, _HOUR_MS = 86_400_000, 7 * 86_400_000, 3_600_000
_EPOCH_WEEKDAY_SHIFT_MS = 3 * _DAY_MS  # 1970-01-01 was a Thursday: shift so Monday = 0


@dataclass(frozen=True, slots=True)
class LiveSession:
    """One user's session as the serving path sees it: external item ids, oldest first,
    each with its event type and time; ``context`` is the newest event's (declared keys
    only)."""

    items: Sequence[str]
    types: Sequence[str] = ()
    times: Sequence[int] = ()
    context: Mapping[str, Any] | None = None
    # False when this event put no new item at the session's end: a late event (placed
    # before the newest) or a redelivery the session held already. A session ending in a
    # run of one item reads the same either way, and the encoder's cache then stepped the
    # newest item in once more than the session holds.
    added: bool = True


@dataclass(frozen=True)
class FeatureSpec:
    """Which event fields become features, and how; carried inside the trained ranker's
    config so a model is always served with the spec it was trained with."""

    event_types: tuple[str, ...] = ()          # code = position + 1; 0 = unknown
    categorical: tuple[str, ...] = ()          # context keys, hashed to ``buckets`` ids each
    numeric: tuple[str, ...] = ()              # context keys, normalised
    buckets: int = 64
    numeric_mean: tuple[float, ...] = ()       # fitted on the training log (``fit``)
    numeric_std: tuple[float, ...] = ()
    conversion_types: tuple[str, ...] = ("add_to_cart", "purchase")
    liked_key: str | None = None               # e.g. "rating": a value >= liked_min also
    liked_min: float = 4.0                     # counts as a conversion (MovieLens "liked")
    _codes: dict[str, int] = field(default_factory=dict, init=False, repr=False,
                                   compare=False)

    def __post_init__(self) -> None:
        if self.buckets < 2:
            raise ValueError(f"buckets must be >= 2. Received: buckets={self.buckets}")
        overlap = set(self.categorical) & set(self.numeric)
        if overlap:
            raise ValueError(f"context keys declared both categorical and numeric: "
                             f"{sorted(overlap)}")
        if "" in self.event_types:  # "" and None both mean no type: code 0
            raise ValueError("an event type cannot be empty")
        self._codes.update({t: i + 1 for i, t in enumerate(self.event_types)})

    @property
    def layout(self) -> tuple[Any, ...]:
        """What each context column and category row means: two specs of one layout read
        an event into the same places (their moments aside)."""
        return self.event_types, self.categorical, self.numeric, self.buckets

    # ---- sizes -------------------------------------------------------------------------
    @property
    def num_types(self) -> int:
        """Rows of a type embedding: the declared types plus 0 (unknown)."""
        return len(self.event_types) + 1

    @property
    def dense_dim(self) -> int:
        """Width of ``dense``: time features, one-hot type, numeric keys."""
        return TIME_FEATURES + self.num_types + len(self.numeric)

    # ---- one event ---------------------------------------------------------------------
    def type_code(self, event_type: str | None) -> int:
        return self._codes.get(event_type or "", 0)

    def type_codes(self, types: Iterable[str | None], count: int) -> np.ndarray:
        """``type_code`` of each of ``count`` types, as one array (the serving path, over
        every session of a micro-batch)."""
        # ``map`` over the dict's own ``get``: half the time of a generator on long
        # sessions, where this runs over every item of the session for each event.
        return np.fromiter(map(self._codes.get, types, repeat(0)), np.int64, count)

    @property
    def conversion_codes(self) -> tuple[int, ...]:
        return tuple(self._codes[t] for t in self.conversion_types if t in self._codes)

    def converted(self, event_type: str | None, context: Mapping[str, Any] | None) -> bool:
        """The conversion task's label: a cart add or purchase, or a liked rating."""
        if event_type in self.conversion_types:
            return True
        if self.liked_key is None or not context:
            return False
        value = context.get(self.liked_key)
        return _is_number(value) and float(value) >= self.liked_min  # type: ignore[arg-type]

    def split(self, context: Mapping[str, Any] | None) -> tuple[dict[str, Any], list[str]]:
        """(declared keys with usable values, ignored keys): the worker keeps the first in
        the session and counts the second."""
        kept: dict[str, Any] = {}
        ignored: list[str] = []
        for key, value in (context or {}).items():
            if key in self.numeric and _is_number(value) and math.isfinite(value):
                kept[key] = value
            elif key in self.categorical and isinstance(value, str | int | bool):
                kept[key] = value
            elif key != self.liked_key:
                ignored.append(key)
        return kept, ignored

    def numeric_values(self, context: Mapping[str, Any] | None) -> list[float]:
        """Raw numeric keys in declared order; NaN where missing or unusable (infinite
        values too: one would spoil the fitted mean for every event)."""
        ctx = context or {}
        return [float(v) if _is_number(v := ctx.get(key)) and math.isfinite(v) else math.nan
                for key in self.numeric]

    def category_ids(self, context: Mapping[str, Any] | None) -> list[int]:
        """Hashed bucket per categorical key (1..buckets-1), 0 where missing. CRC32 is
        stable across processes, unlike ``hash``."""
        ctx = context or {}
        out = []
        for key in self.categorical:
            value = ctx.get(key)
            if isinstance(value, str | int | bool):
                out.append(1 + zlib.crc32(f"{key}={value}".encode()) % (self.buckets - 1))
            else:
                out.append(0)
        return out

    # ---- many events (the one formula both paths use) ---------------------------------
    def dense(self, ts: np.ndarray, prev_ts: np.ndarray, types: np.ndarray,
              numeric: np.ndarray) -> np.ndarray:
        """[n, dense_dim] float32 for n events: ``ts`` and ``prev_ts`` epoch ms (prev =
        ts when there is none), type codes, raw numeric values [n, len(numeric)] (NaN =
        missing, which becomes the mean)."""
        ts = np.asarray(ts, np.int64)
        hour = 2 * np.pi * (ts % _DAY_MS) / _DAY_MS
        week = 2 * np.pi * ((ts + _EPOCH_WEEKDAY_SHIFT_MS) % _WEEK_MS) / _WEEK_MS
        gap_min = np.maximum(ts - np.asarray(prev_ts, np.int64), 0) / 60_000
        out = np.zeros((len(ts), self.dense_dim), np.float32)
        out[:, 0], out[:, 1] = np.sin(hour), np.cos(hour)
        out[:, 2], out[:, 3] = np.sin(week), np.cos(week)
        out[:, 4] = np.log1p(gap_min) / 5.0  # log1p(1 week in minutes) ~ 9.2
        out[np.arange(len(ts)), TIME_FEATURES + np.asarray(types, np.int64)] = 1.0
        if self.numeric:
            mean, std = self._moments()
            z = (np.asarray(numeric, np.float64).reshape(len(ts), len(self.numeric)) - mean) / std
            out[:, TIME_FEATURES + self.num_types:] = np.nan_to_num(z, nan=0.0).clip(-5, 5)
        return out

    def _moments(self) -> tuple[np.ndarray, np.ndarray]:
        n = len(self.numeric)
        mean = np.asarray(self.numeric_mean or (0.0,) * n, np.float64)
        std = np.asarray(self.numeric_std or (1.0,) * n, np.float64)
        # A fitted spread of 0 (a key constant or absent in training): every value reads 0,
        # as every training row did, where dividing by 1 fed weights that never learnt.
        return mean, np.where(std > 0, std, np.inf)

    def fit(self, numeric: np.ndarray) -> FeatureSpec:
        """This spec with the numeric keys' mean and spread taken from ``numeric``
        [n, len(numeric)] (NaN = missing), each over its values clipped to their 1st and
        99th percentiles (``robust_moments``)."""
        if not self.numeric or not len(numeric):
            return self
        values = np.asarray(numeric, np.float64).reshape(-1, len(self.numeric))
        mean, std = zip(*(robust_moments(column[~np.isnan(column)]) for column in values.T))
        return replace(self, numeric_mean=mean, numeric_std=std)

    # ---- storage -----------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out.pop("_codes")
        return out

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> FeatureSpec:
        tuples = ("event_types", "categorical", "numeric", "numeric_mean", "numeric_std",
                  "conversion_types")
        return cls(**{k: tuple(v) if k in tuples else v for k, v in d.items()})


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def robust_moments(present: np.ndarray) -> tuple[float, float]:
    """(mean, standard deviation) of one key's values, clipped to their 1st and 99th
    percentiles first: one bogus price (1e7 among prices of tens) would otherwise squash
    every other value's z-score to about 0, and 1e160 overflowed the spread to infinity.
    Where 99% of the values are one (a quantity that is nearly always 1) that clip made
    them all alike, a spread of 0, and the key read 0 on every event: the rare values are
    then clipped among themselves (``_rare_bounds``). Computed on the values over their
    largest, so no square overflows."""
    if not len(present):
        return 0.0, 0.0
    low, high = np.quantile(present, [0.01, 0.99], method="inverted_cdf")
    rest = present[present != low]
    if low == high and len(rest):
        low, high = _rare_bounds(low, rest)
    clipped = np.clip(present, low, high)
    scale = float(np.abs(clipped).max())
    if scale == 0:
        return 0.0, 0.0
    unit = clipped / scale
    return float(unit.mean()) * scale, float(unit.std()) * scale


def _rare_bounds(common: float, rare: np.ndarray) -> tuple[float, float]:
    """Clip bounds for a key whose values are nearly all ``common``: the 5th and 95th
    percentiles of the ``rare`` others (with the common value inside), so a bogus value
    among them (1e7 among quantities of 2 and 3) is cut as one among all values is."""
    low, high = np.quantile(rare, [0.05, 0.95], method="inverted_cdf")
    return min(common, float(low)), max(common, float(high))


PAIR_FEATURES = 6  # retrieval rank, seen, log hours since seen, last seen as a conversion,
# log events since seen, log times seen


def pair_features(ids: np.ndarray, histories: Sequence[np.ndarray],
                  types: Sequence[np.ndarray], times: Sequence[np.ndarray], now: np.ndarray,
                  conversion_codes: Sequence[int]) -> np.ndarray:
    """[batch, candidates, PAIR_FEATURES] for candidate ``ids`` [batch, candidates] in
    retrieval order: the rank (log), whether the user met the item in their history, how
    long ago (log hours, epoch-ms ``now`` per row; and log events back, which also holds
    for a log without times), whether last as a cart add or purchase, and how often (log).
    ``types`` and ``times`` run alongside each history (empty: unknown). A returning
    user's next item is most often one of their newest (REES46: 37% of next events repeat
    the item just before), which the recency features let the ranker learn.

    The whole batch at once, by (row, item) keys: a loop of NumPy calls per row cost 59 µs
    per list of 120 candidates, most of a served list's ranking where lists hold the
    user's own items (docs/BENCHMARKS.md, issue #14)."""
    out = np.zeros((*ids.shape, PAIR_FEATURES), np.float32)
    out[..., 0] = np.log1p(np.arange(ids.shape[1], dtype=np.float32)) / 5.0
    lengths = np.array([len(h) for h in histories], np.int64)
    if not lengths.sum() or not ids.size:
        return out
    met = _newest_meetings(ids, histories, lengths)
    at, seen = met.at, met.seen
    out[..., 1] = seen
    rows = np.nonzero(lengths)[0]
    when = np.concatenate([_alongside(times[r], lengths[r], np.nan) for r in rows])[met.newest]
    hours = np.maximum(now[:, None] - when, 0) / _HOUR_MS
    out[..., 2] = np.where(seen & ~np.isnan(hours), np.log1p(np.nan_to_num(hours)) / 5.0, 0.0)
    kinds = np.concatenate([_alongside(types[r], lengths[r], -1) for r in rows])[met.newest]
    out[..., 3] = seen & np.isin(kinds, conversion_codes)
    out[..., 4] = np.where(seen, np.log1p(met.back[at]) / 5.0, 0.0)
    out[..., 5] = np.where(seen, np.log1p(met.counts[at]) / 5.0, 0.0)
    return out


@dataclass(frozen=True)
class _Meetings:
    """Each distinct (row, item) of a batch's histories: how often it was met and how many
    events back its newest meeting lies; ``at`` [batch, candidates] indexes them per
    candidate, ``seen`` says whether it is the candidate's own, and ``newest`` is the flat
    index (histories with items, concatenated) of each candidate's newest meeting."""

    counts: np.ndarray
    back: np.ndarray
    at: np.ndarray
    seen: np.ndarray
    newest: np.ndarray


def _newest_meetings(ids: np.ndarray, histories: Sequence[np.ndarray], lengths: np.ndarray
                     ) -> _Meetings:
    flat = np.concatenate([h for h in histories if len(h)]).astype(np.int64)
    starts = np.cumsum(lengths) - lengths
    row_of = np.repeat(np.arange(len(lengths)), lengths)
    width = int(max(flat.max(), ids.max())) + 1
    keys = row_of * width + flat
    order = np.lexsort((np.arange(len(flat)), keys))  # by key, then by position
    unique, first, counts = np.unique(keys[order], return_index=True, return_counts=True)
    newest = order[first + counts - 1]
    back = starts[row_of[newest]] + lengths[row_of[newest]] - 1 - newest
    wanted = np.arange(len(ids))[:, None] * width + ids
    at = np.minimum(np.searchsorted(unique, wanted), len(unique) - 1)
    # A negative id's key would be the row before's (FAISS pads with -1): never seen.
    return _Meetings(counts, back, at, (unique[at] == wanted) & (ids >= 0), newest[at])


def _alongside(values: np.ndarray, length: int, missing: float) -> np.ndarray:
    """A history's types or times as floats, or ``missing`` for each of its items when
    unknown (empty)."""
    if not len(values):
        return np.full(length, missing, np.float64)
    if len(values) != length:
        raise ValueError(f"types and times run alongside their history: {len(values)} "
                         f"values for {length} items")
    return np.asarray(values, np.float64)
