"""Tracing without a broker: trace context through AMQP headers, span shapes, hostile headers."""

from __future__ import annotations

import logging
from typing import Any

import pytest
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, StatusCode
from pamqp.commands import Basic

from messaging import publisher, tracing
from messaging.errors import ConfigurationError
from messaging.logs import TextFormatter, kv
from messaging.settings import Settings


@pytest.fixture
def spans() -> InMemorySpanExporter:
    return InMemorySpanExporter()


@pytest.fixture
def tracer(spans: InMemorySpanExporter) -> tracing.Tracing:
    made = tracing.configure("calc-test", on=True, exporter=spans, batch=False)
    assert made is not None
    return made


def test_off_is_none() -> None:
    assert tracing.configure("calc-test", on=False) is None


@pytest.mark.parametrize(("env", "on"), [
    ({}, False),
    ({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://collector:4318"}, True),
    ({"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "http://collector:4318/v1/traces"}, True),
    ({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://c:4318", "OTEL_SDK_DISABLED": "true"}, False),
    ({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://c:4318", "OTEL_TRACES_EXPORTER": "none"}, False),
])
def test_enabled_by_the_standard_variables(env: dict[str, str], on: bool) -> None:
    assert tracing.enabled(env) is on


def test_a_delivery_continues_the_trace_of_its_publish(tracer: tracing.Tracing,
                                                       spans: InMemorySpanExporter) -> None:
    headers: dict[str, object] = {}
    with tracer.publishing("calc.requests", "calc.request.add", headers, message_id="e1",
                           correlation_id="c1"):
        pass
    assert isinstance(headers[tracing.TRACEPARENT], str)
    with tracer.processing("calc.work.basic", "calc.requests", "calc.request.add", headers,
                           message_id="e1", correlation_id="c1", delivery_tag=7) as span:
        tracing.failed(span, "DIVISION_BY_ZERO", "division by zero")
    publish, process = spans.get_finished_spans()
    assert publish.name == "publish calc.requests" and publish.kind is SpanKind.PRODUCER
    assert process.name == "process calc.work.basic" and process.kind is SpanKind.CONSUMER
    assert process.context.trace_id == publish.context.trace_id
    assert process.parent is not None and process.parent.span_id == publish.context.span_id
    assert publish.attributes == {
        "messaging.system": "rabbitmq", "messaging.operation.name": "publish",
        "messaging.operation.type": "send", "messaging.destination.name": "calc.requests",
        "messaging.rabbitmq.destination.routing_key": "calc.request.add",
        "messaging.message.id": "e1", "messaging.message.conversation_id": "c1"}
    assert process.attributes is not None
    assert process.attributes["messaging.rabbitmq.message.delivery_tag"] == 7
    assert process.attributes["calc.failure_reason"] == "DIVISION_BY_ZERO"
    assert process.status.status_code is StatusCode.ERROR
    assert tracing.trace_id_of(headers) == format(publish.context.trace_id, "032x")


def test_a_replay_links_to_the_dead_letter_trace(tracer: tracing.Tracing,
                                                 spans: InMemorySpanExporter) -> None:
    original: dict[str, object] = {}
    with tracer.publishing("calc.requests", "calc.request.add", original):
        pass
    replayed: dict[str, object] = dict(original)
    with tracer.publishing("calc.requests", "calc.request.add", replayed,
                           parent=tracing.fresh(), links=tracing.link_to(original)):
        pass
    first, replay = spans.get_finished_spans()
    assert replay.context.trace_id != first.context.trace_id and replay.parent is None
    assert [link.context.span_id for link in replay.links] == [first.context.span_id]
    assert replayed[tracing.TRACEPARENT] != original[tracing.TRACEPARENT]


@pytest.mark.parametrize("value", [
    b"00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",  # bytes: read as ASCII
])
def test_bytes_traceparent_is_read(value: bytes) -> None:
    assert tracing.trace_id_of({"traceparent": value}) == "0af7651916cd43dd8448eb211c80319c"


@pytest.mark.parametrize("value", [
    "", "garbage", 42, None, ["00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"],
    "00-00000000000000000000000000000000-b7ad6b7169203331-01",  # the invalid all-zero trace id
    "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01" + "x" * 1000,
    "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01\udcff",  # undecodable octets
    b"\xff\xfe",
])
def test_a_hostile_traceparent_starts_no_trace(value: object, tracer: tracing.Tracing,
                                               spans: InMemorySpanExporter) -> None:
    headers = {"traceparent": value}
    assert tracing.context_of(headers) is None and tracing.trace_id_of(headers) == ""
    with tracer.processing("q", "x", "k", headers):
        pass
    (span,) = spans.get_finished_spans()
    assert span.parent is None  # a root of its own, not a child of something forged


def test_log_lines_carry_the_active_span(tracer: tracing.Tracing) -> None:
    record = logging.LogRecord("t", logging.INFO, __file__, 1, "completed", None, None)
    record.calc_fields = kv(event_id="e1")["calc_fields"]
    with tracer.publishing("x", "k", {}) as span:
        assert tracing._TraceIds().filter(record)
    line = TextFormatter().format(record)
    assert f"trace_id={format(span.get_span_context().trace_id, '032x')}" in line
    assert "event_id=e1" in line and "span_id=" in line
    outside = logging.LogRecord("t", logging.INFO, __file__, 1, "idle", None, None)
    assert tracing._TraceIds().filter(outside) and not hasattr(outside, "calc_fields")


def test_spans_reach_an_otlp_receiver_over_http(monkeypatch: pytest.MonkeyPatch) -> None:
    """The wire format: OTLP/HTTP protobuf, parent and link structure intact."""
    from tests.support.otlp import OtlpReceiver

    with OtlpReceiver() as otlp:
        monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", otlp.endpoint)
        monkeypatch.setenv("OTEL_SERVICE_NAME", "calc-wire-test")
        made = tracing.configure("calc-test", on=True)
        assert made is not None
        headers: dict[str, object] = {}
        with made.publishing("calc.requests", "calc.request.add", headers, message_id="e1"):
            pass
        with made.processing("calc.work.basic", "calc.requests", "calc.request.add", headers):
            pass
        with made.publishing("calc.requests", "calc.request.add", {}, parent=tracing.fresh(),
                             links=tracing.link_to(headers)):
            pass
        made.shutdown()
        publish, process, replay = otlp.wait_for(3)
    assert {s.service for s in (publish, process, replay)} == {"calc-wire-test"}
    assert process.trace_id == publish.trace_id and process.parent_span_id == publish.span_id
    assert replay.trace_id != publish.trace_id and replay.parent_span_id == ""
    assert replay.links == ((publish.trace_id, publish.span_id),)
    assert publish.attributes["messaging.message.id"] == "e1"


@pytest.mark.parametrize(("env", "on"), [
    ({}, False),
    ({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://collector:4318"}, True),
    ({"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "https://collector:4318/v1/traces"}, True),
    ({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://c:4318", "OTEL_SDK_DISABLED": "true"}, False),
    ({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://c:4318", "OTEL_SDK_DISABLED": "false"}, True),
    ({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://c:4318", "OTEL_TRACES_EXPORTER": "None"}, False),
    ({"OTEL_EXPORTER_OTLP_ENDPOINT": " ", "OTEL_TRACES_EXPORTER": "otlp"}, False),
])
def test_settings_decide_tracing_from_the_standard_variables(env: dict[str, str], on: bool) -> None:
    assert Settings.from_env(env).tracing is on


@pytest.mark.parametrize(("env", "message"), [
    ({"OTEL_EXPORTER_OTLP_ENDPOINT": "collector:4318"},
     "OTEL_EXPORTER_OTLP_ENDPOINT must be an http(s)://host:port URL of an OTLP/HTTP collector, got"),
    ({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://c:99999"}, "OTEL_EXPORTER_OTLP_ENDPOINT must be an http(s)"),
    ({"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "grpc://c:4317"}, "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT must be"),
    ({"OTEL_TRACES_EXPORTER": "console"}, "OTEL_TRACES_EXPORTER must be otlp or none"),
    ({"OTEL_SDK_DISABLED": "maybe"}, "OTEL_SDK_DISABLED has an invalid value"),
])
def test_bad_tracing_variables_are_one_line_errors(env: dict[str, str], message: str) -> None:
    with pytest.raises(ConfigurationError) as caught:
        Settings.from_env(env)
    assert str(caught.value).startswith(message) and "\n" not in str(caught.value)


def test_headers_of_makes_a_table_for_the_trace_context(tracer: tracing.Tracing) -> None:
    properties = Basic.Properties(message_id="e1")
    with tracer.publishing("calc.requests", "calc.requested.add", tracing.headers_of(properties)):
        pass
    assert properties.headers is not None and tracing.trace_id_of(properties.headers)


def test_verdicts_on_the_current_span(tracer: tracing.Tracing, spans: InMemorySpanExporter) -> None:
    with tracer.processing("calc.work.basic", "calc.requests", "calc.requested.add", None):
        tracing.verdict("retry", 1, error="transient: injected")
    with tracer.processing("calc.work.basic", "calc.requests", "calc.requested.divide", None):
        tracing.verdict("failed", 1, "DIVISION_BY_ZERO", "division by zero")
        tracing.settled("reject", "calc.dlx")
    retried, failed = spans.get_finished_spans()
    assert retried.status.status_code is StatusCode.ERROR
    assert retried.status.description == "transient: injected"
    assert "calc.failure_reason" not in (retried.attributes or {})
    assert dict(failed.attributes or {}).items() >= {"calc.verdict": "failed", "calc.attempt": 1,
                                                      "calc.failure_reason": "DIVISION_BY_ZERO",
                                                      "calc.settlement": "reject"}.items()
    assert [(e.name, dict(e.attributes or {})) for e in failed.events] == [
        ("dead-lettered", {"messaging.operation.name": "reject",
                           "messaging.rabbitmq.dead_letter_exchange": "calc.dlx"})]


def test_without_a_span_the_hooks_do_nothing() -> None:
    tracing.verdict("completed", 1)  # no span is current: nothing to write on, nothing raised
    tracing.settled("reject", "calc.dlx")


def test_off_the_publisher_is_the_untraced_one(tracer: tracing.Tracing) -> None:
    channel: Any = object()  # neither publisher touches its channel before a publish
    assert type(publisher.publisher(channel, 1.0)) is publisher.Publisher
    traced = publisher.publisher(channel, 1.0, tracing=tracer)
    assert isinstance(traced, publisher.TracedPublisher) and traced.tracing is tracer
