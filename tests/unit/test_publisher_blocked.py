"""Publishing waits while the broker blocks the connection (a memory or disk alarm), without a broker."""

from __future__ import annotations

import asyncio
import logging

import aiormq
import pytest

from messaging import publisher


class FakeConnection:
    """What `_while_blocked` uses of an aiormq connection: its blocked Event and `closing`."""

    def __init__(self) -> None:
        self._Connection__connection_unblocked = asyncio.Event()  # blocked until set
        self._closed: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    @property
    def closing(self) -> asyncio.Future[None]:
        observer: asyncio.Future[None] = asyncio.get_running_loop().create_future()

        def closed(_: object) -> None:
            if not observer.done():
                observer.set_result(None)

        self._closed.add_done_callback(closed)
        return observer

    def unblock(self) -> None:
        self._Connection__connection_unblocked.set()

    def close(self) -> None:
        self._closed.set_result(None)


def _publisher() -> publisher.Publisher:
    return publisher.Publisher(channel=None, confirm_timeout=1.0)  # type: ignore[arg-type]


async def test_aiormq_still_keeps_the_blocked_state_where_the_publisher_reads_it() -> None:
    connection = aiormq.Connection("amqp://guest:guest@127.0.0.1/")
    event = getattr(connection, publisher._UNBLOCKED)
    assert isinstance(event, asyncio.Event)
    event.set()  # what aiormq does once connected, and on connection.unblocked
    assert publisher.blocked(connection) is None
    event.clear()  # what it does on connection.blocked
    assert publisher.blocked(connection) is event


async def test_an_unblocked_or_unknown_connection_is_not_blocked() -> None:
    connection = FakeConnection()
    connection.unblock()
    assert publisher.blocked(connection) is None
    assert publisher.blocked(object()) is None


async def test_publishes_wait_until_unblocked_and_say_so_once(caplog: pytest.LogCaptureFixture) -> None:
    connection = FakeConnection()
    event = publisher.blocked(connection)
    assert event is not None
    with caplog.at_level(logging.WARNING, logger="messaging.publisher"):
        paused = _publisher()  # 50 publishes on the Publisher's channel wait
        waiting = [asyncio.ensure_future(paused._while_blocked(connection, event))  # type: ignore[arg-type]
                   for _ in range(50)]
        await asyncio.sleep(0.05)
        assert not any(w.done() for w in waiting), "a publish went on while blocked"
        connection.unblock()
        await asyncio.wait_for(asyncio.gather(*waiting), 1)
    events = [r.getMessage() for r in caplog.records]
    assert events == ["publishing paused: the broker blocks this connection (memory or disk alarm)",
                      "publishing resumed"]
    assert publisher.blocked(connection) is None


async def test_a_connection_closed_while_blocked_releases_its_waiting_publishes() -> None:
    connection = FakeConnection()
    event = publisher.blocked(connection)
    assert event is not None
    waiting = asyncio.ensure_future(_publisher()._while_blocked(connection, event))  # type: ignore[arg-type]
    await asyncio.sleep(0.02)
    assert not waiting.done()
    connection.close()  # the publish then fails on the closed channel and is retried as a lost one
    await asyncio.wait_for(waiting, 1)


async def test_a_cancelled_wait_leaves_nothing_behind() -> None:
    connection = FakeConnection()
    event = publisher.blocked(connection)
    assert event is not None
    before = len(asyncio.all_tasks())
    waiting = asyncio.ensure_future(_publisher()._while_blocked(connection, event))  # type: ignore[arg-type]
    await asyncio.sleep(0.02)
    waiting.cancel()
    with pytest.raises(asyncio.CancelledError):
        await waiting
    await asyncio.sleep(0)
    assert len(asyncio.all_tasks()) == before
