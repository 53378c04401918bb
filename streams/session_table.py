"""The sessions table: Faust's changelog-backed table of each user's session state
(``streams.sessions``), kept in memory or in RocksDB, with its changelog records produced
through librdkafka.

``memory`` holds every session in the process and replays the whole changelog on every
start. ``rocksdb`` (faust-streaming's rocksdict store) keeps each partition in a local
database with the changelog offset it has applied up to, so a restarted worker reads only
the changelog's tail, and a standby replica (``table_standby_replicas``) keeps another
worker's partitions up to date for a takeover. Idle sessions expire by event time
(``SessionExpiry``), with tombstones, from either store and from the changelog.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Any

import faust
import orjson
from faust.stores import memory, rocksdb
from faust.streams import current_event
from faust.types import TP

from streams.producer import RecordProducer
from streams.sessions import supersedes

log = logging.getLogger(__name__)

# Faust's defaults are sized for a few large tables (a 2 GiB block cache per partition);
# a worker's sessions are one table of small values, read mostly by its own writes.
ROCKSDB_OPTIONS = {"block_cache_size": 64 * 2**20, "write_buffer_size": 16 * 2**20,
                   "max_write_buffer_number": 2}


Stored = tuple[int, Any, Any]  # (partition, user id, session state as written)


class SessionMemoryStore(memory.Store):
    """Faust's in-memory store, knowing the partition of every session, not only of those
    restored: the expiry sweep tombstones a session in its own partition, and a partition
    that moved away leaves memory after the next recovery (Faust's own rule)."""

    def note_partition(self, key: Any, partition: int) -> None:
        self._key_partition[key] = partition

    def __delitem__(self, key: Any) -> None:
        del self.data[key]
        self._key_partition.pop(key, None)

    def sessions_in(self, partitions: set[int]) -> Iterator[Stored]:
        """The sessions of ``partitions``, from a copy of the keys: events may add
        sessions between the sweep's steps."""
        where = self._key_partition
        for key in list(where):
            partition = where.get(key)
            if partition in partitions and key in self.data:
                yield partition, key, self.data[key]


class SessionRocksStore(rocksdb.Store):
    """Faust's RocksDB store, reading and writing sessions as the changelog holds them
    (orjson), not through Faust's codec registry: a read and a write per event, and the
    registry's json costs ~2.7 µs a value against ~0.8 (``SessionTable.send_changelog``)."""

    def _get(self, key: bytes) -> bytes | None:
        """In an event, from its partition's database, without Faust's key index (a
        locked LRU cache, written on every read and write) that only searches outside one."""
        event = current_event()
        if event is None:
            return super()._get(key)
        return self._db_for_partition(event.message.partition).get(key)

    def _set(self, key: bytes, value: bytes | None) -> None:
        self._db_for_partition(current_event().message.partition).put(key, value)

    def note_partition(self, key: Any, partition: int) -> None:
        """Nothing: each partition is a database of its own."""

    def sessions_in(self, partitions: set[int]) -> Iterator[Stored]:
        """The sessions of ``partitions``, one database at a time (a RocksDB iterator
        reads a consistent view while events write on)."""
        for partition in sorted(partitions):
            for key, value in self._visible_items(self._db_for_partition(partition)):
                yield partition, self._decode_key(key), self._decode_value(value)

    def _encode_key(self, key: Any) -> bytes:
        return orjson.dumps(key)

    def _encode_value(self, value: Any) -> bytes | None:
        return None if value is None else orjson.dumps(value)

    def _decode_key(self, key: bytes | None) -> Any:
        return None if key is None else orjson.loads(key)

    def _decode_value(self, value: bytes | None) -> Any:
        return None if value is None else orjson.loads(value)


class SessionTable(faust.Table):
    """Faust's table, with its changelog records produced through librdkafka
    (``changelog_out``) instead of Faust's aiokafka producer.

    Every event writes its user's session, so the changelog send runs once per event:
    through Faust it builds futures and batches in Python (``ProducerBuffer``, aiokafka's
    accumulator and sender), one of the pass-through worker's largest costs in a py-spy
    profile. The records are the same (the changelog topic's own key and value codecs,
    the event's partition), so recovery reads them as before, and a changelog written by
    either producer restores the same table. ``DeliverBeforeCommit`` delivers them before
    the offsets of their events are committed, as it does the lists.

    With the RocksDB store, each acknowledged record's offset is noted from librdkafka's
    delivery report (``changelog_out`` must report successes) and written to the store by
    ``persist_offsets`` at each offset commit (``DeliverBeforeCommit``, also the last one on
    shutdown), as Faust's own send callback would per record: a restart then reads the
    changelog from there. The offset is never ahead of the store: mode sends the record
    first and writes the store right after, in the same call, and the offset reaches the
    store only at the next commit.
    """

    def __init__(self, app: faust.App, *, changelog_out: RecordProducer, **kwargs: Any) -> None:
        super().__init__(app, **kwargs)
        self.changelog_out = changelog_out
        self.persists = isinstance(self.data, rocksdb.Store)
        self.acked: dict[int, int] = {}  # changelog partition -> newest acknowledged offset

    def _new_store_by_url(self, url: Any) -> Any:
        if str(url).startswith("rocksdb:"):
            return SessionRocksStore(url, self.app, self, table_name=self.name,
                                     options={**ROCKSDB_OPTIONS, **(self.options or {})})
        return SessionMemoryStore(url, self.app, self, table_name=self.name)

    def apply_changelog_batch(self, batch: Iterable[Any]) -> None:
        """Restore, skipping stale records (``streams.sessions.supersedes``): a frozen
        worker's queued writes can reach the changelog after the new owner's newer ones,
        and restoring in log order would bring its older sessions back. A RocksDB store
        also skips its own earlier writes of a session it holds newer (those after the
        offset it persisted at its last commit), so the count is no alarm by itself."""
        kept, latest, stale = [], {}, 0
        for event in batch:
            key = self._to_key(event.key)
            before = latest[key] if key in latest else self.data.get(key)
            if not supersedes(before, event.value):
                stale += 1
                continue
            latest[key] = event.value
            kept.append(event)
        if stale:
            log.info("restoring sessions: skipped %d changelog records older than the "
                     "sessions held", stale)
        super().apply_changelog_batch(kept)

    def get(self, key: Any, default: Any = None) -> Any:
        """One store read per event. Faust's (``Mapping.get`` over its table dict) asks
        ``key in store`` and then ``store[key]``: two RocksDB reads of the same key."""
        return self.data.get(key, default)

    def on_key_get(self, key: Any) -> None:
        """Nothing per read: Faust's hook only feeds sensors' table statistics."""

    def on_key_set(self, key: Any, value: Any) -> None:
        """Per event: the changelog record only, none of the TTL and sensor bookkeeping
        this table does not use."""
        partition = self.partition_for_key(key)
        self.data.note_partition(key, partition)
        self.send_changelog(partition, key, value)

    def send_changelog(self, partition: int | None, key: Any, value: Any,
                       key_serializer: Any = None, value_serializer: Any = None) -> SentTo:
        """The record as the changelog topic's json codecs, this table's, encode it
        (orjson, tested equal; ~0.8 µs against ~2.7 through Faust's schema); a deletion's
        None goes out as a tombstone."""
        self.changelog_out.produce(self.changelog_topic_name, orjson.dumps(key),
                                   None if value is None else orjson.dumps(value),
                                   partition=partition,
                                   on_delivery=self.changelog_acked if self.persists else None)
        return SentTo(partition)

    def changelog_acked(self, err: Any, msg: Any) -> None:
        """librdkafka's report on one changelog record: its offset when acknowledged;
        a failure goes to the producer's own accounting, which stops the next commit."""
        if err is None:
            self.acked[msg.partition()] = msg.offset()
        else:
            self.changelog_out.on_delivery(err, msg)

    def persist_offsets(self) -> None:
        """Write the newest acknowledged changelog offset of each partition this worker
        owns into its store. A partition that moved away keeps its last offset: if it comes
        back, its store reads the changelog from there, including the other owner's writes."""
        if not self.acked:
            return
        actives = self.app.assignor.assigned_actives()
        for partition, offset in self.acked.items():
            tp = TP(self.changelog_topic_name, partition)
            if tp in actives:
                self.data.set_persisted_offset(tp, offset)
        self.acked.clear()


def last_event_ms(state: Any) -> int | None:
    """A stored session's last event time; None when the state cannot be read (it is
    kept: the next event replaces it, ``streams.steps.read_state``)."""
    last = state.get("last_ts") if isinstance(state, dict) else None
    return last if isinstance(last, int) else None


def is_idle(state: Any, newest_ms: int, ttl_ms: int) -> bool:
    """Whether a stored session's last event is more than ``ttl_ms`` older than
    ``newest_ms``, the newest event time seen in its partition (event time, not the
    clock: a replay of last year's log keeps its sessions while it runs)."""
    last = last_event_ms(state)
    return last is not None and last < newest_ms - ttl_ms


class SessionExpiry:
    """Tombstones idle sessions of the partitions this worker owns, in the store and the
    changelog (compaction then drops them), so neither grows with every user ever seen.

    A sweep walks the owned sessions in steps of ``step`` with the event loop free in
    between, and notes each partition's newest event time for the next sweep, which
    expires what is ``ttl_ms`` older than that, the worker's clock capping it: events may
    be stamped up to a day ahead, and one such would expire its partition's every live
    session under a TTL shorter than a day. Each deletion re-reads the session (an
    event may have renewed it meanwhile) and happens only while no rebalance runs and
    the partition is still owned, after ``guard`` (a freeze check) passes: a worker that
    lost its partitions must not tombstone the new owner's sessions.
    """

    def __init__(self, table: SessionTable, ttl_ms: int, guard: Callable[[], None],
                 step: int = 1000, clock: Callable[[], float] = time.time) -> None:
        self.table, self.ttl_ms, self.guard, self.step = table, ttl_ms, guard, step
        self.clock = clock
        self.newest_ms: dict[int, int] = {}  # partition -> newest last_ts, last sweep

    def owned(self) -> set[int] | None:
        """The partitions owned now; None while a rebalance runs."""
        app = self.table.app
        if app.rebalancing:
            return None
        topic = self.table.changelog_topic_name
        return {tp.partition for tp in app.assignor.assigned_actives() if tp.topic == topic}

    async def sweep(self) -> int:
        """One pass; returns how many sessions expired."""
        owned = self.owned()
        if not owned:
            return 0
        store, newest, expired = self.table.data, dict.fromkeys(owned, 0), 0
        now_ms = int(self.clock() * 1000)
        for n, (partition, key, state) in enumerate(store.sessions_in(owned), 1):
            if (last := last_event_ms(state)) is not None:  # no later than now: one client's
                newest[partition] = max(newest[partition], min(last, now_ms))  # skewed clock
            cutoff = self.newest_ms.get(partition)
            if cutoff is not None and is_idle(state, cutoff, self.ttl_ms):
                expired += self._expire(partition, key, cutoff, owned)
            if n % self.step == 0:
                await asyncio.sleep(0)
                owned = self.owned()
                if owned is None:  # a rebalance began: the next sweep starts over
                    return expired
        self.newest_ms = newest
        return expired

    def _expire(self, partition: int, key: Any, cutoff: int, owned: set[int]) -> int:
        if partition not in owned or not is_idle(self.table.data.get(key), cutoff, self.ttl_ms):
            return 0
        self.guard()
        del self.table.data[key]
        self.table.send_changelog(partition, key, None)
        return 1


@dataclass(frozen=True)
class SentTo:
    """What Faust's table reads of a changelog send: ``.message.partition``."""

    partition: int | None

    @property
    def message(self) -> SentTo:
        return self
