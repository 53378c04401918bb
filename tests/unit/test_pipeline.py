"""The serving bundle gives the same lists as the offline pipeline scorer."""

import keras
import numpy as np

from model.data import build_sequences, leave_last_out
from model.pipeline import PipelineScorer, ServingBundle
from model.ranking.neumf import NeuMF, start_from_score
from model.retrieval.index import ItemIndex
from model.retrieval.sasrec import SASRec
from model.retrieval.training import SASRecScorer
from streams.synthetic import SyntheticConfig, generate


def test_bundle_matches_the_offline_pipeline_and_handles_unknowns() -> None:
    keras.utils.set_random_seed(1)
    seqs = build_sequences(generate(SyntheticConfig(users=60, items=120, events=2000, seed=9)))
    split = leave_last_out(seqs)
    sasrec = SASRec(seqs.num_items, max_len=16, dim=16, blocks=1, dropout=0.0)
    ranker = start_from_score(NeuMF(seqs.num_users, seqs.num_items, 8, (16, 8), session_dim=16,
                                    use_score=True))
    sas = SASRecScorer(sasrec)
    users = np.array([1, 2, 3])
    hist = [split.history(u, "test")[-16:] for u in users]
    sas.embed(hist)  # builds the model
    # Give the ranker learned features a say, so the test checks more than the score path.
    kernel, bias = ranker.out.get_weights()
    ranker.out.set_weights([kernel + 0.05, bias])
    index = ItemIndex.build(keras.ops.convert_to_numpy(sasrec.item_embeddings()))
    offline = PipelineScorer(sas, index, ranker, candidates=30, exclude_seen=True)
    _, expected = offline.rerank(users, sas.embed(hist), hist)

    bundle = ServingBundle.from_models(sasrec, ranker, seqs.users, seqs.items, "v7", candidates=30)
    names = [[seqs.items.ids[i - 1] for i in h] for h in hist]
    recs = bundle.recommend([seqs.users.ids[u - 1] for u in users], names, k=10)
    for row, rec in enumerate(recs):
        assert rec is not None and len(rec.items) == 10
        assert rec.items == [seqs.items.ids[i - 1] for i in expected[row, :10]]
        assert not set(rec.items) & set(names[row])  # seen items are not recommended
        assert rec.scores == sorted(rec.scores, reverse=True)
    # Unknown items are skipped; a session of only unknown items gets None (popularity path).
    mixed = bundle.recommend(["new-user", "u-x"], [["never-seen", names[0][-1]], ["nope"]], k=5)
    assert mixed[0] is not None and len(mixed[0].items) == 5 and mixed[1] is None


def test_cached_sessions_step_to_the_same_lists_as_fresh_encoding() -> None:
    keras.utils.set_random_seed(2)
    seqs = build_sequences(generate(SyntheticConfig(users=40, items=90, events=1500, seed=3)))
    sasrec = SASRec(seqs.num_items, max_len=8, dim=16, blocks=1, dropout=0.0)
    sasrec({"seq": np.ones((1, 8), "int64"), "pos": np.ones((1, 8), "int64"),
            "neg": np.ones((1, 2), "int64")})
    names = [[seqs.items.ids[i - 1] for i in s[:6]] for s in seqs.by_user[:5]]
    users = seqs.users.ids[:5]
    warm = ServingBundle.from_models(sasrec, None, seqs.users, seqs.items, "v1")
    warm.recommend(users, [n[:-1] for n in names], k=5)          # fills the caches
    stepped = warm.recommend(users, names, k=5)                  # one step each
    # The same user twice in a batch: its second event steps after its first.
    twice = warm.recommend([users[0], users[0]], [names[0] + [names[1][0]],
                                                  names[0] + [names[1][0], names[1][1]]], k=5)
    fresh = ServingBundle.from_models(sasrec, None, seqs.users, seqs.items, "v1")
    assert [r.items for r in stepped] == [r.items for r in fresh.recommend(users, names, k=5)]
    again = ServingBundle.from_models(sasrec, None, seqs.users, seqs.items, "v1")
    expected = again.recommend([users[0]] * 2, [names[0] + [names[1][0]],
                                                names[0] + [names[1][0], names[1][1]]], k=5)
    assert [r.items for r in twice] == [r.items for r in expected]
    np.testing.assert_allclose([r.scores for r in stepped],
                               [r.scores for r in fresh.recommend(users, names, k=5)], atol=1e-5)
