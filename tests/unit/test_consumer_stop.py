"""Shutdown: the last acks go out, the broker answers a round trip, a grace passes, then the
channels close (a quorum queue can drop acks held at close: rabbitmq-server#10327). No broker."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import aiormq.abc

from consumer.service import ConsumerService, _Acks
from messaging.settings import Settings


class FakeChannel:
    """Records what the service sends on it, in order, with the time of each call."""

    def __init__(self, calls: list[tuple[str, Any, float]], name: str, fail_qos: bool = False) -> None:
        self.calls, self.name, self.fail_qos = calls, name, fail_qos
        self.is_closed = False

    async def basic_ack(self, tag: int, multiple: bool = False) -> None:
        self.calls.append((f"{self.name}.ack", (tag, multiple), time.monotonic()))

    async def basic_qos(self, prefetch_count: int) -> None:
        if self.fail_qos:
            self.is_closed = True
            raise aiormq.exceptions.ChannelInvalidStateError("closed by the broker")
        self.calls.append((f"{self.name}.qos", prefetch_count, time.monotonic()))

    async def close(self) -> None:
        self.is_closed = True
        self.calls.append((f"{self.name}.close", None, time.monotonic()))


aiormq.abc.AbstractChannel.register(FakeChannel)


def _service(calls: list[tuple[str, Any, float]], fail_qos: bool = False) -> ConsumerService:
    settings = Settings.from_env({"RABBITMQ_URL": "amqp://guest:guest@localhost/", "CALC_PREFETCH": "40"})
    service = ConsumerService(settings, connection=None)  # type: ignore[arg-type]
    consume = FakeChannel(calls, "consume", fail_qos)
    service._acks = _Acks(consume, batch=10)
    for tag in (1, 2, 3):
        service._acks.ready(tag)
    service._consume_channel = consume  # type: ignore[assignment]
    service._publish_channel = FakeChannel(calls, "publish")  # type: ignore[assignment]
    service.settle_grace = 0.2
    return service


def test_stop_acks_then_waits_for_the_broker_before_closing() -> None:
    calls: list[tuple[str, Any, float]] = []
    asyncio.run(_service(calls).stop(timeout=1))
    assert [name for name, _, _ in calls] == [
        "consume.ack", "consume.qos", "consume.close", "publish.close"]
    assert calls[0][1] == (3, True), "one multiple ack for the three finished deliveries"
    assert calls[1][1] == 40, "the round trip re-states the prefetch: nothing changes"
    waited = calls[2][2] - calls[1][2]
    assert waited >= 0.2, f"closed {waited:.3f} s after the round trip, before the grace was over"


def test_a_channel_lost_after_the_acks_is_not_waited_for() -> None:
    calls: list[tuple[str, Any, float]] = []
    started = time.monotonic()
    asyncio.run(_service(calls, fail_qos=True).stop(timeout=1))
    assert [name for name, _, _ in calls] == ["consume.ack", "publish.close"]
    assert time.monotonic() - started < 0.2, "no grace for a channel the broker already closed"
