"""Team-draft interleaving: fair drafts, each team in its own ranking's order, no item
twice, the same draft for the same key everywhere, credit to the team that placed it."""

from __future__ import annotations

import random
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from scipy.stats import binomtest

from model.experiments.interleaving import Interleaved, credit, rng_for, team_draft

ROOT = Path(__file__).resolve().parents[2]


def _rankings(seed: int, length: int = 15, pool: int = 30) -> tuple[list[str], list[str]]:
    """Two rankings over a shared pool, so that they overlap."""
    r = random.Random(seed)
    items = [f"i{j}" for j in range(pool)]
    return r.sample(items, length), r.sample(items, length)


def _team(draft: Interleaved, team: int) -> list[str]:
    return [item for item, t in zip(draft.items, draft.teams) if t == team]


@pytest.mark.parametrize("seed", range(50))
def test_each_team_picks_its_best_free_item_and_teams_stay_level(seed: int) -> None:
    a, b = _rankings(seed)
    draft = team_draft(a, b, 10, rng_for(f"event-{seed}"))
    assert len(draft.items) == len(draft.teams) == 10
    assert len(set(draft.items)) == 10                      # no item twice
    for i, (item, team) in enumerate(zip(draft.items, draft.teams)):
        picks = draft.teams[:i + 1]
        assert abs(picks.count(0) - picks.count(1)) <= 1    # level after every pick
        ranking = (a, b)[team]
        assert item == next(x for x in ranking if x not in draft.items[:i])
    for team, ranking in ((0, a), (1, b)):                  # each team in its own order
        positions = [ranking.index(x) for x in _team(draft, team)]
        assert positions == sorted(positions)


def test_a_shared_item_is_placed_once_by_the_team_that_reaches_it_first() -> None:
    draft = team_draft(["x", "a1", "a2"], ["x", "b1", "b2"], 4, random.Random(0))
    assert draft.items[0] == "x" and draft.items.count("x") == 1
    first = draft.teams[0]
    assert draft.items[1] == ("b1" if first == 0 else "a1") and draft.teams[1] == 1 - first


def test_when_one_ranking_runs_out_the_other_keeps_picking() -> None:
    draft = team_draft(["a1"], ["b1", "b2", "b3", "b4"], 10, random.Random(1))
    assert sorted(draft.items) == ["a1", "b1", "b2", "b3", "b4"]  # both exhausted: stop
    assert draft.teams.count(0) == 1 and draft.teams.count(1) == 4
    assert team_draft(["a"], ["a"], 5, random.Random(0)).items == ("a",)
    assert team_draft([], [], 5, random.Random(0)) == Interleaved((), ())
    assert team_draft(["a", "b"], ["c"], 0, random.Random(0)).items == ()
    with pytest.raises(ValueError, match="k must be"):
        team_draft(["a"], ["b"], -1, random.Random(0))


def test_the_first_pick_is_a_fair_coin() -> None:
    a, b = _rankings(7)
    firsts = [team_draft(a, b, 10, rng_for(f"e{i}")).teams[0] for i in range(4000)]
    assert binomtest(sum(firsts), len(firsts), 0.5).pvalue > 0.001


def test_identical_rankings_credit_each_team_half_the_time() -> None:
    """Two copies of one model: the next item's credit is decided by coins alone, which is
    why interleaving's null hypothesis holds exactly for identical models."""
    rng = np.random.default_rng(0)
    ranking = [f"i{j}" for j in range(10)]
    credits = [credit(team_draft(ranking, ranking, 10, rng_for(f"e{i}")),
                      ranking[int(rng.integers(10))]) for i in range(4000)]
    assert None not in credits
    assert binomtest(sum(c == 0 for c in credits), len(credits), 0.5).pvalue > 0.001


def test_the_same_key_gives_the_same_draft_in_every_process() -> None:
    a, b = _rankings(3)
    code = ("import sys; from model.experiments.interleaving import team_draft, rng_for; "
            f"print(team_draft({a!r}, {b!r}, 10, rng_for(sys.argv[1])).teams)")
    keys = [f"salt:event-{i}" for i in range(5)]
    for key in keys:
        out = subprocess.run([sys.executable, "-c", code, key], capture_output=True,
                             text=True, check=True, cwd=ROOT,
                             env={"PYTHONHASHSEED": "99"}).stdout
        assert eval(out) == team_draft(a, b, 10, rng_for(key)).teams
    assert len({team_draft(a, b, 10, rng_for(f"k{i}")).teams for i in range(50)}) > 1


def test_credit_goes_to_the_team_that_placed_the_item() -> None:
    draft = Interleaved(("x", "y", "z"), (1, 0, 1))
    assert [credit(draft, i) for i in ("x", "y", "z", "w")] == [1, 0, 1, None]
