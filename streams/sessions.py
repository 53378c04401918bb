"""Sessionization as a pure function: the state a worker keeps per user, and how one
event changes it. The Faust table stores these states; this module knows nothing of Faust.

A new session starts after ``gap_ms`` of inactivity or when the event names another
``session_id``. The item list is bounded; it spans sessions unless ``reset_on_new_session``
(a user's earlier sessions are useful context for the encoder). Each item keeps its event
type and time beside it (the model embeds both), and the state keeps the context of the
event applied last, restricted to the keys ``SessionPolicy.features`` declares: what a
client sends beyond that never grows the state. Redelivered events (same ``event_id``,
at-least-once delivery) leave the state untouched.
"""

from __future__ import annotations

import base64
import hashlib
from bisect import bisect_right
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Any

from model.features import FeatureSpec, LiveSession
from streams.events import EVENT_TYPES, Event

STATE_VERSION = 2
TABLE = "sessions"  # the worker's Faust table of these states


def changelog_topic(group: str) -> str:
    """The compacted topic Faust keeps the table in, for the workers of ``group``."""
    return f"{group}-{TABLE}-changelog"

_FINGERPRINT_CHARS = 11  # ``event_fingerprint``'s length; a full event id is longer
UNDECLARED, WRONG_TYPE = "undeclared", "wrong_type"  # why a context key is not kept

# One character per item in the stored state (``"types": "1124"``) instead of its name:
# position in EVENT_TYPES + 1, "0" = unknown, as ``FeatureSpec.type_code`` counts. Stored
# states depend on it: new event types are appended to EVENT_TYPES, never inserted.
_TYPE_CODE = {"": "0"} | dict(zip(EVENT_TYPES, "123456789abcdefghijklmnopqrstuvwxyz"))
_CODE_TYPE = {c: t for t, c in _TYPE_CODE.items()}


@dataclass(frozen=True)
class SessionPolicy:
    gap_ms: int = 30 * 60 * 1000
    max_items: int = 50
    dedupe_window: int = 64          # recent events remembered per user (as fingerprints)
    reset_on_new_session: bool = False
    features: FeatureSpec = field(default_factory=FeatureSpec)  # context keys kept

    def __post_init__(self) -> None:
        if self.gap_ms <= 0 or self.max_items < 1 or self.dedupe_window < 1:
            raise ValueError(f"gap_ms, max_items and dedupe_window must be positive: {self}")


@dataclass(frozen=True)
class SessionState:
    items: tuple[str, ...]
    types: tuple[str, ...]              # event type per item ("" = unknown)
    times: tuple[int, ...]              # event time per item, epoch ms
    context: dict[str, Any]             # the last event's declared context keys
    session_id: str
    session_start_ms: int
    last_ts: int
    recent_event_ids: tuple[str, ...]   # fingerprints (``event_fingerprint``), newest last
    events_in_session: int

    def session(self, added: bool = True) -> LiveSession:
        """What the model encodes for this user; ``added`` False when the event put no new
        item at its end (``LiveSession.added``)."""
        return LiveSession(self.items, self.types, self.times, self.context, added)

    def to_dict(self) -> dict:
        """Plain JSON-able form for the changelog-backed table, written once per event: a
        type is one character and a time its age before ``last_ts`` (mostly short)."""
        return {"v": STATE_VERSION, "items": list(self.items),
                "types": "".join(map(_TYPE_CODE.__getitem__, self.types)),
                "ages_ms": [self.last_ts - t for t in self.times], "context": self.context,
                "session_id": self.session_id, "session_start_ms": self.session_start_ms,
                "last_ts": self.last_ts, "recent_event_ids": list(self.recent_event_ids),
                "events_in_session": self.events_in_session}

    @classmethod
    def from_dict(cls, d: dict) -> SessionState:
        """Reads v2 and v1 (no ``"v"``: written before types and times were kept), so a
        worker restarted on an old changelog keeps every session: a v1 item gets the
        unknown type and the state's ``last_ts`` as its time, and no context; the oldest
        v1 states' full event ids become fingerprints, or a redelivered event would be
        applied again. A type code this worker does not know (a type a newer one
        appended) reads as unknown rather than costing the session."""
        items, last_ts = tuple(d["items"]), d["last_ts"]
        if d.get("v", STATE_VERSION) != STATE_VERSION:  # a newer worker's: not guessed at
            raise ValueError(f"session state v{d['v']} is not one this worker reads")
        recent = tuple(d["recent_event_ids"])
        if "v" in d:
            types = tuple(_CODE_TYPE.get(code, "") for code in d["types"])
            times = tuple([last_ts - age for age in d["ages_ms"]])
            context = d["context"]
        else:
            types, times, context = ("",) * len(items), (last_ts,) * len(items), {}
            recent = tuple(event_fingerprint(e) if len(e) > _FINGERPRINT_CHARS else e
                           for e in recent)
        return _checked(cls(items, types, times, context, d["session_id"],
                            d["session_start_ms"], last_ts, recent, d["events_in_session"]))


def _checked(state: SessionState) -> SessionState:
    """``state`` if each field holds what applying an event reads, else ValueError: read
    as it was, a null count or a time as a string raised in ``apply_event`` instead, and
    every event of that user was dead-lettered, for good (``read_state`` resets instead)."""
    # by exact type, in C (``map``): on every event's read, a check per element in Python
    # cost 9 of the read's 16 µs for 50 items, this 4.7 (one machine); JSON gives no int
    # subclass but bool, which is no time
    if not (set(map(type, state.items)) | set(map(type, state.recent_event_ids)) <= {str}
            and set(map(type, (state.session_start_ms, state.last_ts,
                               state.events_in_session, *state.times))) == {int}
            and isinstance(state.session_id, str) and isinstance(state.context, dict)
            and len(state.items) == len(state.types) == len(state.times)):
        raise ValueError("session state of the wrong shape")
    return state


def event_fingerprint(event_id: str) -> str:
    """An event id as 11 characters (8-byte BLAKE2b, base64url) instead of 36.

    The state is written to the changelog on every event; 64 full ids made each record
    about twice as large, which the worker's producer and the broker paid for per event
    (docs/BENCHMARKS.md, "Streaming worker"). A false duplicate needs two of a user's 64 remembered
    events to share 64 bits: about 2^-58.
    """
    digest = hashlib.blake2b(event_id.encode(), digest_size=8).digest()
    return base64.urlsafe_b64encode(digest)[:_FINGERPRINT_CHARS].decode()


def supersedes(stored: Mapping[str, Any] | None, incoming: Mapping[str, Any] | None) -> bool:
    """Whether a changelog record ``incoming`` may replace ``stored`` (both as written by
    ``SessionState.to_dict``) when a worker restores its sessions. Not when ``stored`` has
    already applied ``incoming``'s newest event and later ones: then ``incoming`` is a
    stale write, sent by a worker that had lost the partition (a process frozen past the
    session timeout wakes with records still queued in its producer) after the new
    owner's newer ones. Anything unreadable is let through, as before this check."""
    if not stored or not incoming:
        return True
    try:
        newest, held = incoming["recent_event_ids"][-1], stored["recent_event_ids"]
        return newest not in held[:-1]
    except (KeyError, IndexError, TypeError):
        return True


def ignored_context(context: Mapping[str, Any] | None, spec: FeatureSpec) -> list[str]:
    """Why each key of ``context`` is left out of the session, ``UNDECLARED`` or
    ``WRONG_TYPE`` (declared, but the value is unusable): the worker counts these reasons,
    a bounded label set, where counting by key would let clients grow the metrics."""
    if not context:
        return []
    declared = (*spec.categorical, *spec.numeric)
    return [WRONG_TYPE if key in declared else UNDECLARED for key in spec.split(context)[1]]


def apply_event(state: SessionState | None, event: Event,
                policy: SessionPolicy) -> tuple[SessionState, bool]:
    """(new state, changed). ``changed`` is False only for a duplicate event id.

    A late event (older than the session's newest, as a phone's offline batch arrives) is
    placed among the items by its time, as training orders a log; it never opens a new
    session or replaces the newest event's context, and under ``reset_on_new_session``
    one older than the session's start adds no item (it belongs to an earlier session).
    Appended instead, it read as the newest item: what the next list answered."""
    fingerprint = event_fingerprint(event.event_id)
    if state is not None and fingerprint in state.recent_event_ids:
        return state, False
    ids = ((state.recent_event_ids if state else ()) + (fingerprint,))[-policy.dedupe_window:]
    if state is not None and is_late(state, event):
        return _with_late(state, event, policy, ids), True
    new_session = (
        state is None
        or event.ts - state.last_ts > policy.gap_ms
        or (event.session_id is not None and event.session_id != state.session_id)
    )
    if new_session:
        session_id = event.session_id or f"{event.user_id}@{event.ts}"
        past = None if policy.reset_on_new_session else state
        start, count = event.ts, 1
    else:
        assert state is not None
        session_id, past = state.session_id, state
        start, count = state.session_start_ms, state.events_in_session + 1
    items, types, times = _placed(past, event, policy.max_items)
    context = policy.features.split(event.context)[0] if event.context else {}
    last_ts = event.ts if state is None else max(state.last_ts, event.ts)
    return SessionState(items, types, times, context, session_id, start, last_ts, ids,
                        count), True


def is_late(state: SessionState, event: Event) -> bool:
    """Whether ``event`` is older than the newest event ``state`` applied."""
    return event.ts < state.last_ts


def _with_late(state: SessionState, event: Event, policy: SessionPolicy,
               ids: tuple[str, ...]) -> SessionState:
    """``state`` after a late event: its item placed by time, the rest as it was."""
    earlier = policy.reset_on_new_session and event.ts < state.session_start_ms
    items, types, times = ((state.items, state.types, state.times) if earlier
                           else _placed(state, event, policy.max_items))
    return replace(state, items=items, types=types, times=times, recent_event_ids=ids,
                   events_in_session=state.events_in_session + (not earlier))


def _placed(past: SessionState | None, event: Event, max_items: int
            ) -> tuple[tuple[str, ...], tuple[str, ...], tuple[int, ...]]:
    """``past``'s items, types and times with ``event``'s inserted in time order (after
    those of the same time), the newest ``max_items`` kept."""
    if past is None:
        return (event.item_id,), (event.event_type,), (event.ts,)
    at, n = bisect_right(past.times, event.ts), max_items
    return ((past.items[:at] + (event.item_id,) + past.items[at:])[-n:],
            (past.types[:at] + (event.event_type,) + past.types[at:])[-n:],
            (past.times[:at] + (event.ts,) + past.times[at:])[-n:])
