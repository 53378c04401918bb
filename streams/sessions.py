"""Sessionization as a pure function: the state a worker keeps per user, and how one
event changes it. The Faust table stores these states; this module knows nothing of Faust.

A new session starts after ``gap_ms`` of inactivity or when the event names another
``session_id``. The item list is bounded; it spans sessions unless ``reset_on_new_session``
(a user's earlier sessions are useful context for the encoder). Redelivered events (same
``event_id``, at-least-once delivery) leave the state untouched.
"""

from __future__ import annotations

import base64
import hashlib
from dataclasses import dataclass

from streams.events import Event


@dataclass(frozen=True)
class SessionPolicy:
    gap_ms: int = 30 * 60 * 1000
    max_items: int = 50
    dedupe_window: int = 64          # recent events remembered per user (as fingerprints)
    reset_on_new_session: bool = False

    def __post_init__(self) -> None:
        if self.gap_ms <= 0 or self.max_items < 1 or self.dedupe_window < 1:
            raise ValueError(f"gap_ms, max_items and dedupe_window must be positive: {self}")


@dataclass(frozen=True)
class SessionState:
    items: tuple[str, ...]
    session_id: str
    session_start_ms: int
    last_ts: int
    recent_event_ids: tuple[str, ...]   # fingerprints (``event_fingerprint``), newest last
    events_in_session: int

    def to_dict(self) -> dict:
        """Plain JSON-able form for the changelog-backed table."""
        return {"items": list(self.items), "session_id": self.session_id,
                "session_start_ms": self.session_start_ms, "last_ts": self.last_ts,
                "recent_event_ids": list(self.recent_event_ids),
                "events_in_session": self.events_in_session}

    @classmethod
    def from_dict(cls, d: dict) -> SessionState:
        return cls(tuple(d["items"]), d["session_id"], d["session_start_ms"], d["last_ts"],
                   tuple(d["recent_event_ids"]), d["events_in_session"])


def event_fingerprint(event_id: str) -> str:
    """An event id as 11 characters (8-byte BLAKE2b, base64url) instead of 36.

    The state is written to the changelog on every event; 64 full ids made each record
    about twice as large, which the worker's producer and the broker paid for per event
    (docs/BENCHMARKS.md, "Streaming worker"). A false duplicate needs two of a user's 64 remembered
    events to share 64 bits: about 2^-58.
    """
    digest = hashlib.blake2b(event_id.encode(), digest_size=8).digest()
    return base64.urlsafe_b64encode(digest)[:11].decode()


def apply_event(state: SessionState | None, event: Event,
                policy: SessionPolicy) -> tuple[SessionState, bool]:
    """(new state, changed). ``changed`` is False only for a duplicate event id."""
    fingerprint = event_fingerprint(event.event_id)
    if state is not None and fingerprint in state.recent_event_ids:
        return state, False
    new_session = (
        state is None
        or event.ts - state.last_ts > policy.gap_ms
        or (event.session_id is not None and event.session_id != state.session_id)
    )
    if new_session:
        session_id = event.session_id or f"{event.user_id}@{event.ts}"
        kept = () if state is None or policy.reset_on_new_session else state.items
        start, count = event.ts, 1
    else:
        assert state is not None
        session_id, kept = state.session_id, state.items
        start, count = state.session_start_ms, state.events_in_session + 1
    items = (kept + (event.item_id,))[-policy.max_items:]
    ids = ((state.recent_event_ids if state else ()) + (fingerprint,))[-policy.dedupe_window:]
    last_ts = event.ts if state is None else max(state.last_ts, event.ts)
    return SessionState(items, session_id, start, last_ts, ids, count), True
