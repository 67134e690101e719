"""The benchmark's work: preload requests into calc.work.basic, then prove every one got one outcome."""

from __future__ import annotations

import asyncio
import random
import time
from collections import Counter
from dataclasses import dataclass, field, replace
from typing import Any

import aiormq
import pika
from pamqp.commands import Basic

from calculator import Operation
from messaging import codec, topology
from messaging.settings import Settings

VERIFY_QUEUE = "bench.verify"
"""Non-durable queue bound to calc.results `#`: every result and failure, for the count check."""

BASIC_OPERATIONS = [op for op in Operation if not op.heavy]
FAILING = (Operation.DIVIDE, (1.0, 0.0))  # a permanent failure: CalculationFailed, then reject -> DLQ

# Generous bound so a 1,000,000-message run never meets reject-publish.
BENCH_ENV = {"CALC_WORK_QUEUE_MAX_LENGTH": "2000000", "CALC_INSTANCE_ID": "bench"}


def bench_settings(url: str) -> Settings:
    return replace(Settings.from_env({"RABBITMQ_URL": url, **BENCH_ENV}), instance_id="bench")


class BenchFailure(AssertionError):
    """A variant lost, duplicated or misrouted messages: the run is wrong, whatever its speed."""


@dataclass
class Preloaded:
    """The requests of one run: which must complete and which must fail."""

    ok: set[str] = field(default_factory=set)
    failing: set[str] = field(default_factory=set)

    @property
    def count(self) -> int:
        return len(self.ok) + len(self.failing)


def make_requests(count: int, failure_share: float, seed: int) -> tuple[list[tuple[str, bytes, Any]],
                                                                          Preloaded]:
    """`count` requests for calc.work.basic as (routing key, body, properties)."""
    rng = random.Random(seed)
    out = []
    preloaded = Preloaded()
    for _ in range(count):
        if rng.random() < failure_share:
            operation, operands = FAILING
        else:
            operation = rng.choice(BASIC_OPERATIONS)
            operands = (round(rng.uniform(-1000, 1000), 3), round(rng.uniform(1, 1000), 3))
        request = codec.build_request(operation, operands, "bench")
        message = codec.request_message(request, None)
        (preloaded.failing if operation is FAILING[0] and operands == FAILING[1] else preloaded.ok).add(
            request.event_id)
        out.append((topology.requested_key(operation.word), message.body, message.properties))
    return out, preloaded


async def publish_all(channel: aiormq.abc.AbstractChannel, messages: list[tuple[str, bytes, Any]],
                      window: int = 1000, exchange: str = topology.REQUESTS_EXCHANGE) -> None:
    """Publish with confirms, `window` in flight; raise on any nack or return."""
    for start in range(0, len(messages), window):
        chunk = messages[start:start + window]
        answers = await asyncio.gather(*(
            channel.basic_publish(body, exchange=exchange, routing_key=key, properties=props,
                                  mandatory=True)
            for key, body, props in chunk))
        for answer in answers:
            if not isinstance(answer, Basic.Ack):
                raise BenchFailure(f"preload publish not confirmed: {answer!r}")


async def setup(url: str) -> None:
    """Declare the real topology (as every service does) and the verify queue."""
    import aio_pika

    connection = await aio_pika.connect(url)
    try:
        channel = await connection.channel()
        declared = await topology.declare(channel, bench_settings(url))
        verify = await channel.declare_queue(VERIFY_QUEUE, durable=False)
        await verify.bind(declared.exchanges[topology.RESULTS_EXCHANGE], "#")
    finally:
        await connection.close()


PURGED = (topology.work_queue("basic"), topology.work_queue("heavy"), topology.DLQ,
          topology.AUDIT_QUEUE, VERIFY_QUEUE)


async def reset(url: str) -> None:
    """Empty every queue a run writes to."""
    connection = await aiormq.connect(url)
    try:
        channel = await connection.channel()
        for name in PURGED:
            await channel.queue_purge(name)
    finally:
        await connection.close()


async def depth(url: str, queue: str) -> int:
    connection = await aiormq.connect(url)
    try:
        channel = await connection.channel()
        result = await channel.queue_declare(queue, passive=True)
        return int(result.message_count or 0)
    finally:
        await connection.close()


async def preload(url: str, count: int, failure_share: float, seed: int) -> Preloaded:
    messages, preloaded = make_requests(count, failure_share, seed)
    connection = await aiormq.connect(url)
    try:
        channel = await connection.channel(publisher_confirms=True)
        await publish_all(channel, messages)
    finally:
        await connection.close()
    queued = await depth(url, topology.work_queue("basic"))
    if queued != count:
        raise BenchFailure(f"preloaded {count} but calc.work.basic holds {queued}")
    return preloaded


def _drain(url: str, expected: int, quiet: float = 1.0, patience: float = 60.0) -> Counter[tuple[str, str]]:
    """Take every message of the verify queue: (type, request_event_id) -> times seen.

    Stops `quiet` s after the `expected` count arrived (a duplicate would be right behind), or
    when nothing arrived for `patience` s (a broker paging a million messages pauses now and then).
    """
    seen: Counter[tuple[str, str]] = Counter()
    total = 0
    last = time.monotonic()
    connection = pika.BlockingConnection(pika.URLParameters(url))
    try:
        channel = connection.channel()
        for method, props, body in channel.consume(VERIFY_QUEUE, auto_ack=True, inactivity_timeout=quiet):
            if method is None:
                if total >= expected or time.monotonic() - last > patience:
                    break
                continue
            total += 1
            last = time.monotonic()
            if props.type == codec.TYPE_COMPLETED:
                seen[("completed", codec.decode_completed(body).request_event_id)] += 1
            elif props.type == codec.TYPE_FAILED:
                seen[("failed", codec.decode_failed(body).request_event_id)] += 1
            else:
                seen[("other", props.type or "")] += 1
        channel.cancel()
    finally:
        connection.close()
    return seen


async def verify(url: str, preloaded: Preloaded, variant: str) -> dict[str, int]:
    """Raise BenchFailure unless every request has exactly one outcome and nothing is left over."""
    seen = await asyncio.to_thread(_drain, url, preloaded.count)
    completed = {rid for (kind, rid) in seen if kind == "completed"}
    failed = {rid for (kind, rid) in seen if kind == "failed"}
    duplicates = sum(n - 1 for n in seen.values() if n > 1)
    problems = []
    if duplicates:
        problems.append(f"{duplicates} duplicate results")
    if completed != preloaded.ok:
        missing, unexpected = len(preloaded.ok - completed), len(completed - preloaded.ok)
        problems.append(f"completed {len(completed)} distinct, expected {len(preloaded.ok)} "
                        f"(missing {missing}, unexpected {unexpected})")
    if failed != preloaded.failing:
        problems.append(f"failed {len(failed)} distinct, expected {len(preloaded.failing)}")
    if any(kind == "other" for kind, _ in seen):
        problems.append("messages of an unknown type on calc.results")
    left = await _drained_depth(url, topology.work_queue("basic"))
    if left:
        problems.append(f"{left} requests left in calc.work.basic (unacked or never consumed)")
    dead = await _settled_depth(url, topology.DLQ, len(preloaded.failing))
    if dead != len(preloaded.failing):
        problems.append(f"calc.dlq holds {dead}, expected {len(preloaded.failing)} rejected requests")
    if problems:
        raise BenchFailure(f"{variant}: " + "; ".join(problems))
    return {"completed": len(completed), "failed": len(failed), "dead_lettered": dead}


async def _settled_depth(url: str, queue: str, expected: int, timeout: float = 15.0) -> int:
    """Dead-lettering is asynchronous: wait until `queue` holds `expected` (or stops moving)."""
    deadline = time.monotonic() + timeout
    while True:
        n = await depth(url, queue)
        if n >= expected or time.monotonic() > deadline:
            return n
        await asyncio.sleep(0.2)


async def _drained_depth(url: str, queue: str, timeout: float = 15.0) -> int:
    """A quorum queue applies acks (and reports its depth) a little after the client sent them:
    wait for `queue` to reach 0 before calling what is left unacked."""
    deadline = time.monotonic() + timeout
    while True:
        n = await depth(url, queue)
        if n == 0 or time.monotonic() > deadline:
            return n
        await asyncio.sleep(0.2)


async def verify_counts(url: str, count: int) -> dict[str, int]:
    """For runs whose request ids the harness never saw: `count` distinct results, no duplicates."""
    seen = await asyncio.to_thread(_drain, url, count)
    completed = sum(1 for kind, _ in seen if kind == "completed")
    duplicates = sum(n - 1 for n in seen.values() if n > 1)
    left = await depth(url, topology.work_queue("basic"))
    if duplicates or completed != count or left:
        raise BenchFailure(f"{completed} distinct results of {count}, {duplicates} duplicates, "
                           f"{left} requests left")
    return {"completed": completed}
