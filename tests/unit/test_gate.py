import numpy as np
import pytest

from model.data import build_sequences
from model.evaluation.gate import KnownPrefix, decide, gate_cases
from streams.events import Event


def ev(user: str, item: str, ts: int) -> Event:
    return Event(f"00000000-0000-4000-8000-{ts:012d}", user, item, "click", ts)


def test_every_known_event_after_the_cut_is_a_case_with_the_history_before_it() -> None:
    before = [ev("a", "i1", 1), ev("a", "i2", 2), ev("b", "i2", 3)]
    after = [ev("a", "new-item", 4), ev("a", "i1", 5), ev("a", "i2", 6),
             ev("c", "i1", 7),      # no history before the cut: not a case
             ev("b", "i3", 8),      # i3 unknown to every model: not a case
             ev("b", "i1", 9)]
    seqs = build_sequences(before)
    cases = gate_cases(seqs, after)
    a, b = seqs.users.get("a"), seqs.users.get("b")
    i1, i2 = seqs.items.get("i1"), seqs.items.get("i2")
    assert list(cases.users) == [a, a, b] and list(cases.targets) == [i1, i2, i1]
    assert [list(h) for h in cases.histories] == [[i1, i2], [i1, i2, i1], [i2]]
    capped = gate_cases(seqs, after, max_per_user=1)
    assert list(capped.users) == [a, b]


class _Echo:
    name = "echo"

    def __init__(self) -> None:
        self.seen: list = []

    def score(self, users: np.ndarray, histories: list[np.ndarray], side: object = None
              ) -> np.ndarray:
        self.seen.append((users.copy(), [h.copy() for h in histories]))
        self.side = side
        return np.tile(np.arange(4, dtype=float), (len(users), 1))  # 3 known items


def test_known_prefix_hides_what_the_champion_never_saw() -> None:
    inner = _Echo()
    scores = KnownPrefix(inner, known_users=2, known_items=3, all_items=5).score(
        np.array([1, 4]), [np.array([1, 5]), np.array([4])])
    users, hists = inner.seen[0]
    assert list(users) == [1, 0]                      # user 4 is new: the unknown user
    assert [list(h) for h in hists] == [[1], []]      # new items leave the histories
    assert scores.shape == (2, 6) and np.isneginf(scores[:, 4:]).all()
    np.testing.assert_array_equal(scores[:, :4], [[0, 1, 2, 3], [0, 1, 2, 3]])


def test_known_prefix_keeps_the_newest_events_time_and_type() -> None:
    """An event on an item the champion never saw leaves its history, but it is the event
    the list answers: serving keeps its time and type (``Side.newest``). The gate gave
    the champion the older event's instead, where its context stayed the newest's (a
    review)."""
    from model.data import Side

    inner = _Echo()
    side = Side([np.array([1, 3])], [np.array([1_000, 5_000])], np.zeros((1, 0)),
                np.zeros((1, 0), np.int64))
    KnownPrefix(inner, known_users=2, known_items=3, all_items=5).score(
        np.array([1]), [np.array([1, 5])], side)
    assert [list(t) for t in inner.side.times] == [[1_000]]  # item 5 left the history
    assert inner.side.last_events().tolist() == [[5_000, 1_000, 3]]  # its event did not


def _report(ndcg: float, cases: int = 300) -> dict:
    return {"full": {"NDCG@10": ndcg}, "sampled": {"NDCG@10": ndcg}, "users": cases}


SURE = (np.zeros(300), np.full(300, 50.0))  # per-case ranks: the challenger wins every case


@pytest.mark.parametrize("challenger,champion,gain,finite,promote,why", [
    (0.10, None, 0.0, True, True, "no champion yet"),
    (0.10, 0.08, 0.0, True, True, "> champion 0.0800"),
    (0.10, 0.10, 0.0, True, False, "does not beat"),
    (0.10, 0.098, 0.05, True, False, "by more than 5%"),
    (0.11, 0.10, 0.05, True, True, "+5% needed"),
    (0.50, 0.10, 0.0, False, False, "non-finite"),
    (float("nan"), None, 0.0, True, False, "non-finite"),
])
def test_decide(challenger: float, champion: float | None, gain: float, finite: bool,
                promote: bool, why: str) -> None:
    verdict = decide(_report(challenger), None if champion is None else _report(champion),
                     SURE, min_cases=200, min_gain=gain, finite=finite)
    assert verdict.promote is promote and why in verdict.reason


def test_a_gate_slice_too_small_to_compare_never_replaces_the_champion() -> None:
    """One lucky case must not decide: below ``min_cases`` the champion stays."""
    few = decide(_report(1.0, cases=1), _report(0.1, cases=1), SURE, min_cases=30)
    assert not few.promote and "1 gate cases" in few.reason and "30" in few.reason
    assert decide(_report(1.0, cases=30), _report(0.1, cases=30), SURE, min_cases=30).promote
    assert decide(_report(0.1, cases=1), None, None, min_cases=30).promote  # the first champion


def test_the_cases_of_a_handful_of_users_never_replace_the_champion() -> None:
    """300 cases from 5 users (a few heavy users) say little of the rest: below
    ``min_users`` distinct users the champion stays, whatever the cases say."""
    few = decide(_report(1.0), _report(0.1), SURE, min_cases=200, min_users=20,
                 case_users=np.repeat(np.arange(5), 60))
    assert not few.promote and few.interval is None
    assert "cases of only 5 users (20 needed to compare)" in few.reason
    enough = decide(_report(1.0), _report(0.1), SURE, min_cases=200, min_users=20,
                    case_users=np.repeat(np.arange(20), 15))
    assert enough.promote and enough.interval is not None
    with pytest.raises(ValueError, match="case_users"):  # users cannot be counted unnamed
        decide(_report(1.0), _report(0.1), SURE, min_cases=200, min_users=20)


def test_a_champion_is_never_judged_on_means_alone() -> None:
    with pytest.raises(ValueError, match="per-case ranks"):
        decide(_report(0.2), _report(0.1), None, min_cases=1)
