import pytest

from streams.popularity import DecayedPopularity

HOUR = 3_600_000


def test_counts_decay_by_half_life() -> None:
    pop = DecayedPopularity(half_life_ms=HOUR)
    for item, ts in [("old", 0), ("old", 0), ("old", 0), ("new", 2 * HOUR)]:
        pop.add(item, ts)
    top = dict(pop.top(2, now_ms=2 * HOUR))
    assert top["old"] == pytest.approx(3 / 4) and top["new"] == pytest.approx(1.0)
    assert [i for i, _ in pop.top(2, now_ms=2 * HOUR)] == ["new", "old"]
    assert [i for i, _ in pop.top(5, exclude={"new"})] == ["old"]


def test_scores_default_to_the_newest_event_not_the_first() -> None:
    pop = DecayedPopularity(half_life_ms=HOUR)
    pop.add("a", 0)
    pop.add("b", HOUR)
    assert pop.top(2) == pop.top(2, now_ms=HOUR) == [("b", 1.0), ("a", 0.5)]


def test_long_streams_stay_finite_and_ordered() -> None:
    pop = DecayedPopularity(half_life_ms=1.0)
    for t in range(0, 2000, 2):
        pop.add("steady", t)
    pop.add("burst", 1998)
    pop.add("burst", 1998)
    top = pop.top(2, now_ms=1998)
    assert [i for i, _ in top] == ["burst", "steady"] and top[0][1] == pytest.approx(2.0)
    assert top[1][1] == pytest.approx(4 / 3, rel=1e-6)  # 1 + 1/4 + 1/16 + ...


def test_empty_and_bad_arguments() -> None:
    assert DecayedPopularity().top(3) == []
    with pytest.raises(ValueError):
        DecayedPopularity(half_life_ms=0)


def test_top_reads_one_ranking_per_update_and_equals_a_full_pass() -> None:
    """Every user a micro-batch serves by popularity reads the ranking made once since
    the last event; what each gets is what a pass over every item gives it."""
    import heapq
    import random

    rng = random.Random(3)
    pop = DecayedPopularity(half_life_ms=HOUR)
    for n in range(3000):
        pop.add(f"i{rng.randrange(400)}", n * 1000)
    sessions = [set(rng.sample(sorted(pop.scores), rng.randrange(0, 50))) for _ in range(200)]
    expected = [[i for _, i in heapq.nlargest(10, ((v, i) for i, v in pop.scores.items()
                                                   if i not in seen))] for seen in sessions]
    passes = [0]
    nlargest = heapq.nlargest

    def counting(*args, **kwargs):  # noqa: ANN002, ANN003, ANN202
        passes[0] += 1
        return nlargest(*args, **kwargs)

    heapq.nlargest = counting
    try:
        served = [[i for i, _ in pop.top(10, exclude=seen)] for seen in sessions]
        assert passes[0] == 1
        pop.add("i7", 3_000_000)  # a new event: the next read ranks again
        pop.top(10)
        assert passes[0] == 2
    finally:
        heapq.nlargest = nlargest
    assert served == expected


def test_items_decayed_past_use_are_forgotten_as_the_table_grows() -> None:
    hour = 3_600_000
    pop = DecayedPopularity(half_life_ms=hour)
    for i in range(600):
        pop.add(f"old{i}", 0)
    pop.add("kept", 40 * hour)  # 20 half-lives before the newest: still counted
    for i in range(1000):  # 60 half-lives on: the table reaches 1,024 and is pruned
        pop.add(f"new{i}", 60 * hour)
    assert not any(k.startswith("old") for k in pop.scores) and "kept" in pop.scores
    assert len(pop.scores) == 1001 and pop.top(1)[0][0].startswith("new")


def test_a_flood_of_new_ids_keeps_the_table_bounded_and_the_popular_items(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """Decay alone bounds the table by the ids of ~50 hours: random ids at 100/s grew it
    to millions (memory, and a pass over them all per batch's ranking)."""
    import streams.popularity as popularity

    monkeypatch.setattr(popularity, "MOST_ITEMS", 2_000)
    pop = DecayedPopularity(half_life_ms=3_600_000)
    for n in range(50):
        pop.add("hit", n)
    for n in range(20_000):
        pop.add(f"flood{n}", 1_000 + n)
        assert len(pop.scores) <= 2_000
    assert pop.top(1)[0][0] == "hit"


def test_a_seed_skips_counts_no_worker_could_have_made() -> None:
    """A finite 1e303 (a foreign or corrupt record) overflowed its wire score: every batch
    that listed it raised, and the worker, restarted, seeded from it again (a review)."""
    pop = DecayedPopularity(half_life_ms=HOUR)
    pop.seed([("huge", 1e303), ("inf", float("inf")), ("nan", float("nan")), ("neg", -1.0),
              ("text", "3"), ("ok", 5.0)], ts_ms=1_000)  # type: ignore[list-item]
    assert [item for item, _ in pop.top(10)] == ["ok"]
