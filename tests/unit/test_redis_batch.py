"""``infra.redis_batch.BatchedGets``: the GETs of one turn of the loop as one MGET, each
caller answered with its own key's value or a ``RedisError``, never left waiting."""

from __future__ import annotations

import asyncio

import pytest
from redis.exceptions import RedisError

from infra.redis_batch import BatchedGets


class Client:
    """An MGET over ``values`` that records each batch; waits ``delay_s``, or raises
    ``error``, or answers ``short`` values too few."""

    def __init__(self, values: dict[str, bytes], delay_s: float = 0.0,
                 error: BaseException | None = None, short: int = 0) -> None:
        self.values, self.delay_s, self.error, self.short = values, delay_s, error, short
        self.batches: list[list[str]] = []

    async def mget(self, keys: list[str]) -> list[bytes | None]:
        self.batches.append(list(keys))
        await asyncio.sleep(self.delay_s)
        if self.error is not None:
            raise self.error
        return [self.values.get(k) for k in keys][:len(keys) - self.short]


async def _all(batched: BatchedGets, keys: list[str]) -> list[object]:
    return await asyncio.gather(*(batched.get(k) for k in keys), return_exceptions=True)


def test_one_turns_gets_go_as_one_mget_in_chunks_each_caller_its_own_value() -> None:
    client = Client({"a": b"1", "b": b"2"})
    batched = BatchedGets(client, most=2)
    got = asyncio.run(_all(batched, ["a", "b", "nobody", "a"]))
    assert got == [b"1", b"2", None, b"1"]
    assert client.batches == [["a", "b"], ["nobody", "a"]]
    assert not batched._tasks  # none left behind


@pytest.mark.parametrize("client", [Client({}, error=ConnectionError("refused")),
                                    Client({}, error=RuntimeError("a bug")),
                                    Client({"a": b"1"}, short=1)])
def test_whatever_fails_a_batch_each_caller_gets_a_redis_error(client: Client) -> None:
    """A bug's error reached every caller of the batch as itself: a 500 each, where a
    Redis error is a fallback."""
    got = asyncio.run(asyncio.wait_for(_all(BatchedGets(client), ["a", "b"]), 1.0))
    assert [type(g) for g in got] == [RedisError, RedisError]


def test_a_cancelled_batch_answers_its_callers_instead_of_leaving_them_waiting() -> None:
    batched = BatchedGets(Client({"a": b"1"}, delay_s=10))

    async def cancel_in_flight() -> list[object]:
        callers = asyncio.gather(batched.get("a"), batched.get("b"), return_exceptions=True)
        await asyncio.sleep(0.01)  # the MGET is under way
        for task in list(batched._tasks):
            task.cancel()
        return await asyncio.wait_for(callers, 1.0)

    assert [type(g) for g in asyncio.run(cancel_in_flight())] == [RedisError, RedisError]



def test_a_batch_left_by_a_closed_loop_does_not_hold_up_the_next_loop() -> None:
    batched = BatchedGets(Client({"a": b"1"}))
    loop = asyncio.new_event_loop()

    async def ask_and_stop() -> None:
        batched.get("a")  # its batch is sent at the loop's next turn, which never comes
        loop.stop()

    loop.create_task(ask_and_stop())
    loop.run_forever()
    loop.close()

    async def read() -> bytes | None:
        return await asyncio.wait_for(batched.get("a"), 1.0)

    assert asyncio.run(read()) == b"1"


def test_a_batch_size_below_one_is_refused() -> None:
    with pytest.raises(ValueError, match="at least 1"):
        BatchedGets(Client({}), most=0)
