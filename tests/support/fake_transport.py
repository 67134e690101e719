"""An in-memory broker with the consumer's `Transport` and a publisher on top: the rules in seconds.

It keeps the parts of RabbitMQ the consumer's rules meet: the topology of messaging.topology
(topic and fanout routing, mandatory publishes), quorum work queues with a delivery limit that
`reject` with requeue counts and `nack` with requeue does not (RabbitMQ 4.3), dead-lettering
with an `x-death` header, per-message expiry in the retry queues, a prefetch window, and
delivery tags per channel. A channel checks what the broker checks: an ack naming a tag that is
not unacked closes it. And what only a test can check: `covered_unconfirmed` lists every ack
that settled a delivery whose outcome the publisher had not confirmed.
"""

from __future__ import annotations

import asyncio
import itertools
from collections import deque
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import aiormq.abc
from aiormq.abc import DeliveredMessage
from pamqp.commands import Basic
from pamqp.header import ContentHeader

from messaging import codec, topology
from messaging.errors import PublishFailed, UnroutableError
from messaging.settings import Settings

OnMessage = Callable[[DeliveredMessage], Coroutine[Any, Any, None]]


@dataclass
class Stored:
    """A message in a queue, as the broker keeps it."""

    body: bytes
    properties: Basic.Properties
    exchange: str
    routing_key: str
    returned: int = 0  # times requeued by a reject (the quorum delivery count)
    redelivered: bool = False


@dataclass
class Queue:
    name: str
    arguments: dict[str, Any]
    messages: deque[Stored] = field(default_factory=deque)


def _matches(pattern: str, key: str) -> bool:
    """Topic matching for the patterns of the topology: `#`, and exact keys."""
    return pattern == "#" or pattern == key


class FakeBroker:
    """Exchanges, bindings and queues of one vhost, built from `topology.build(settings)`."""

    def __init__(self, settings: Settings) -> None:
        built = topology.build(settings)
        self.kinds = {ex.name: ex.kind.value for ex in built.exchanges}
        self.queues = {q.name: Queue(q.name, dict(q.arguments)) for q in built.queues}
        self.bindings = [(exchange, key, q.name) for q in built.queues for exchange, key in q.bindings]
        self.changed = asyncio.Event()  # set on every enqueue: consumers look again
        self.confirmed: set[str] = set()  # request event_ids with a confirmed outcome or copy

    def route(self, exchange: str, routing_key: str) -> list[str]:
        fanout = self.kinds.get(exchange) == "fanout"
        return [queue for source, key, queue in self.bindings
                if source == exchange and (fanout or _matches(key, routing_key))]

    def publish(self, exchange: str, routing_key: str, body: bytes, properties: Basic.Properties) -> None:
        """A mandatory publish: UnroutableError when no queue takes it (as a returned message)."""
        targets = self.route(exchange, routing_key)
        if not targets:
            raise UnroutableError(f"{exchange} routed {routing_key!r} to no queue (message returned)")
        for name in targets:
            self._enqueue(self.queues[name], Stored(body, properties, exchange, routing_key))
        event_id = _request_event_id(body, properties)
        if event_id:
            self.confirmed.add(event_id)

    def _enqueue(self, queue: Queue, message: Stored, front: bool = False) -> None:
        if front:
            queue.messages.appendleft(message)
        else:
            queue.messages.append(message)
        expiration = message.properties.expiration
        if expiration and queue.name.startswith(topology.RETRY_PREFIX):
            asyncio.get_running_loop().call_later(int(expiration) / 1000, self._expire, queue, message)
        self.changed.set()

    def _expire(self, queue: Queue, message: Stored) -> None:
        if message in queue.messages:
            queue.messages.remove(message)
            self.dead_letter(queue, message, "expired")

    def dead_letter(self, queue: Queue, message: Stored, reason: str) -> None:
        """To the queue's dead-letter exchange, with the original routing key and an x-death."""
        exchange = queue.arguments.get("x-dead-letter-exchange")
        if not exchange:
            return  # dropped, as RabbitMQ drops it
        headers = dict(message.properties.headers or {})
        death = {"queue": queue.name, "reason": reason, "count": 1, "exchange": message.exchange,
                 "routing-keys": [message.routing_key], "time": datetime.now(UTC).replace(microsecond=0)}
        headers["x-death"] = [death, *(headers.get("x-death") or [])]  # type: ignore[misc,list-item]
        properties = Basic.Properties(**{**_fields(message.properties), "headers": headers,
                                         "expiration": None})
        for name in self.route(exchange, message.routing_key):
            self._enqueue(self.queues[name], Stored(message.body, properties, exchange, message.routing_key))

    def returned(self, queue: Queue, message: Stored, counted: bool) -> None:
        """A delivery handed back: to the head again, or past the delivery limit dead-lettered."""
        if counted:
            message.returned += 1
        limit = queue.arguments.get("x-delivery-limit")
        if limit is not None and message.returned > limit:
            self.dead_letter(queue, message, "delivery_limit")
            return
        message.redelivered = True
        self._enqueue(queue, message, front=True)

    def take(self, queue: str) -> list[Stored]:
        """Remove and return everything in `queue` (what a test collects)."""
        messages = list(self.queues[queue].messages)
        self.queues[queue].messages.clear()
        return messages


def _fields(properties: Basic.Properties) -> dict[str, Any]:
    return {name: getattr(properties, name) for name in properties.__slots__}


def _request_event_id(body: bytes, properties: Basic.Properties) -> str:
    """The request an outcome (or a copy of a request) is for; "" when it names none."""
    try:
        if properties.message_type in (codec.TYPE_COMPLETED, codec.TYPE_FAILED):
            event = (codec.decode_completed(body) if properties.message_type == codec.TYPE_COMPLETED
                     else codec.decode_failed(body))
            return event.request_event_id
        return codec.decode_request(body).event_id
    except Exception:
        return ""


class FakePublisher:
    """`messaging.publisher.Publisher` on the fake broker: every publish is confirmed at once."""

    def __init__(self, broker: FakeBroker) -> None:
        self.broker = broker
        self.closed = False

    async def publish(self, exchange: str, message: codec.Outgoing, routing_key: str) -> None:
        if self.closed:
            raise PublishFailed(f"channel lost while publishing {routing_key!r}")
        properties = Basic.Properties(**{name: getattr(message.properties, name)
                                         for name in message.properties.__slots__})
        self.broker.publish(exchange, routing_key, message.body, properties)
        await asyncio.sleep(0)  # the confirm comes back in a later loop pass

    async def close(self) -> None:
        self.closed = True


class FakeChannel:
    """A consume channel: delivery tags, the unacked window, and the frames the consumer sent."""

    def __init__(self, broker: FakeBroker) -> None:
        self.broker = broker
        self.is_closed = False
        self.frames: list[tuple[str, int, bool]] = []  # (ack|reject|nack, tag, multiple or requeue)
        self.unacked: dict[int, tuple[Queue, Stored]] = {}
        self.covered_unconfirmed: list[int] = []
        self._tags = itertools.count(1)

    def deliver(self, queue: Queue, message: Stored, get: bool = False) -> DeliveredMessage:
        tag = next(self._tags)
        self.unacked[tag] = (queue, message)
        frame: Any = (Basic.GetOk(tag, message.redelivered, message.exchange, message.routing_key)
                      if get else Basic.Deliver("fake", tag, message.redelivered, message.exchange,
                                                message.routing_key))
        header = ContentHeader(body_size=len(message.body), properties=message.properties)
        return DeliveredMessage(delivery=frame, header=header, body=message.body, channel=self)  # type: ignore[arg-type]

    def _settle(self, tag: int) -> tuple[Queue, Stored]:
        if self.is_closed:
            raise aiormq.exceptions.ChannelInvalidStateError("channel closed")
        if tag not in self.unacked:  # what RabbitMQ answers with PRECONDITION_FAILED
            self.close_now()
            raise aiormq.exceptions.ChannelPreconditionFailed(f"unknown delivery tag {tag}")
        return self.unacked.pop(tag)

    async def basic_ack(self, delivery_tag: int, multiple: bool = False) -> None:
        tags = [t for t in self.unacked if t <= delivery_tag] if multiple else [delivery_tag]
        if delivery_tag not in self.unacked:
            self._settle(delivery_tag)  # raises
        for tag in tags:
            _, message = self._settle(tag)
            if _request_event_id(message.body, message.properties) not in self.broker.confirmed:
                self.covered_unconfirmed.append(tag)
        self.frames.append(("ack", delivery_tag, multiple))
        self.broker.changed.set()

    async def basic_reject(self, delivery_tag: int, *, requeue: bool = True) -> None:
        queue, message = self._settle(delivery_tag)
        self.frames.append(("reject", delivery_tag, requeue))
        if requeue:
            self.broker.returned(queue, message, counted=True)
        else:
            self.broker.dead_letter(queue, message, "rejected")
        self.broker.changed.set()

    async def basic_nack(self, delivery_tag: int, multiple: bool = False, requeue: bool = True) -> None:
        queue, message = self._settle(delivery_tag)
        self.frames.append(("nack", delivery_tag, requeue))
        self.broker.returned(queue, message, counted=False)

    async def basic_qos(self, *, prefetch_count: int) -> None:
        if self.is_closed:
            raise aiormq.exceptions.ChannelInvalidStateError("channel closed")

    def close_now(self) -> None:
        """Closed (by the broker, or a lost connection): its unacked deliveries go back, counted
        (a quorum queue counts a delivery returned by a closed channel)."""
        if self.is_closed:
            return
        self.is_closed = True
        for tag in sorted(self.unacked, reverse=True):  # each to the head: the last first
            queue, message = self.unacked[tag]
            self.broker.returned(queue, message, counted=True)
        self.unacked.clear()


aiormq.abc.AbstractChannel.register(FakeChannel)


class FakeTransport:
    """The consumer's `Transport` on a FakeBroker: one channel, a dispatcher task per subscription."""

    def __init__(self, broker: FakeBroker, queues: tuple[str, ...], prefetch: int) -> None:
        self.broker = broker
        self.queues = queues
        self.prefetch = prefetch
        self.channel = FakeChannel(broker)
        self.channels = [self.channel]
        self._dispatcher: asyncio.Task[None] | None = None
        self._handling: set[asyncio.Task[None]] = set()  # as aiormq's channel keeps its consumer tasks
        self._lost: Callable[[str], None] | None = None

    async def open(self) -> None:
        await self.check_queues()

    async def check_queues(self) -> None:
        for name in self.queues:
            if name not in self.broker.queues:
                raise aiormq.exceptions.ChannelNotFoundEntity(f"no queue '{name}'")

    async def get(self, queue: str) -> DeliveredMessage | None:
        messages = self.broker.queues[queue].messages
        if not messages:
            return None
        return self.channel.deliver(self.broker.queues[queue], messages.popleft(), get=True)

    async def subscribe(self, on_message: OnMessage) -> None:
        self._dispatcher = asyncio.create_task(self._dispatch(on_message))

    async def _dispatch(self, on_message: OnMessage) -> None:
        channel = self.channel
        while not channel.is_closed:
            self.broker.changed.clear()
            for name in self.queues:
                queue = self.broker.queues[name]
                while queue.messages and len(channel.unacked) < self.prefetch:
                    task = asyncio.create_task(on_message(channel.deliver(queue, queue.messages.popleft())))
                    self._handling.add(task)
                    task.add_done_callback(self._handling.discard)
            await self.broker.changed.wait()

    async def unsubscribe(self) -> None:
        if self._dispatcher is not None:
            self._dispatcher.cancel()
            self._dispatcher = None

    def watch(self, lost: Callable[[str], None]) -> None:
        self._lost = lost

    def reopen(self) -> None:
        """The connection was lost and came back: a new channel, and the consumer told so."""
        self.channel.close_now()
        self.channel = FakeChannel(self.broker)
        self.channels.append(self.channel)
        if self._lost is not None:
            self._lost("channel reopened")

    async def close(self) -> None:
        await self.unsubscribe()
        self.channel.close_now()

    @property
    def covered_unconfirmed(self) -> list[int]:
        return [tag for channel in self.channels for tag in channel.covered_unconfirmed]
