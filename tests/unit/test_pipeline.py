"""The serving bundle gives the same lists as the offline pipeline scorer."""

from dataclasses import replace

import keras
import numpy as np
import pytest

from model.data import IdMap, Side, build_sequences, leave_last_out
from model.pipeline import PipelineScorer, ServingBundle
from model.ranking.neumf import NeuMF, start_from_score
from model.retrieval.index import ItemIndex
from model.retrieval.sasrec import SASRec
from model.retrieval.training import SASRecScorer
from streams.synthetic import SyntheticConfig, generate

pytestmark = pytest.mark.keras  # `make test` runs these on TensorFlow and again on JAX


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
    # Give the ranker learned features a say, so the test checks more than the score path
    # (and its own order differs from the retriever's, on either backend).
    ranker.set_weights([w + np.random.default_rng(0).normal(0, 0.2, w.shape)
                        for w in ranker.get_weights()])
    index = ItemIndex.build(keras.ops.convert_to_numpy(sasrec.item_embeddings()))
    offline = PipelineScorer(sas, index, ranker, candidates=30, exclude_seen=True)
    retriever = ServingBundle.from_models(sasrec, None, seqs.users, seqs.items, "v7")
    names = [[seqs.items.ids[i - 1] for i in h] for h in hist]
    alone = retriever.recommend([seqs.users.ids[u - 1] for u in users], names, k=10)
    for keep in (False, True):  # the ranker's own order among unseen items, the retriever's
        ranker.retrieval_order = keep
        _, expected = offline.rerank(users, sas.embed(hist), hist)
        bundle = ServingBundle.from_models(sasrec, ranker, seqs.users, seqs.items, "v7",
                                           candidates=30)
        recs = bundle.recommend([seqs.users.ids[u - 1] for u in users], names, k=10)
        for row, (rec, plain) in enumerate(zip(recs, alone)):
            assert rec is not None and plain is not None and len(rec.items) == 10
            assert rec.items == [seqs.items.ids[i - 1] for i in expected[row, :10]]
            assert not set(rec.items) & set(names[row])  # seen items are not recommended
            assert rec.scores == sorted(rec.scores, reverse=True)
        # Unseen items only: the retriever's order holds where chosen, not otherwise.
        assert [r.items for r in recs] == [p.items for p in alone] if keep else \
            [r.items for r in recs] != [p.items for p in alone]
    # Unknown items are skipped; a session of only unknown items gets None (popularity path).
    mixed = bundle.recommend(["new-user", "u-x"], [["never-seen", names[0][-1]], ["nope"]], k=5)
    assert mixed[0] is not None and len(mixed[0].items) == 5 and mixed[1] is None
    # A whole micro-batch the model knows nothing of (a worker met one replaying a log).
    assert bundle.recommend(["u-y", "u-z"], [["nope"], ["never-seen"]], k=5) == [None, None]
    # More than the ranker's 30 candidates asked for: the model ranks them all.
    long = bundle.recommend([seqs.users.ids[0]], [names[0]], k=40)[0]
    assert long is not None and len(long.items) == 40 and long.paths == ["model"] * 40


def test_a_ranker_scoring_nan_or_trained_on_another_log_is_never_served_quietly() -> None:
    """Two poisoned champions a worker took (``make faults``): a ranker scoring NaN served
    empty lists (NaN sorted last, behind the empty slots), which no finiteness check saw;
    a ranker trained on another log failed on every unseen user's batch. Now the NaN
    list carries its NaN (the smoke test and the worker replace it), and the pair is
    refused when the bundle is made."""
    keras.utils.set_random_seed(4)
    seqs = build_sequences(generate(SyntheticConfig(users=30, items=60, events=900, seed=4)))
    sasrec = SASRec(seqs.num_items, max_len=8, dim=16, blocks=1, dropout=0.0)
    sasrec({"seq": np.ones((1, 8), "int64"), "pos": np.ones((1, 8), "int64"),
            "neg": np.ones((1, 2), "int64")})
    ranker = start_from_score(NeuMF(seqs.num_users, seqs.num_items, 8, (16, 8),
                                    session_dim=16, use_score=True))
    bundle = ServingBundle.from_models(sasrec, ranker, seqs.users, seqs.items, "v1")
    bundle.ranker = replace(bundle.ranker, fuse_bias=np.full_like(bundle.ranker.fuse_bias,
                                                                  np.nan))
    (rec,) = bundle.recommend([seqs.users.ids[0]], [seqs.items.ids[:3]], k=5)
    assert rec is not None and len(rec.items) == 5 and not rec.finite()
    other = start_from_score(NeuMF(seqs.num_users - 5, seqs.num_items, 8, (16, 8),
                                   session_dim=16, use_score=True))
    with pytest.raises(ValueError, match=r"not trained with the retriever's id maps \(users"):
        ServingBundle.from_models(sasrec, other, seqs.users, seqs.items, "v2")
    # A newer ranker of the same lineage beside an older retriever (an experiment's
    # variant pinned by hand): its rows past the retriever's maps are other items', which
    # the retriever's next new items would have read (a review); they are cut at load
    newer = start_from_score(NeuMF(seqs.num_users + 2, seqs.num_items + 4, 8, (16, 8),
                                   session_dim=16, use_score=True))
    paired = ServingBundle.from_models(sasrec, newer, seqs.users, seqs.items, "v2b")
    assert paired.ranker is not None and (paired.ranker.num_users, paired.ranker.num_items) \
        == (seqs.num_users, seqs.num_items)
    # An item map that is not the retriever's table: new items would read other rows
    short = IdMap.from_list(seqs.items.ids[:-3])
    with pytest.raises(ValueError, match=f"item table has {seqs.num_items + 1} rows for an "
                       f"id map of {seqs.num_items - 3} items"):
        ServingBundle.from_models(sasrec, None, seqs.users, short, "v3")
    # A retriever alone never lists the session's own items, whatever the setting: it has
    # no seen-before features, and by raw scores they took the top of every list
    alone = ServingBundle.from_models(sasrec, None, seqs.users, seqs.items, "v4")
    session = seqs.items.ids[:3]
    (listed,) = alone.recommend([seqs.users.ids[0]], [session], k=10, exclude_seen=False)
    assert listed is not None and not set(listed.items) & set(session)


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


def test_bundle_computes_the_offline_features_from_live_sessions() -> None:
    """Event types, times and context reach the served ranker exactly as they reach the
    offline pipeline: same lists, same per-head scores, and reasons from the session."""
    import dataclasses

    from model.features import FeatureSpec, LiveSession
    from streams.events import EVENT_TYPES

    keras.utils.set_random_seed(3)
    events = [dataclasses.replace(e, context={"device": ("web", "app")[n % 2], "price": n % 7})
              for n, e in enumerate(generate(SyntheticConfig(users=40, items=90, events=1500,
                                                             seed=5)))]
    spec = FeatureSpec(event_types=EVENT_TYPES, categorical=("device",), numeric=("price",),
                       buckets=8)
    seqs = build_sequences(events, spec=spec)
    split = leave_last_out(seqs)
    sasrec = SASRec(seqs.num_items, max_len=16, dim=16, blocks=1, dropout=0.0,
                    num_types=spec.num_types)
    ranker = NeuMF(seqs.num_users, seqs.num_items, 8, (16, 8), session_dim=16, use_score=True,
                   context_dim=seqs.spec.dense_dim, categories=1, buckets=8, pair_dim=4,
                   tasks=("next", "conversion"), features=seqs.spec.to_dict(), wide=True,
                   conditional=True)  # as ``fit_ranker`` builds it
    users = np.array([1, 2, 3, 4])
    # The newest 16 events: within one encoder window (longer sessions roll, by design).
    hist = [split.history(u, "test")[-16:] for u in users]
    full = split.side(users, "test")
    side = Side([t[-16:] for t in full.types], [t[-16:] for t in full.times], full.numeric,
                full.cats)
    sas = SASRecScorer(sasrec)
    sessions = sas.embed(hist, side)
    start_from_score(ranker)
    ranker.set_weights([w + np.random.default_rng(0).normal(0, 0.2, w.shape)
                        for w in ranker.get_weights()])  # every input has a say
    index = ItemIndex.build(keras.ops.convert_to_numpy(sasrec.item_embeddings()))
    weights = {"next": 1.0, "conversion": 0.5}
    # Seen items among the candidates: the ranker places them among the unseen ones.
    ranker.retrieval_order = True
    offline = PipelineScorer(sas, index, ranker, candidates=30, exclude_seen=False,
                             head_weights=weights)
    expected_scores, expected = offline.rerank(users, sessions, hist, side)
    logits, found = offline.head_logits(users, sessions, hist, side)

    by_user: dict[str, list] = {}
    for e in events:
        by_user.setdefault(e.user_id, []).append(e)
    live = []
    for u in users:
        mine = by_user[seqs.users.ids[u - 1]][:-1][-16:]  # the test history, as above
        live.append(LiveSession([e.item_id for e in mine], [e.event_type for e in mine],
                                [e.ts for e in mine], mine[-1].context))
    bundle = ServingBundle.from_models(sasrec, ranker, seqs.users, seqs.items, "v8",
                                       candidates=30, head_weights=weights)
    recs = bundle.recommend([seqs.users.ids[u - 1] for u in users], live, k=10,
                            exclude_seen=False)
    placed = 0
    for row, rec in enumerate(recs):
        assert rec is not None
        assert rec.items == [seqs.items.ids[i - 1] for i in expected[row, :10]]
        placed += len(set(rec.items) & set(live[row].items))
        np.testing.assert_allclose(rec.scores, expected_scores[row, :10], rtol=1e-4, atol=1e-4)
        assert rec.heads is not None and set(rec.heads) == {"next", "conversion"}
        at = [found.ids[row].tolist().index(i) for i in expected[row, :10]]
        for head, column in (("next", 0), ("conversion", 1)):
            np.testing.assert_allclose(rec.heads[head], logits[row, at, column], rtol=1e-4,
                                       atol=1e-4)
        assert rec.because and {item for item, _ in rec.because} <= set(live[row].items)
        assert [w for _, w in rec.because] == sorted((w for _, w in rec.because), reverse=True)
    assert placed  # the lists hold seen items, so the ranker's placing of them was checked
    # A wrong-typed context value is left out of the features, never a failure.
    odd = LiveSession(live[0].items, live[0].types, live[0].times, {"price": "cheap"})
    assert bundle.recommend([seqs.users.ids[0]], [odd], k=5)[0] is not None
    # A micro-batch's sessions are converted in one pass: each row keeps its own items,
    # an unknown item leaves with its type and time, a session of unknown items only has
    # no row, and a plain item list (or a types list of the wrong length) has unknown
    # types (and times).
    one = live[1]
    mixed = LiveSession([one.items[0], "never-seen", *one.items[1:3]],
                        [one.types[0], "purchase", *one.types[1:3]],
                        [one.times[0], 7, *one.times[1:3]], one.context)
    batch = [LiveSession(live[0].items, live[0].types[1:], live[0].times, live[0].context),
             LiveSession(["never-seen"], ["view"], [1]), mixed, LiveSession(live[2].items)]
    known, got, side, _ = bundle._histories(batch)
    assert known == [0, 2, 3]
    for row, want in zip(range(3), [live[0], LiveSession(one.items[:3], one.types[:3],
                                                         one.times[:3]), live[2]]):
        assert got[row].tolist() == [seqs.items.get(i) for i in want.items]
        # Row 0's types are one short: unknown, and the rows after it keep their own.
        types = [spec.type_code(t) for t in want.types] if row == 1 else [0] * len(want.items)
        assert side.types[row].tolist() == types
        assert side.times[row].tolist() == (list(want.times) if row < 2 else [0] * len(types))
    # An event on an item the model cannot place is still the event the list answers:
    # its time, gap and type describe it, beside its context. They were the newest known
    # event's, mixed with this one's context.
    hour = 3_600_000
    last = LiveSession([*one.items[:3], "never-seen"], [*one.types[:3], "purchase"],
                       [*one.times[:3], one.times[2] + hour], {"device": "tv", "price": 3})
    _, _, side, _ = bundle._histories([last])
    want = bundle.spec.dense(np.array([one.times[2] + hour]), np.array([one.times[2]]),
                             np.array([bundle.spec.type_code("purchase")]), np.array([[3.0]]))
    np.testing.assert_array_equal(side.dense(bundle.spec), want)
    assert side.now().tolist() == [one.times[2] + hour]  # "hours since seen" count from it


def test_a_retriever_served_without_a_ranker_codes_event_types_as_it_was_trained() -> None:
    """Its type embedding learnt codes from the training spec; a bare spec coded every live
    event 0 (unknown)."""
    seqs = build_sequences(generate(SyntheticConfig(users=20, items=90, events=800, seed=5)))
    trained = SASRec(seqs.num_items, max_len=8, dim=16, blocks=1, num_types=3,
                     event_types=("view", "purchase"))
    sasrec = SASRec.from_config(trained.get_config())  # as the registry loads it
    sasrec({"seq": np.ones((1, 8), "int64"), "types": np.ones((1, 8), "int64"),
            "pos": np.ones((1, 8), "int64"), "neg": np.ones((1, 2), "int64")})
    bundle = ServingBundle.from_models(sasrec, None, seqs.users, seqs.items, "v1")
    assert bundle.spec.type_code("purchase") == 2 and bundle.spec.type_code("click") == 0


def _window_of_8(seed: int) -> tuple:
    """A retriever-only bundle with an 8-item window, over a small synthetic log."""
    keras.utils.set_random_seed(seed)
    seqs = build_sequences(generate(SyntheticConfig(users=20, items=90, events=800, seed=5)))
    sasrec = SASRec(seqs.num_items, max_len=8, dim=16, blocks=1, dropout=0.0)
    sasrec({"seq": np.ones((1, 8), "int64"), "pos": np.ones((1, 8), "int64"),
            "neg": np.ones((1, 2), "int64")})
    bundle = ServingBundle.from_models(sasrec, None, seqs.users, seqs.items, "v1")
    return seqs, bundle


def test_a_full_session_slides_without_rebuilding_its_cache_each_event() -> None:
    """Past the window a session drops its oldest item per event; the cache rolls by half
    a window instead, so it is rebuilt once per max_len // 2 events, not on every one, and
    each step encodes exactly the items the cache holds."""
    seqs, bundle = _window_of_8(seed=4)
    rebuilt: list[int] = []
    fill = bundle.incremental._fill
    bundle.incremental._fill = (  # type: ignore[method-assign]  # what prefills and rolls call
        lambda windows: rebuilt.extend(len(w) for w in windows) or fill(windows))
    stream = [seqs.items.ids[i % seqs.num_items] for i in range(40)]
    user = seqs.users.ids[0]
    for n in range(1, len(stream) + 1):
        session = stream[max(0, n - 8):n]  # the session keeps its newest 8 items
        bundle.recommend([user], [session], k=3)
        cache = bundle.caches[user]
        assert cache.items[-len(session):] == [bundle.incremental.token(bundle.items.get(x))
                                               for x in session][-len(cache.items):]
        tokens = np.asarray([cache.items])
        expected = bundle.encoder.encode(tokens // bundle.encoder.num_types)
        step = bundle.incremental.step(fill([cache.items[:-1]]), tokens[:, -1])
        np.testing.assert_allclose(step, expected, atol=1e-5)
        np.testing.assert_allclose(cache.output, expected[0], atol=1e-5)  # what was served
    # Once at the first event (an empty cache), then only the rolls: every 4 events
    # once the window of 8 is full (from event 9 on).
    assert rebuilt.count(0) == 1 and len(rebuilt) == 1 + (40 - 8) // 4
    assert set(rebuilt[1:]) == {4}
    # A new, short session never continues the old cache, even ending the same way.
    bundle.recommend([user], [stream[-2:]], k=3)
    assert rebuilt[-1] == 1


def test_a_session_longer_than_the_window_met_without_a_cache_reads_its_last_window() -> None:
    """With ``STREAMREC_SESSION_MAX_ITEMS`` above the model's window, a session met with
    no cache (a worker's start, an evicted cache) was prefilled with a full window, which
    the step then rolled at once: the answer read the newest half of the window, not the
    whole window the Keras model reads."""
    seqs, bundle = _window_of_8(seed=7)
    session = [seqs.items.ids[i] for i in range(12)]
    bundle.recommend([seqs.users.ids[0]], [session], k=3)
    window = [bundle.incremental.token(bundle.items.get(x)) for x in session[-8:]]
    cache = bundle.caches[seqs.users.ids[0]]
    assert cache.items == window
    expected = bundle.encoder.encode(np.asarray([window]) // bundle.encoder.num_types)
    np.testing.assert_allclose(cache.output, expected[0], atol=1e-5)


def test_an_event_the_model_cannot_read_after_repeat_views_encodes_nothing() -> None:
    """A session ending in more than half a window of one item also reads as continuing
    its cache, so an event on an unknown item encoded that item once more: another
    answer for the same history. Now the bundle is told the event added nothing."""
    seqs, bundle = _window_of_8(seed=8)
    user, again = seqs.users.ids[0], [seqs.items.ids[3]] * 6
    (before,) = bundle.recommend([user], [again], k=3)
    held = list(bundle.caches[user].items)
    (after,) = bundle.recommend([user], [[*again, "never-seen"]], k=3)
    assert bundle.caches[user].items == held and after.items == before.items
    assert after.scores == before.scores
    (viewed,) = bundle.recommend([user], [[*again, "never-seen", again[0]]], k=3)
    assert len(bundle.caches[user].items) == len(held) + 1  # a real repeat view still counts


def test_a_late_or_redelivered_event_after_repeat_views_steps_nothing() -> None:
    """A late event on an unknown item (placed before the newest) or a redelivery leaves
    the known history as it was, its newest item known: read as "added", the cache of a
    session ending in a run of one item stepped that item in once more than the session
    holds, and every later answer read one repeat too many. The worker now says the event
    added nothing (``LiveSession.added``)."""
    from model.features import LiveSession

    seqs, bundle = _window_of_8(seed=8)
    user, again = seqs.users.ids[0], [seqs.items.ids[3]] * 5
    (before,) = bundle.recommend([user], [LiveSession(again)], k=3)
    held = list(bundle.caches[user].items)
    late = LiveSession([*again[:-1], "never-seen", again[-1]], added=False)
    (after,) = bundle.recommend([user], [late], k=3)
    assert bundle.caches[user].items == held and after.scores == before.scores
    (resent,) = bundle.recommend([user], [LiveSession(again, added=False)], k=3)
    assert bundle.caches[user].items == held and resent.scores == before.scores
    fresh = _window_of_8(seed=8)[1]
    (expected,) = fresh.recommend([user], [LiveSession(again)], k=3)
    np.testing.assert_allclose(after.scores, expected.scores, rtol=1e-5)


def test_a_session_the_model_cannot_read_is_said_unreadable_not_an_empty_list() -> None:
    """One item row gone NaN: the session's embedding is NaN, retrieval finds nothing, and
    the empty list passed as sound (``finite()`` of no score), so the worker topped it up
    with popularity labelled ``model`` and counted nothing."""
    seqs, bundle = _window_of_8(seed=3)
    bad, good = seqs.items.ids[5], seqs.items.ids[6]
    bundle.encoder.items[bundle.items.get(bad)] = np.nan
    broken, sound = bundle.recommend(["u-a", "u-b"], [[good, bad], [good]], k=3)
    assert not broken.finite() and broken.items == []
    assert sound.finite() and len(sound.items) == 3  # the batch's other rows are served


def test_a_cache_keeps_copies_not_views_of_its_micro_batch() -> None:
    """A view kept the whole micro-batch's output alive as long as any one of its caches
    lived: memory the cache budget never counted."""
    seqs, bundle = _window_of_8(seed=3)
    users = list(seqs.users.ids[:4])
    bundle.recommend(users, [[seqs.items.ids[i], seqs.items.ids[i + 1]] for i in range(4)],
                     k=3)
    assert all(bundle.caches[u].output.base is None for u in users)


def test_a_short_cache_is_not_taken_for_a_longer_session_ending_the_same_way() -> None:
    """A cache of one item (the hot swap's smoke test leaves one for the id map's first
    user) held the session's second-newest item: only that item and the new one were
    encoded, not the session. Shorter caches continue a session only after a roll."""
    from model.features import LiveSession
    from streams.events import EVENT_TYPES
    from streams.hot_swap import smoke_test

    seqs, bundle = _window_of_8(seed=6)
    user, ids = seqs.users.ids[0], seqs.items.ids
    session = [ids[4], ids[2], ids[6], ids[0], ids[1]]  # the smoke test's item, then one
    smoke_test(bundle, 3)
    (got,) = bundle.recommend([user], [LiveSession(session, [EVENT_TYPES[0]] * 5, [0] * 5)],
                              k=3)
    _, fresh = _window_of_8(seed=6)
    (want,) = fresh.recommend([user], [LiveSession(session, [EVENT_TYPES[0]] * 5, [0] * 5)],
                              k=3)
    assert got.items == want.items
    np.testing.assert_allclose(got.scores, want.scores, atol=1e-5)


def _as_one_event_at_a_time(bundle: ServingBundle, rows: list[str], sessions: list[list[str]],
                            seed: int) -> list:
    """``bundle``'s lists for a micro-batch, checked equal to a fresh twin's (same seed)
    answering one event per call: items, scores and reasons."""
    _, one_at_a_time = _window_of_8(seed=seed)
    expected = [one_at_a_time.recommend([u], [s], k=3)[0] for u, s in zip(rows, sessions)]
    got = bundle.recommend(rows, sessions, k=3)
    for want, have in zip(expected, got, strict=True):
        assert want is not None and have is not None and have.items == want.items
        np.testing.assert_allclose(have.scores, want.scores, atol=1e-5)
        assert [name for name, _ in have.because] == [name for name, _ in want.because]
    return got


def test_a_burst_of_one_user_in_a_batch_gets_the_lists_of_one_event_at_a_time() -> None:
    """Real logs put many events of one user in a micro-batch; appended in one call, they
    get the lists, scores and reasons of one batch per event: through window rolls, a
    repeated item and an unknown one mid-burst, beside another user's single event."""
    seqs, bundle = _window_of_8(seed=9)
    items = seqs.items.ids
    burst = [items[i % 30] for i in range(14)]
    burst[6] = burst[5]                                  # the same item again
    rows, sessions = [], []
    for n in range(1, len(burst) + 1):
        sessions.append(burst[max(0, n - 8):n])         # the session keeps its newest 8
        rows.append("heavy")
        if n == 9:                                      # an event the model cannot place
            sessions.append([*burst[max(0, n - 8):n], "never-seen"])
            rows.append("heavy")
    rows.append("light")
    sessions.append(items[40:43])
    got = _as_one_event_at_a_time(bundle, rows, sessions, seed=9)
    # The event the model cannot place changes nothing it encodes: the answer before it.
    unknown = sessions.index([*burst[1:9], "never-seen"])
    assert got[unknown].items == got[unknown - 1].items
    assert got[unknown].because == got[unknown - 1].because


def test_bursts_of_several_users_in_one_batch_get_the_lists_of_one_event_at_a_time() -> None:
    """Users' bursts are appended together: interleaved in the batch, of other lengths,
    one rolling its window, one whose session starts anew mid-batch (its later events
    wait for a second round)."""
    seqs, bundle = _window_of_8(seed=11)
    items = seqs.items.ids
    streams = {"a": [items[i] for i in range(12)], "b": [items[20 + i] for i in range(3)],
               "c": [items[30 + i] for i in range(4)] + [items[50 + i] for i in range(3)]}
    restart = {"c": 4}  # c's session restarts at its fifth event
    rows, sessions = [], []
    for n in range(12):
        for user, stream in streams.items():
            if n < len(stream):
                begin = restart.get(user, 0) if n >= restart.get(user, 99) else 0
                rows.append(user)
                sessions.append(stream[max(begin, n - 7):n + 1])
    _as_one_event_at_a_time(bundle, rows, sessions, seed=11)


def test_a_late_event_placed_inside_a_session_is_encoded_afresh_not_appended() -> None:
    """A late event goes into its session by time (``streams.sessions.apply_event``), so
    the cache holds the session without it: the session must be encoded again, alone and
    in a burst, never stepped as if the late item were the newest."""
    seqs, bundle = _window_of_8(seed=12)
    i = seqs.items.ids
    bundle.recommend(["late"], [[i[0], i[1], i[2], i[3]]], k=3)      # fills the cache
    _as_one_event_at_a_time(bundle, ["late"], [[i[0], i[1], i[9], i[2], i[3]]], seed=12)
    _as_one_event_at_a_time(bundle, ["late"] * 3, [
        [i[0], i[1], i[9], i[2], i[3], i[4]],
        [i[0], i[8], i[1], i[9], i[2], i[3], i[4]],                  # another late one
        [i[0], i[8], i[1], i[9], i[2], i[3], i[4], i[5]]], seed=12)


def test_a_late_event_older_than_every_item_of_a_session_is_encoded_afresh() -> None:
    """Placed ahead of all the session's items, it left the cache's items a suffix of the
    session: read as a rolled cache (over half a window), the old answer was kept, and
    every later step built on a cache without the late item (a review)."""
    from model.features import LiveSession

    seqs, bundle = _window_of_8(seed=12)
    i = seqs.items.ids
    bundle.recommend(["late"], [[i[0], i[1], i[2], i[3], i[4]]], k=3)   # 5 > half of 8
    late = LiveSession((i[9], i[0], i[1], i[2], i[3], i[4]), added=False)
    _, fresh = _window_of_8(seed=12)
    (want,) = fresh.recommend(["late"], [late], k=3)
    (got,) = bundle.recommend(["late"], [late], k=3)
    assert got is not None and want is not None and got.items == want.items
    np.testing.assert_allclose(got.scores, want.scores, atol=1e-5)
    assert bundle.caches["late"].items == fresh.caches["late"].items


def test_a_bundle_with_the_same_retriever_carries_the_session_caches_over() -> None:
    """A swap that changed only the ranker keeps every session incremental: the new bundle
    steps the adopted cache (no rebuild) to the same embedding a rebuild gives."""
    seqs, old = _window_of_8(seed=7)
    user, stream = seqs.users.ids[0], [seqs.items.ids[i] for i in range(6)]
    for n in range(1, 6):
        old.recommend([user], [stream[:n]], k=3)
    fresh = ServingBundle(old.encoder, old.index, None, seqs.users, seqs.items, "v2")
    rebuilt: list[int] = []
    prefill = fresh.incremental.prefill
    fresh.incremental.prefill = lambda items: rebuilt.append(len(items)) or prefill(items)
    assert fresh.adopt_caches(old) == 1
    (rec,) = fresh.recommend([user], [stream], k=3)
    assert rebuilt == [] and len(fresh.caches[user].items) == 6
    (again,) = ServingBundle(old.encoder, old.index, None, seqs.users, seqs.items,
                             "v3").recommend([user], [stream], k=3)
    assert rec is not None and again is not None and rec.items == again.items
    np.testing.assert_allclose(rec.scores, again.scores, atol=1e-5)
    _, wider = _window_of_8(seed=7)
    wider.encoder = replace(wider.encoder, positions=np.zeros((16, 16), np.float32))  # longer
    assert wider.adopt_caches(old) == 0 and wider.caches == {}


def test_encoder_caches_stay_within_their_byte_budget_least_recent_dropped_first() -> None:
    """A full window's cache is ~51 KB in a served model: 100k long sessions would hold
    ~5 GB (#16). The bundle counts each cache's bytes as it grows and drops the least
    recently used past ``cache_mb``; a dropped user is encoded afresh, to the same list."""
    seqs, bundle = _window_of_8(seed=3)
    users, items = seqs.users.ids[:12], seqs.items.ids
    full = bundle.incremental.prefill([1] * 7)
    full.reserve(8, 8)
    bundle.cache_budget = 5 * full.nbytes  # room for about five full windows
    for n in range(1, 10):
        bundle.recommend(users, [[items[(u + i) % 60] for i in range(n)]
                                 for u in range(len(users))], k=3)
        held = sum(c.nbytes for c in bundle.caches.values())
        assert bundle.cache_bytes == held <= bundle.cache_budget
    assert list(bundle.caches) == users[-len(bundle.caches):]  # the most recent kept
    assert 3 <= len(bundle.caches) < len(users)
    session = [items[i % 60] for i in range(9)]
    (after_eviction,) = bundle.recommend([users[0]], [session], k=3)
    _, fresh = _window_of_8(seed=3)
    (want,) = fresh.recommend([users[0]], [session], k=3)
    assert after_eviction is not None and want is not None
    assert after_eviction.items == want.items


def test_reasons_name_the_items_the_cache_attended_to_even_beyond_the_session() -> None:
    """A continued cache can hold more items than the session's known history (older
    items dropped, unknown ones skipped): the reasons come from the cache's own window.
    (Replaying ml-latest-small through a worker crashed here with an IndexError.)"""
    seqs, bundle = _window_of_8(seed=6)
    stream = [seqs.items.ids[i] for i in range(7)]
    user = seqs.users.ids[0]
    for n in range(1, 8):
        bundle.recommend([user], [stream[:n]], k=3)
    # The two oldest items are now unknown to the model: the known history is 6 items,
    # while the continued cache holds 7 and attends over 8.
    session = ["never-seen-a", "never-seen-b", *stream[2:], seqs.items.ids[7]]
    (rec,) = bundle.recommend([user], [session], k=3)
    assert len(bundle.caches[user].items) == 8
    assert rec is not None and rec.because is not None and len(rec.because) == 3
    assert {name for name, _ in rec.because} <= {*stream, seqs.items.ids[7]}


def test_an_item_met_twice_in_a_session_is_one_reason_with_its_attention_summed() -> None:
    """A view, then a cart add of the same item: two positions. Each named it in
    ``because``, which then held it twice and split its attention."""
    seqs, bundle = _window_of_8(seed=6)
    a, b, c = (seqs.items.ids[i] for i in range(3))
    (rec,) = bundle.recommend([seqs.users.ids[0]], [[a, b, a, c]], k=3)
    assert rec is not None and rec.because is not None
    names = [name for name, _ in rec.because]
    assert sorted(names) == sorted({a, b, c}) and len(names) == 3
    attention = [(np.array([1, 2, 1]), np.array([0.3, 0.45, 0.25]))]
    [summed] = bundle._reasons(attention)
    assert summed is not None and [n for n, _ in summed] == [seqs.items.ids[0], seqs.items.ids[1]]
    assert [w for _, w in summed] == pytest.approx([0.55, 0.45])


def test_lists_leave_out_empty_slots_and_may_hold_the_newest_seen_items() -> None:
    """A catalogue smaller than k: the list holds what exists, each item once. With seen
    items allowed, the user's newest items join the candidates (``candidate_lists``)."""
    keras.utils.set_random_seed(2)
    seqs = build_sequences(generate(SyntheticConfig(users=5, items=6, events=60, seed=3)))
    sasrec = SASRec(seqs.num_items, max_len=8, dim=8, blocks=1, dropout=0.0)
    ranker = start_from_score(NeuMF(seqs.num_users, seqs.num_items, 4, (8, 4), session_dim=8,
                                    use_score=True, pair_dim=6, tasks=("next", "conversion"),
                                    wide=True))
    SASRecScorer(sasrec).embed([np.array([1])])
    bundle = ServingBundle.from_models(sasrec, ranker, seqs.users, seqs.items, "v1",
                                       candidates=4)
    session = [seqs.items.ids[0], seqs.items.ids[1]]
    unseen = bundle.recommend(["u"], [session], k=10)[0]
    assert unseen is not None and sorted(unseen.items) == sorted(seqs.items.ids[2:])
    assert unseen.heads is not None and all(len(v) == 4 for v in unseen.heads.values())
    assert unseen.paths == ["model"] * 4
    anything = bundle.recommend(["u"], [session], k=10, exclude_seen=False)[0]
    assert anything is not None and set(session) <= set(anything.items)
    assert len(anything.items) == len(set(anything.items)) == 6
    # None: as the ranker chose on validation (``NeuMF.recommends_seen``)
    def items(bundle: ServingBundle, exclude_seen: bool | None) -> list[str]:
        rec = bundle.recommend(["u"], [session], k=10, exclude_seen=exclude_seen)[0]
        assert rec is not None
        return rec.items

    assert items(bundle, None) == unseen.items
    ranker.recommends_seen = True
    chose = ServingBundle.from_models(sasrec, ranker, seqs.users, seqs.items, "v1",
                                      candidates=4)
    assert items(chose, None) == anything.items
    assert items(chose, True) == unseen.items  # true still leaves them out


def test_the_window_benchmarks_rule_is_what_a_rolling_cache_holds() -> None:
    """``benchmarks.window`` scores the windows serving holds past a full one by a rule,
    not by running a cache: the rule must be the cache's (here an 8-item window, which
    rolls to its newest 4)."""
    from benchmarks.window import served_window

    seqs, bundle = _window_of_8(seed=2)
    stream = [seqs.items.ids[i % seqs.num_items] for i in range(30)]
    user = seqs.users.ids[0]
    for n in range(1, len(stream) + 1):
        bundle.recommend([user], [stream[max(0, n - 8):n]], k=3)
        assert len(bundle.caches[user].items) == served_window(n, 4, 8), n
    assert served_window(30, 7, 8) == 8  # keeping all but one: the last 8, as trained
