"""Faust's per-message machinery, made lean where a py-spy profile of a pass-through worker
found it (issue #17): the same behaviour with fewer Python objects per event.

- ``hand_over_with_one_task``: the drain loop's hand-over of each fetched message.
- ``LeanMonitor``: Faust's default sensor, keeping only what Faust itself reads.
"""

from __future__ import annotations

import asyncio
from time import monotonic
from typing import Any

from faust.sensors import Monitor
from mode.services import WaitResults


def hand_over_with_one_task(consumer: Any) -> None:
    """Make the consumer's drain loop race each message's hand-over against the flow's
    suspension with one new task per message instead of four.

    Faust's drain loop awaits ``wait_first(callback(message), suspend_flow.wait())`` per
    message: mode's ``wait_first`` wraps the callback, the flow flag and the consumer's
    stopped and crashed flags in four tasks, races them in ``asyncio.wait`` and cancels
    the three losers, each cancellation another step of the loop. In a pass-through
    worker's profile that was ~14% of its CPU. Here the callback gets its task and races
    one shared task that ends when the flow is suspended or the consumer stops or
    crashes; that task lives until one of those happens. A suspension still abandons
    (cancels) a hand-over that waits, as before; every other call of ``wait_first`` goes
    to mode's own.
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
        task = asyncio.ensure_future(work)
        try:
            await asyncio.wait((task, interrupted()), return_when=asyncio.FIRST_COMPLETED)
        finally:
            if not task.done():
                task.cancel()  # done only at its next step
        if task.cancelling() or task.cancelled():
            return WaitResults([], [], True)
        return WaitResults([work], [task.result()], False)

    consumer.wait_first = hand_over


def waits_on(coro: Any, event: asyncio.Event) -> bool:
    """Whether ``coro`` is an unstarted ``event.wait()``."""
    frame = getattr(coro, "cr_frame", None)
    return (getattr(coro, "__qualname__", "") == "Event.wait" and frame is not None
            and frame.f_locals.get("self") is event)


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
