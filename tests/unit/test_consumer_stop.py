"""Shutdown: the last acks go out, the broker answers a round trip, a grace passes, then the
channels close (a quorum queue can drop acks held at close: rabbitmq-server#10327). No broker."""

from __future__ import annotations

import asyncio
import time
from typing import Any, NamedTuple

import aiormq.abc

from consumer.service import ConsumerService
from messaging import codec
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


class Delivery(NamedTuple):
    """What the ack ledger reads of a delivery."""

    channel: FakeChannel
    delivery_tag: int


class Transport:
    """The consumer's transport, started already: closing it closes the consume channel."""

    def __init__(self, channel: FakeChannel) -> None:
        self.channel = channel

    async def unsubscribe(self) -> None:
        pass

    async def close(self) -> None:
        if not self.channel.is_closed:
            await self.channel.close()


class Publisher:
    def __init__(self, channel: FakeChannel) -> None:
        self.channel = channel

    async def publish(self, exchange: str, message: codec.Outgoing, routing_key: str) -> None:
        raise AssertionError("nothing is published at stop")

    async def close(self) -> None:
        if not self.channel.is_closed:
            await self.channel.close()


def _service(calls: list[tuple[str, Any, float]], fail_qos: bool = False) -> ConsumerService:
    settings = Settings.from_env({"RABBITMQ_URL": "amqp://guest:guest@localhost/", "CALC_PREFETCH": "40"})
    consume = FakeChannel(calls, "consume", fail_qos)
    service = ConsumerService(settings, None, transport=Transport(consume),  # type: ignore[arg-type]
                              publisher=Publisher(FakeChannel(calls, "publish")))
    for tag in (1, 2, 3):  # three deliveries with confirmed outcomes, not acked yet
        service.ledger.ack(Delivery(consume, tag))  # type: ignore[arg-type]
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
