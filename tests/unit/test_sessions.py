import pytest

from streams.events import Event
from streams.sessions import SessionPolicy, SessionState, apply_event

MIN = 60_000


def ev(n: int, item: str, ts: int, session: str | None = None) -> Event:
    return Event(f"00000000-0000-4000-8000-{n:012d}", "u1", item, "view", ts, session_id=session)


def run(events: list[Event], policy: SessionPolicy) -> list[tuple[SessionState, bool]]:
    state, out = None, []
    for e in events:
        state, changed = apply_event(state, e, policy)
        out.append((state, changed))
    return out


def test_gap_starts_a_new_session_and_items_span_sessions() -> None:
    t0 = 1_700_000_000_000
    steps = run([ev(1, "a", t0), ev(2, "b", t0 + 5 * MIN), ev(3, "c", t0 + 40 * MIN)],
                SessionPolicy())
    first, second, third = (s for s, _ in steps)
    assert first.session_id == second.session_id == f"u1@{t0}" and second.events_in_session == 2
    assert third.session_id == f"u1@{t0 + 40 * MIN}" and third.events_in_session == 1
    assert third.items == ("a", "b", "c") and third.session_start_ms == t0 + 40 * MIN


def test_explicit_session_id_change_and_reset_policy() -> None:
    t0 = 1_700_000_000_000
    events = [ev(1, "a", t0, "s1"), ev(2, "b", t0 + MIN, "s1"), ev(3, "c", t0 + 2 * MIN, "s2")]
    last, _ = run(events, SessionPolicy(reset_on_new_session=True))[-1]
    assert last.session_id == "s2" and last.items == ("c",)


def test_duplicates_do_not_change_state_twice_and_items_are_bounded() -> None:
    t0 = 1_700_000_000_000
    events = [ev(i, f"i{i}", t0 + i) for i in range(10)]
    policy = SessionPolicy(max_items=4, dedupe_window=3)
    steps = run(events + [events[-1], events[-2]], policy)
    before, _ = steps[9]
    assert steps[10] == (before, False) and steps[11] == (before, False)
    assert before.items == ("i6", "i7", "i8", "i9") and len(before.recent_event_ids) == 3
    assert SessionState.from_dict(before.to_dict()) == before


def test_out_of_order_events_do_not_move_time_backwards() -> None:
    t0 = 1_700_000_000_000
    last, _ = run([ev(1, "a", t0 + MIN), ev(2, "b", t0)], SessionPolicy())[-1]
    assert last.last_ts == t0 + MIN and last.items == ("a", "b")


def test_policy_rejects_nonsense() -> None:
    with pytest.raises(ValueError, match="must be positive"):
        SessionPolicy(gap_ms=0)


def test_a_duplicate_is_recognised_anywhere_in_the_default_window() -> None:
    # The ids differ only in their last digits (as the synthetic generator's do): the
    # fingerprints must still tell every one of them apart.
    t0 = 1_700_000_000_000
    events = [ev(i, f"i{i}", t0 + i) for i in range(64)]
    steps = run(events + [events[0]], SessionPolicy())
    assert steps[-1] == (steps[-2][0], False)
    assert len(set(steps[-2][0].recent_event_ids)) == 64


def test_event_fingerprints_are_short_stable_and_distinct() -> None:
    from streams.sessions import event_fingerprint

    ids = [f"00000000-0000-4000-8000-{n:012d}" for n in range(10_000)]
    prints = [event_fingerprint(i) for i in ids]
    assert len(set(prints)) == len(ids) and {len(p) for p in prints} == {11}
    # Pinned: a change of definition would make a restarted worker miss the duplicates
    # remembered in the state it recovers.
    assert event_fingerprint("0b6f2c8e-3f5e-4c1a-9a57-7d2f1c3b4a5e") == "iUIG4PuYv5k"
