"""messaging.deadlines: the publishers' confirm timeout on one timer (no broker)."""

from __future__ import annotations

import asyncio

import pytest

from messaging.deadlines import Deadlines


async def _wait(deadlines: Deadlines, done: asyncio.Future[str]) -> str:
    with deadlines.limit():
        return await done


async def test_a_block_that_finishes_in_time_is_left_alone_and_forgotten() -> None:
    deadlines = Deadlines(0.2, tick=0.02)
    done: asyncio.Future[str] = asyncio.get_running_loop().create_future()
    asyncio.get_running_loop().call_later(0.05, done.set_result, "confirmed")
    assert await _wait(deadlines, done) == "confirmed"
    await asyncio.sleep(0.3)  # past the deadline it had: nothing fires at the finished block
    assert len(deadlines) == 0


async def test_a_block_still_waiting_at_its_deadline_raises_timeout_error() -> None:
    deadlines = Deadlines(0.1, tick=0.02)
    never: asyncio.Future[str] = asyncio.get_running_loop().create_future()
    loop = asyncio.get_running_loop()
    started = loop.time()
    with pytest.raises(TimeoutError):
        await _wait(deadlines, never)
    assert 0.1 <= loop.time() - started < 0.5
    assert never.cancelled()  # what it waited for was cancelled, as asyncio.timeout() does
    assert asyncio.current_task().cancelling() == 0  # type: ignore[union-attr]
    await asyncio.sleep(0.01)  # the task goes on: no cancellation left pending on it


async def test_only_the_blocks_past_their_deadline_time_out() -> None:
    deadlines = Deadlines(0.15, tick=0.02)
    loop = asyncio.get_running_loop()
    futures = [loop.create_future() for _ in range(1_000)]
    for index, future in enumerate(futures):
        if index % 2 == 0:  # every even one is confirmed in time
            loop.call_later(0.05, future.set_result, "confirmed")
    outcomes = await asyncio.gather(*(_wait(deadlines, f) for f in futures), return_exceptions=True)
    confirmed = [i for i, outcome in enumerate(outcomes) if outcome == "confirmed"]
    timed_out = [i for i, outcome in enumerate(outcomes) if isinstance(outcome, TimeoutError)]
    assert confirmed == list(range(0, 1_000, 2))
    assert timed_out == list(range(1, 1_000, 2))
    assert len(deadlines) == 0


async def test_a_cancel_from_outside_stays_a_cancel() -> None:
    deadlines = Deadlines(5.0, tick=0.02)
    never: asyncio.Future[str] = asyncio.get_running_loop().create_future()
    task = asyncio.create_task(_wait(deadlines, never))
    await asyncio.sleep(0.05)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert task.cancelled()


async def test_limits_follow_the_running_event_loop() -> None:
    deadlines = Deadlines(0.05, tick=0.01)

    async def quick() -> None:
        with deadlines.limit():
            await asyncio.sleep(0)

    async def hang() -> None:
        with deadlines.limit():
            await asyncio.sleep(10)

    # another loop ends with a limit still queued and its timer never run (each test has a loop)
    await asyncio.to_thread(asyncio.run, quick())
    loop = asyncio.get_running_loop()
    started = loop.time()
    with pytest.raises(TimeoutError):
        await asyncio.wait_for(hang(), 2.0)  # 2 s would mean the limit never fired here
    assert loop.time() - started < 1.0


async def test_a_cancel_from_outside_at_the_deadline_stays_a_cancel() -> None:
    deadlines = Deadlines(100.0)
    never: asyncio.Future[str] = asyncio.get_running_loop().create_future()
    task = asyncio.create_task(_wait(deadlines, never))
    await asyncio.sleep(0)  # the task is inside its block now
    [limit] = deadlines._limits
    limit.deadline = 0.0  # due: the next look at the deadlines expires it
    deadlines._expire(asyncio.get_running_loop())
    task.cancel()  # and, in the same moment, someone stops the task
    with pytest.raises(asyncio.CancelledError):
        await task
    assert limit.expired and task.cancelled()
