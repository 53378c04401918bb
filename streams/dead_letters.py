"""Dead letters: what was rejected and why, and sending back in the ones a fix made valid.

A run reads the dead-letter topic from a consumer group's committed position (the oldest
record kept when the group has none) up to the end the topic had when the run began, so
records appended meanwhile, among them the ones a redrive puts back, wait for the next
run. A redrive commits that end only after every record it sent was acknowledged: a
letter is redriven at most once per run (the copies a failed run put back are skipped),
and a failed run leaves the group where it was.

Nothing is dropped: a letter that still fails validation, or that ``only`` left out, goes
back to the dead-letter topic with its bytes and headers (one that was re-validated with
its ``redrives`` header incremented), so a later fix can still redrive it.

Letters are events unless their ``kind`` header says otherwise: a catalogue record
(``kind: item``) is re-validated as one and, when valid, goes to the items topic keyed by
item id, unless the topic holds a newer record or tombstone of that item (superseded:
counted, not sent); with no items topic given, it goes back untouched (left out).

    with DeadLetterQueue(kafka, "interactions.dlq") as queue:
        report = redrive(queue, queue.pending(), "interactions", items="items", dry_run=True)
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field, replace
from types import TracebackType
from typing import Self

from confluent_kafka import Consumer, KafkaException, TopicPartition

from infra.kafka_client import KafkaConnection
from streams.catalog import parse_item
from streams.consumer import Record, existing_topic, read_partition, read_to_end
from streams.events import InvalidEvent, parse
from streams.producer import (
    ITEM_KIND,
    KIND_HEADER,
    Headers,
    RecordProducer,
    dead_letter_headers,
)

DLQ_GROUP = "streamrec-dlq"
REDRIVEN_FROM_HEADER = "redriven_from"  # on a redriven event: "dlq-topic[partition]@offset"
REDRIVES_HEADER = "redrives"  # on a dead letter: how many redrives it has failed, ASCII
# On a letter put back by a redrive: where the letter was first written, so a reader of
# the whole topic counts each letter once however often it went back.
FIRST_WRITTEN_HEADER = "first_written"
FIRST_REASON_HEADER = "first_reason"  # a letter that failed a redrive for another reason
MISSING = "(none)"  # what stands for a header a letter lacks, e.g. one produced by hand
_PROGRESS_EVERY = 500


@dataclass(frozen=True)
class Span:
    """The part of one partition a run reads: offsets ``start`` up to ``end`` (exclusive)."""

    partition: int
    start: int
    end: int
    expired: int = 0  # letters past the group's position that retention deleted unhandled

    @property
    def size(self) -> int:
        return max(self.end - self.start, 0)


def expired(spans: Iterable[Span]) -> int:
    """Letters retention deleted before the group handled them, over ``spans``."""
    return sum(s.expired for s in spans)


def letters(spans: Iterable[Span]) -> int:
    """How many dead letters ``spans`` hold."""
    return sum(span.size for span in spans)


def _header(record: Record, name: str) -> str | None:
    value = record.headers.get(name)
    return None if value is None else value.decode(errors="replace")


def _ascii_int(raw: bytes | None) -> int | None:
    """A header's count or time: 1 to 18 ASCII digits (within 64 bits), else None.
    str.isdigit also takes "²", which int() refuses; past 4,300 digits int() raises, and
    any producer could send such a header on an event the worker letters."""
    if raw is None or not 0 < len(raw) <= 18 or not (raw.isascii() and raw.isdigit()):
        return None
    return int(raw)


def _header_int(record: Record, name: str) -> int | None:
    return _ascii_int(record.headers.get(name))


def reason_of(record: Record) -> str:
    """The letter's ``reason`` header; letters without one are grouped under MISSING."""
    return _header(record, "reason") or MISSING


def rejected_ms(record: Record) -> int:
    """When the letter was rejected: its ``rejected_ms`` header, else the record's own
    timestamp, so a letter with a missing or garbled header still sorts in time."""
    at = _header_int(record, "rejected_ms")
    return record.timestamp_ms if at is None else at


def origin(record: Record) -> str:
    """Where a record sits, as ``topic[partition]@offset``: what a redriven event carries."""
    return f"{record.topic}[{record.partition}]@{record.offset}"


def redrives(record: Record) -> int:
    """How many redrives the letter has already failed."""
    return _header_int(record, REDRIVES_HEADER) or 0


def letter_id(record: Record) -> str:
    """The letter's identity: where it was first written, whichever copy this is."""
    return _header(record, FIRST_WRITTEN_HEADER) or origin(record)


def put_back_headers(record: Record, *, failed: bool, now: InvalidEvent | None = None
                     ) -> Headers:
    """The letter's headers, kept as they were, naming where it was first written, with
    its ``redrives`` count incremented when it ``failed`` again. Failed ``now`` for another
    reason than its own, it takes today's reason, detail and time, and keeps its first
    reason in ``first_reason``: filed under the old one, `inspect` said the fix for that
    reason had not worked, and `redrive --reason` for the new one never picked it up."""
    count = redrives(record) + (1 if failed else 0)
    changed: dict[str, bytes] = {}
    if now is not None and now.reason.value != reason_of(record):
        fresh = dict(dead_letter_headers(now.reason.value, now.detail, source=""))
        changed = {k: fresh[k] for k in ("reason", "detail", "rejected_ms")}
        changed.setdefault(FIRST_REASON_HEADER, record.headers.get(FIRST_REASON_HEADER)
                           or reason_of(record).encode())
    kept = [(k, v) for k, v in record.headers.items()
            if k not in (REDRIVES_HEADER, FIRST_WRITTEN_HEADER, *changed)]
    return [*kept, *changed.items(), *_identity(letter_id(record).encode(), count)]


def _identity(first_written: bytes, count: int) -> Headers:
    return [(FIRST_WRITTEN_HEADER, first_written),
            *([(REDRIVES_HEADER, str(count).encode())] if count else [])]


def redriven_headers(record: Record) -> Headers:
    """The headers a redriven letter's record carries: where it came from, and the
    letter's identity and count, so a worker that rejects it again writes the same
    letter once more (``refailed_headers``) rather than a new one with its count at 0."""
    return [(REDRIVEN_FROM_HEADER, origin(record).encode()),
            *_identity(letter_id(record).encode(), redrives(record))]


MAX_ORIGIN_BYTES = 512  # a ``first_written`` header: ``<topic>[<partition>]@<offset>``


def refailed_headers(headers: Mapping[str, bytes]) -> Headers:
    """What a dead letter written for a redriven record adds to its own headers: the
    letter it was redriven from and that letter's ``redrives`` count plus one (nothing
    for a record that was never a letter)."""
    first = headers.get(FIRST_WRITTEN_HEADER)
    if first is None or len(first) > MAX_ORIGIN_BYTES:  # one no redrive wrote: a megabyte
        return []  # of it made every letter of the record too big to send, for good
    return _identity(first, (_ascii_int(headers.get(REDRIVES_HEADER)) or 0) + 1)


@dataclass
class ReasonSummary:
    """One reason's letters: how many, over what time, from which processes, and a few
    distinct details, which usually tell what to fix."""

    reason: str
    first_ms: int
    last_ms: int
    count: int = 0
    sources: set[str] = field(default_factory=set)
    examples: list[str] = field(default_factory=list)
    redrives: int = 0  # the most redrives any of its letters has failed

    def add(self, record: Record, at_ms: int, max_examples: int) -> None:
        self.count += 1
        self.redrives = max(self.redrives, redrives(record))
        self.first_ms, self.last_ms = min(self.first_ms, at_ms), max(self.last_ms, at_ms)
        self.sources.add(_header(record, "source") or MISSING)
        detail = _header(record, "detail")
        if detail and detail not in self.examples and len(self.examples) < max_examples:
            self.examples.append(detail)


_SUMMARIZED = ("reason", "source", "detail", "rejected_ms", REDRIVES_HEADER)


def newest_copies(records: Iterable[Record]) -> list[Record]:
    """Each letter once, as its most redriven copy (the later refusal on a tie), holding
    only what a summary reads: the whole topic's first copy of a letter is the letter
    itself, whose reason may be one a redrive has since replaced, and which counts no
    redrive."""
    newest: dict[str, Record] = {}
    for record in records:
        held = newest.get(key := letter_id(record))
        if held is None or ((redrives(record), rejected_ms(record))
                            > (redrives(held), rejected_ms(held))):
            newest[key] = replace(record, key=None, value=None, headers={
                k: v for k, v in record.headers.items() if k in _SUMMARIZED})
    return list(newest.values())


def first_copies(records: Iterable[Record]) -> Iterator[Record]:
    """Each letter once, as the first copy met: the one a redrive decides on."""
    seen: set[str] = set()
    for record in records:
        if not _copy(record, seen):
            yield record


def summarize(records: Iterable[Record], examples: int = 1, newest: bool = False
              ) -> list[ReasonSummary]:
    """Letters grouped by reason, the most frequent first, each letter counted once
    however many copies redrives put back: a whole topic's, or a failed run's copies
    pending beside their letters (which the redrive skips, so its counts add up).
    ``newest``: each letter as its newest copy (``newest_copies``: a whole topic's view);
    else as its first, whose reason ``redrive --reason`` picks it by (pending letters)."""
    by_reason: dict[str, ReasonSummary] = {}
    for record in newest_copies(records) if newest else first_copies(records):
        reason, at = reason_of(record), rejected_ms(record)
        summary = by_reason.setdefault(reason, ReasonSummary(reason, at, at))
        summary.add(record, at, examples)
    return sorted(by_reason.values(), key=lambda s: (-s.count, s.reason))


EVENT_KIND = "event"  # what a letter without a ``kind`` header is


def kind_of(record: Record) -> str:
    """What the letter was meant to be: ``event`` (no ``kind`` header) or ``item``."""
    return _header(record, KIND_HEADER) or EVENT_KIND


@dataclass(frozen=True)
class Redrive:
    """A letter that now validates: its original bytes go to the interactions topic,
    keyed by user id like every event (or, ``kind`` ``item``, to the items topic keyed by
    item id), and say where they came from."""

    key: bytes
    value: bytes
    headers: Headers
    kind: str = EVENT_KIND


@dataclass(frozen=True)
class Reappend:
    """A letter that goes back to the dead-letter topic; ``attempted`` when it was
    re-validated and failed again rather than left out by the reason filter. A letter
    without a value (a tombstone the worker dead-lettered) goes back with an empty one."""

    reason: str
    key: bytes | None
    value: bytes
    headers: Headers
    attempted: bool
    # the letter's own record time, which its copy keeps: stamped anew at each redrive, a
    # letter that can never pass outlived the topic's retention.ms for good
    timestamp_ms: int | None = None


def decide(record: Record, only: str | None = None,
           kinds: frozenset[str] = frozenset({EVENT_KIND, ITEM_KIND})) -> Redrive | Reappend:
    """What a redrive does with one letter: re-validate its bytes with today's rules, as
    the kind of record it was meant to be (``only``: just the letters of that reason;
    ``kinds``: just those kinds; the others go back untouched)."""
    reason, raw, kind = reason_of(record), record.value or b"", kind_of(record)
    if (only is not None and reason != only) or kind not in kinds:
        return Reappend(reason, record.key, raw, put_back_headers(record, failed=False), False,
                        record.timestamp_ms)
    try:  # an empty value as None: a tombstone's copy stays ``empty_record``, not bad JSON
        value = raw or None
        key = parse_item(value).key if kind == ITEM_KIND else parse(value).key
    except InvalidEvent as exc:
        return Reappend(exc.reason.value, record.key, raw,
                        put_back_headers(record, failed=True, now=exc), True, record.timestamp_ms)
    return Redrive(key, raw, redriven_headers(record), kind)


@dataclass(frozen=True)
class Superseded:
    """A catalogue letter whose item has a newer record or tombstone on the items topic
    than the letter's rejection: redriven, its old content would replace the item's
    current one (or bring back a deleted item), so it is counted and not sent."""

    reason: str


class ItemTimes:
    """When each item's current record (or tombstone) on the items topic was written, read
    to the end once, when the first catalogue letter that validates asks."""

    def __init__(self, kafka: KafkaConnection, topic: str) -> None:
        self.kafka, self.topic = kafka, topic
        self._written: dict[bytes | None, int] | None = None

    def newer_than(self, key: bytes, rejected_at_ms: int) -> bool:
        if self._written is None:
            self._written = {r.key: r.timestamp_ms for r in read_to_end(self.kafka, self.topic)}
        return self._written.get(key, -1) > rejected_at_ms


@dataclass
class RedriveReport:
    """What a redrive did, or would do in a dry run; ``committed`` once the group's
    position moved past the letters read."""

    read: int = 0
    redriven: int = 0
    copies: int = 0  # copies of letters read earlier in the run, which a failed run put back
    superseded: int = 0  # catalogue letters older than their item's current record
    retired: int = 0  # letters past ``max_redrives``: not put back
    still_invalid: Counter[str] = field(default_factory=Counter)
    left_out: Counter[str] = field(default_factory=Counter)
    committed: bool = False

    def add(self, outcome: Redrive | Reappend | Superseded) -> None:
        self.read += 1
        if isinstance(outcome, Redrive):
            self.redriven += 1
        elif isinstance(outcome, Superseded):
            self.superseded += 1
        else:
            (self.still_invalid if outcome.attempted else self.left_out)[outcome.reason] += 1


class DeadLetterQueue:
    """The dead-letter topic as one consumer group sees it: the letters it has not handled
    yet, reading them, and marking them handled. The group never subscribes (it only
    assigns and commits), so no rebalance can move its position during a run."""

    def __init__(self, kafka: KafkaConnection, topic: str, group: str = DLQ_GROUP) -> None:
        self.kafka = kafka
        self.topic = topic
        self._consumer = Consumer(kafka.librdkafka(**{  # out of range: the oldest kept
            "group.id": group, "enable.auto.commit": False, "auto.offset.reset": "earliest"}))

    def pending(self, from_beginning: bool = False) -> list[Span]:
        """Per partition, from the group's committed offset (or the oldest record kept,
        when the group has none, retention deleted past it, or ``from_beginning``) to
        the current end; with how many letters retention deleted before the group
        handled them, which would otherwise go unsaid."""
        partitions = [TopicPartition(self.topic, p) for p in
                      sorted(existing_topic(self._consumer, self.topic).partitions)]
        committed = {tp.partition: tp.offset
                     for tp in self._consumer.committed(partitions, timeout=10)}
        spans = []
        for tp in partitions:
            low, end = self._consumer.get_watermark_offsets(tp, timeout=10)
            at = committed[tp.partition]  # negative: the group has none
            start = low if from_beginning else max(low, at)
            spans.append(Span(tp.partition, start, end, max(low - at, 0) if at >= 0 else 0))
        return spans

    def read(self, spans: Iterable[Span]) -> Iterator[Record]:
        for span in spans:
            yield from read_partition(self._consumer, self.topic, span.partition,
                                      span.start, span.end)

    def commit(self, spans: Iterable[Span]) -> None:
        """Mark the letters in ``spans`` handled: the group's next run starts after them.
        A partition whose unhandled letters all expired moves on too, or every later run
        warned of the same expired letters again."""
        offsets = [TopicPartition(self.topic, s.partition, s.end) for s in spans
                   if s.size or s.expired]
        if offsets:
            self._consumer.commit(offsets=offsets, asynchronous=False)

    def close(self) -> None:
        self._consumer.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()


def _outdated(outcome: Redrive | Reappend, record: Record, current: ItemTimes | None
              ) -> Redrive | Reappend | Superseded:
    """``outcome``, unless it redrives a catalogue record that the items topic has since
    replaced or deleted."""
    if (isinstance(outcome, Redrive) and outcome.kind == ITEM_KIND and current is not None
            and current.newer_than(outcome.key, first_rejected_ms(record))):
        return Superseded(reason_of(record))
    return outcome


def first_rejected_ms(record: Record) -> int:
    """When the letter was first refused. A copy re-filed under a new reason carries that
    refusal's time in ``rejected_ms``, which let a record the item got in between be
    replaced by the letter's older content; every copy keeps the letter's own record time,
    stamped when it was first written."""
    return min(rejected_ms(record), record.timestamp_ms or rejected_ms(record))


def _copy(record: Record, seen: set[str]) -> bool:
    """Whether a letter was met earlier in this run: a failed run put its copy back and
    committed nothing, so both the letter and its copy are pending, and redriving both
    would send its event twice."""
    identity = letter_id(record)
    if identity in seen:
        return True
    seen.add(identity)
    return False


def _send(producer: RecordProducer, outcome: Redrive | Reappend, topics: dict[str, str],
          dlq: str) -> None:
    if isinstance(outcome, Redrive):
        producer.produce(topics[outcome.kind], outcome.key, outcome.value, outcome.headers)
    else:
        producer.produce(dlq, outcome.key, outcome.value, outcome.headers,
                         timestamp_ms=outcome.timestamp_ms)


def _settle(producer: RecordProducer) -> None:
    """Raise unless every record sent was acknowledged: committing then would lose letters.
    Waits as long as librdkafka may still deliver (``close``): a shorter wait failed runs
    whose records then went out anyway, so the next run sent them all again."""
    producer.close()
    if producer.stats.failed:
        raise KafkaException(
            f"redrive: {producer.stats.failed} records not delivered "
            f"({producer.stats.last_error}); nothing committed, so the next redrive reads "
            "the same letters again (those delivered this time are sent twice)")


def redrive(queue: DeadLetterQueue, spans: list[Span], interactions: str, *,
            items: str | None = None, only: str | None = None, dry_run: bool = False,
            on_progress: Callable[[RedriveReport], None] | None = None,
            max_redrives: int | None = None) -> RedriveReport:
    """Re-validate the letters in ``spans``: valid events go to ``interactions``, valid
    catalogue records to ``items`` (without it they are left out), the rest back to the
    dead-letter topic; then commit. A dry run only counts what would happen.
    ``max_redrives``: a letter that has failed that many redrives is retired: neither
    redriven nor put back, so it is no longer pending (it stays in the topic, where it
    was, until the topic's retention); without it, a letter that can never pass came
    back at every redrive, for good."""
    report = RedriveReport()
    topics = {EVENT_KIND: interactions, **({ITEM_KIND: items} if items is not None else {})}
    kinds = frozenset(topics)
    producer = None if dry_run else RecordProducer(queue.kafka)
    seen: set[str] = set()
    current = None if items is None else ItemTimes(queue.kafka, items)
    try:
        for record in queue.read(spans):
            if _copy(record, seen):
                report.read += 1
                report.copies += 1
                continue
            if max_redrives is not None and redrives(record) >= max_redrives:
                report.read += 1
                report.retired += 1
                continue
            outcome = _outdated(decide(record, only, kinds), record, current)
            report.add(outcome)
            if producer is not None and not isinstance(outcome, Superseded):
                _send(producer, outcome, topics, queue.topic)
            if on_progress is not None and report.read % _PROGRESS_EVERY == 0:
                on_progress(report)
        if producer is not None:
            _settle(producer)
            queue.commit(spans)
            report.committed = True
    finally:
        if producer is not None:
            producer.close()
    return report
