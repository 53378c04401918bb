"""The worker's two steps, without Faust or a broker: what to do with one event, and how
to answer one micro-batch. ``streams.worker`` wires them into the Faust app; the unit
tests drive them with plain fakes.

- ``EventStep`` (per event, in the event's own context): validate, sessionize, drop
  redelivered event ids, say which context keys the session leaves out. It decides; the
  caller writes the table, sends dead letters and counts metrics.
- ``BatchStep`` (per ``stream.take`` micro-batch): recommend for the updated sessions,
  build each user's ``RecommendationList`` (recent popularity for users the model cannot
  serve yet), publish them to the ``recommendations`` topic and Redis, then count the
  batch's events in recent popularity.

Both are on the worker's hot path (thousands of events a second; ``EventStep`` once per
event, ``BatchStep`` once per micro-batch): they build small dataclasses and nothing else,
no validation beyond ``streams.events.parse``.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from itertools import repeat
from typing import Protocol

from model.features import LiveSession
from model.pipeline import Recommendation
from streams.backoff import Backoff
from streams.events import InvalidEvent, parse, sent_no_later
from streams.events import Reason as Rejection
from streams.experiments import FAILED, Interaction, LiveExperiment
from streams.messages import (
    UNREADABLE,
    ExperimentTag,
    PopularList,
    Reason,
    RecommendationList,
    ScoredItem,
    wire_score,
)
from streams.messages import Path as ServedPath
from streams.metrics import WorkerMetrics
from streams.popularity import DecayedPopularity
from streams.producer import SENT_AT_HEADER
from streams.sessions import (
    SessionPolicy,
    SessionState,
    apply_event,
    ignored_context,
    is_late,
)
from streams.tracing import ListSpans, TraceHeaders, from_record

log = logging.getLogger(__name__)

# After a failed Redis write, batches skip Redis for 1 s, doubling to 30 s while it fails.
REDIS_RETRY_FIRST_S, REDIS_RETRY_MOST_S = 1.0, 30.0
REDIS_WAIT_S = 0.05  # how long a micro-batch waits on its Redis write before going on
REDIS_FINISH_S = 3.0  # how long a stopping worker waits on its last Redis writes
REDIS_SEED_S = 1.0  # how long a fresh worker's first batch waits for the popularity record
UNSTORED_MOST = 20_000  # users whose newest list missed Redis, kept for the next write
HELD_BYTES_MOST = 4 * 2**20  # of those, what one write carries (the rest, the next ones)

POPULAR_EVERY_S = 1.0  # how often a worker stores its popularity list for the API
# The most bytes a list's JSON takes: librdkafka's message.max.bytes (1,000,000) less room
# for its key (an id: 1 KB at most) and headers (a trace context, a send time).
MAX_LIST_BYTES = 990_000

RawHeaders = Sequence[tuple[str, bytes]] | Mapping[str, bytes]


@dataclass(frozen=True, slots=True)
class DeadLetter:
    """The record breaks the event schema: send it to the dead-letter topic with why."""

    reason: str
    detail: str


@dataclass(frozen=True, slots=True)
class Duplicate:
    """The event id was seen already (at-least-once redelivery): nothing changes."""

    event_id: str


class StoreUnavailable(RuntimeError):
    """The session store could not be read. Nothing is wrong with the record, so it is
    not dead-lettered (that dead-lettered every valid event of the users it could not
    read, and committed past them): the worker stops, and the event is redelivered."""


@dataclass(frozen=True, slots=True)
class SessionUpdate:
    """A user's session changed: store ``state`` under ``user_id`` and answer the event.
    ``session`` is what the model encodes; ``sent_us`` the event's send time (header
    ``sent_us``), None when the producer did not stamp it; ``ignored`` why each context
    key the session does not keep was left out (``streams.sessions.ignored_context``),
    for the caller to count: a bad context value never fails the event; ``trace`` the
    event's valid trace headers (``streams.tracing``), for its list to carry; ``reset``
    that the stored session could not be read and this event started a new one;
    ``counts_at_ms`` the time the event counts at in recent popularity (its ``ts``, capped
    at the worker's clock), None to count nothing; ``late`` that the event was older than
    the session's newest, so it was placed by its time (``streams.sessions.is_late``):
    ``session``'s newest item and type are then another event's, not this one's."""

    user_id: str
    session: LiveSession
    event_id: str
    item_id: str
    event_type: str
    sent_us: int | None
    state: dict
    ignored: Sequence[str] = ()
    trace: TraceHeaders = ()
    reset: bool = False
    counts_at_ms: int | None = None
    late: bool = False
    # answered again after a rebalance or a crash: its session already holds what came after
    redelivered: bool = False


EventOutcome = DeadLetter | Duplicate | SessionUpdate


def sent_us(headers: RawHeaders | None, timestamp_s: float | None = None) -> int | None:
    """When the event was sent, epoch microseconds: its ``sent_us`` header (``replay`` and
    the API stamp one), else the record's Kafka timestamp (``timestamp_s``: the producer's
    clock at ``produce``, unless it set another), so events of any producer are timed and
    ordered, at no cost to the producer (a header on every send cost ``EventProducer``
    28% of its throughput). None when neither is a number in (0, 2**63): it only times
    the event, so a bad one never fails it (past 64 bits it would fail the list's JSON)."""
    sent = dict(headers or ()).get(SENT_AT_HEADER)
    try:
        value = int(sent) if sent else 0
    except ValueError:
        value = 0
    if not 0 < value < 2**63 and timestamp_s is not None and timestamp_s > 0:
        value = int(timestamp_s * 1e6)
    return value if 0 < value < 2**63 else None


def read_state(stored: object) -> tuple[SessionState | None, bool]:
    """The stored session and False; or None and True when it cannot be read (a corrupt or
    a future format): the event then starts a new session rather than stopping the agent."""
    if stored is None:
        return None, False
    try:
        return SessionState.from_dict(stored), False  # type: ignore[arg-type]
    except (KeyError, TypeError, ValueError, AttributeError, IndexError):
        return None, True


class AnsweredEvents:
    """The newest ``capacity`` events this process has published a list for: event id ->
    its user.

    An event's state (its id included) reaches the table before its list is published, so
    an event redelivered after its list was lost (its micro-batch dropped by a rebalance,
    or the process gone before the list went out) looks like a duplicate. Only a repeat of
    an event answered here is one; any other redelivery is answered again: at least once.
    The user counts because sessions dedupe per user: an event id a client reused for
    another user is that user's new event, and is answered (the id then names the newer).
    Keyed by the event id alone, holding strings that exist anyway: (user, id) tuples
    added 100,000 objects the garbage collector tracks, and the full collections they
    brought stalled the loop (docs/BENCHMARKS.md, the worker at 500/s).
    """

    def __init__(self, capacity: int = 100_000) -> None:
        self.capacity = capacity
        # An OrderedDict: a plain dict's first key is found by skipping the slots its
        # deletions left (until it resizes), ~18 µs per event once full against 0.2.
        self._ids: OrderedDict[str, str] = OrderedDict()

    def add(self, user_id: str, event_id: str) -> None:
        self._ids[event_id] = user_id
        if len(self._ids) > self.capacity:
            self._ids.popitem(last=False)

    def has(self, user_id: str, event_id: str) -> bool:
        return self._ids.get(event_id) == user_id


class UnstoredLists:
    """The newest list per user that missed Redis (skipped or failed), for the next write
    that reaches it. Without it, a user with no later event kept the list from before an
    outage, or none: after a Redis restart, a new user's list never reached Redis (issue
    #16). At most ``capacity`` users; past it the oldest are dropped, and those users get
    the API's popularity fallback until their next event."""

    def __init__(self, capacity: int = UNSTORED_MOST) -> None:
        self.capacity = capacity
        self._lists: OrderedDict[str, bytes] = OrderedDict()  # see AnsweredEvents

    def keep(self, lists: Iterable[tuple[str, bytes]]) -> int:
        """Keep each user's newest list; returns how many old ones were dropped."""
        for user, payload in lists:
            self._lists.pop(user, None)  # re-inserted: the newest go last
            self._lists[user] = payload
        return self._trim()

    def keep_older(self, lists: Iterable[tuple[str, bytes]]) -> int:
        """Keep the lists of a write that failed, for users with nothing kept yet (a batch
        kept while it ran has newer ones, and a feed must never go back in time): each
        user's last, as the oldest. Returns how many were dropped."""
        older: dict[str, bytes] = {}
        for user, payload in lists:
            if user not in self._lists:
                older[user] = payload  # a later list of the same write replaces it
        for user, payload in reversed(older.items()):
            self._lists[user] = payload
            self._lists.move_to_end(user, last=False)
        return self._trim()

    def _trim(self) -> int:
        """Drop the oldest past ``capacity``; returns how many."""
        dropped = max(len(self._lists) - self.capacity, 0)
        for _ in range(dropped):
            self._lists.popitem(last=False)
        return dropped

    def __len__(self) -> int:
        return len(self._lists)

    def take(self, newer: Iterable[str], most_bytes: int = HELD_BYTES_MOST
             ) -> list[tuple[str, bytes]]:
        """The oldest lists kept, ``most_bytes`` of them (one at least), and forget them;
        those of users in ``newer`` are forgotten unsent (their newer list goes in the
        same write: a feed must never go back in time). The rest wait for the next
        writes: all of them in one, after an outage, made a pipeline and a PUBLISH of up
        to hundreds of MB, past the client's 1 s timeout each time, for good."""
        if not self._lists:  # the usual case, once per micro-batch
            return []
        for user in newer:
            self._lists.pop(user, None)
        taken, size = [], 0
        for user, payload in self._lists.items():  # oldest first
            if taken and size + len(payload) > most_bytes:
                break
            taken.append((user, payload))
            size += len(payload)
        for user, _ in taken:
            del self._lists[user]
        return taken


class EventStep:
    """Per event: validate, sessionize, dedupe. The context keys a session keeps are those
    ``policy.features`` declares; ``answered`` tells a duplicate from a redelivery whose
    list never went out (``AnsweredEvents``); ``clock_ms`` caps an event's time, with its
    record's send time (``sent_no_later``), where validation lets it run a day ahead (a
    device's clock): one such event would outweigh 2^24 current ones in popularity, and
    as its session's newest it would make every later event of its user late
    (``streams.sessions.is_late``) until that time came."""

    def __init__(self, policy: SessionPolicy, answered: AnsweredEvents | None = None,
                 clock_ms: Callable[[], int] = lambda: int(time.time() * 1000)) -> None:
        self.policy, self.clock_ms = policy, clock_ms
        self.answered = answered if answered is not None else AnsweredEvents()

    def __call__(self, raw: bytes | None, stored: Callable[[str], dict | None],
                 headers: RawHeaders | None = None, key: bytes | None = None,
                 timestamp_s: float | None = None) -> EventOutcome:
        """What ``raw`` does to its user's session. ``stored`` looks up the state kept for a
        user id (the Faust table's ``get``): the user is known only once ``raw`` parses.
        An event counts in popularity when its list is built, so a redelivery answered
        again (its list never went out here) counts then, and a duplicate never. Whatever
        else fails on one record dead-letters that record (``processing_error``, the
        exception as detail), so it cannot stop the agent.

        ``key``, the record's Kafka key when given, must be the user id (``wrong_key``
        otherwise): a user's events keyed otherwise land on other partitions, and their
        session splits across workers' tables. ``dlq redrive`` sends them back keyed.
        ``timestamp_s``: the record's Kafka timestamp, for ``sent_us``."""
        try:
            return self._decide(raw, stored, headers, key, timestamp_s)
        except StoreUnavailable:
            raise
        except Exception as exc:  # one record must never stop the stream
            log.exception("the event step failed; dead-lettering the record")
            return DeadLetter(Rejection.PROCESSING_ERROR.value, f"{type(exc).__name__}: {exc}")

    def _decide(self, raw: bytes | None, stored: Callable[[str], dict | None],
                headers: RawHeaders | None, key: bytes | None, timestamp_s: float | None
                ) -> EventOutcome:
        try:
            event = parse(raw)
        except InvalidEvent as exc:
            return DeadLetter(exc.reason.value, exc.detail)
        event = sent_no_later(event, None if timestamp_s is None else int(timestamp_s * 1000),
                              self.clock_ms())
        if key is not None and key != event.key:
            return DeadLetter(Rejection.WRONG_KEY.value, f"the record's key {key[:64]!r} is "
                              "not its user id: produce with key = user id")
        meta = dict(headers or ())  # Faust's are pairs: one dict for both lookups
        try:
            previous = stored(event.user_id)
        except Exception as exc:
            raise StoreUnavailable(f"{type(exc).__name__}: {exc}") from exc
        state, reset = read_state(previous)
        new_state, changed = apply_event(state, event, self.policy)
        if not changed:
            if self.answered.has(event.user_id, event.event_id):
                return Duplicate(event.event_id)
            # Applied before, never answered here: answer from the session as it stands
            # (which this event added nothing to, so a cache holding it steps nothing).
            return SessionUpdate(event.user_id, new_state.session(added=False),
                                 event.event_id,
                                 event.item_id, event.event_type, sent_us(meta, timestamp_s),
                                 previous or {}, [],
                                 from_record(meta), counts_at_ms=event.ts, redelivered=True)
        late = state is not None and is_late(state, event)  # placed before the newest
        return SessionUpdate(event.user_id, new_state.session(added=not late),
                             event.event_id,
                             event.item_id, event.event_type, sent_us(meta, timestamp_s),
                             new_state.to_dict(),
                             ignored_context(event.context, self.policy.features),
                             from_record(meta), reset, event.ts, late)


class Recommender(Protocol):
    """What the batch step needs of a bundle (``ServingBundle``, ``FixedList``)."""

    version: str

    def recommend(self, users: Sequence[str], sessions: Sequence[LiveSession], k: int = 10,
                  exclude_seen: bool | None = True, timings: dict[str, float] | None = None
                  ) -> Sequence[Recommendation | None]: ...


class ListProducer(Protocol):
    """Where lists go to the topic (``RecordProducer``): queued, delivered later."""

    def produce(self, topic: str, key: bytes | None, value: bytes,
                headers: list[tuple[str, bytes]] | None = None) -> None: ...


class ListStore(Protocol):
    """Where lists go for the API (``RecsWriter``): raises when the store fails. ``held``
    are lists kept from earlier writes: stored only over a list for an older event."""

    async def write(self, lists: list[tuple[str, bytes]], popular: bytes | None = None,
                    held: list[tuple[str, bytes]] | None = None) -> None: ...

    async def read_popular(self) -> list[bytes]: ...


def counted_before(records: Sequence[bytes], first_ms: int) -> PopularList | None:
    """The first of ``records`` (newest first) that counted no event after ``first_ms``
    and says so; one that does not parse (another version's) is passed over."""
    for raw in records:
        try:
            record = PopularList.from_json(raw)
        except UNREADABLE:
            continue
        if record.newest_ms is not None and record.newest_ms <= first_ms:
            return record
    return None


def scored(pairs: Iterable[tuple[str, float]]) -> list[ScoredItem]:
    """(item, score) pairs as wire items, scores as plain rounded floats (NumPy's float32
    is neither JSON nor short)."""
    return [ScoredItem(item, wire_score(score)) for item, score in pairs]


def model_items(rec: Recommendation) -> list[ScoredItem]:
    """A model's list as wire items, with each item's per-head scores and path when it
    has them. Built in one pass: this runs for every list a worker publishes."""
    tasks = list(rec.heads or ())
    per_item = zip(*rec.heads.values()) if rec.heads else repeat(())
    return [ScoredItem(item, wire_score(score),
                       dict(zip(tasks, map(wire_score, heads))) if tasks else None, path)
            for item, score, heads, path in zip(rec.items, rec.scores, per_item,
                                                rec.paths or repeat(None))]


def reasons(rec: Recommendation | None) -> list[Reason] | None:
    """The session items that drove a model list, rounded for the wire."""
    if rec is None or not rec.because:
        return None
    return [Reason(item, round(float(weight), 4)) for item, weight in rec.because]


class BatchStep:
    """Per micro-batch: recommend, build the lists, publish them, then count the batch's
    events in recent popularity.

    Counted after the lists, not as each event is sessionized: a list answers its event,
    and had the whole batch been counted first, the list of a user's first event in it
    would have held the items their later events in the batch were about to take. On a
    backlog of MovieLens bursts that lifted popularity's hits 25-fold, and live experiments
    crowned popularity over a model it loses to (docs/BENCHMARKS.md, issue #15). A list
    sees popularity as of the previous micro-batch's publish.

    ``topic`` and ``producer`` take every list to Kafka, ``store`` to Redis; ``clock`` (in
    seconds, monotonic) paces the popularity record and times the publish stage; ``spans``
    carry each event's trace context onto its list (``streams.tracing``). ``exclude_seen``
    None leaves the session's items in or out of a model's lists as that model chose
    (``NeuMF.recommends_seen``); popularity leaves them out unless it is false.
    """

    def __init__(self, topic: str, top_n: int, exclude_seen: bool | None,
                 popularity: DecayedPopularity, producer: ListProducer, store: ListStore,
                 metrics: WorkerMetrics, popular_every_s: float = POPULAR_EVERY_S,
                 clock: Callable[[], float] = time.perf_counter,
                 answered: AnsweredEvents | None = None, spans: ListSpans | None = None
                 ) -> None:
        self.topic, self.top_n, self.exclude_seen = topic, top_n, exclude_seen
        self.popularity, self.producer, self.store = popularity, producer, store
        self.metrics, self.popular_every_s, self.clock = metrics, popular_every_s, clock
        self._popular_written = float("-inf")  # clock time of the last popularity record
        self._popular_unsent: bytes | None = None  # made while no write could carry it
        self.answered = answered if answered is not None else AnsweredEvents()
        self.spans = spans if spans is not None else ListSpans(topic)
        self.redis_backoff = Backoff(REDIS_RETRY_FIRST_S, REDIS_RETRY_MOST_S, clock)
        self.unstored = UnstoredLists()
        self._write: asyncio.Future[None] | None = None  # the Redis write in flight
        self._seeded = False  # recent popularity was offered the stored record
        self.lists_cut = 0  # lists cut to fit a Kafka record (``_fitted``)

    def recommend(self, updates: Sequence[SessionUpdate], bundle: Recommender,
                  failed: Recommendation | None = None) -> Sequence[Recommendation | None]:
        """The bundle's answer per update (None: the model cannot serve that user yet;
        ``failed``: it failed on this batch, or scored NaN), with its stage timings
        recorded."""
        timings: dict[str, float] = {}
        try:
            recs = bundle.recommend([u.user_id for u in updates], [u.session for u in updates],
                                    self.top_n, exclude_seen=self.exclude_seen, timings=timings)
            if len(recs) != len(updates):  # zip would leave the rest unanswered
                raise ValueError(f"the model answered {len(recs)} of {len(updates)} users")
        except Exception:  # the batch must still be answered: popularity does it
            self.metrics.model_failures.inc()
            log.exception("the model failed on a micro-batch of %d; popularity answers it",
                          len(updates))
            return [failed] * len(updates)
        for stage, seconds in timings.items():
            self.metrics.stage_seconds.labels(stage).observe(seconds)
        return [self._sound(rec, failed) for rec in recs]

    def _sound(self, rec: Recommendation | None, failed: Recommendation | None
               ) -> Recommendation | None:
        """``rec``, or ``failed`` (popularity answers) when a score is NaN or infinite: such
        a model list would reach users as an arbitrary order, and JSON has no NaN."""
        if rec is None or rec.finite():
            return rec
        self.metrics.nonfinite_lists.inc()
        log.warning("a model list with a non-finite score was replaced by popularity")
        return failed

    def build(self, update: SessionUpdate, rec: Recommendation | None, version: str,
              now_us: int, tag: ExperimentTag | None = None) -> RecommendationList:
        """One user's list: the model's when it answered, else recent popularity (without
        the session's items unless ``exclude_seen`` is false), saying which path served it."""
        path: ServedPath
        if rec is not None:
            items, path = model_items(rec), "model"
            if len(items) < self.top_n and (tag is None or not tag.teams):
                items += self._top_up(update, items)
        else:
            items, path = scored(self._popular_pairs(update)), "popularity"
        return RecommendationList(update.user_id, path, version, items, update.event_id,
                                  update.item_id, update.sent_us, now_us, reasons(rec), tag)

    def _top_up(self, update: SessionUpdate, listed: list[ScoredItem]) -> list[ScoredItem]:
        """Recent popularity for the slots a model list left empty (a user who met nearly
        every item the model knows, a small catalogue), each item's path ``popularity``.
        An interleaved list is left short: each of its items must name the team that
        placed it."""
        pairs = self._popular_pairs(update, [i.item_id for i in listed])
        if pairs:
            self.metrics.topped_up.inc()
        return [ScoredItem(item, wire_score(score), path="popularity") for item, score in pairs]

    def _popular_pairs(self, update: SessionUpdate, listed: Sequence[str] = ()
                       ) -> list[tuple[str, float]]:
        """The most popular items after ``listed``, up to ``top_n`` in all, without the
        session's items unless ``exclude_seen`` is false."""
        seen = update.session.items if self.exclude_seen is not False else ()
        return self.popularity.top(self.top_n - len(listed), exclude=[*seen, *listed])

    def answer(self, updates: Sequence[SessionUpdate], bundle: Recommender,
               experiment: LiveExperiment | None
               ) -> tuple[Sequence[Recommendation | None], list[str], list[ExperimentTag | None]]:
        """Per update: the list, the version that served it, its experiment tag."""
        if experiment is None:
            return (self.recommend(updates, bundle), [bundle.version] * len(updates),
                    [None] * len(updates))

        def popular(i: int) -> Recommendation:
            pairs = self._popular_pairs(updates[i])
            return Recommendation([p[0] for p in pairs], [p[1] for p in pairs])

        recs, versions, tags = experiment.recommend(
            [u.user_id for u in updates], [u.event_id for u in updates], bundle,
            lambda idx, b: self.recommend([updates[i] for i in idx], b, FAILED), popular)
        return recs, [v or bundle.version for v in versions], tags

    def popular(self, version: str, now_us: int, now: float) -> PopularList | None:
        """The popularity record, at most once per ``popular_every_s``: it is a top-k scan
        over every item, too much for every micro-batch, and the API needs it fresh to
        about a second only."""
        if now - self._popular_written < self.popular_every_s:
            return None
        top = self.popularity.top(self.top_n)
        if not top:  # a worker that has counted nothing yet: the stored one stays
            return None
        self._popular_written = now
        return PopularList(version, now_us, scored(top), self.popularity.newest_ms)

    async def publish(self, updates: Sequence[SessionUpdate], bundle: Recommender,
                      experiment: LiveExperiment | None = None) -> list[RecommendationList]:
        """Answer every update; returns the lists published. ``bundle`` (and
        ``experiment``, the one running) is read once by the caller per batch: a model
        swap lands between micro-batches, never inside one."""
        began_ns = time.time_ns()
        updates = self.unanswered(updates)
        if not updates:
            return []
        if not self._seeded:
            await self.seed_popularity(updates)
        recs, versions, tags = self.answer(updates, bundle, experiment)
        start = self.clock()
        now_us = time.time_ns() // 1000
        # cut to fit a Kafka record before anything judges them: an experiment judges
        # what the user gets
        fitted = [self._fitted(self.build(u, rec, version, now_us, tag))
                  for u, rec, version, tag in zip(updates, recs, versions, tags)]
        lists = [record for record, _ in fitted]
        self.count(updates)
        if experiment is not None:  # an event answered again was judged when first
            # answered, and its list now comes from a session holding the user's next items
            first = [(u, r) for u, r in zip(updates, lists) if not u.redelivered]
            experiment.track([Interaction(u.user_id, u.item_id, u.event_type, u.late)
                              for u, _ in first], [r for _, r in first])
            self._count_experiment(lists)
        payloads, paths = [], {"model": 0, "popularity": 0}
        for update, (record, payload) in zip(updates, fitted):
            payloads.append((record.user_id, payload))
            paths[record.path] += 1
            # Queued, not awaited: librdkafka batches (linger 5 ms); the worker's
            # DeliverBeforeCommit delivers it all before the offsets of these events commit.
            self.producer.produce(self.topic, record.user_id.encode(), payload,
                                  self._trace(update, record, began_ns))
            if record.event_id is not None:
                self.answered.add(record.user_id, record.event_id)
            if record.sent_us is not None:
                self.metrics.send_to_publish.observe(max(now_us - record.sent_us, 0) / 1e6)
        for path, count in paths.items():
            self.metrics.published.labels(path).inc(count)
        popular = self.popular(bundle.version, now_us, start)
        await self._store(payloads, popular.to_json() if popular is not None else None)
        self.metrics.stage_seconds.labels("publish").observe(self.clock() - start)
        return lists

    def _fitted(self, record: RecommendationList) -> tuple[RecommendationList, bytes]:
        """``record`` and its JSON, cut to fit a Kafka record (``MAX_LIST_BYTES``). A
        thousand items of 256-character ids (1 KB each in emoji) passed librdkafka's
        1,000,000 bytes: the produce raised, the worker exited, and the redelivered batch
        built the same list again, for good."""
        payload = record.to_json()
        if len(payload) <= MAX_LIST_BYTES:
            return record, payload
        items = len(record.items)
        while len(payload) > MAX_LIST_BYTES:
            record = record.head(max(len(record.items) * MAX_LIST_BYTES // len(payload) - 1, 0))
            payload = record.to_json()
        self.lists_cut += 1
        if self.lists_cut & (self.lists_cut - 1) == 0:  # the 1st, 2nd, 4th ... time
            log.warning("a list of %d items was cut to %d to fit a Kafka record (%d lists so "
                        "far): lower STREAMREC_RECS_TOP_N for ids this long", items,
                        len(record.items), self.lists_cut)
        return record, payload

    async def seed_popularity(self, updates: Sequence[SessionUpdate]) -> None:
        """Before a fresh worker's first lists: recent popularity starts from the newest
        record the workers stored that counted no event later than ``updates``' first, at
        that event's time, faded by the event time between. Starting from nothing, every
        user popularity answered in that micro-batch got an empty list, and a new user kept
        it in Redis, served by the API, until their next event. A later record may hold
        what these users did next (a crash's redelivered events, whose lists went out
        before it), or another log's future (a replay after another on the same channel):
        so after a crash an older record of the history serves, where the newest alone
        left the batch empty. A record that does not say when it counted (from before that
        was kept) is not taken. Once, and never fatal: Redis down or no record, it starts
        from nothing as before."""
        self._seeded = True
        if self.popularity.newest_ms is not None:
            return
        try:
            raws = await asyncio.wait_for(self.store.read_popular(), REDIS_SEED_S)
            first = min((u.counts_at_ms for u in updates if u.counts_at_ms is not None),
                        default=time.time_ns() // 1_000_000)
            record = counted_before(raws, first)
            if record is None:
                if raws:
                    log.info("recent popularity starts empty: no stored record says when "
                             "it counted, or each counted events later than this worker's "
                             "first")
                return
            self.popularity.seed(((i.item_id, i.score) for i in record.items
                                  if isinstance(i.item_id, str)), first,
                                 first - record.newest_ms)
        except Exception as exc:  # noqa: BLE001 - Redis down, or a record of another version
            log.info("recent popularity starts empty: its stored record was not used (%s)", exc)

    def count(self, updates: Sequence[SessionUpdate]) -> None:
        """Count each answered event in recent popularity, at its ``counts_at_ms``."""
        for update in updates:
            if update.counts_at_ms is not None:
                self.popularity.add(update.item_id, update.counts_at_ms)

    def unanswered(self, updates: Sequence[SessionUpdate]) -> list[SessionUpdate]:
        """``updates`` less repeats: an event answered already, or earlier in this batch.

        The event step answers a repeat whose original has no list yet (it may be a
        redelivery after a lost list). When a re-sent event is sessionized before its
        original's micro-batch is published, both passed that check and both were answered
        (seen once in a fresh-clone run, issue #16); the second answer is dropped here.
        """
        fresh, users = [], {}  # event id -> user, as in ``AnsweredEvents``
        for update in updates:
            user, event_id = update.user_id, update.event_id
            if self.answered.has(user, event_id) or users.get(event_id) == user:
                self.metrics.duplicates.inc()
                continue
            users[event_id] = user
            fresh.append(update)
        return fresh

    def _count_experiment(self, lists: Sequence[RecommendationList]) -> None:
        counts: dict[tuple[str, str, str], int] = {}
        for record in lists:
            if (tag := record.experiment) is not None:
                key = (tag.experiment, tag.variant, tag.served_by or tag.variant)
                counts[key] = counts.get(key, 0) + 1
        for labels, count in counts.items():
            self.metrics.experiment_lists.labels(*labels).inc(count)

    def _trace(self, update: SessionUpdate, record: RecommendationList, began_ns: int
               ) -> list[tuple[str, bytes]] | None:
        """The headers that put ``record`` in its event's trace, None for an untraced event
        (most: nothing is built for them)."""
        if not update.trace:
            return None
        return list(self.spans.headers(update.trace, began_ns, {
            "streamrec.path": record.path, "streamrec.model_version": record.model_version or ""}))

    async def retry_unstored(self) -> None:
        """Write the lists that missed Redis once the breaker allows it, with no batch to
        carry them: an idle worker would keep them until its next event."""
        if self.unstored and self.redis_backoff.ready():
            await self._store([], None)

    async def finish(self, wait_s: float = REDIS_FINISH_S) -> None:
        """At shutdown: the Redis writes under way (the idle timer's too: Faust stops timers
        after this), then one of the lists that waited for them, ``wait_s`` in all (the
        breaker is not asked: this is the last chance). Their events' offsets commit as
        the worker stops, so a user whose newest list waited in memory kept an older one
        in Redis, until their next event (a deploy while Redis was slow)."""
        deadline, failed = time.monotonic() + wait_s, False
        while (left := deadline - time.monotonic()) > 0:
            if self._write is not None and not self._write.done():
                await asyncio.wait({self._write}, timeout=left)
            elif self.unstored and not failed:  # each write carries a share of them;
                self._write = asyncio.ensure_future(self._write_now([], None))
                await asyncio.wait({self._write}, timeout=left)  # a failed one keeps them
                failed = self._write.done() and not self._write.result()
            else:
                break
        if self.unstored or (self._write is not None and not self._write.done()):
            log.warning("stopping with lists Redis has not taken; they are on the topic, "
                        "and each user's next event stores a newer one")

    async def _store(self, payloads: list[tuple[str, bytes]], popular: bytes | None) -> None:
        """Write to Redis, waiting ``REDIS_WAIT_S`` at most: a slower write goes on in the
        background, and the batches that come meanwhile leave their lists for the next
        write (``UnstoredLists``, newest per user). One write at a time, so an older list
        never lands after a newer one.

        A Redis that drops packets, rather than refusing them, makes each write wait out
        its 1 s timeout; awaited, three such timeouts in the first seconds of an outage
        cut the topic path to 0.77 of its throughput (``make faults``, Redis
        black-holed)."""
        # A record that no write carried goes with the next one (a newer replaces it):
        # dropped, the API's popularity froze while Redis was slow, one made per second.
        popular = self._popular_unsent = popular or self._popular_unsent
        if self._write is not None and not self._write.done():
            if payloads:  # a batch's lists, not the idle timer's retry (``retry_unstored``)
                self.metrics.redis_deferred.inc()
            self._keep_unstored(payloads)
        elif not self.redis_backoff.ready():
            self.metrics.redis_skipped.inc()
            self._keep_unstored(payloads)
        else:
            self._popular_unsent = None
            self._write = asyncio.ensure_future(self._write_now(payloads, popular))
            await asyncio.wait({self._write}, timeout=REDIS_WAIT_S)

    async def _write_now(self, payloads: list[tuple[str, bytes]], popular: bytes | None
                         ) -> bool:
        """Whether Redis took the write. A failure is counted and logged, never raised:
        the lists are on the topic already, and Redis down must not stop the stream.
        After a failure, batches skip Redis (counted) until ``redis_backoff`` lets one try
        again; the lists that missed it go with that write (``UnstoredLists``), each
        stored only over a list for an older event: the user's partition may have moved
        meanwhile, and its new owner stored a newer one."""
        held = self.unstored.take(user for user, _ in payloads)
        try:
            await self.store.write(payloads, popular, held)
        except Exception as exc:  # noqa: BLE001 - Redis down must not stop the stream
            lists = held + payloads
            self.metrics.redis_errors.inc()
            self.redis_backoff.failed()
            self.metrics.redis_unstored_dropped.inc(self.unstored.keep_older(lists))
            log.warning("writing %d lists to Redis failed: %s; skipping Redis for %.0f s",
                        len(lists), exc, self.redis_backoff.until - self.clock())
            return False
        self.redis_backoff.succeeded()
        return True

    def _keep_unstored(self, lists: list[tuple[str, bytes]]) -> None:
        self.metrics.redis_unstored_dropped.inc(self.unstored.keep(lists))
