"""Faust's per-message machinery, made lean where a py-spy profile of a pass-through worker
found it (issue #17): the same behaviour with fewer Python objects per event, and one of
Faust's waits cut short.

- ``hand_over_eagerly``: the drain loop's hand-over of each fetched message.
- ``LeanMonitor``: Faust's default sensor, keeping only what Faust itself reads.
- ``RawBytes``: a topic schema that hands over a record's bytes as they are.
- ``fetch_again_when_buffers_drain``: no 1 s stall when every stream buffer is full.
- ``check_producer_buffer_cheaply``: the conductor's per-message buffer check as a length test.
"""

from __future__ import annotations

import asyncio
import types
from collections.abc import Generator
from contextlib import suppress
from time import monotonic
from typing import Any

import faust
from faust.sensors import Monitor
from mode.services import WaitResults


def hand_over_eagerly(consumer: Any) -> None:
    """Make the consumer's drain loop hand each message over at once when it can, and
    race it against the flow's suspension with one task when it must wait.

    Faust's drain loop awaits ``wait_first(callback(message), suspend_flow.wait())`` per
    message: mode's ``wait_first`` wraps the callback, the flow flag and the consumer's
    stopped and crashed flags in four tasks, races them in ``asyncio.wait`` and cancels
    the three losers, each cancellation another step of the loop. In a pass-through
    worker's profile that was ~14% of its CPU. Yet the callback (the conductor putting
    the event into its stream's buffer) seldom waits: only on a full buffer or paused
    flow. So its first step runs here, as Python 3.12's eager tasks would run it; most
    messages end there. One that waits goes on in a task (``go_on``) that races one
    shared task, which ends when the flow is suspended or the consumer stops or crashes.
    A suspension still abandons (cancels) a hand-over that waits, as before; every other
    call of ``wait_first`` goes to mode's own.
    """
    wait_first = consumer.wait_first
    interruption: asyncio.Future | None = None

    def interrupted() -> asyncio.Future:
        nonlocal interruption
        if interruption is None or interruption.done():
            interruption = asyncio.ensure_future(wait_first(consumer.suspend_flow))
        return interruption

    async def hand_over(*coros: Any, timeout: float | None = None) -> WaitResults:
        if timeout is not None or len(coros) != 2 or not waits_on(coros[1],
                                                                  consumer.suspend_flow):
            return await wait_first(*coros, timeout=timeout)
        work, flow = coros
        flow.close()  # never started: the shared task watches the flag instead
        if consumer.suspend_flow.is_set() or consumer.should_stop:
            work.close()
            return WaitResults([], [], True)
        try:
            waiting = work.send(None)  # the first step: most hand-overs end in it
        except StopIteration as done:
            return WaitResults([work], [done.value], False)
        task = asyncio.ensure_future(go_on(work, waiting))
        try:
            await asyncio.wait((task, interrupted()), return_when=asyncio.FIRST_COMPLETED)
        finally:
            if not task.done():
                task.cancel()  # done only at its next step
        if task.cancelling() or task.cancelled():
            return WaitResults([], [], True)
        return WaitResults([work], [task.result()], False)

    consumer.wait_first = hand_over


@types.coroutine
def go_on(coro: Any, waiting: Any) -> Generator[Any, Any, Any]:
    """The rest of ``coro``, whose first step was taken by hand and yielded ``waiting``
    (the future it awaits), driven as a task drives a coroutine: what the task sends or
    throws in (a result, a cancellation) goes on to ``coro``. ``yield from coro``
    would first resume ``coro`` before ``waiting`` is done."""
    while True:
        try:
            sent = yield waiting
        except GeneratorExit:
            coro.close()
            raise
        except BaseException as exc:  # noqa: BLE001 - thrown in by the task: pass it on
            try:
                waiting = coro.throw(exc)
            except StopIteration as done:
                return done.value
        else:
            try:
                waiting = coro.send(sent)
            except StopIteration as done:
                return done.value


def waits_on(coro: Any, event: asyncio.Event) -> bool:
    """Whether ``coro`` is an unstarted ``event.wait()``."""
    frame = getattr(coro, "cr_frame", None)
    return (getattr(coro, "__qualname__", "") == "Event.wait" and frame is not None
            and frame.f_locals.get("self") is event)


BUFFERED_POLL_S = 0.01  # how long a fetch waits while a partition's stream buffer is full


def fetch_again_when_buffers_drain(consumer: Any) -> None:
    """Make the consumer fetch again soon after a stream buffer drains, not after 1 s.

    Faust stops fetching a partition whose stream buffer passes its high mark (4/5 of
    ``stream_buffer_maxsize``) and starts again once it drains to 2/5. Meanwhile its
    fetch step goes on for the other partitions, waiting up to 1 s for their records;
    and once every partition is stopped it sleeps a whole second. A worker with a
    backlog fetches ~19,000 records at a time, which fills the buffer of every partition
    it reads events from, so it then waited a second on a partition with nothing new
    (seen in a worker's log every ~2.5 s, and pass-through at 7,010 events/s where a
    buffer too large to fill gave 9,769). Here, while a partition's buffer is full, the
    fetch step waits ``BUFFERED_POLL_S`` at most, and with every partition stopped it
    waits for the first to drain (at most as long as Faust's would have) and returns
    no records, as Faust's does.
    """
    drained = asyncio.Event()
    on_buffer_drop, wait_next_records = consumer.on_buffer_drop, consumer._wait_next_records

    def on_drop(tp: Any) -> None:
        on_buffer_drop(tp)
        drained.set()

    async def next_records(timeout: float) -> tuple[Any, Any]:
        if not consumer.flow_active or consumer.app.client_only:
            return await wait_next_records(timeout)
        if not consumer._get_active_partitions():
            drained.clear()
            with suppress(asyncio.TimeoutError):
                await asyncio.wait_for(drained.wait(), timeout)
            return {}, set()
        if consumer._buffered_partitions:
            timeout = min(timeout, BUFFERED_POLL_S)
        return await wait_next_records(timeout)

    consumer.on_buffer_drop = on_drop
    consumer._wait_next_records = next_records


def check_producer_buffer_cheaply(buffer: Any) -> None:
    """Make the check Faust's conductor runs before every message a length test.

    The conductor awaits ``buffer.wait_until_ebb()`` (Faust's producer buffer) before it
    hands over each message, and that reads the buffer's ``size``, which looks up
    ``app.conf.producer_threaded`` through Faust's settings registry every time: 1.5% of a
    pass-through worker's samples (py-spy, 2026-12-03), for a buffer that holds only dead
    letters here (lists and changelog records go through librdkafka). The check now reads
    the pending queue's length and calls Faust's own wait only when it is over the limit.
    A threaded producer keeps Faust's check. Call it before the app starts: the conductor
    binds the method when it compiles its handlers."""
    if buffer.app.conf.producer_threaded:
        return
    pending, wait_until_ebb = buffer.pending, buffer.wait_until_ebb

    async def ebb() -> None:
        if pending.qsize() > buffer.max_messages:
            await wait_until_ebb()

    buffer.wait_until_ebb = ebb


class LeanMonitor(Monitor):
    """Faust's default sensor without its per-event statistics (counts by topic, stream
    and task, runtimes): they feed Faust's web views, which a worker does not run
    (``web_enabled=False``), and cost four calls and a dict per event. What Faust's own
    code reads is kept: each partition's last inbound time (the stuck-stream check), end
    and committed offsets."""

    def on_message_in(self, tp: Any, offset: int, message: Any) -> None:
        """Nothing per message."""

    def on_stream_event_in(self, tp: Any, offset: int, stream: Any, event: Any) -> None:
        self.stream_inbound_time[tp] = monotonic()

    def on_stream_event_out(self, tp: Any, offset: int, stream: Any, event: Any,
                            state: dict | None = None) -> None:
        """Nothing per event."""

    def on_message_out(self, tp: Any, offset: int, message: Any) -> None:
        """Nothing per message."""


class RawBytes(faust.Schema):
    """The ``raw`` codec's schema, without the codec registry's lookups per record (~2.5%
    of a pass-through worker's CPU): a record's key and value reach the stream as the
    bytes (or None) they arrived as, which is what ``raw`` decodes them to."""

    def __init__(self) -> None:
        super().__init__(key_serializer="raw", value_serializer="raw")

    def loads_key(self, app: Any, message: Any, *, loads: Any = None,
                  serializer: Any = None) -> Any:
        return message.key

    def loads_value(self, app: Any, message: Any, *, loads: Any = None,
                    serializer: Any = None) -> Any:
        return message.value
