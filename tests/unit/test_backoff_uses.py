"""The waits between tries follow messaging.backoff: its rule, and the delays each use gets (no broker)."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine
from types import SimpleNamespace
from typing import Any

import aio_pika
import pytest
from pamqp.commands import Basic

from dlq_inspector import actions
from messaging import backoff, connection
from messaging.codec import Outgoing
from messaging.errors import PublishFailed
from messaging.settings import Settings
from producer import service as producer_service

Sleep = Callable[[float], Coroutine[Any, Any, None]]


@pytest.fixture
def slept(monkeypatch: pytest.MonkeyPatch) -> list[float]:
    """Every asyncio.sleep asked for, in order (tenacity's included), without the waiting."""
    asked: list[float] = []
    real: Sleep = asyncio.sleep

    async def record(seconds: float) -> None:
        asked.append(seconds)
        await real(0)

    monkeypatch.setattr(asyncio, "sleep", record)
    return asked


def settings() -> Settings:
    return Settings.from_env({"RABBITMQ_URL": "amqp://guest:guest@127.0.0.1:1/"})


@pytest.mark.parametrize(("rule", "expected"), [
    (backoff.PUBLISH, [0.05, 0.1, 0.2, 0.4, 0.8, 1.6, 3.2, 6.4, 10.0, 10.0]),
    (backoff.CONNECT, [0.5, 1.0, 2.0, 4.0, 5.0, 5.0]),
    (backoff.INSPECTOR, [0.2, 0.4, 0.8, 1.6, 2.0, 2.0]),
])
def test_each_use_doubles_from_its_first_delay_up_to_its_cap(rule: backoff.Backoff,
                                                           expected: list[float]) -> None:
    assert [rule.delay(n) for n in range(1, len(expected) + 1)] == pytest.approx(expected)
    assert rule.delay(0) == 0.0 and rule.delay(10**6) == rule.cap  # no overflow far past the cap


async def test_connect_waits_by_the_connect_backoff_until_the_broker_answers(
        monkeypatch: pytest.MonkeyPatch, slept: list[float]) -> None:
    tries: list[str] = []
    answer: Any = SimpleNamespace()

    async def refused_three_times(url: str, **_: Any) -> object:
        tries.append(url)
        if len(tries) <= 3:
            raise ConnectionRefusedError(111, "Connection refused")
        return answer

    monkeypatch.setattr(aio_pika, "connect", refused_three_times)
    assert await connection.connect(settings(), "test", robust=False, timeout=60) is answer
    assert len(tries) == 4
    assert slept == pytest.approx([0.5, 1.0, 2.0])  # backoff.CONNECT, as before it was named


async def test_a_replay_publish_is_tried_four_times_by_the_inspector_backoff(
        monkeypatch: pytest.MonkeyPatch, slept: list[float]) -> None:
    tries: list[str] = []

    async def nacked(channel: object, exchange: str, message: Outgoing, key: str, timeout: float) -> None:
        tries.append(key)
        raise PublishFailed(f"calc.requests nacked {key!r} (queue full?)")

    monkeypatch.setattr(actions, "publish", nacked)
    message = SimpleNamespace(body=b"", properties=Basic.Properties(headers={"attempt": 3}))
    delivery: Any = SimpleNamespace(message=message)
    with pytest.raises(PublishFailed, match="nacked"):
        await actions._publish(SimpleNamespace(), delivery, "calc.requested.add", settings())  # type: ignore[arg-type]
    assert tries == ["calc.requested.add"] * actions.PUBLISH_TRIES
    assert slept == pytest.approx([0.2, 0.4, 0.8])  # backoff.INSPECTOR between the four tries


async def test_the_producer_waits_the_first_publish_step_before_its_retry_loop(
        monkeypatch: pytest.MonkeyPatch, slept: list[float]) -> None:
    """The first try goes out alone; after its failure, PUBLISH's first step, then the retry loop."""
    looped: list[str] = []

    async def nacked(*args: Any) -> None:
        raise PublishFailed("calc.requests nacked 'calc.requested.add' (queue full?)")

    async def confirmed_second_time(channel: object, exchange: str, message: Outgoing, key: str,
                                    timeout: float, on_retry: Callable[[], None]) -> int:
        looped.append(key)
        return 1

    monkeypatch.setattr(producer_service, "publish", nacked)
    monkeypatch.setattr(producer_service, "publish_until_confirmed", confirmed_second_time)
    producer = producer_service.Producer(settings(), SimpleNamespace())  # type: ignore[arg-type]
    message: Any = SimpleNamespace(message_id="m", correlation_id="c")
    attempts = await producer._publish(SimpleNamespace(), message, "calc.requested.add", "add")  # type: ignore[arg-type]
    assert attempts == 2 and looped == ["calc.requested.add"] and producer.retries == 1
    assert slept == pytest.approx([backoff.PUBLISH.delay(1)]) and slept == pytest.approx([0.05])
