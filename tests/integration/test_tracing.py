"""Traces on a real broker, in-process: one trace per request across every hop, a replay linked to it.

Producer, consumer and inspector share one in-memory exporter here; test_tracing_otlp.py runs
them as processes that export real OTLP.
"""

from __future__ import annotations

import asyncio
import io
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import pytest
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, StatusCode

from calculator import Operation
from consumer.service import ConsumerService
from dlq_inspector import actions, render
from dlq_inspector.explain import explain
from dlq_inspector.reader import DlqScan
from dlq_inspector.selection import Selection
from journal.service import JournalService
from journal.store import Store
from messaging import tracing
from messaging.connection import connect
from messaging.publisher import confirmed_channel
from producer.generator import Spec
from producer.service import Producer
from tests.integration.pipeline import settings_for

FLAKY = (6.0, 7.0)  # multiply 6 7 fails its first attempt with an injected transient fault


def fault(outcome: Any, attempt: int) -> bool:
    return outcome.request is not None and tuple(outcome.request.operands) == FLAKY and attempt == 1


@pytest.fixture
def spans() -> InMemorySpanExporter:
    return InMemorySpanExporter()


@pytest.fixture
def traces(spans: InMemorySpanExporter) -> tracing.Tracing:
    made = tracing.configure("calc-test", on=True, exporter=spans, batch=False)
    assert made is not None
    return made


@asynccontextmanager
async def services(url: str, traces: tracing.Tracing) -> AsyncIterator[Producer]:
    settings = settings_for(url)
    connection = await connect(settings, "test-tracing")
    consumer = ConsumerService(settings, connection, fault=fault, tracing=traces)
    try:
        await consumer.start()
        producer = Producer(settings, connection, traces)
        await producer.start()
        yield producer
    finally:
        await consumer.stop()
        await connection.close()


async def root(spans: InMemorySpanExporter, message_id: str, *, linked: bool = False,
               timeout: float = 30.0) -> ReadableSpan:
    """The first root span of `message_id` (`linked`: one with links, a replay's)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for span in spans.get_finished_spans():
            if span.parent is None and bool(span.links) == linked \
                    and attrs(span).get("messaging.message.id") == message_id:
                return span
        await asyncio.sleep(0.05)
    raise AssertionError(f"no root span for {message_id}")


async def whole(spans: InMemorySpanExporter, first: ReadableSpan, count: int,
                timeout: float = 30.0) -> list[ReadableSpan]:
    """Exactly the `count` spans of `first`'s trace, in start order (no more arrive after them)."""
    def of_trace() -> list[ReadableSpan]:
        return sorted((s for s in spans.get_finished_spans() if s.context.trace_id == first.context.trace_id),
                      key=lambda s: s.start_time or 0)

    deadline = time.monotonic() + timeout
    while len(of_trace()) < count:
        if time.monotonic() > deadline:
            break
        await asyncio.sleep(0.05)
    await asyncio.sleep(0.3)
    found = of_trace()
    assert len(found) == count, [s.name for s in found]
    return found


async def trace_of(spans: InMemorySpanExporter, message_id: str, count: int) -> list[ReadableSpan]:
    return await whole(spans, await root(spans, message_id), count)


def parent_of(span: ReadableSpan) -> int | None:
    return span.parent.span_id if span.parent is not None else None


def attrs(span: ReadableSpan) -> dict[str, Any]:
    return dict(span.attributes or {})


async def test_a_completed_request_is_one_trace_of_three_spans(vhost_url: str, traces: tracing.Tracing,
                                                                spans: InMemorySpanExporter) -> None:
    async with services(vhost_url, traces) as producer:
        event_id = await producer.send(Spec(Operation.ADD, (1.0, 2.0)), "conv-1")
        publish, process, result = await trace_of(spans, event_id, 3)
    assert (publish.kind, process.kind, result.kind) == (
        SpanKind.PRODUCER, SpanKind.CONSUMER, SpanKind.PRODUCER)
    assert process.name == "process calc.work.basic" and result.name == "publish calc.results"
    assert parent_of(process) == publish.context.span_id and parent_of(result) == process.context.span_id
    assert attrs(publish) == {
        "messaging.system": "rabbitmq", "messaging.operation.name": "publish",
        "messaging.operation.type": "send", "messaging.destination.name": "calc.requests",
        "messaging.rabbitmq.destination.routing_key": "calc.requested.add",
        "messaging.message.id": event_id, "messaging.message.conversation_id": "conv-1"}
    p = attrs(process)
    assert p["calc.verdict"] == "completed" and p["calc.attempt"] == 1
    assert p["messaging.message.id"] == event_id and p["messaging.message.conversation_id"] == "conv-1"
    assert p["messaging.destination.subscription.name"] == "calc.work.basic"
    assert isinstance(p["messaging.rabbitmq.message.delivery_tag"], int)
    assert process.status.status_code is StatusCode.UNSET and process.events == ()
    assert attrs(result)["messaging.rabbitmq.destination.routing_key"] == "calc.completed.add"


async def test_a_retried_request_is_one_trace_across_its_attempts(vhost_url: str, traces: tracing.Tracing,
                                                                   spans: InMemorySpanExporter) -> None:
    async with services(vhost_url, traces) as producer:
        event_id = await producer.send(Spec(Operation.MULTIPLY, FLAKY))
        publish, first, retry, second, result = await trace_of(spans, event_id, 5)
    assert [s.name for s in (first, retry, second, result)] == [
        "process calc.work.basic", "publish calc.retry.1", "process calc.work.basic", "publish calc.results"]
    assert parent_of(first) == publish.context.span_id
    assert parent_of(retry) == first.context.span_id  # the retry copy carries the first attempt's context
    assert parent_of(second) == retry.context.span_id
    assert parent_of(result) == second.context.span_id
    assert (attrs(first)["calc.verdict"], attrs(first)["calc.attempt"]) == ("retry", 1)
    assert first.status.status_code is StatusCode.ERROR
    assert (attrs(second)["calc.verdict"], attrs(second)["calc.attempt"]) == ("completed", 2)
    assert second.status.status_code is StatusCode.UNSET


async def test_a_dead_letter_keeps_its_trace_and_its_replay_links_to_it(
        vhost_url: str, traces: tracing.Tracing, spans: InMemorySpanExporter) -> None:
    settings = settings_for(vhost_url)
    async with services(vhost_url, traces) as producer:
        event_id = await producer.send(Spec(Operation.DIVIDE, (1.0, 0.0)))
        publish, process, failure = await trace_of(spans, event_id, 3)
        assert parent_of(process) == publish.context.span_id and parent_of(failure) == process.context.span_id
        assert attrs(failure)["messaging.rabbitmq.destination.routing_key"] == "calc.failed.divide"
        p = attrs(process)
        assert (p["calc.verdict"], p["calc.failure_reason"], p["calc.settlement"]) == (
            "failed", "DIVISION_BY_ZERO", "reject")
        assert process.status.status_code is StatusCode.ERROR
        assert [e.name for e in process.events] == [tracing.DEAD_LETTERED]
        original = format(publish.context.trace_id, "032x")

        connection = await connect(settings, "test-tracing-inspector")
        try:
            async with DlqScan(connection) as scan:  # show: the dead letter names its trace
                letters = [letter async for letter in scan.letters()]
            assert len(letters) == 1
            shown = render.show_json(explain(letters[0], settings.max_message_bytes, settings.max_attempts))
            assert shown["trace_id"] == original
            assert f"trace_id              {original}" in render.show_text(
                explain(letters[0], settings.max_message_bytes, settings.max_attempts))

            channel = await confirmed_channel(connection)
            async with DlqScan(connection) as scan:
                result = await actions.replay(
                    scan, channel, Selection(ids=frozenset({event_id})), settings, dry_run=False,
                    on_done=lambda e: None, on_failed=lambda e, error: None,
                    progress=render.Progress(io.StringIO(), "replay"), traces=traces)
            assert result.done == 1
        finally:
            await connection.close()
        replay, again, failure_again = await whole(spans, await root(spans, event_id, linked=True), 3)
    assert replay.context.trace_id != publish.context.trace_id  # a trace of its own
    assert replay.name == "publish calc.requests" and replay.parent is None
    assert attrs(replay)["calc.replay"] is True
    assert [(link.context.trace_id, link.context.span_id) for link in replay.links] == [
        (publish.context.trace_id, publish.context.span_id)]
    assert parent_of(again) == replay.context.span_id and parent_of(failure_again) == again.context.span_id
    assert attrs(again)["calc.failure_reason"] == "DIVISION_BY_ZERO"


@pytest.mark.database
async def test_the_journal_continues_the_trace_of_the_outcome(
        vhost_url: str, database_url: str, traces: tracing.Tracing, spans: InMemorySpanExporter) -> None:
    settings = settings_for(vhost_url, database_url=database_url)
    store = Store(settings)
    await store.open(timeout=30)
    connection = await connect(settings, "test-tracing-journal")
    journal = JournalService(settings, connection, store, tracing=traces)
    try:
        await journal.start()
        async with services(vhost_url, traces) as producer:
            event_id = await producer.send(Spec(Operation.ADD, (2.0, 3.0)))
            found = await trace_of(spans, event_id, 4)
    finally:
        await journal.stop()
        await connection.close()
        await store.close()
    assert [s.name for s in found] == ["publish calc.requests", "process calc.work.basic",
                                       "publish calc.results", "process calc.results.journal"]
    result, recorded = found[2:]
    assert recorded.kind is SpanKind.CONSUMER
    assert parent_of(recorded) == result.context.span_id
    assert attrs(recorded)["messaging.rabbitmq.destination.routing_key"] == "calc.completed.add"
