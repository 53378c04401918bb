from typing import Any

import orjson
import pytest

from model.features import FeatureSpec, LiveSession
from streams.events import Event
from streams.sessions import (
    UNDECLARED,
    WRONG_TYPE,
    SessionPolicy,
    SessionState,
    apply_event,
    ignored_context,
)

MIN = 60_000


def ev(n: int, item: str, ts: int, session: str | None = None, event_type: str = "view",
       context: dict[str, Any] | None = None) -> Event:
    return Event(f"00000000-0000-4000-8000-{n:012d}", "u1", item, event_type, ts,
                 session_id=session, context=context)


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


def test_a_late_event_is_placed_by_its_time_not_read_as_the_newest() -> None:
    t0 = 1_700_000_000_000
    steps = run([ev(1, "a", t0, context={"device": "web"}),
                 ev(2, "c", t0 + 2 * MIN, event_type="purchase", context={"device": "app"}),
                 ev(3, "b", t0 + MIN, context={"device": "tv"})],
                SessionPolicy(features=FeatureSpec(categorical=("device",))))
    last, changed = steps[-1]
    assert changed and last.last_ts == t0 + 2 * MIN
    assert last.items == ("a", "b", "c") and last.times == (t0, t0 + MIN, t0 + 2 * MIN)
    assert last.types == ("view", "view", "purchase")
    assert last.context == {"device": "app"}  # the newest event's, not the late one's
    assert last.events_in_session == 3 and SessionState.from_dict(last.to_dict()) == last


def test_a_late_event_of_the_same_time_goes_after_and_a_full_window_drops_the_oldest() -> None:
    t0 = 1_700_000_000_000
    policy = SessionPolicy(max_items=3)
    last, _ = run([ev(1, "a", t0), ev(2, "b", t0 + MIN), ev(3, "c", t0 + 2 * MIN),
                   ev(4, "x", t0 + MIN)], policy)[-1]
    assert last.items == ("b", "x", "c")
    oldest, _ = run([ev(1, "a", t0), ev(2, "b", t0 + MIN), ev(3, "c", t0 + 2 * MIN),
                     ev(4, "y", t0 - MIN)], policy)[-1]
    assert oldest.items == ("a", "b", "c") and oldest.times[0] == t0


def test_a_late_event_never_opens_a_session() -> None:
    t0 = 1_700_000_000_000
    last, _ = run([ev(1, "a", t0, "s1"), ev(2, "b", t0 + MIN, "s2"), ev(3, "z", t0 + 1, "s1")],
                  SessionPolicy(reset_on_new_session=True))[-1]
    # Before, "s1" came back: a new session that dropped "b", with "z" as its newest item.
    assert last.session_id == "s2" and last.items == ("b",)
    assert last.session_start_ms == t0 + MIN and last.events_in_session == 1
    kept, _ = run([ev(1, "a", t0, "s1"), ev(2, "b", t0 + 2 * MIN, "s1"),
                   ev(3, "z", t0 + MIN, "s1")], SessionPolicy(reset_on_new_session=True))[-1]
    assert kept.items == ("a", "z", "b") and kept.events_in_session == 3


def test_a_late_event_is_still_deduplicated() -> None:
    t0 = 1_700_000_000_000
    late = ev(3, "b", t0 + MIN)
    steps = run([ev(1, "a", t0), ev(2, "c", t0 + 2 * MIN), late, late], SessionPolicy())
    assert steps[3] == (steps[2][0], False) and steps[2][0].items == ("a", "b", "c")


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


SPEC = FeatureSpec(categorical=("device",), numeric=("price",))


def test_types_times_and_context_follow_the_items_and_are_bounded_with_them() -> None:
    t0 = 1_700_000_000_000
    kinds = ["view", "click", "add_to_cart", "purchase", "view", "click"]
    events = [ev(i, f"i{i}", t0 + i * MIN, event_type=kind, context={"price": float(i)})
              for i, kind in enumerate(kinds)]
    last, _ = run(events, SessionPolicy(max_items=4, features=SPEC))[-1]
    assert last.items == ("i2", "i3", "i4", "i5")
    assert last.types == ("add_to_cart", "purchase", "view", "click")
    assert last.times == tuple(t0 + i * MIN for i in range(2, 6))
    assert last.context == {"price": 5.0}  # the last event's, not a merge
    assert last.session() == LiveSession(last.items, last.types, last.times, {"price": 5.0})
    reset, _ = run(events[:2] + [ev(9, "x", t0 + 2 * MIN, "s2", "purchase")],
                   SessionPolicy(reset_on_new_session=True))[-1]
    assert (reset.items, reset.types, reset.times) == (("x",), ("purchase",), (t0 + 2 * MIN,))


def test_only_declared_context_keys_of_a_usable_type_are_kept() -> None:
    context = {"price": "cheap", "device": "ios", "campaign": "x", "rating": 4.0}
    state, _ = apply_event(None, ev(1, "a", 1_700_000_000_000, context=context),
                           SessionPolicy(features=SPEC))
    assert state.context == {"device": "ios"}
    assert sorted(ignored_context(context, SPEC)) == sorted([WRONG_TYPE, UNDECLARED, UNDECLARED])
    assert ignored_context(None, SPEC) == [] and ignored_context({"device": 3}, SPEC) == []
    default, _ = apply_event(None, ev(1, "a", 1_700_000_000_000, context=context),
                             SessionPolicy())
    assert default.context == {}  # nothing declared, nothing kept


def test_v2_round_trips_through_json_with_short_types_and_ages() -> None:
    t0 = 1_700_000_000_000
    events = [ev(1, "a", t0, event_type="add_to_cart", context={"device": "ios"}),
              ev(2, "b", t0 + MIN, event_type="purchase", context={"device": "web", "price": 9.5})]
    state, _ = run(events, SessionPolicy(features=SPEC))[-1]
    stored = state.to_dict()
    assert (stored["v"], stored["types"], stored["ages_ms"]) == (2, "34", [MIN, 0])
    assert SessionState.from_dict(orjson.loads(orjson.dumps(stored))) == state
    assert state.times == (t0, t0 + MIN) and state.context == {"device": "web", "price": 9.5}


def test_a_state_of_a_newer_format_is_refused_not_misread() -> None:
    state, _ = run([ev(1, "a", 1_700_000_000_000)], SessionPolicy())[-1]
    newer = {**state.to_dict(), "v": 3}  # readable as v2, but its fields may mean otherwise
    with pytest.raises(ValueError, match="v3 is not one this worker reads"):
        SessionState.from_dict(newer)


def test_a_v1_state_migrates_without_losing_the_session() -> None:
    # As the worker wrote it before types and times were kept: every field but those.
    v1 = {"items": ["a", "b"], "session_id": "s1", "session_start_ms": 1_700_000_000_000,
          "last_ts": 1_700_000_060_000, "recent_event_ids": ["iUIG4PuYv5k"],
          "events_in_session": 2}
    state = SessionState.from_dict(v1)
    assert (state.items, state.types, state.times, state.context) == \
        (("a", "b"), ("", ""), (1_700_000_060_000,) * 2, {})
    assert (state.session_id, state.session_start_ms, state.recent_event_ids,
            state.events_in_session) == ("s1", 1_700_000_000_000, ("iUIG4PuYv5k",), 2)
    assert SessionState.from_dict(state.to_dict()) == state  # unknown types survive v2
    nxt, changed = apply_event(state, ev(3, "c", 1_700_000_120_000, "s1"), SessionPolicy())
    assert changed and nxt.items == ("a", "b", "c") and nxt.types == ("", "", "view")
    assert nxt.to_dict()["types"] == "001" and nxt.events_in_session == 3


def test_an_oldest_v1_states_full_event_ids_still_catch_a_redelivery() -> None:
    redelivered = ev(2, "b", 1_700_000_060_000, "s1")
    v1 = {"items": ["a", "b"], "session_id": "s1", "session_start_ms": 1_700_000_000_000,
          "last_ts": 1_700_000_060_000, "recent_event_ids": [ev(1, "a", 0).event_id,
                                                             redelivered.event_id],
          "events_in_session": 2}  # before fingerprints: the 36-character ids themselves
    state, changed = apply_event(SessionState.from_dict(v1), redelivered, SessionPolicy())
    assert not changed and state.items == ("a", "b")


def test_a_type_code_a_newer_worker_appended_reads_as_unknown() -> None:
    t0 = 1_700_000_000_000
    state = run([ev(1, "a", t0), ev(2, "b", t0 + 1)], SessionPolicy())[-1][0]
    v2 = {**state.to_dict(), "types": "1z"}
    assert SessionState.from_dict(v2).types == ("view", "")
