"""Context features against hand-computed values.

Covers ``model.features`` (``FeatureSpec``: dense time/type/numeric features, fitting,
splitting and hashing context, conversion labels, storage; ``pair_features``), the
feature columns that ``model.data.build_sequences`` fills and the ``Side`` that
``Sequences`` and ``LeaveLastOut`` cut from them, the ranker's ``ListwiseLoss`` against
a NumPy computation, and ``head_vector``.
"""

from __future__ import annotations

import json
import math
import zlib
from dataclasses import replace
from datetime import UTC, datetime
from types import SimpleNamespace

import keras
import numpy as np
import pytest

from model.data import build_sequences, leave_last_out
from model.features import (
    HEAD_WEIGHTS,
    PAIR_FEATURES,
    TIME_FEATURES,
    FeatureSpec,
    pair_features,
)
from model.ranking.neumf import head_vector
from model.ranking.training import EMPTY, ListwiseLoss, _drop_users
from streams.events import new_event

pytestmark = pytest.mark.keras  # `make test` runs these on TensorFlow and again on JAX

DAY_MS, HOUR_MS, MINUTE_MS = 86_400_000, 3_600_000, 60_000
MONDAY_MS = 4 * DAY_MS  # 1970-01-05 00:00 UTC


def ms(*args: int) -> int:
    """Epoch ms of a UTC datetime."""
    return int(datetime(*args, tzinfo=UTC).timestamp() * 1000)


def event(user: str, item: str, ts: int, event_type: str | None = None,
          context: dict | None = None) -> SimpleNamespace:
    return SimpleNamespace(user_id=user, item_id=item, ts=ts, event_type=event_type,
                           context=context)


def bucket(key: str, value: object, buckets: int) -> int:
    return 1 + zlib.crc32(f"{key}={value}".encode()) % (buckets - 1)


def dense_one(spec: FeatureSpec, ts: int, prev: int | None = None, type_code: int = 0,
              numeric: list[float] | None = None) -> np.ndarray:
    """``spec.dense`` of a single event."""
    values = np.array([numeric if numeric is not None else [math.nan] * len(spec.numeric)])
    return spec.dense(np.array([ts]), np.array([ts if prev is None else prev]),
                      np.array([type_code]), values)[0]


# ---- FeatureSpec.dense -----------------------------------------------------------------

def test_dense_monday_midnight_has_zero_angles() -> None:
    out = dense_one(FeatureSpec(), MONDAY_MS)
    np.testing.assert_allclose(out[:4], [0.0, 1.0, 0.0, 1.0], atol=1e-6)


def test_dense_six_in_the_morning_is_a_quarter_turn_of_the_day() -> None:
    out = dense_one(FeatureSpec(), MONDAY_MS + 6 * HOUR_MS)
    np.testing.assert_allclose(out[:2], [1.0, 0.0], atol=1e-6)
    week = 2 * np.pi * 0.25 / 7  # a quarter of Monday into the week
    np.testing.assert_allclose(out[2:4], [np.sin(week), np.cos(week)], atol=1e-6)


@pytest.mark.parametrize("when", [(1970, 1, 1, 0, 0), (2024, 3, 15, 13, 30),
                                  (2023, 12, 31, 23, 59)])
def test_dense_time_angles_match_calendar(when: tuple[int, ...]) -> None:
    moment = datetime(*when, tzinfo=UTC)
    day_fraction = (moment.hour + moment.minute / 60) / 24
    hour = 2 * np.pi * day_fraction
    week = 2 * np.pi * (moment.weekday() + day_fraction) / 7  # Monday = 0
    out = dense_one(FeatureSpec(), ms(*when))
    np.testing.assert_allclose(out[:4], [np.sin(hour), np.cos(hour), np.sin(week),
                                         np.cos(week)], atol=1e-5)


def test_dense_gap_is_log_minutes_over_five_and_never_negative() -> None:
    spec = FeatureSpec()
    ts = MONDAY_MS + DAY_MS
    assert dense_one(spec, ts, ts - 90 * MINUTE_MS)[4] == pytest.approx(np.log1p(90) / 5)
    assert dense_one(spec, ts)[4] == 0.0
    assert dense_one(spec, ts, ts + HOUR_MS)[4] == 0.0  # previous after this one


def test_dense_one_hot_type_sits_after_time_features() -> None:
    spec = FeatureSpec(event_types=("view", "click", "purchase"))
    out = spec.dense(np.array([MONDAY_MS] * 3), np.array([MONDAY_MS] * 3),
                     np.array([0, 2, 3]), np.zeros((3, 0)))
    assert out.shape == (3, spec.dense_dim) == (3, TIME_FEATURES + 4)
    onehot = out[:, TIME_FEATURES:]
    assert onehot.tolist() == [[1, 0, 0, 0], [0, 0, 1, 0], [0, 0, 0, 1]]


def test_dense_numeric_is_z_scored_with_fitted_moments() -> None:
    spec = FeatureSpec(numeric=("price", "qty"), numeric_mean=(10.0, 1.0),
                       numeric_std=(2.0, 4.0))
    out = dense_one(spec, MONDAY_MS, numeric=[13.0, -1.0])
    assert out.shape == (TIME_FEATURES + 1 + 2,)
    np.testing.assert_allclose(out[-2:], [1.5, -0.5])


def test_dense_numeric_missing_becomes_zero() -> None:
    spec = FeatureSpec(numeric=("price", "qty"), numeric_mean=(10.0, 1.0),
                       numeric_std=(2.0, 4.0))
    np.testing.assert_allclose(dense_one(spec, MONDAY_MS, numeric=[math.nan, 5.0])[-2:],
                               [0.0, 1.0])


def test_dense_numeric_is_clipped_to_five() -> None:
    spec = FeatureSpec(numeric=("price",), numeric_mean=(0.0,), numeric_std=(1.0,))
    assert dense_one(spec, MONDAY_MS, numeric=[100.0])[-1] == 5.0
    assert dense_one(spec, MONDAY_MS, numeric=[-100.0])[-1] == -5.0
    assert dense_one(spec, MONDAY_MS, numeric=[4.5])[-1] == 4.5


def test_a_key_whose_rare_values_are_under_one_percent_still_reads() -> None:
    """A quantity that is 1 on 99.2% of events: clipped to its 1st and 99th percentiles,
    every value was 1, a spread of 0, and the key read 0 everywhere (a review)."""
    column = np.ones((1000, 1))
    column[:8] = 10.0
    spec = FeatureSpec(numeric=("qty",)).fit(column)
    assert spec.numeric_std[0] > 0
    assert dense_one(spec, MONDAY_MS, numeric=[10.0])[-1] > 1.0 > abs(
        dense_one(spec, MONDAY_MS, numeric=[1.0])[-1])


def test_a_key_nearly_always_one_value_is_not_thrown_by_one_bogus_value() -> None:
    """Unclipped where 99% of values are one, a single 1e7 among quantities of 1 to 3
    spread the key so wide that 1, 2 and 3 all read about 0 (a review)."""
    column = np.ones((10_000, 1))
    column[:40], column[40:60], column[60] = 2.0, 3.0, 1e7
    spec = FeatureSpec(numeric=("qty",)).fit(column)
    one, two, three = (dense_one(spec, MONDAY_MS, numeric=[v])[-1] for v in (1.0, 2.0, 3.0))
    assert three >= two > 1.0 > abs(one)  # z-scores stop at 5: 2 and 3 may both read 5


def test_a_key_that_never_varied_in_training_reads_zero_at_serving() -> None:
    """Training saw it at its mean only (0 after scaling), so its first-layer weights never
    learnt; divided by 1, another value at serving (up to 5) pushed those random weights
    into every list: a price constant in the window, a key declared before it was sent."""
    spec = FeatureSpec(numeric=("qty",), numeric_mean=(2.0,), numeric_std=(0.0,))
    assert dense_one(spec, MONDAY_MS, numeric=[3.0])[-1] == 0.0
    constant = FeatureSpec(numeric=("price",)).fit(np.full((100, 1), 10.0))
    assert dense_one(constant, MONDAY_MS, numeric=[50.0])[-1] == 0.0
    unseen = FeatureSpec(numeric=("price",)).fit(np.full((100, 1), math.nan))
    assert dense_one(unseen, MONDAY_MS, numeric=[50.0])[-1] == 0.0


# ---- FeatureSpec.fit -------------------------------------------------------------------

def test_fit_uses_present_values_only() -> None:
    spec = FeatureSpec(numeric=("a", "b"))
    fitted = spec.fit(np.array([[1.0, math.nan], [3.0, 4.0], [math.nan, 8.0]]))
    assert fitted.numeric_mean == pytest.approx((2.0, 6.0))
    assert fitted.numeric_std == pytest.approx((1.0, 2.0))
    assert spec.numeric_mean == ()  # fit returns a new spec


def test_fit_is_not_thrown_by_one_bogus_value() -> None:
    """One price of 1e7 among a thousand of about 25 made the spread ~3e5, so 10 and 30
    normalised to within 1e-4 of each other; 1e160 overflowed it to infinity and every
    value normalised to 0. The moments are those of the values clipped to their 1st and
    99th percentiles."""
    prices = np.random.default_rng(0).normal(25.0, 5.0, 1000)
    for bogus in (1e7, 1e160):
        spec = FeatureSpec(numeric=("price",)).fit(np.append(prices, bogus)[:, None])
        assert 20 < spec.numeric_mean[0] < 30 and 4 < spec.numeric_std[0] < 6
        low, high = (dense_one(spec, MONDAY_MS, numeric=[p])[-1] for p in (10.0, 30.0))
        assert high - low > 3  # about 4 standard deviations apart
    tiny = FeatureSpec(numeric=("price",)).fit(np.array([[10.0], [20.0], [1e160]]))
    assert all(math.isfinite(v) for v in (*tiny.numeric_mean, *tiny.numeric_std))
    assert FeatureSpec(numeric=("price",)).fit(np.array([[math.nan]])).numeric_std == (0.0,)


def test_fit_without_data_returns_the_spec_unchanged() -> None:
    spec = FeatureSpec(numeric=("a",))
    assert spec.fit(np.zeros((0, 1))) is spec


# ---- FeatureSpec.split -----------------------------------------------------------------

SPLIT_SPEC = FeatureSpec(numeric=("price",), categorical=("device", "shop"),
                         liked_key="rating")


def test_split_keeps_declared_keys_with_usable_values() -> None:
    context = {"price": 9.5, "device": "ios", "shop": 3}
    assert SPLIT_SPEC.split(context) == (context, [])
    assert SPLIT_SPEC.split({"price": 4, "shop": True}) == ({"price": 4, "shop": True}, [])


@pytest.mark.parametrize("price", [True, math.nan, math.inf, "9.5", None])
def test_split_ignores_unusable_numeric_values(price: object) -> None:
    assert SPLIT_SPEC.split({"price": price}) == ({}, ["price"])


@pytest.mark.parametrize("device", [1.5, None, ["ios"]])
def test_split_ignores_unusable_categorical_values(device: object) -> None:
    assert SPLIT_SPEC.split({"device": device}) == ({}, ["device"])


def test_split_reports_undeclared_keys_in_order() -> None:
    kept, ignored = SPLIT_SPEC.split({"zeta": 1, "price": 2.0, "alpha": "x"})
    assert kept == {"price": 2.0}
    assert ignored == ["zeta", "alpha"]


def test_split_neither_keeps_nor_reports_the_liked_key() -> None:
    assert SPLIT_SPEC.split({"rating": 5}) == ({}, [])


def test_split_keeps_the_liked_key_when_declared() -> None:
    spec = FeatureSpec(numeric=("rating",), liked_key="rating")
    assert spec.split({"rating": 5}) == ({"rating": 5}, [])


def test_split_of_no_context() -> None:
    assert SPLIT_SPEC.split(None) == ({}, [])


# ---- FeatureSpec.category_ids ----------------------------------------------------------

def test_category_ids_are_crc32_buckets() -> None:
    spec = FeatureSpec(categorical=("device", "shop", "promo"), buckets=8)
    context = {"device": "ios", "shop": 3, "promo": True}
    expected = [bucket("device", "ios", 8), bucket("shop", 3, 8), bucket("promo", True, 8)]
    assert spec.category_ids(context) == expected
    assert spec.category_ids(dict(context)) == expected  # same on every call


def test_category_ids_stay_in_range() -> None:
    spec = FeatureSpec(categorical=("k",), buckets=5)
    ids = {spec.category_ids({"k": f"v{i}"})[0] for i in range(200)}
    assert ids == {1, 2, 3, 4}


@pytest.mark.parametrize("context", [None, {}, {"device": 1.5}, {"device": None},
                                     {"device": ["ios"]}])
def test_category_ids_are_zero_for_missing_or_wrong_type(context: dict | None) -> None:
    assert FeatureSpec(categorical=("device",)).category_ids(context) == [0]


def test_category_ids_differ_by_key_for_the_same_value() -> None:
    spec = FeatureSpec(categorical=("a", "b"), buckets=1024)
    first, second = spec.category_ids({"a": "x", "b": "x"})
    assert first != second


# ---- FeatureSpec.converted -------------------------------------------------------------

@pytest.mark.parametrize(("event_type", "expected"), [
    ("purchase", True), ("add_to_cart", True), ("view", False), ("click", False),
    (None, False)])
def test_converted_by_event_type(event_type: str | None, expected: bool) -> None:
    assert FeatureSpec().converted(event_type, None) is expected


def test_converted_follows_declared_conversion_types() -> None:
    spec = FeatureSpec(conversion_types=("click",))
    assert spec.converted("click", None) and not spec.converted("purchase", None)


@pytest.mark.parametrize(("rating", "expected"), [
    (4, True), (4.0, True), (5, True), (3.9, False), (True, False), ("5", False),
    (None, False)])
def test_converted_by_liked_rating(rating: object, expected: bool) -> None:
    spec = FeatureSpec(liked_key="rating", liked_min=4.0)
    assert spec.converted("view", {"rating": rating}) is expected


def test_converted_ignores_ratings_without_a_liked_key() -> None:
    assert FeatureSpec().converted("view", {"rating": 5}) is False


# ---- storage ---------------------------------------------------------------------------

def test_spec_round_trips_through_a_dict_and_json() -> None:
    spec = FeatureSpec(event_types=("view", "purchase"), categorical=("device",),
                       numeric=("price",), buckets=16, numeric_mean=(2.5,),
                       numeric_std=(0.5,), conversion_types=("purchase",),
                       liked_key="rating", liked_min=3.5)
    assert FeatureSpec.from_dict(spec.to_dict()) == spec
    restored = FeatureSpec.from_dict(json.loads(json.dumps(spec.to_dict())))
    assert restored == spec
    assert restored.type_code("purchase") == 2 and restored.conversion_codes == (2,)
    assert "_codes" not in spec.to_dict()


def test_key_both_categorical_and_numeric_raises() -> None:
    with pytest.raises(ValueError, match="both categorical and numeric"):
        FeatureSpec(categorical=("price", "device"), numeric=("price",))


def test_fewer_than_two_buckets_raises() -> None:
    with pytest.raises(ValueError, match="buckets"):
        FeatureSpec(buckets=1)


# ---- pair_features ---------------------------------------------------------------------

CONVERT = (2,)  # type code 2 = a conversion


def pairs(ids: list[list[int]], histories: list[list[int]], types: list[list[int]],
          times: list[list[int]], now: list[int]) -> np.ndarray:
    return pair_features(np.array(ids), [np.array(h, np.int64) for h in histories],
                         [np.array(t, np.int64) for t in types],
                         [np.array(t, np.int64) for t in times], np.array(now), CONVERT)


def test_pair_rank_column_is_log_position() -> None:
    out = pairs([[4, 5, 6, 7]] * 2, [[], []], [[], []], [[], []], [0, 0])
    assert out.shape == (2, 4, PAIR_FEATURES)
    np.testing.assert_allclose(out[..., 0], [np.log1p(np.arange(4)) / 5] * 2, rtol=1e-6)


def test_pair_empty_history_sets_only_the_rank() -> None:
    out = pairs([[1, 2, 3]], [[]], [[]], [[]], [10 * HOUR_MS])
    assert not out[..., 1:].any()


def test_pair_repeated_item_uses_its_newest_occurrence() -> None:
    # item 3 bought (type 2) at 0h, then viewed at 2h; item 5 bought at 1h; 6 viewed at 3h
    out = pairs([[5, 3, 7, 1, 6]], [[3, 5, 3, 6]], [[2, 2, 1, 1]],
                [[0, HOUR_MS, 2 * HOUR_MS, 3 * HOUR_MS]], [10 * HOUR_MS])[0]
    assert out[:, 1].tolist() == [1, 1, 0, 0, 1]                    # seen
    np.testing.assert_allclose(out[:, 2], np.log1p([9, 8, 0, 0, 7]) / 5,
                               rtol=1e-6)                           # hours since newest
    assert out[:, 3].tolist() == [1, 0, 0, 0, 0]                    # 3 last as a view
    np.testing.assert_allclose(out[:, 4], np.log1p([2, 1, 0, 0, 0]) / 5,
                               rtol=1e-6)                           # events back
    np.testing.assert_allclose(out[:, 5], np.log1p([1, 2, 0, 0, 1]) / 5,
                               rtol=1e-6)                           # times seen


def test_pair_seen_without_times_or_types_leaves_those_columns_zero() -> None:
    out = pairs([[3, 4]], [[3, 5]], [[]], [[]], [HOUR_MS])[0]
    assert out[:, 1].tolist() == [1, 0]
    assert not out[:, 2:4].any()
    np.testing.assert_allclose(out[:, 4], [np.log1p(1) / 5, 0], rtol=1e-6)  # still recency


def test_pair_hours_never_negative() -> None:
    out = pairs([[3]], [[3]], [[1]], [[5 * HOUR_MS]], [HOUR_MS])[0]
    assert out[0, 1] == 1 and out[0, 2] == 0.0


def _pair_row(ids: np.ndarray, hist: list[int], types: list[int], times: list[int],
              now: int) -> list[list[float]]:
    """One row of ``pair_features`` by its definition, item by item."""
    rows = []
    for rank, item in enumerate(ids.tolist()):
        where = [i for i, h in enumerate(hist) if h == item]
        row = [math.log1p(rank) / 5, 0.0, 0.0, 0.0, 0.0, 0.0]
        if where:
            newest = where[-1]
            row[1] = 1.0
            if times:
                row[2] = math.log1p(max(now - times[newest], 0) / HOUR_MS) / 5
            row[3] = float(bool(types) and types[newest] in CONVERT)
            row[4] = math.log1p(len(hist) - 1 - newest) / 5
            row[5] = math.log1p(len(where)) / 5
        rows.append(row)
    return rows


def test_pair_features_of_a_batch_match_their_definition_row_by_row() -> None:
    """Random batches with repeats, empty histories, and rows without times or types."""
    rng = np.random.default_rng(7)
    for _ in range(30):
        batch, width = int(rng.integers(1, 9)), int(rng.integers(1, 12))
        histories = [rng.integers(1, 15, int(rng.integers(0, 20))).tolist()
                     for _ in range(batch)]
        types = [rng.integers(0, 4, len(h)).tolist() if rng.random() < 0.7 else []
                 for h in histories]
        times = [sorted(rng.integers(0, 50 * HOUR_MS, len(h)).tolist())
                 if rng.random() < 0.7 else [] for h in histories]
        now = rng.integers(0, 60 * HOUR_MS, batch).tolist()
        ids = rng.integers(0, 16, (batch, width))
        expected = [_pair_row(ids[r], histories[r], types[r], times[r], now[r])
                    for r in range(batch)]
        np.testing.assert_allclose(pairs(ids.tolist(), histories, types, times, now),
                                   expected, rtol=1e-6, atol=1e-7)


def test_pair_padding_ids_and_empty_candidate_lists_are_never_seen() -> None:
    """-1 (FAISS's padding) must not read as the row before's largest item."""
    out = pairs([[5], [-1]], [[5], [1]], [[], []], [[], []], [0, 0])
    assert out[:, 0, 1].tolist() == [1, 0]
    assert pairs([[], []], [[5], [1]], [[], []], [[], []], [0, 0]).shape == (2, 0, 6)


def test_pair_types_or_times_not_alongside_their_history_are_refused() -> None:
    with pytest.raises(ValueError, match="alongside"):
        pairs([[3]], [[3, 4]], [[1]], [[]], [0])


# ---- build_sequences and Side ----------------------------------------------------------

SEQ_SPEC = FeatureSpec(event_types=("view", "add_to_cart", "purchase"),
                       categorical=("device",), numeric=("price",), liked_key="rating")


def feature_events() -> list[SimpleNamespace]:
    """User a: 4 events (valid target converts, test target does not); user b: 3."""
    return [
        event("a", "x", 1000, "view", {"price": 10, "device": "ios"}),
        event("b", "y", 1500, "purchase"),
        event("a", "y", 2000, "view", {"price": "bad", "device": "web"}),
        event("b", "z", 1600, "view", {"price": 20.0, "rating": 5}),
        event("a", "z", 3000, "add_to_cart", {}),
        event("b", "x", 1700, "mystery", {"device": 1.5}),
        event("a", "x", 4000, "view", {"price": 30.0, "rating": 3}),
    ]


def test_build_sequences_fills_feature_columns_per_user() -> None:
    seqs = build_sequences(feature_events(), spec=SEQ_SPEC)
    a, b = seqs.users.get("a") - 1, seqs.users.get("b") - 1
    assert seqs.by_user[a].tolist() == [1, 2, 3, 1]
    assert seqs.times[a].tolist() == [1000, 2000, 3000, 4000]
    assert seqs.types[a].tolist() == [1, 1, 2, 1]
    np.testing.assert_array_equal(seqs.numeric[a], [[10.0], [np.nan], [np.nan], [30.0]])
    assert seqs.cats[a].tolist() == [[bucket("device", "ios", 64)],
                                     [bucket("device", "web", 64)], [0], [0]]
    assert seqs.converted[a].tolist() == [False, False, True, False]
    assert seqs.types[b].tolist() == [3, 1, 0]
    assert seqs.converted[b].tolist() == [True, True, False]
    assert seqs.cats[b].tolist() == [[0], [0], [0]]


def test_build_sequences_fits_unfitted_numeric_moments() -> None:
    seqs = build_sequences(feature_events(), spec=SEQ_SPEC)
    assert seqs.spec.numeric_mean == pytest.approx((20.0,))  # 10, 20, 30
    assert seqs.spec.numeric_std == pytest.approx((math.sqrt(200 / 3),))


def test_a_split_refits_the_moments_on_its_training_part_only() -> None:
    """The held-out events' prices (20 and 30) must not shape the features of training."""
    split = leave_last_out(build_sequences(feature_events(), spec=SEQ_SPEC))
    assert split.sequences.spec.numeric_mean == pytest.approx((10.0,))  # a's 10 only
    given = replace(SEQ_SPEC, numeric_mean=(5.0,), numeric_std=(2.0,))  # a model's own
    kept = leave_last_out(build_sequences(feature_events(), spec=given))
    assert kept.sequences.spec.numeric_mean == (5.0,)


def test_build_sequences_accepts_stream_events() -> None:
    t0 = ms(2024, 1, 1)
    events = [new_event("u", "i1", "view", t0, context={"price": 4.0, "device": "ios"}),
              new_event("u", "i2", "purchase", t0 + 1)]
    seqs = build_sequences(events, spec=SEQ_SPEC)
    assert seqs.types[0].tolist() == [1, 3]
    assert seqs.converted[0].tolist() == [False, True]
    assert seqs.cats[0].tolist() == [[bucket("device", "ios", 64)], [0]]


def test_sequences_side_takes_prefixes_and_the_newest_event() -> None:
    seqs = build_sequences(feature_events(), spec=SEQ_SPEC)
    side = seqs.side(np.array([1, 1, 1, 2]), [1, 2, 4, 0])
    assert [t.tolist() for t in side.types] == [[1], [1, 1], [1, 1, 2, 1], []]
    assert [t.tolist() for t in side.times] == [[1000], [1000, 2000],
                                                [1000, 2000, 3000, 4000], []]
    np.testing.assert_array_equal(side.numeric, [[10.0], [np.nan], [30.0], [np.nan]])
    assert side.cats.dtype == np.int64
    assert side.cats.tolist() == [[bucket("device", "ios", 64)],
                                  [bucket("device", "web", 64)], [0], [0]]


def test_leave_last_out_side_lines_up_with_history_and_target() -> None:
    seqs = build_sequences(feature_events(), spec=SEQ_SPEC)
    split = leave_last_out(seqs)
    users = split.eval_users("test")
    assert users.tolist() == [1, 2]
    side = split.side(users, "test")
    converted = split.converted(users, "test")
    for row, u in enumerate(users):
        n = len(split.history(u, "test"))
        assert len(side.types[row]) == n
        assert side.times[row].tolist() == seqs.times[u - 1][:n].tolist()
        assert seqs.by_user[u - 1][n] == split.target(u, "test")
        assert converted[row] == seqs.converted[u - 1][n]
    # user a: history x, y, z (newest z, add_to_cart without context); target x, rating 3
    assert side.types[0].tolist() == [1, 1, 2]
    assert np.isnan(side.numeric[0, 0]) and side.cats[0, 0] == 0
    assert converted.tolist() == [False, False]
    assert split.converted(users, "valid").tolist() == [True, True]


def test_leave_last_out_valid_side_is_train() -> None:
    split = leave_last_out(build_sequences(feature_events(), spec=SEQ_SPEC))
    side = split.side(np.array([1]), "valid")
    assert side.types[0].tolist() == [1, 1]
    assert side.cats[0].tolist() == [bucket("device", "web", 64)]


def test_no_features_give_zero_width_arrays() -> None:
    events = [SimpleNamespace(user_id="u", item_id=i, ts=t)
              for t, i in enumerate(["a", "b", "c"])]
    seqs = build_sequences(events)
    assert seqs.numeric[0].shape == (3, 0) and seqs.cats[0].shape == (3, 0)
    assert seqs.types[0].tolist() == [0, 0, 0]
    assert seqs.converted[0].tolist() == [False, False, False]
    side = seqs.side(np.array([1, 1]), [0, 2])
    assert side.numeric.shape == (2, 0) and side.cats.shape == (2, 0)
    assert side.dense(seqs.spec).shape == (2, seqs.spec.dense_dim)


# ---- ListwiseLoss ----------------------------------------------------------------------

def log_softmax(x: np.ndarray) -> np.ndarray:
    x = x - x.max(axis=-1, keepdims=True)
    return x - np.log(np.exp(x).sum(axis=-1, keepdims=True))


def bce_with_logits(x: np.ndarray, z: np.ndarray) -> np.ndarray:
    return -(z * np.log(1 / (1 + np.exp(-x))) + (1 - z) * np.log(1 - 1 / (1 + np.exp(-x))))


def expected_listwise(y_true: np.ndarray, y_pred: np.ndarray, width: int,
                      weights: list[float]) -> float:
    tasks = len(weights)
    y, x = y_true.reshape(-1, width, tasks), y_pred.reshape(-1, width, tasks)
    hits = y[..., 0]
    per_list = weights[0] * -(hits * log_softmax(x[..., 0])).sum(axis=1) / np.maximum(
        hits.sum(axis=1), 1)
    for task in range(1, tasks):  # conditional: the true items' labels alone
        per_list += weights[task] * (hits * bce_with_logits(x[..., task], y[..., task])).sum(
            axis=1) / np.maximum(hits.sum(axis=1), 1)
    return float(per_list.mean())


# 2 lists of 3 candidates, columns (next, conversion): list 1 has two hits
Y_TRUE = np.array([[1, 1], [0, 0], [0, 0],
                   [0, 0], [1, 0], [1, 1]], np.float32)
Y_PRED = np.array([[2.0, 0.5], [0.1, -1.0], [-1.0, 0.3],
                   [0.4, 1.2], [1.5, -0.7], [-0.3, 2.0]], np.float32)


def test_listwise_loss_matches_numpy() -> None:
    loss = ListwiseLoss(3, [1.0, 0.5])
    value = float(keras.ops.convert_to_numpy(loss(Y_TRUE, Y_PRED)))
    assert value == pytest.approx(expected_listwise(Y_TRUE, Y_PRED, 3, [1.0, 0.5]),
                                  rel=1e-5)


def test_listwise_loss_reads_conditional_heads_on_the_true_items_only() -> None:
    loss = ListwiseLoss(3, [1.0, 0.5])
    moved = Y_PRED.copy()
    moved[[1, 2, 3], 1] = [9.0, -9.0, 4.0]  # conversion logits of items nobody chose
    assert float(keras.ops.convert_to_numpy(loss(Y_TRUE, moved))) == pytest.approx(
        float(keras.ops.convert_to_numpy(loss(Y_TRUE, Y_PRED))), rel=1e-6)
    moved[0, 1] = -3.0  # a true item that converted, now predicted not to
    assert float(keras.ops.convert_to_numpy(loss(Y_TRUE, moved))) > float(
        keras.ops.convert_to_numpy(loss(Y_TRUE, Y_PRED)))


def test_listwise_loss_single_task_and_list_without_hits() -> None:
    y_true = np.array([[1], [0], [0], [0], [0], [0]], np.float32)
    y_pred = Y_PRED[:, :1]
    value = float(keras.ops.convert_to_numpy(ListwiseLoss(3, [2.0])(y_true, y_pred)))
    first = -log_softmax(y_pred[:3, 0])[0]
    assert value == pytest.approx(2.0 * first / 2, rel=1e-5)  # second list adds 0


def test_listwise_loss_leaves_empty_slots_out_of_the_softmax() -> None:
    """An empty slot (no candidate, id 0: serving drops it) is no negative: whatever the
    ranker scores it, the loss is that of the list without it."""
    y_true, y_pred = Y_TRUE.copy(), Y_PRED.copy()
    y_true[2, 0], y_true[3, 0] = EMPTY, EMPTY  # one empty slot in each list
    loss = ListwiseLoss(3, [1.0, 0.5])
    value = float(keras.ops.convert_to_numpy(loss(y_true, y_pred)))
    for score in (-5.0, 0.0, 7.0):
        y_pred[[2, 3], 0] = score
        assert float(keras.ops.convert_to_numpy(loss(y_true, y_pred))) == pytest.approx(
            value, rel=1e-5)
    kept = np.array([0, 1, 4, 5])
    assert value == pytest.approx(expected_listwise(Y_TRUE[kept], Y_PRED[kept], 2, [1.0, 0.5]),
                                  rel=1e-5)


def test_listwise_loss_config_round_trips() -> None:
    loss = ListwiseLoss(3, [1.0, 0.5])
    for restored in (keras.losses.deserialize(keras.losses.serialize(loss)),
                     ListwiseLoss.from_config(loss.get_config())):
        assert isinstance(restored, ListwiseLoss)
        assert (restored.width, restored.weights) == (3, [1.0, 0.5])
        assert float(keras.ops.convert_to_numpy(restored(Y_TRUE, Y_PRED))) == pytest.approx(
            float(keras.ops.convert_to_numpy(loss(Y_TRUE, Y_PRED))), rel=1e-6)


# ---- head_vector -----------------------------------------------------------------------

def test_head_vector_follows_task_order() -> None:
    weights = {"next": 0.5, "conversion": 2.0}
    assert head_vector(("next", "conversion"), weights).tolist() == [0.5, 2.0]
    assert head_vector(("conversion", "next"), weights).tolist() == [2.0, 0.5]


def test_head_vector_defaults_and_missing_tasks() -> None:
    assert head_vector(("next", "conversion")).tolist() == [
        HEAD_WEIGHTS["next"], HEAD_WEIGHTS["conversion"]]
    assert head_vector(("next", "conversion"), {"next": 1.0}).tolist() == [1.0, 0.0]


def test_head_vector_unknown_task_raises() -> None:
    with pytest.raises(ValueError, match="unknown tasks"):
        head_vector(("next", "conversion"), {"next": 1.0, "clicks": 1.0})


@pytest.mark.parametrize("task", ["next", "conversion"])
def test_head_vector_single_head_is_one(task: str) -> None:
    vector = head_vector((task,), {"next": 0.3, "conversion": 0.0})
    assert vector.dtype == np.float32 and vector.tolist() == [1.0]


def test_infinite_numeric_values_count_as_missing() -> None:
    spec = FeatureSpec(numeric=("price",))
    assert math.isnan(spec.numeric_values({"price": float("inf")})[0])
    fitted = spec.fit(np.array([[1.0], [3.0], [np.nan]]))
    assert fitted.numeric_mean == (2.0,)


def test_the_unknown_user_replaces_a_lists_user_on_all_its_candidates_or_none() -> None:
    users = np.repeat(np.arange(1, 2001), 4)  # 2,000 lists of 4 candidates
    dropped = _drop_users(users, 0.3, np.random.default_rng(0), width=4).reshape(-1, 4)
    whole = (dropped == 0).all(axis=1)
    assert ((dropped == 0).any(axis=1) == whole).all()  # never part of a list
    assert 0.25 < whole.mean() < 0.35
