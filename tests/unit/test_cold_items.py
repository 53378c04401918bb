"""The cold-item protocol (``model.evaluation.cold``): which items go cold, what trains,
which cases are ranked, and how each kind of model scores a cold item."""

from __future__ import annotations

from types import SimpleNamespace

import keras
import numpy as np
import pytest

from model.data import leave_last_out
from model.evaluation.baselines import Popularity
from model.evaluation.cold import (
    CategoryPopularity,
    ColdItemsLast,
    RandomScores,
    WithColdItems,
    cold_item_split,
    cold_scorer,
    evaluate_cold,
)
from model.retrieval.sasrec import SASRec
from model.retrieval.training import SASRecScorer
from streams.catalog import ItemRecord

pytestmark = pytest.mark.keras  # `make test` runs these on TensorFlow and again on JAX




def _log(users: int = 30, items: int = 40, length: int = 8) -> list[SimpleNamespace]:
    rng = np.random.default_rng(0)
    events, ts = [], 1_600_000_000_000
    for _ in range(length):
        for u in range(users):
            ts += 1000
            events.append(SimpleNamespace(user_id=f"u{u}", item_id=f"i{rng.integers(items)}",
                                          ts=ts, event_type="view", context=None))
    return events


RECORDS = [ItemRecord(f"i{i}", title=f"thing {i}", categories=(f"c{i % 4}",)) for i in range(40)]


def test_cold_items_leave_training_and_each_case_targets_one() -> None:
    events = _log()
    cold = cold_item_split(events, RECORDS + [ItemRecord("not-in-log")], seed=1)
    cold_names = {cold.items.ids[i - 1] for i in cold.cold}
    assert len(cold_names) == 4 and "not-in-log" not in cold_names  # 10% of 40 logged items
    assert set(cold.sequences.items.ids).isdisjoint(cold_names)
    assert cold.sequences.interactions() == sum(e.item_id not in cold_names for e in events)
    assert len(cold.users) and set(cold.targets) <= set(cold.cold)
    for user, n, target, hist in zip(cold.users, cold.lengths, cold.targets, cold.histories()):
        name = cold.sequences.users.ids[user - 1]
        mine = [e.item_id for e in events if e.user_id == name]
        last_cold = max(i for i, item in enumerate(mine) if item in cold_names)
        assert cold.items.ids[target - 1] == mine[last_cold]  # the user's last cold event
        assert n == sum(item not in cold_names for item in mine[:last_cold]) == len(hist) > 0
        earlier = [cold.items.ids[i - 1] for i in cold.earlier[list(cold.users).index(user)]]
        assert earlier == [item for item in mine[:last_cold] if item in cold_names]
    assert any(len(e) for e in cold.earlier)  # the log gives some users two cold events
    # The content table covers warm and cold ids alike.
    assert cold.sequences.content is not None
    assert cold.sequences.content.tokens.shape[0] == cold.num_items + 1
    assert cold.sequences.content.covered == cold.num_items
    trigrams = cold_item_split(events, RECORDS, seed=1, char_tokens=4)
    assert (trigrams.cold == cold.cold).all()  # by seed
    widths = (trigrams.sequences.content.tokens.shape[1], cold.sequences.content.tokens.shape[1])
    assert widths == (16 + 4, 16)  # the word slots, then four for trigrams


def test_bad_protocol_input_fails_with_a_reason() -> None:
    with pytest.raises(ValueError, match="fraction"):
        cold_item_split(_log(), RECORDS, fraction=1.0)
    with pytest.raises(ValueError, match="no item of the log"):
        cold_item_split(_log(), [ItemRecord("elsewhere")])


def test_models_without_content_rank_cold_items_last() -> None:
    cold = cold_item_split(_log(), RECORDS, seed=1)
    split = leave_last_out(cold.sequences)
    pop = Popularity().fit(split.train, cold.sequences.num_items)
    scorer = cold_scorer(pop, cold)
    assert isinstance(scorer, ColdItemsLast)
    scores = scorer.score(cold.users[:3], cold.histories()[:3])
    assert scores.shape == (3, cold.num_items + 1)
    assert (scores[:, cold.cold].max(axis=1) < scores[:, 1:cold.cold[0]].min(axis=1)).all()
    full = evaluate_cold(scorer, cold)["full"]
    assert full["HR@10"] == 0.0 and full["AUC"] < 0.2


def test_a_content_sasrec_scores_cold_items_by_content_alone() -> None:
    keras.utils.set_random_seed(0)
    cold = cold_item_split(_log(), RECORDS, seed=1)
    content = cold.sequences.content
    model = SASRec(cold.sequences.num_items, max_len=6, dim=8, blocks=1,
                   content=content.spec.to_dict(), id_dropout=0.3)
    seq = np.ones((1, 6), "int64")
    model({"seq": seq, "pos": seq, "neg": np.ones((1, 2), "int64")})
    model.encoder.set_content(content)
    scorer = cold_scorer(SASRecScorer(model), cold)
    assert isinstance(scorer, WithColdItems)
    scores = scorer.score(cold.users, cold.histories(), cold.side())
    sessions = SASRecScorer(model).embed(cold.histories(), cold.side())
    vectors = keras.ops.convert_to_numpy(model.content_vectors(
        content.tokens[cold.cold], content.numeric[cold.cold]))
    np.testing.assert_allclose(scores[:, cold.cold], sessions @ vectors.T, rtol=1e-5, atol=1e-6)


def test_category_popularity_and_random_baselines() -> None:
    cold = cold_item_split(_log(), RECORDS, seed=1)
    cats = {r.item_id: r.categories for r in RECORDS}
    scores = CategoryPopularity(cold, cats).score(cold.users[:1], cold.histories()[:1])[0]
    # counted on the models' training part, as the models see it
    counts = np.bincount(np.concatenate(leave_last_out(cold.sequences).train),
                         minlength=cold.num_items + 1)
    means = []
    for name in cold.items.ids:  # every item, warm and cold
        peers = [i for i, other in enumerate(cold.items.ids, 1)
                 if cats[other][0] == cats[name][0] and i <= cold.sequences.num_items]
        means.append(counts[peers].mean())
    mean, score = np.array(means), scores[1:]
    assert (score[:, None] > score[None, :])[mean[:, None] > mean[None, :]].all()
    assert len(np.unique(mean)) < len(mean)  # items of one category tie in popularity,
    assert len(np.unique(scores)) == len(scores)  # and the baseline breaks their ties
    rand = RandomScores(cold.num_items).score(cold.users[:2], cold.histories()[:2])
    assert rand.shape == (2, cold.num_items + 1) and len(np.unique(rand)) == rand.size
