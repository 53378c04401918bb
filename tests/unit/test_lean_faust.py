"""Faust's per-message machinery made lean (``streams.lean_faust``), on a real Faust consumer
and app: the same outcomes as Faust's own, with fewer tasks per message."""

from __future__ import annotations

import asyncio
from typing import Any

import faust
import pytest
from faust.types import TP

from streams.lean_faust import LeanMonitor, hand_over_with_one_task


def lean_consumer() -> Any:
    """Built inside the running loop: a consumer's tasks go to the loop it was built in."""
    consumer = faust.App("lean", broker="kafka://127.0.0.1:1").consumer
    hand_over_with_one_task(consumer)
    return consumer


def test_a_hand_over_runs_the_callback_with_one_new_task_per_message() -> None:
    """The drain loop's call, as Faust makes it: the callback's result comes back, and
    while it runs there is its task and the shared watch, not four new tasks."""
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
    # the drain itself, the callback's task, the shared watch and its three flags
    assert max(seen) <= 6 and seen[-1] == seen[1]  # not growing with the messages


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
