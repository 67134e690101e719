"""OpenTelemetry tracing for every hop: W3C trace context in AMQP headers, messaging spans.

Off unless an OTLP endpoint is configured, and then free: services hold `None` instead of a
`Tracing` and test `is not None` on the hot path, so no span, context or header is made.
Span names and attributes follow the OpenTelemetry messaging conventions for RabbitMQ.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Mapping, MutableMapping, Sequence
from contextlib import contextmanager
from typing import Any

from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.propagators.textmap import Getter, Setter
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SimpleSpanProcessor, SpanExporter
from opentelemetry.trace import Link, Span, SpanKind, Status, StatusCode
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

SYSTEM = "rabbitmq"
TRACEPARENT = "traceparent"
TRACESTATE = "tracestate"
HEADER_MAX = 512  # a traceparent is 55 characters; a longer value is not one, and is ignored

_PROPAGATOR = TraceContextTextMapPropagator()


class _HeaderGetter(Getter[Mapping[str, Any]]):
    """Reads trace context from AMQP headers, whose values may be bytes or anything else."""

    def get(self, carrier: Mapping[str, Any], key: str) -> list[str] | None:
        value = carrier.get(key)
        if isinstance(value, bytes | bytearray):
            value = bytes(value).decode("ascii", "replace")
        if not isinstance(value, str) or len(value) > HEADER_MAX or not value.isascii():
            return None
        return [value]

    def keys(self, carrier: Mapping[str, Any]) -> list[str]:
        return [key for key in carrier if isinstance(key, str)]


class _HeaderSetter(Setter[MutableMapping[str, Any]]):
    def set(self, carrier: MutableMapping[str, Any], key: str, value: str) -> None:
        carrier[key] = value


_GETTER = _HeaderGetter()
_SETTER = _HeaderSetter()


def context_of(headers: Mapping[str, Any] | None) -> otel_context.Context | None:
    """The trace context a message carries, or None when it carries none (or a bad one)."""
    if not headers or TRACEPARENT not in headers:
        return None
    ctx = _PROPAGATOR.extract(headers, getter=_GETTER)
    return ctx if trace.get_current_span(ctx).get_span_context().is_valid else None


def trace_id_of(headers: Mapping[str, Any] | None) -> str:
    """The 32-hex-digit trace id a message carries, or "" (for people: `dlq-inspector show`)."""
    ctx = context_of(headers)
    if ctx is None:
        return ""
    return format(trace.get_current_span(ctx).get_span_context().trace_id, "032x")


def inject(headers: MutableMapping[str, Any], span: Span) -> None:
    """Write `span`'s context into `headers` as traceparent (and tracestate when it has one)."""
    _PROPAGATOR.inject(headers, context=trace.set_span_in_context(span), setter=_SETTER)


def link_to(headers: Mapping[str, Any] | None) -> list[Link]:
    """A link to the trace a message carries (a replay's span points at the dead letter's)."""
    ctx = context_of(headers)
    return [Link(trace.get_current_span(ctx).get_span_context())] if ctx is not None else []


def _attributes(operation: str, kind: str, exchange: str, routing_key: str, message_id: str,
                correlation_id: str) -> dict[str, Any]:
    attributes: dict[str, Any] = {
        "messaging.system": SYSTEM,
        "messaging.operation.name": operation,
        "messaging.operation.type": kind,
        "messaging.destination.name": exchange,
    }
    if routing_key:
        attributes["messaging.rabbitmq.destination.routing_key"] = routing_key
    if message_id:
        attributes["messaging.message.id"] = message_id
    if correlation_id:
        attributes["messaging.message.conversation_id"] = correlation_id
    return attributes


class Tracing:
    """One per process: makes the spans of publishes and deliveries, ends with `shutdown()`."""

    def __init__(self, provider: TracerProvider) -> None:
        self.provider = provider
        self.tracer = provider.get_tracer("calc-events")

    @contextmanager
    def publishing(self, exchange: str, routing_key: str, headers: MutableMapping[str, Any], *,
                   message_id: str = "", correlation_id: str = "",
                   parent: otel_context.Context | None = None,
                   links: Sequence[Link] = ()) -> Iterator[Span]:
        """A PRODUCER span around one publish; its context goes into `headers`.

        `parent`: the context to continue (None: the current one, e.g. the delivery's span).
        """
        with self.tracer.start_as_current_span(
                f"publish {exchange}", context=parent, kind=SpanKind.PRODUCER, links=links,
                attributes=_attributes("publish", "send", exchange, routing_key, message_id,
                                       correlation_id)) as span:
            inject(headers, span)
            yield span

    @contextmanager
    def processing(self, queue: str, exchange: str, routing_key: str,
                   headers: Mapping[str, Any] | None, *, message_id: str = "",
                   correlation_id: str = "", delivery_tag: int | None = None) -> Iterator[Span]:
        """A CONSUMER span around the processing of one delivery, child of its publish."""
        attributes = _attributes("process", "process", exchange, routing_key, message_id,
                                 correlation_id)
        attributes["messaging.destination.subscription.name"] = queue
        if delivery_tag is not None:
            attributes["messaging.rabbitmq.message.delivery_tag"] = delivery_tag
        with self.tracer.start_as_current_span(
                f"process {queue}", context=context_of(headers), kind=SpanKind.CONSUMER,
                attributes=attributes, record_exception=False, set_status_on_exception=True) as span:
            yield span

    def shutdown(self) -> None:
        """Export what is buffered, then stop (at service exit)."""
        self.provider.shutdown()


def failed(span: Span, reason: str, detail: str) -> None:
    """Mark `span` as a failure with its FailureReason (the outcome, not an exception)."""
    span.set_attribute("calc.failure_reason", reason)
    span.set_status(Status(StatusCode.ERROR, f"{reason}: {detail}"[:256]))


VERDICT = "calc.verdict"
ATTEMPT = "calc.attempt"
DEAD_LETTERED = "dead-lettered"
"""The event on a delivery's span when it is rejected to the DLQ (through calc.dlx)."""


def verdict(verdict: str, attempt: int | None = None, reason: str = "", detail: str = "",
            error: str = "") -> None:
    """On the current (delivery's) span: what became of this attempt.

    A FailureReason (`reason`) or a transient `error` (a retry) makes the span an error.
    """
    span = trace.get_current_span()
    span.set_attribute(VERDICT, verdict)
    if attempt is not None:
        span.set_attribute(ATTEMPT, attempt)
    if reason:
        failed(span, reason, detail)
    elif error:
        span.set_status(Status(StatusCode.ERROR, error[:256]))


def settled(how: str, dead_letter_exchange: str) -> None:
    """On the current span: a delivery settled other than by an ack; a reject is an event."""
    span = trace.get_current_span()
    span.set_attribute("calc.settlement", how)
    if how == "reject":
        span.add_event(DEAD_LETTERED, {"messaging.operation.name": "reject",
                                       "messaging.rabbitmq.dead_letter_exchange": dead_letter_exchange})


def headers_of(properties: Any) -> MutableMapping[str, Any]:
    """The headers table of AMQP `properties`, made when it has none (for the trace context)."""
    if properties.headers is None:
        properties.headers = {}
    headers: MutableMapping[str, Any] = properties.headers
    return headers


class _TraceIds(logging.Filter):
    """Adds trace_id and span_id to a log line's fields while a span is active."""

    def filter(self, record: logging.LogRecord) -> bool:
        ctx = trace.get_current_span().get_span_context()
        if ctx.is_valid:
            fields = getattr(record, "calc_fields", None)
            ids = {"trace_id": format(ctx.trace_id, "032x"), "span_id": format(ctx.span_id, "016x")}
            record.calc_fields = {**fields, **ids} if isinstance(fields, Mapping) else ids
        return True


def _with_trace_ids() -> None:
    for handler in logging.getLogger().handlers:
        if not any(isinstance(f, _TraceIds) for f in handler.filters):
            handler.addFilter(_TraceIds())


def enabled(env: Mapping[str, str]) -> bool:
    """Tracing is on when an OTLP endpoint is set, and not switched off by the SDK's own variables."""
    if env.get("OTEL_SDK_DISABLED", "").strip().lower() == "true":
        return False
    if env.get("OTEL_TRACES_EXPORTER", "otlp").strip().lower() == "none":
        return False
    return bool(env.get("OTEL_EXPORTER_OTLP_ENDPOINT") or env.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"))


def configure(service: str, *, on: bool, exporter: SpanExporter | None = None,
              batch: bool = True) -> Tracing | None:
    """The process's tracing, or None when off.

    The SDK reads its standard variables itself (OTEL_SERVICE_NAME, OTEL_TRACES_SAMPLER,
    OTEL_EXPORTER_OTLP_*); `service` is the name when OTEL_SERVICE_NAME is not set. `exporter`
    replaces OTLP over HTTP (tests pass an in-memory one, with `batch=False`).
    """
    if not on and exporter is None:
        return None
    if exporter is None:
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
        exporter = OTLPSpanExporter()
    resource = Resource.create()  # OTEL_SERVICE_NAME and OTEL_RESOURCE_ATTRIBUTES win over `service`
    if str(resource.attributes.get("service.name", "")).startswith("unknown_service"):
        resource = resource.merge(Resource({"service.name": service}))
    provider = TracerProvider(resource=resource)
    provider.add_span_processor(BatchSpanProcessor(exporter) if batch else SimpleSpanProcessor(exporter))
    _with_trace_ids()
    return Tracing(provider)


def fresh() -> otel_context.Context:
    """An empty context: the parent of a span that must start a trace of its own (a replay)."""
    return otel_context.Context()
