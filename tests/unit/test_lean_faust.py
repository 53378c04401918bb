"""Faust's per-message machinery made lean (``streams.lean_faust``), on a real Faust consumer
and app: the same outcomes as Faust's own, with fewer tasks per message."""

from __future__ import annotations

import asyncio
from typing import Any

import faust
import pytest
from faust.types import TP

from streams.lean_faust import (
    BUFFERED_POLL_S,
    LeanMonitor,
    RawBytes,
    check_producer_buffer_cheaply,
    fetch_again_when_buffers_drain,
    hand_over_eagerly,
)


def lean_consumer() -> Any:
    """Built inside the running loop: a consumer's tasks go to the loop it was built in."""
    consumer = faust.App("lean", broker="kafka://127.0.0.1:1").consumer
    hand_over_eagerly(consumer)
    return consumer


def test_a_hand_over_that_need_not_wait_runs_at_once_without_a_task() -> None:
    """The drain loop's call, as Faust makes it: the callback's result comes back, and
    a callback that never waits (the usual case) runs in the drain loop's own task."""
    seen = []

    async def callback(n: int) -> int:
        seen.append(len(asyncio.all_tasks()))
        return n * 2

    async def drain() -> list[Any]:
        consumer = lean_consumer()
        return [await consumer.wait_first(callback(n), consumer.suspend_flow.wait())
                for n in range(50)]

    results = asyncio.run(drain())
    assert [r.results for r in results] == [[n * 2] for n in range(50)]
    assert not any(r.stopped for r in results)
    assert set(seen) == {1}  # the drain itself, nothing per message


def test_a_hand_over_that_waits_goes_on_in_a_task_to_its_result_or_error() -> None:
    """A full stream buffer makes the callback wait: it goes on where it stopped, gets
    what it waited for, and its result or its error reaches the drain loop."""
    async def waiting(ready: asyncio.Event, outcome: str) -> str:
        await ready.wait()
        await asyncio.sleep(0)
        if outcome == "error":
            raise ValueError("bad message")
        return outcome

    async def scenario() -> tuple[Any, str]:
        consumer = lean_consumer()
        ready = asyncio.Event()
        asyncio.get_running_loop().call_later(0.01, ready.set)
        result = await consumer.wait_first(waiting(ready, "put"), consumer.suspend_flow.wait())
        with pytest.raises(ValueError, match="bad message"):
            await consumer.wait_first(waiting(ready, "error"), consumer.suspend_flow.wait())
        return result, "raised"

    result, raised = asyncio.run(scenario())
    assert result.results == ["put"] and not result.stopped and raised == "raised"


def test_a_suspended_flow_abandons_a_waiting_hand_over_and_refuses_the_next() -> None:
    """As in Faust: a rebalance suspends the flow, and a hand-over still waiting (a full
    stream buffer) is cancelled; while suspended, no callback runs."""
    async def blocked(cancelled: asyncio.Event) -> None:
        try:
            await asyncio.sleep(60)
        except asyncio.CancelledError:
            cancelled.set()
            raise

    async def unreached() -> None:
        raise AssertionError("a callback ran while the flow was suspended")

    async def scenario() -> tuple[Any, Any]:
        consumer, cancelled = lean_consumer(), asyncio.Event()
        waiting = asyncio.ensure_future(
            consumer.wait_first(blocked(cancelled), consumer.suspend_flow.wait()))
        await asyncio.sleep(0.01)
        consumer.suspend_flow.set()
        first = await asyncio.wait_for(waiting, 5)
        await asyncio.wait_for(cancelled.wait(), 5)
        return first, await consumer.wait_first(unreached(), consumer.suspend_flow.wait())

    first, second = asyncio.run(scenario())
    assert first.stopped and second.stopped


def test_a_failing_hand_over_raises_and_other_waits_go_to_mode() -> None:
    """A callback's error reaches the drain loop, as through mode's ``wait_first``; a call
    of another shape (one awaitable, a timeout) is mode's own."""
    async def failing() -> None:
        raise ValueError("bad message")

    async def scenario() -> Any:
        consumer = lean_consumer()
        with pytest.raises(ValueError, match="bad message"):
            await consumer.wait_first(failing(), consumer.suspend_flow.wait())
        return await consumer.wait_first(asyncio.sleep(0, result="done"), timeout=1.0)

    assert asyncio.run(scenario()).results == ["done"]


def test_the_lean_monitor_keeps_what_faust_reads() -> None:
    """The stuck-stream check reads each partition's last inbound time; the per-event
    statistics for the web views are not kept."""
    app = faust.App("lean-monitor", broker="kafka://127.0.0.1:1", Monitor=LeanMonitor)
    monitor, tp = app.monitor, TP("events", 2)
    assert isinstance(monitor, LeanMonitor)
    monitor.on_message_in(tp, 7, object())
    assert monitor.on_stream_event_in(tp, 7, object(), object()) is None
    monitor.on_stream_event_out(tp, 7, object(), object(), None)
    monitor.on_message_out(tp, 7, object())
    assert tp in monitor.stream_inbound_time
    assert monitor.events_total == 0 and monitor.messages_received_total == 0


@pytest.mark.parametrize("key", [b"u-1", None])
def test_raw_bytes_decode_a_record_as_the_raw_codec_does(key: bytes | None) -> None:
    """The interactions topic's schema: the same event as Faust's ``raw`` codecs give."""
    from faust.types import Message

    async def decoded(schema: faust.Schema) -> tuple[Any, Any, Any]:
        app = faust.App("raw", broker="kafka://127.0.0.1:1")
        message = Message("events", 0, 5, 0.0, 0, [("sent_us", b"1")], key, b'{"a": 1}', None)
        event = await schema.compile(app)(message, propagate=True)
        return event.key, event.value, event.headers

    faust_raw = asyncio.run(decoded(faust.Schema(key_serializer="raw", value_serializer="raw")))
    assert faust_raw[:2] == (key, b'{"a": 1}')
    assert asyncio.run(decoded(RawBytes())) == faust_raw


def test_a_fetch_does_not_wait_a_second_while_a_stream_buffer_is_full() -> None:
    """Faust's fetch step waited up to 1 s for the partitions still fetched while others'
    stream buffers were full, and slept 1 s once all were full. Now it waits
    ``BUFFERED_POLL_S`` at most in the first case, and in the second returns (no records,
    as Faust's does) when one drains or after its own timeout. Otherwise it is Faust's."""
    tp, full = TP("events", 1), TP("events", 2)

    async def scenario() -> tuple[Any, ...]:
        app = faust.App("drain", broker="kafka://127.0.0.1:1")
        consumer = app.consumer
        fetched: list[float] = []

        async def faust_step(timeout: float) -> tuple[Any, Any]:
            fetched.append(timeout)
            return {"records": 1}, {tp}

        consumer._wait_next_records = faust_step
        fetch_again_when_buffers_drain(consumer)
        consumer._active_partitions, consumer._buffered_partitions = set(), {tp}
        waiting = asyncio.ensure_future(consumer._wait_next_records(30.0))
        await asyncio.sleep(0.01)
        assert not waiting.done()
        consumer.on_buffer_drop(tp)  # as the stream's buffer calls it on draining to 2/5
        drained = await asyncio.wait_for(waiting, 5)
        consumer._active_partitions = set()
        timed_out = await consumer._wait_next_records(0.01)
        consumer._active_partitions, consumer._buffered_partitions = {tp}, {full}
        await consumer._wait_next_records(1.0)
        consumer._buffered_partitions = set()
        return drained, timed_out, await consumer._wait_next_records(2.0), fetched

    drained, timed_out, fetched_records, fetched = asyncio.run(scenario())
    assert drained == ({}, set()) and timed_out == ({}, set())
    assert fetched_records == ({"records": 1}, {tp}) and fetched == [BUFFERED_POLL_S, 2.0]


def test_the_producer_buffer_check_waits_as_fausts_only_over_the_limit() -> None:
    """Under the buffer's limit the check returns without Faust's wait (which reads the
    app's settings per message); over it, Faust's own wait runs and flushes."""
    async def scenario() -> tuple[list[int], list[int], int]:
        buffer = faust.App("ebb", broker="kafka://127.0.0.1:1").producer.buffer
        flushed: list[int] = []

        async def flush_atmost(n: int) -> int:
            flushed.append(n)
            return 0

        buffer.flush_atmost = flush_atmost
        check_producer_buffer_cheaply(buffer)
        sizes = []
        for _ in range(buffer.max_messages + 1):
            await buffer.wait_until_ebb()
            sizes.append(len(flushed))
            buffer.pending.put_nowait(object())
        await buffer.wait_until_ebb()
        return sizes, flushed, buffer.max_messages

    sizes, flushed, most = asyncio.run(scenario())
    assert sizes == [0] * (most + 1) and flushed == [most]


@pytest.mark.parametrize("session_timeout_s", [10.0, 300.0])
def test_the_workers_consumer_is_built_at_any_session_timeout_the_settings_take(
        session_timeout_s: float, tmp_path: Any) -> None:
    """Faust refuses a session timeout above its request timeout (90 s by default): a
    worker given ``STREAMREC_WORKER_SESSION_TIMEOUT_S=120``, which the settings take,
    crashed at start with a Faust traceback (a review)."""
    from infra.kafka_client import KafkaConnection
    from streams.worker import WorkerConfig, _faust_app

    cfg = WorkerConfig(KafkaConnection("127.0.0.1:1"), "g", "interactions", "dlq", "recs",
                       "updates", 1, tmp_path, None, session_timeout_s=session_timeout_s)
    app = _faust_app(cfg)

    async def build() -> Any:
        return app.consumer._thread._create_worker_consumer(app.transport)

    consumer = asyncio.run(build())
    assert consumer._session_timeout_ms == session_timeout_s * 1000
