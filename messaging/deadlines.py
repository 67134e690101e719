"""Timeouts for many concurrent awaits on one timer: the publishers' confirm timeout.

`asyncio.timeout()` schedules a timer per use and cancels it after: a push into the event
loop's heap and, once the cancelled timers outnumber the live ones, a rebuild of it, with
Python-level comparisons every time. A service with thousands of publishes in flight and a
10 s confirm timeout keeps tens of thousands of cancelled timers in that heap. Here every
`limit()` appends to a FIFO instead (with one timeout per `Deadlines`, deadlines only grow)
and one timer, at the oldest deadline or a tick from now, cancels the tasks past theirs as
`asyncio.timeout()` does and forgets the finished limits at the head. Memory: the limits of
about one tick, plus those behind the oldest unfinished one.

A limit may be held: `limit(hold, subject)` asks `hold(subject)` at the deadline, and while
it says so (the broker has blocked the connection: it reads nothing, so no confirm can come)
the limit gets another full timeout, and one more after it stops saying so, so the wait that
counts is the time the broker was reading.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Callable
from types import TracebackType
from typing import Any


class _Limit:
    """One `with deadlines.limit():` block: TimeoutError if it is still running at its deadline."""

    __slots__ = ("cancelling", "deadline", "done", "expired", "held", "hold", "subject", "task")

    def __init__(self, task: asyncio.Task[object], deadline: float,
                 hold: Callable[[Any], bool] | None = None, subject: object = None) -> None:
        self.task = task
        self.deadline = deadline
        self.hold = hold
        self.subject = subject
        self.held = False  # hold() was true at the last deadline
        self.done = False
        self.expired = False
        self.cancelling = task.cancelling()  # cancels already pending when the block began

    def __enter__(self) -> _Limit:
        return self

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.done = True
        # as asyncio.timeout() does on Python 3.13, here on 3.11 and 3.12 too: take our cancel
        # back whatever ended the block and, if it was ours alone, make a CancelledError (or a
        # subclass: 3.11 let those out) a TimeoutError, and put a TimeoutError in the context
        # of another exception that replaced it during cleanup (3.11 and 3.12 left none there)
        if self.expired and self.task.uncancel() <= self.cancelling and exc is not None:
            if isinstance(exc, asyncio.CancelledError):
                raise TimeoutError from exc
            _insert_timeout_error(exc)
            if isinstance(exc, BaseExceptionGroup):
                for inner in exc.exceptions:
                    _insert_timeout_error(inner)


def _insert_timeout_error(exc: BaseException) -> None:
    """A TimeoutError between `exc` and the CancelledError in its context chain, as 3.13 puts it."""
    while exc.__context__ is not None:
        if isinstance(exc.__context__, asyncio.CancelledError):
            timeout = TimeoutError()
            timeout.__context__ = timeout.__cause__ = exc.__context__
            exc.__context__ = timeout
            break
        exc = exc.__context__


class Deadlines:
    """`with deadlines.limit(): await ...` for blocks that all get the same `timeout`."""

    def __init__(self, timeout: float, tick: float = 0.1) -> None:
        self.timeout = timeout
        self.tick = tick
        self._limits: deque[_Limit] = deque()
        self._timer: asyncio.TimerHandle | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    def limit(self, hold: Callable[[Any], bool] | None = None, subject: object = None) -> _Limit:
        """A limit for the current task; use it as a (synchronous) `with` around the awaits.

        `hold(subject)`: asked at the deadline; while true, and once more after, the deadline
        moves a timeout on instead of expiring. (A function and its argument rather than a
        closure: nothing is allocated per limit for it.)
        """
        loop = asyncio.get_running_loop()
        task = asyncio.current_task(loop)
        assert task is not None, "inside a task"
        if loop is not self._loop:  # a new event loop (tests run one each): start over
            self._loop, self._timer, self._limits = loop, None, deque()
        now = loop.time()
        limit = _Limit(task, now + self.timeout, hold, subject)
        self._limits.append(limit)
        if self._timer is None:
            self._timer = loop.call_at(min(limit.deadline, now + self.tick), self._expire, loop)
        return limit

    def __len__(self) -> int:
        """Limits not yet expired or forgotten (finished ones go when they reach the head)."""
        return len(self._limits)

    def _expire(self, loop: asyncio.AbstractEventLoop) -> None:
        now = loop.time()
        limits = self._limits
        while limits and (limits[0].done or limits[0].deadline <= now):
            limit = limits.popleft()
            if not limit.done and not limit.task.done():
                if limit.hold is not None:
                    holding = limit.hold(limit.subject)
                    if holding or limit.held:
                        # the latest deadline there is: the FIFO stays in deadline order
                        limit.held, limit.deadline = holding, now + self.timeout
                        limits.append(limit)
                        continue
                limit.expired = True
                limit.task.cancel()
        # again at the head's deadline, or a tick from now to forget the finished ones behind it
        self._timer = (loop.call_at(min(limits[0].deadline, now + self.tick), self._expire, loop)
                       if limits else None)
