"""The consumer's rules as scenarios written once, run against the fake broker and against RabbitMQ.

tests/unit/test_pipeline_rules.py runs them on tests/support/fake_transport.py (seconds);
tests/integration/test_pipeline_rules.py runs the same functions on a private vhost. A scenario
gets a `Harness` (send requests, run a consumer, take what ended in a queue) and asserts
outcomes: which message ended where, with which reason, how many.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field, replace
from typing import Any, Protocol

from calculator import Operation
from consumer.outcomes import Publishing
from consumer.pipeline import Fault
from consumer.service import ConsumerService
from gen import calc_pb2
from messaging import codec, topology
from messaging.errors import PublishFailed
from messaging.settings import Settings
from messaging.verdict import Outcome
from tests.support.fake_transport import FakeBroker, FakePublisher, FakeTransport

FAST = {"CALC_RETRY_BASE_DELAY": "0.2", "CALC_RETRY_MAX_DELAY": "2", "CALC_CONNECT_TIMEOUT": "30"}
BASIC = topology.work_queue("basic")


@dataclass
class Taken:
    """A message taken from a queue: what the scenarios look at."""

    routing_key: str
    type: str | None
    headers: dict[str, Any]
    body: bytes

    def request_id(self) -> str:
        if self.type == codec.TYPE_COMPLETED:
            return codec.decode_completed(self.body).request_event_id
        if self.type == codec.TYPE_FAILED:
            return codec.decode_failed(self.body).request_event_id
        return codec.decode_request(self.body).event_id


class Harness(Protocol):
    settings: Settings

    async def send(self, request: codec.Requested, correlation_id: str | None = None) -> None: ...

    def consumer(self, fault: Fault | None = None,
                 wrap: Callable[[Publishing], Publishing] | None = None
                 ) -> contextlib.AbstractAsyncContextManager[ConsumerService]: ...

    async def taken(self, queue: str, count: int, timeout: float = 30.0) -> list[Taken]: ...

    async def depth(self, queue: str) -> int: ...

    async def crash(self, service: ConsumerService) -> None:
        """The consumer's connection is lost: its unacked deliveries go back to the queue."""


class Gate:
    """A publisher that holds the publishes `hold` picks until `open()`, or fails them all after
    `fail()` (a lost channel); the rest go straight through."""

    def __init__(self, inner: Publishing, hold: Callable[[codec.Outgoing], bool]) -> None:
        self.inner, self.hold = inner, hold
        self.held = 0
        self._opened = asyncio.Event()
        self._failed = False

    async def publish(self, exchange: str, message: codec.Outgoing, routing_key: str) -> None:
        if not self._failed and self.hold(message):
            self.held += 1
            await self._opened.wait()
        if self._failed:
            raise PublishFailed(f"channel lost while publishing {routing_key!r}")
        await self.inner.publish(exchange, message, routing_key)

    def open(self) -> None:
        self._opened.set()

    def fail(self) -> None:
        self._failed = True
        self._opened.set()

    async def close(self) -> None:
        await self.inner.close()


def request(event_id: str, operation: Operation = Operation.ADD, *operands: float) -> codec.Requested:
    return codec.build_request(operation, operands or (1.0, 2.0), "rules", event_id=event_id)


def completed_for(event_id: str) -> Callable[[codec.Outgoing], bool]:
    def pick(message: codec.Outgoing) -> bool:
        return (message.properties.message_type == codec.TYPE_COMPLETED
                and codec.decode_completed(message.body).request_event_id == event_id)
    return pick


async def until(check: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.02)


# --- the scenarios ------------------------------------------------------------------------------


async def retry_with_growing_delay(h: Harness) -> None:
    seen: list[tuple[int, float]] = []

    def fault(outcome: Outcome, attempt: int) -> bool:
        seen.append((attempt, time.monotonic()))
        return attempt < 3  # the fault clears on the third attempt

    async with h.consumer(fault=fault):
        await h.send(request("retry-1", Operation.ADD, 20.0, 22.0))
        [result] = await h.taken(topology.AUDIT_QUEUE, 1)
    event = codec.decode_completed(result.body)
    assert event.request_event_id == "retry-1" and event.result == 42.0
    assert result.headers["attempt"] == 3
    assert [a for a, _ in seen] == [1, 2, 3]
    gaps = [b - a for (_, a), (_, b) in itertools.pairwise(seen)]
    assert gaps[0] >= 0.3 and gaps[1] >= 0.6 and gaps[1] > gaps[0], gaps
    assert await h.depth(topology.DLQ) == 0


async def retries_exhausted(h: Harness) -> None:
    async with h.consumer(fault=lambda outcome, attempt: True):
        await h.send(request("gone-1", Operation.SQRT, 9.0), correlation_id="corr-x")
        [result] = await h.taken(topology.AUDIT_QUEUE, 1)
        [dead] = await h.taken(topology.DLQ, 1)
    event = codec.decode_failed(result.body)
    assert event.reason == calc_pb2.FAILURE_REASON_RETRIES_EXHAUSTED and event.attempts == 3
    assert event.request_event_id == "gone-1" and "3 attempts" in event.detail
    assert result.routing_key == "calc.failed.sqrt"
    assert dead.request_id() == "gone-1" and dead.headers["attempt"] == 3
    reasons = [d["reason"] for d in dead.headers["x-death"]]
    assert reasons[0] == "rejected" and "expired" in reasons  # last death first, retries before


async def duplicates(h: Harness) -> None:
    async with h.consumer():
        await h.send(request("dup-1"))
        first = await h.taken(topology.AUDIT_QUEUE, 1)
        await h.send(request("dup-1"))
        await until(lambda: True, 0, "")
        second = await h.taken(topology.AUDIT_QUEUE, 0, timeout=2)
        # a failed request is processed again when it comes back (e.g. a replay)
        await h.send(request("dup-2", Operation.DIVIDE, 1.0, 0.0))
        await h.send(request("dup-2", Operation.DIVIDE, 1.0, 0.0))
        failures = await h.taken(topology.AUDIT_QUEUE, 2)
        dead = await h.taken(topology.DLQ, 2)
    assert [m.request_id() for m in first] == ["dup-1"] and first[0].type == codec.TYPE_COMPLETED
    assert second == []
    assert [m.request_id() for m in failures] == ["dup-2", "dup-2"]
    assert {m.type for m in failures} == {codec.TYPE_FAILED}
    assert [m.request_id() for m in dead] == ["dup-2", "dup-2"]
    assert await h.depth(BASIC) == 0


async def bug_until_the_delivery_limit(h: Harness) -> None:
    deliveries: list[int] = []

    def bug(outcome: Outcome, attempt: int) -> bool:
        deliveries.append(attempt)
        raise RuntimeError("a bug in the handler, not a verdict on the message")

    async with h.consumer(fault=bug) as service:
        await h.send(request("bug-1"))
        [dead] = await h.taken(topology.DLQ, 1)
        tried = len(deliveries)
        service.inject_fault = lambda outcome, attempt: False  # fixed: the consumer still works
        await h.send(request("healthy-1"))
        results = await h.taken(topology.AUDIT_QUEUE, 1)
    assert dead.request_id() == "bug-1"
    assert dead.headers["x-death"][0]["reason"] == "delivery_limit"
    # requeued as a failed delivery (basic.reject, counted) until past the delivery limit
    assert tried == h.settings.delivery_limit + 1
    assert [m.request_id() for m in results] == ["healthy-1"]
    assert results[0].type == codec.TYPE_COMPLETED
    assert await h.depth(BASIC) == 0


async def shutdown_drains_what_is_in_flight(h: Harness) -> None:
    """stop() finishes the deliveries in flight; the rest stays in the queue, none in both."""
    sent = [f"drain-{i}" for i in range(12)]
    box: list[Gate] = []

    def wrap(inner: Publishing) -> Publishing:
        box.append(Gate(inner, lambda m: m.properties.message_type == codec.TYPE_COMPLETED))
        return box[0]

    async with h.consumer(wrap=wrap) as service:
        gate = box[0]
        for event_id in sent:
            await h.send(request(event_id))
        await until(lambda: gate.held == h.settings.prefetch, 30, "a full window in flight")
        stopping = asyncio.create_task(service.stop(timeout=10))
        await asyncio.sleep(0.3)
        assert not stopping.done(), "stop() did not wait for the deliveries in flight"
        gate.open()
        await stopping
        assert service.in_flight == 0
    results = await h.taken(topology.AUDIT_QUEUE, h.settings.prefetch)
    left = await h.taken(BASIC, len(sent) - h.settings.prefetch)
    done = [m.request_id() for m in results]
    assert len(done) == h.settings.prefetch and {m.type for m in results} == {codec.TYPE_COMPLETED}
    assert sorted(done + [m.request_id() for m in left]) == sorted(sent), "each request exactly once"


async def acks_never_cover_an_unconfirmed_outcome(h: Harness) -> None:
    """A result that is slow to confirm holds no one else's ack back, and no ack covers it."""
    sent = [f"ack-{i}" for i in range(30)]
    box: list[Gate] = []

    def wrap(inner: Publishing) -> Publishing:
        box.append(Gate(inner, completed_for(sent[0])))
        return box[0]

    async with h.consumer(wrap=wrap) as service:
        gate = box[0]
        for event_id in sent:
            await h.send(request(event_id))
        batch = service.ledger.batch
        done = (len(sent) - 1) // batch * batch  # acked one by one past the stuck one, a batch at a time
        await until(lambda: service.settled >= done and gate.held == 1, 30, f"{done} acks")
        settled = service.settled
        await h.crash(service)
        gate.fail()
        await until(lambda: service.in_flight == 0, 10, "the stuck delivery to give up")
        back = await h.taken(BASIC, len(sent) - settled)
    ids = [m.request_id() for m in back]
    assert settled == done
    assert sent[0] in ids, "the delivery whose result was never confirmed was acked"
    assert len(ids) == len(sent) - settled == len(set(ids))


@dataclass(frozen=True)
class Scenario:
    run: Callable[[Harness], Awaitable[None]]
    settings: dict[str, Any] = field(default_factory=dict)

    @property
    def name(self) -> str:
        return self.run.__name__


SCENARIOS = [
    Scenario(retry_with_growing_delay, {"max_attempts": 4, "retry_base_delay": 0.3}),
    Scenario(retries_exhausted, {"max_attempts": 3}),
    Scenario(duplicates),
    Scenario(bug_until_the_delivery_limit),
    Scenario(shutdown_drains_what_is_in_flight, {"prefetch": 4}),
    Scenario(acks_never_cover_an_unconfirmed_outcome, {"prefetch": 40}),
]


def settings_for(url: str, **overrides: Any) -> Settings:
    return replace(Settings.from_env({"RABBITMQ_URL": url, **FAST}), **overrides)


class FakeHarness:
    """A Harness on tests/support/fake_transport.py."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.broker = FakeBroker(settings)
        self.transports: list[FakeTransport] = []

    async def send(self, request: codec.Requested, correlation_id: str | None = None) -> None:
        message = codec.request_message(request, correlation_id)
        word = codec.operation_label(int(request.operation))
        self.broker.publish(topology.REQUESTS_EXCHANGE, topology.requested_key(word), message.body,
                            message.properties)

    @contextlib.asynccontextmanager
    async def consumer(self, fault: Fault | None = None,
                       wrap: Callable[[Publishing], Publishing] | None = None
                       ) -> AsyncIterator[ConsumerService]:
        publisher: Publishing = FakePublisher(self.broker)
        transport = FakeTransport(self.broker, tuple(topology.work_queue(k) for k in self.settings.queues),
                                  self.settings.prefetch)
        self.transports.append(transport)
        service = ConsumerService(self.settings, None, publisher=wrap(publisher) if wrap else publisher,
                                  transport=transport, fault=fault)
        service.settle_grace = 0.0
        await service.start()
        try:
            yield service
        finally:
            await service.stop(timeout=5)
        assert transport.covered_unconfirmed == [], "an ack covered a delivery with no confirmed outcome"

    async def taken(self, queue: str, count: int, timeout: float = 30.0) -> list[Taken]:
        out: list[Taken] = []
        deadline = time.monotonic() + timeout
        quiet = 0.3 if count else timeout
        last = time.monotonic()
        while time.monotonic() < deadline:
            for stored in self.broker.take(queue):
                out.append(Taken(stored.routing_key, stored.properties.message_type,
                                 dict(stored.properties.headers or {}), stored.body))
                last = time.monotonic()
            if len(out) >= count and time.monotonic() - last >= quiet:
                break
            await asyncio.sleep(0.02)
        return out

    async def depth(self, queue: str) -> int:
        return len(self.broker.queues[queue].messages)

    async def crash(self, service: ConsumerService) -> None:
        assert isinstance(service.transport, FakeTransport)
        await service.transport.unsubscribe()
        service.transport.channel.close_now()
