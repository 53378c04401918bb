"""The sessions table without a broker: its changelog records, restoring, the RocksDB
store's persisted offsets, and the expiry of idle sessions."""

from __future__ import annotations

import asyncio
import weakref
from pathlib import Path
from types import SimpleNamespace as Record
from typing import Any

import faust
import orjson
import pytest
from faust.types import TP

from streams.events import new_event
from streams.session_table import SessionExpiry, SessionTable, is_idle
from streams.sessions import SessionPolicy, apply_event, supersedes

DAY_MS = 24 * 3600 * 1000
T0 = 1_700_000_000_000  # event times in these tests count from here


class Out:
    """The changelog producer: keeps what is sent."""

    def __init__(self) -> None:
        self.sent: list[tuple] = []

    def produce(self, topic: str, key: bytes, value: bytes | None, partition: int,
                on_delivery: Any = None) -> None:
        self.sent.append((topic, key, value, partition))


def make_table(tmp_path: Path, store: str = "memory", out: Any = None,
               owned: set[int] = frozenset({0, 1})) -> SessionTable:
    app = faust.App(f"table-test-{store}", broker="kafka://127.0.0.1:1", store=f"{store}://",
                    datadir=str(tmp_path))
    table = app.tables.add(SessionTable(app, name="sessions", default=None, partitions=4,
                                        beacon=app.tables.beacon, changelog_out=out or Out()))
    topic = table.changelog_topic_name
    app.assignor.assigned_actives = lambda: {TP(topic, p) for p in owned}
    app.rebalancing = False
    table._verify_source_topic_partitions = lambda topic: None  # Faust's metadata check
    return table


def state_at(user: str, ts: int) -> dict:
    state, _ = apply_event(None, new_event(user, "i-1", ts=T0 + ts), SessionPolicy())
    return state.to_dict()


class InEvent:
    """Faust's current event while a stream processes one of ``partition`` (its context
    variable, which the table and the RocksDB store read to find the partition)."""

    def __init__(self, partition: int) -> None:
        self.message = Record(partition=partition, topic="interactions")

    def __enter__(self) -> InEvent:
        self.token = faust.streams._current_event.set(weakref.ref(self))
        return self

    def __exit__(self, *exc: object) -> None:
        faust.streams._current_event.reset(self.token)


def write(table: SessionTable, user: str, partition: int, ts: int) -> dict:
    """A session written as the sessionizer writes it, in an event of ``partition``."""
    with InEvent(partition):
        table[user] = state = state_at(user, ts)
        assert table.get(user) == state
    return state


def test_the_session_table_writes_the_changelog_records_faust_would(tmp_path: Path) -> None:
    """Changelog records go through librdkafka, encoded as the changelog topic's own codecs
    encode them, to the event's partition, so recovery reads them as before."""
    out = Out()
    table = make_table(tmp_path, out=out)
    state = write(table, "u-1", 3, 1000)
    topic = table.changelog_topic
    key, _ = topic.prepare_key("u-1", table.key_serializer)
    value, _ = topic.prepare_value(state, table.value_serializer)
    assert out.sent == [("table-test-memory-sessions-changelog", key, value, 3)]
    assert table.get("u-1") == state and table.get("u-2") is None


def test_a_session_is_read_from_rocksdb_once_per_event(tmp_path: Path) -> None:
    """Faust's table ``get`` read the store twice (``key in store``, then ``store[key]``);
    every event reads its user's session, so once is the rule."""
    table = make_table(tmp_path, "rocksdb")
    state = write(table, "u-1", 2, 1000)
    reads: list[bytes] = []
    read, contains = table.data._get, table.data._contains
    table.data._get = lambda key: reads.append(key) or read(key)
    table.data._contains = lambda key: reads.append(key) or contains(key)
    with InEvent(2):
        assert table.get("u-1") == state and table.get("u-2") is None
        assert table.get("u-3", "none") == "none"
    assert reads == [b'"u-1"', b'"u-2"', b'"u-3"']


def changelog(rows: list[tuple[str, dict | None]], partition: int = 0, first: int = 0
              ) -> list[Record]:
    """Changelog events as Faust hands them to ``apply_changelog_batch``."""
    return [Record(key=k, value=v, message=Record(
        key=orjson.dumps(k), value=None if v is None else orjson.dumps(v), partition=partition,
        offset=first + n, tp=TP("table-test-rocksdb-sessions-changelog", partition)))
        for n, (k, v) in enumerate(rows)]


@pytest.mark.parametrize("store", ["memory", "rocksdb"])
def test_restoring_skips_a_stale_write_that_reached_the_changelog_late(
        tmp_path: Path, store: str) -> None:
    """A worker frozen past the session timeout can wake with a write still queued: it
    lands after the new owner's newer state. Restoring keeps the newer state."""
    policy, states, state = SessionPolicy(), [], None
    for n in range(3):
        state, _ = apply_event(state, new_event("u-1", f"i-{n}"), policy)
        states.append(state.to_dict())
    other = state_at("u-2", 5)
    assert supersedes(states[0], states[1]) and supersedes(None, states[0])
    assert not supersedes(states[2], states[1])            # older than what is held
    assert supersedes(states[1], states[1])                # the same event again
    assert supersedes(states[2], {"recent_event_ids": []})  # unreadable: let through
    for held in (None, 5, {}):  # a stored state's ids of the wrong type raised (a review)
        assert supersedes({"recent_event_ids": held}, states[1])
    table = make_table(tmp_path, store)
    log = [("u-1", states[0]), ("u-1", states[1]), ("u-1", states[2]),
           ("u-2", other), ("u-1", states[1])]   # the late, stale write
    table.apply_changelog_batch(changelog(log[:4]))
    table.apply_changelog_batch(changelog(log[4:], first=4))
    assert table.get("u-1") == states[2] and table.get("u-2") == other


def test_rocksdb_keeps_sessions_and_the_changelog_offset_across_a_restart(
        tmp_path: Path) -> None:
    """The RocksDB store outlives the process: a new table on the same folder holds the
    sessions, and the offset to read the changelog from, which comes from librdkafka's
    reports of acknowledged records, only for partitions this worker owns."""
    table = make_table(tmp_path, "rocksdb", owned={0})
    restored = state_at("u-1", 7)
    table.apply_changelog_batch(changelog([("u-1", restored)]))
    assert table.persisted_offset(TP(table.changelog_topic_name, 0)) == 0  # Faust's own rule
    written = write(table, "u-2", 0, 8)
    acked = [Record(partition=lambda p=p: p, offset=lambda o=o: o)
             for p, o in [(0, 5), (0, 9), (1, 4)]]
    for msg in acked:
        table.changelog_acked(None, msg)
    table.persist_offsets()
    tp0, tp1 = (TP(table.changelog_topic_name, p) for p in (0, 1))
    assert table.persisted_offset(tp0) == 9 and table.persisted_offset(tp1) is None
    for db in table.data._dbs.values():  # as the process ending would (no flush needed)
        db.close()
    again = make_table(tmp_path, "rocksdb", owned={0})
    assert again.persisted_offset(tp0) == 9
    assert again.get("u-1") == restored and again.get("u-2") == written


def test_a_failed_changelog_record_goes_to_the_producers_failure_accounting(
        tmp_path: Path) -> None:
    failures: list[Any] = []
    out = Out()
    out.on_delivery = lambda err, msg: failures.append(err)
    table = make_table(tmp_path, "rocksdb", out=out)
    table.changelog_acked("broker down", Record(partition=lambda: 0, offset=lambda: 3))
    assert failures == ["broker down"] and table.acked == {}


def test_a_session_is_idle_past_the_ttl_before_its_partitions_newest_event() -> None:
    state = state_at("u", 1000)
    assert is_idle(state, newest_ms=T0 + 1000 + DAY_MS + 1, ttl_ms=DAY_MS)
    assert not is_idle(state, newest_ms=T0 + 1000 + DAY_MS, ttl_ms=DAY_MS)
    assert not is_idle({"last_ts": "soon"}, newest_ms=10 * DAY_MS, ttl_ms=DAY_MS)
    assert not is_idle(None, newest_ms=10 * DAY_MS, ttl_ms=DAY_MS)


@pytest.mark.parametrize("store", ["memory", "rocksdb"])
def test_expiry_tombstones_idle_sessions_of_owned_partitions_only(
        tmp_path: Path, store: str) -> None:
    """By event time: the first sweep notes each partition's newest event, the next
    expires what is a TTL older, with a tombstone to the session's own partition. A
    partition another worker owns is left alone, and a session renewed in between stays."""
    out = Out()
    table = make_table(tmp_path, store, out=out, owned={0, 1})
    rows = [("old", 0, 0), ("renewed", 0, 0), ("new", 0, 3 * DAY_MS), ("other", 1, 0),
            ("newest-1", 1, DAY_MS // 2), ("elsewhere", 2, 0)]
    for user, partition, ts in rows:
        write(table, user, partition, ts)
    out.sent.clear()
    expiry = SessionExpiry(table, ttl_ms=DAY_MS, guard=lambda: None, step=2)
    assert asyncio.run(expiry.sweep()) == 0  # nothing known of event time yet
    assert expiry.newest_ms == {0: T0 + 3 * DAY_MS, 1: T0 + DAY_MS // 2}
    write(table, "renewed", 0, 3 * DAY_MS)
    out.sent.clear()
    assert asyncio.run(expiry.sweep()) == 1
    assert table.get("old") is None
    assert [(key, value, partition) for _, key, value, partition in out.sent] == [
        (b'"old"', None, 0)]
    for user in ("renewed", "new", "other", "newest-1", "elsewhere"):
        assert table.get(user) is not None, user


def test_an_event_stamped_ahead_of_the_clock_expires_no_live_session(tmp_path: Path) -> None:
    """Events may be stamped up to a day ahead; the partition's newest time is capped at
    the worker's clock, or one skewed client would expire every session of a short TTL."""
    table = make_table(tmp_path, owned={0})
    write(table, "active", 0, 3 * DAY_MS - 1000)
    write(table, "skewed", 0, 3 * DAY_MS + DAY_MS * 9 // 10)
    write(table, "idle", 0, 2 * DAY_MS)
    expiry = SessionExpiry(table, ttl_ms=DAY_MS // 4, guard=lambda: None,
                           clock=lambda: (T0 + 3 * DAY_MS) / 1000)
    asyncio.run(expiry.sweep())
    assert expiry.newest_ms == {0: T0 + 3 * DAY_MS}
    assert asyncio.run(expiry.sweep()) == 1 and table.get("idle") is None
    assert table.get("active") is not None and table.get("skewed") is not None


def test_expiry_waits_out_a_rebalance_and_a_freeze(tmp_path: Path) -> None:
    table = make_table(tmp_path, owned={0})
    write(table, "old", 0, 0)
    write(table, "new", 0, 3 * DAY_MS)
    frozen = SessionExpiry(table, ttl_ms=DAY_MS, guard=lambda: None)
    asyncio.run(frozen.sweep())
    table.app.rebalancing = True
    assert asyncio.run(frozen.sweep()) == 0 and table.get("old") is not None
    table.app.rebalancing = False

    def woke_from_a_freeze() -> None:
        raise SystemExit(75)

    frozen.guard = woke_from_a_freeze
    with pytest.raises(SystemExit):
        asyncio.run(frozen.sweep())
    assert table.get("old") is not None


def test_a_second_worker_with_the_same_id_stops_with_one_line(tmp_path: Path) -> None:
    """Two workers given one id on one machine would share their RocksDB tables: the
    second is refused at start, naming the folder and what to do."""
    from services.cli_worker import _claim

    _claim(tmp_path, "7")
    with pytest.raises(SystemExit) as refused:
        _claim(tmp_path, "7")
    assert str(refused.value) == (f"error: worker 7: its state folder {tmp_path} is in use by "
                                  "another worker on this machine; give each worker its own "
                                  "--worker-id")
