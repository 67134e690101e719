"""messaging.deadlines: the publishers' confirm timeout on one timer (no broker)."""

from __future__ import annotations

import asyncio
import contextlib

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


async def test_a_held_block_waits_while_held_and_one_timeout_after() -> None:
    """A connection the broker blocks: the confirm cannot come, so the deadline moves on."""
    deadlines = Deadlines(0.1, tick=0.02)
    loop = asyncio.get_running_loop()
    blocked = True
    never: asyncio.Future[str] = loop.create_future()
    started = loop.time()

    async def unblock_later() -> None:
        nonlocal blocked
        await asyncio.sleep(0.35)
        blocked = False

    unblocking = asyncio.ensure_future(unblock_later())
    with pytest.raises(TimeoutError):
        with deadlines.limit(lambda _: blocked):
            await never
    waited = loop.time() - started
    # held at 0.1, 0.2, 0.3 (blocked), once more at 0.4 (unblocked at 0.35), expired at 0.5
    assert 0.45 <= waited < 0.8, waited
    await unblocking


async def test_a_held_block_confirmed_after_the_unblock_does_not_time_out() -> None:
    deadlines = Deadlines(0.1, tick=0.02)
    loop = asyncio.get_running_loop()
    blocked = True
    confirm: asyncio.Future[str] = loop.create_future()

    def unblock() -> None:
        nonlocal blocked
        blocked = False

    loop.call_later(0.25, unblock)
    # the frames waiting in the socket reach the broker, which confirms soon after: just
    # past a deadline that would have expired without the hold
    loop.call_later(0.29, confirm.set_result, "confirmed")
    with deadlines.limit(lambda _: blocked):
        assert await confirm == "confirmed"


async def test_a_hold_that_never_holds_times_out_as_without_one() -> None:
    deadlines = Deadlines(0.1, tick=0.02)
    loop = asyncio.get_running_loop()
    asked = 0

    def hold(_: object) -> bool:
        nonlocal asked
        asked += 1
        return False

    started = loop.time()
    with pytest.raises(TimeoutError):
        with deadlines.limit(hold):
            await loop.create_future()
    assert 0.1 <= loop.time() - started < 0.3
    assert asked == 1


async def test_held_and_plain_blocks_share_the_timer_and_keep_their_own_deadlines() -> None:
    deadlines = Deadlines(0.1, tick=0.02)
    loop = asyncio.get_running_loop()
    blocked = True

    async def one(hold: bool) -> float:
        started = loop.time()
        with contextlib.suppress(TimeoutError):
            with deadlines.limit((lambda _: blocked) if hold else None):
                await loop.create_future()
        return loop.time() - started

    async def unblock() -> None:
        nonlocal blocked
        await asyncio.sleep(0.3)
        blocked = False

    results = await asyncio.gather(one(True), one(False), one(True), one(False), unblock())
    held, plain = [results[0], results[2]], [results[1], results[3]]
    assert all(0.1 <= t < 0.3 for t in plain), plain
    assert all(0.4 <= t < 0.9 for t in held), held
    assert len(deadlines) == 0


class _Interrupted(asyncio.CancelledError):
    """A CancelledError subclass, as a library may raise in place of the one it caught."""


async def test_a_cancelled_error_subclass_at_the_deadline_is_a_timeout_error() -> None:
    # asyncio.timeout() on 3.13 (3.11's let the subclass out): the same on every version here
    deadlines = Deadlines(0.05, tick=0.01)
    with pytest.raises(TimeoutError) as raised:
        with deadlines.limit():
            try:
                await asyncio.sleep(10)
            except asyncio.CancelledError:
                raise _Interrupted() from None
    assert isinstance(raised.value.__cause__, _Interrupted)
    assert asyncio.current_task().cancelling() == 0  # type: ignore[union-attr]


async def test_an_error_that_replaces_the_cancel_has_the_timeout_in_its_context() -> None:
    # asyncio.timeout() on 3.13: the error goes on, and its context shows the deadline passed
    deadlines = Deadlines(0.05, tick=0.01)
    with pytest.raises(ConnectionError) as raised:
        with deadlines.limit():
            try:
                await asyncio.sleep(10)
            except asyncio.CancelledError:
                raise ConnectionError("closed while cancelled")  # noqa: B904
    timeout = raised.value.__context__
    assert isinstance(timeout, TimeoutError)
    assert isinstance(timeout.__context__, asyncio.CancelledError)
    assert asyncio.current_task().cancelling() == 0  # type: ignore[union-attr]
    await asyncio.sleep(0.01)  # no cancellation left pending on the task


async def test_an_error_raised_without_a_cancel_of_ours_is_left_as_it_is() -> None:
    deadlines = Deadlines(5.0, tick=0.01)
    with pytest.raises(ConnectionError) as raised:
        with deadlines.limit():
            await asyncio.sleep(0)
            raise ConnectionError("lost")
    assert raised.value.__context__ is None


async def test_a_limit_inside_asyncio_timeout_each_keeps_its_own_cancel() -> None:
    # asyncio.wait_for() is asyncio.timeout() in the same task from 3.12 on: both count cancels
    loop = asyncio.get_running_loop()
    deadlines = Deadlines(0.05, tick=0.01)
    async with asyncio.timeout(5.0) as outer:
        with pytest.raises(TimeoutError):
            with deadlines.limit():
                await loop.create_future()
    assert not outer.expired()
    deadlines = Deadlines(5.0, tick=0.01)
    with pytest.raises(TimeoutError):
        async with asyncio.timeout(0.05) as outer:
            with deadlines.limit():
                await loop.create_future()
    assert outer.expired()
    assert asyncio.current_task().cancelling() == 0  # type: ignore[union-attr]
