"""Items' recent popularity (``model.trend``): the offline log and the live state agree,
and both equal the formula, across spans that would overflow the weights."""

import json

import numpy as np

from model.trend import HALF_LIVES_MS, ItemTrend, TrendLog

HOUR = 3_600_000


def _formula(items: np.ndarray, times: np.ndarray, now: int, ids: np.ndarray,
             scale: int) -> np.ndarray:
    """[len(ids), half-lives]: log(1 + share × scale) / 5 from the definition, in float64
    ages (no origin, no rescaling): events strictly before ``now`` only."""
    past = times < now
    out = []
    for half_life in HALF_LIVES_MS:
        w = np.exp2(-(now - times[past]) / half_life)
        share = np.array([w[items[past] == i].sum() for i in ids]) / w.sum()
        out.append(np.log1p(share * scale) / 5.0)
    return np.stack(out, axis=-1)


def _log(rng: np.random.Generator, events: int = 3000, items: int = 40
         ) -> tuple[np.ndarray, np.ndarray]:
    """Events over three years, bunched in days: spans of thousands of one-hour half-lives,
    with gaps, as a real log has."""
    days = np.sort(rng.choice(3 * 365, 60, replace=False))
    times = (rng.choice(days, events) * 24 * HOUR + rng.integers(0, 24 * HOUR, events))
    return rng.zipf(1.5, events) % items + 1, times.astype(np.int64)


def test_the_offline_log_the_live_state_and_the_formula_agree() -> None:
    rng = np.random.default_rng(0)
    items, times = _log(rng)
    log = TrendLog(items, times, 40)
    nows = np.sort(rng.choice(times, 6)) + 1
    ids = np.tile(np.arange(1, 41), (6, 1))
    offline = log.features(nows, ids)
    order = np.argsort(times, kind="stable")
    live, done = ItemTrend(40), 0
    for row, now in enumerate(nows):
        upto = int(np.searchsorted(times[order], now))
        for chunk in np.array_split(order[done:upto], 3):  # micro-batches of any size
            live.observe(items[chunk], times[chunk])
        done = upto
        np.testing.assert_allclose(live.features(ids[row]), offline[row], rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(offline[row], _formula(items, times, now, ids[row], 40),
                                   rtol=1e-4, atol=1e-6)
    assert np.isfinite(live.counts).all() and offline.max() > 0.3


def test_the_newest_events_weigh_most_on_the_shortest_half_life() -> None:
    """Item 1 was popular a month ago, item 2 in the last hour: the one-hour feature ranks
    item 2 first, the thirty-day one item 1."""
    now = 60 * 24 * HOUR
    items = np.array([1] * 50 + [2] * 5)
    times = np.array([now - 30 * 24 * HOUR] * 50 + [now - HOUR // 2] * 5)
    (row,) = TrendLog(items, times, 3).features(np.array([now]), np.array([[1, 2, 3]]))
    assert row[1, 0] > row[0, 0] and row[0, 3] > row[1, 3]
    assert (row[2] == 0).all()  # never seen


def test_unknown_items_and_events_without_a_time_are_not_counted() -> None:
    trend = ItemTrend(3)
    trend.observe(np.array([0, 1, 9, 2]), np.array([HOUR, HOUR, HOUR, 0]))
    assert trend.counts[:, 1].all() and trend.counts.sum() == trend.counts[:, 1].sum()
    assert (trend.features(np.array([[9, 2]])) == 0).all()  # past the table, unseen


def test_a_stored_trend_serves_the_same_and_widens_for_new_items() -> None:
    rng = np.random.default_rng(1)
    items, times = _log(rng, events=500, items=10)
    state = TrendLog(items, times, 10).state()
    again = ItemTrend.from_dict(json.loads(json.dumps(state.to_dict())), num_items=12)
    ids = np.array([[1, 5, 10, 11, 12]])
    np.testing.assert_array_equal(again.features(ids), state.features(ids))
    again.observe(np.array([12]), np.array([times.max() + 1]))
    assert again.features(ids)[0, 4].all() and again.scale == 10
