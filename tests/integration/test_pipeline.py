"""The core pipeline against a real broker: results, every failure reason, routing, retries."""

from __future__ import annotations

import asyncio
import itertools
import time
from dataclasses import replace

import aio_pika
import pika
import pytest

from calculator import Operation
from gen import calc_pb2
from messaging import codec, topology
from messaging.errors import UnroutableError
from messaging.verdict import Outcome
from producer.generator import Spec
from tests.integration.pipeline import (
    collect,
    declare,
    producer,
    publish_raw,
    queue_depth,
    running_consumer,
    settings_for,
)

R = calc_pb2

EXPECTED = {
    Operation.ADD: ((2, 3), 5.0),
    Operation.SUBTRACT: ((2, 3), -1.0),
    Operation.MULTIPLY: ((2.5, 4), 10.0),
    Operation.DIVIDE: ((7, 2), 3.5),
    Operation.MODULO: ((-7, 3), 2.0),
    Operation.POWER: ((2, 10), 1024.0),
    Operation.SQRT: ((16,), 4.0),
    Operation.FACTORIAL: ((5,), 120.0),
}


async def test_every_operation_end_to_end(vhost_url: str) -> None:
    settings = settings_for(vhost_url)
    async with running_consumer(settings), producer(settings) as p:
        sent = {}
        for op, (operands, _) in EXPECTED.items():
            sent[await p.send(Spec(op, tuple(map(float, operands))), correlation_id=f"corr-{op.word}")] = op
        results = await collect(vhost_url, topology.AUDIT_QUEUE, len(sent))
    completed = results.completed()
    assert len(completed) == len(sent) == len(results.messages)
    for message, event in zip(results.messages, completed, strict=True):
        op = sent[event.request_event_id]
        assert event.result == EXPECTED[op][1]
        assert event.operation == codec.proto_operation(op)
        assert list(event.operands) == [float(x) for x in EXPECTED[op][0]]
        assert event.processed_by == settings.instance_id and event.event_id
        # the contract's properties on every message this system publishes (docs/contract.md)
        assert message.routing_key == f"calc.completed.{op.word}"
        assert message.content_type == "application/x-protobuf"
        assert message.type == "calc.v1.CalculationCompleted"
        assert message.message_id == event.event_id
        assert message.correlation_id == f"corr-{op.word}"
        assert message.delivery_mode == aio_pika.DeliveryMode.PERSISTENT
        assert message.app_id == "calc-consumer"
        assert message.headers["attempt"] == 1
        assert message.timestamp is not None
        assert abs(message.timestamp.timestamp() - event.occurred_at.seconds) < 1
    assert await queue_depth(vhost_url, topology.DLQ) == 0


def _body(op: int, *operands: float, event_id: str) -> bytes:
    request = codec.build_request(op, operands, "test")
    request.event_id = event_id
    return request.SerializeToString()


# (name, body builder, routing key word, properties, expected reason)
FAILURES = [
    ("div0", lambda i: _body(4, 1, 0, event_id=i), "divide", {}, R.FAILURE_REASON_DIVISION_BY_ZERO),
    ("mod0", lambda i: _body(5, 1, 0, event_id=i), "modulo", {}, R.FAILURE_REASON_DIVISION_BY_ZERO),
    ("sqrt-neg", lambda i: _body(7, -1, event_id=i), "sqrt", {}, R.FAILURE_REASON_DOMAIN_ERROR),
    ("fact-3.5", lambda i: _body(8, 3.5, event_id=i), "factorial", {}, R.FAILURE_REASON_DOMAIN_ERROR),
    ("pow-big", lambda i: _body(6, 10, 400, event_id=i), "power", {}, R.FAILURE_REASON_OVERFLOW),
    ("fact-171", lambda i: _body(8, 171, event_id=i), "factorial", {}, R.FAILURE_REASON_OVERFLOW),
    ("arity", lambda i: _body(1, 1, event_id=i), "add", {}, R.FAILURE_REASON_INVALID_ARGUMENTS),
    ("nan", lambda i: _body(1, float("nan"), 1, event_id=i), "add", {}, R.FAILURE_REASON_INVALID_ARGUMENTS),
    ("unknown-op", lambda i: _body(42, 1, 2, event_id=i), "add", {}, R.FAILURE_REASON_UNKNOWN_OPERATION),
    ("unspecified", lambda i: _body(0, 1, 2, event_id=i), "add", {}, R.FAILURE_REASON_UNKNOWN_OPERATION),
    ("wrong-key", lambda i: _body(1, 1, 2, event_id=i), "divide", {}, R.FAILURE_REASON_MALFORMED_MESSAGE),
    ("wrong-type", lambda i: _body(1, 1, 2, event_id=i), "add",
     {"type": "calc.v1.CalculationCompleted"}, R.FAILURE_REASON_MALFORMED_MESSAGE),
    ("wrong-content", lambda i: _body(1, 1, 2, event_id=i), "add",
     {"content_type": "application/json"}, R.FAILURE_REASON_MALFORMED_MESSAGE),
    ("no-event-id", lambda i: _body(1, 1, 2, event_id="") , "add", {}, R.FAILURE_REASON_MALFORMED_MESSAGE),
]


async def test_every_failure_reason_lands_in_the_dlq_once(vhost_url: str) -> None:
    settings = settings_for(vhost_url)
    sent: dict[str, tuple[bytes, str, int]] = {}
    async with running_consumer(settings) as service:
        for name, build, word, props, reason in FAILURES:
            event_id = f"evt-{name}"
            body = build(event_id)
            if name == "no-event-id":
                # a body with no event_id: the result carries no request id; mark it by correlation
                props = {**props, "correlation_id": "corr-no-event-id"}
            sent[name] = (body, word, reason)
            await publish_raw(vhost_url, body, topology.requested_key(word), **props)
        # garbage that protobuf cannot decode (invalid UTF-8 in field 1)
        garbage = b"\x0a\x02\xff\xfe"
        await publish_raw(vhost_url, garbage, "calc.requested.add", correlation_id="corr-garbage")
        # the consumer keeps running: a valid request still completes afterwards
        async with producer(settings) as p:
            ok_id = await p.send(Spec(Operation.ADD, (1.0, 1.0)))
        results = await collect(vhost_url, topology.AUDIT_QUEUE, len(FAILURES) + 2)
        dlq = await collect(vhost_url, topology.DLQ, len(FAILURES) + 1)
        assert service.in_flight == 0

    failed = {(e.request_event_id or m.correlation_id): (e, m)
              for m, e in zip([m for m in results.messages if m.type == codec.TYPE_FAILED],
                              results.failed(), strict=True)}
    assert [c.request_event_id for c in results.completed()] == [ok_id]
    assert len(failed) == len(FAILURES) + 1 == len(results.failed())
    for name, (_, word, reason) in sent.items():
        key = "corr-no-event-id" if name == "no-event-id" else f"evt-{name}"
        event, message = failed[key]
        assert event.reason == reason, name
        assert event.detail and event.attempts == 1 and event.processed_by
        assert message.routing_key == f"calc.failed.{word}", name
        assert message.correlation_id == key
        assert message.type == "calc.v1.CalculationFailed"
    assert failed["evt-unknown-op"][0].operation == 42  # the request's operation, even unknown
    garbage_failure = failed["corr-garbage"][0]
    assert garbage_failure.request_event_id == ""
    assert garbage_failure.reason == R.FAILURE_REASON_MALFORMED_MESSAGE

    # exactly once in the DLQ, body byte for byte, with the broker's x-death record
    bodies = [m.body for m in dlq.messages]
    assert len(bodies) == len(FAILURES) + 1
    for body, _, _ in sent.values():
        assert bodies.count(body) == 1
    assert bodies.count(garbage) == 1
    for message in dlq.messages:
        deaths = message.headers["x-death"]
        assert deaths[0]["reason"] == "rejected"
        assert deaths[0]["queue"] in ("calc.work.basic", "calc.work.heavy")


async def test_heavy_and_basic_routing(vhost_url: str) -> None:
    settings = settings_for(vhost_url)
    async with producer(settings) as p:  # no consumer: the messages stay where they were routed
        ids = {op: await p.send(Spec(op, args[0])) for op, args in
               ((op, (tuple(map(float, v[0])),)) for op, v in EXPECTED.items())}
    basic = await collect(vhost_url, "calc.work.basic", 5)
    heavy = await collect(vhost_url, "calc.work.heavy", 3)
    assert sorted(codec.decode_request(m.body).event_id for m in basic.messages) == sorted(
        ids[op] for op in Operation if not op.heavy)
    assert sorted(codec.decode_request(m.body).event_id for m in heavy.messages) == sorted(
        ids[op] for op in Operation if op.heavy)
    for m in basic.messages + heavy.messages:
        word = codec.operation_label(codec.decode_request(m.body).operation)
        assert m.routing_key == f"calc.requested.{word}"
        assert m.app_id == "calc-producer" and m.type == "calc.v1.CalculationRequested"
        assert m.headers["attempt"] == 1 and m.correlation_id == m.message_id


def test_plain_amqp_client_without_properties_is_processed(vhost_url: str) -> None:
    async def scenario() -> None:
        settings = settings_for(vhost_url)
        async with running_consumer(settings):
            await asyncio.get_running_loop().run_in_executor(None, _pika_publish, vhost_url)
            results = await collect(vhost_url, topology.AUDIT_QUEUE, 1)
        [event] = results.completed()
        assert event.request_event_id == "plain-1" and event.result == 12.0
        # no correlation_id on the request: the result's is the request's event_id
        assert results.messages[0].correlation_id == "plain-1"
    asyncio.run(scenario())


def _pika_publish(url: str) -> None:
    connection = pika.BlockingConnection(pika.URLParameters(url))
    try:
        channel = connection.channel()
        channel.confirm_delivery()
        channel.basic_publish("calc.requests", "calc.requested.multiply",
                              _body(3, 3, 4, event_id="plain-1"), mandatory=True)
    finally:
        connection.close()


async def test_duplicate_redelivery_publishes_no_second_result(vhost_url: str) -> None:
    settings = settings_for(vhost_url)
    body = _body(1, 2, 2, event_id="dup-1")
    async with running_consumer(settings):
        await publish_raw(vhost_url, body, "calc.requested.add")
        first = await collect(vhost_url, topology.AUDIT_QUEUE, 1)
        await publish_raw(vhost_url, body, "calc.requested.add")
        second = await collect(vhost_url, topology.AUDIT_QUEUE, 0, timeout=3, quiet=2)
        # a failed request is processed again when it comes back (e.g. a replay)
        bad = _body(4, 1, 0, event_id="dup-2")
        await publish_raw(vhost_url, bad, "calc.requested.divide")
        await publish_raw(vhost_url, bad, "calc.requested.divide")
        failures = await collect(vhost_url, topology.AUDIT_QUEUE, 2)
    assert [e.request_event_id for e in first.completed()] == ["dup-1"]
    assert second.messages == []
    assert [e.request_event_id for e in failures.failed()] == ["dup-2", "dup-2"]
    assert await queue_depth(vhost_url, topology.DLQ) == 2
    assert await queue_depth(vhost_url, "calc.work.basic") == 0


async def test_transient_fault_is_retried_with_growing_delay_then_completes(vhost_url: str) -> None:
    settings = settings_for(vhost_url, max_attempts=4, retry_base_delay=0.3)
    seen: list[tuple[int, float]] = []

    def fault(outcome: Outcome, attempt: int) -> bool:
        seen.append((attempt, time.monotonic()))
        return attempt < 3  # the fault clears on the third attempt

    async with running_consumer(settings) as service, producer(settings) as p:
        service.inject_fault = fault
        event_id = await p.send(Spec(Operation.ADD, (20.0, 22.0)))
        results = await collect(vhost_url, topology.AUDIT_QUEUE, 1, timeout=30)
    [event] = results.completed()
    assert event.request_event_id == event_id and event.result == 42.0
    assert results.messages[0].headers["attempt"] == 3
    assert [a for a, _ in seen] == [1, 2, 3]
    gaps = [b - a for (_, a), (_, b) in itertools.pairwise(seen)]
    assert gaps[0] >= 0.3 and gaps[1] >= 0.6 and gaps[1] > gaps[0]
    assert await queue_depth(vhost_url, topology.DLQ) == 0


async def test_fault_that_never_clears_ends_retries_exhausted(vhost_url: str) -> None:
    settings = settings_for(vhost_url, max_attempts=3, retry_base_delay=0.2)
    async with running_consumer(settings) as service, producer(settings) as p:
        service.inject_fault = lambda outcome, attempt: True
        event_id = await p.send(Spec(Operation.SQRT, (9.0,)), correlation_id="corr-x")
        results = await collect(vhost_url, topology.AUDIT_QUEUE, 1, timeout=30)
        dlq = await collect(vhost_url, topology.DLQ, 1, timeout=10)
    [event] = results.failed()
    assert event.reason == R.FAILURE_REASON_RETRIES_EXHAUSTED and event.attempts == 3
    assert event.request_event_id == event_id and "3 attempts" in event.detail
    assert results.messages[0].routing_key == "calc.failed.sqrt"
    assert results.messages[0].correlation_id == "corr-x"
    [dead] = dlq.messages
    assert codec.decode_request(dead.body).event_id == event_id
    assert dead.headers["attempt"] == 3
    reasons = [d["reason"] for d in dead.headers["x-death"]]
    assert reasons[0] == "rejected" and "expired" in reasons  # last death first, retries before


async def test_a_bug_in_the_handler_requeues_until_the_delivery_limit_dead_letters_it(
        vhost_url: str) -> None:
    settings = settings_for(vhost_url)
    deliveries: list[int] = []

    def bug(outcome: Outcome, attempt: int) -> bool:
        deliveries.append(attempt)
        raise RuntimeError("a bug in the handler, not a verdict on the message")

    async with running_consumer(settings) as service, producer(settings) as p:
        service.inject_fault = bug
        event_id = await p.send(Spec(Operation.ADD, (1.0, 2.0)))
        dlq = await collect(vhost_url, topology.DLQ, 1, timeout=30)
        tried = len(deliveries)
        service.inject_fault = lambda outcome, attempt: False  # fixed: the consumer still works
        healthy = await p.send(Spec(Operation.ADD, (2.0, 2.0)))
        results = await collect(vhost_url, topology.AUDIT_QUEUE, 1, timeout=30)
    [dead] = dlq.messages
    assert codec.decode_request(dead.body).event_id == event_id
    assert dead.headers["x-death"][0]["reason"] == "delivery_limit"
    # requeued as a failed delivery each time (basic.reject, which every broker version counts)
    # until it had been returned more than the delivery limit allows: no endless loop
    assert tried == settings.delivery_limit + 1
    assert [e.request_event_id for e in results.completed()] == [healthy]
    assert not results.failed()
    assert await queue_depth(vhost_url, topology.work_queue("basic")) == 0


async def test_unroutable_publish_raises_at_the_producer(vhost_url: str) -> None:
    settings = settings_for(vhost_url)
    await declare(settings)
    connection = await aio_pika.connect(vhost_url)
    channel = await connection.channel()
    queue = await channel.get_queue("calc.work.basic", ensure=False)
    await queue.unbind("calc.requests", "calc.requested.add")
    await connection.close()
    # a producer that only checks the topology (as with least-privilege users) sees the gap
    async with producer(replace(settings, declare_topology=False)) as p:
        with pytest.raises(UnroutableError, match=r"calc\.requested\.add"):
            await p.send(Spec(Operation.ADD, (1.0, 2.0)))
        # other keys still route
        assert await p.send(Spec(Operation.DIVIDE, (1.0, 2.0)))
    assert await queue_depth(vhost_url, "calc.work.basic") == 1


async def test_consumer_consumes_again_after_its_queue_is_deleted_and_declared_again(
        vhost_url: str) -> None:
    """The broker cancels the subscription of a deleted queue; the consumer keeps trying and
    consumes again once the queue is back (a redeploy of the definitions, say), losing nothing
    published after that."""
    settings = settings_for(vhost_url)
    async with running_consumer(settings) as service, producer(settings) as p:
        before = await p.send(Spec(Operation.ADD, (1.0, 2.0)))
        first = await collect(vhost_url, topology.AUDIT_QUEUE, 1)
        connection = await aio_pika.connect(vhost_url)
        try:
            channel = await connection.channel()
            await channel.queue_delete("calc.work.basic")
            await asyncio.sleep(2.5)  # several of the consumer's attempts find no queue
            await topology.declare(channel, settings)
        finally:
            await connection.close()
        after = [await p.send(Spec(Operation.MULTIPLY, (float(i), 2.0))) for i in range(20)]
        second = await collect(vhost_url, topology.AUDIT_QUEUE, len(after), timeout=60)
        settled = service.settled
    assert [e.request_event_id for e in first.completed()] == [before]
    assert sorted(e.request_event_id for e in second.completed()) == sorted(after)
    assert sorted(e.result for e in second.completed()) == [2.0 * i for i in range(20)]
    assert settled == 21
    assert await queue_depth(vhost_url, "calc.work.basic") == 0
