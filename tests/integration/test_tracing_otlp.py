"""The real services as processes, exporting real OTLP/HTTP to a receiver: the wire format and the
parent, child and link structure of a completed, a retried-then-completed, a dead-lettered request
and its replay."""

from __future__ import annotations

import json
import subprocess
import time
from pathlib import Path

from opentelemetry.proto.trace.v1 import trace_pb2

from tests.integration.pipeline import BIN, ROOT, service_env, start_process, stop_process, wait_for_line
from tests.support.otlp import OtlpReceiver, ReceivedSpan

PRODUCER = trace_pb2.Span.SPAN_KIND_PRODUCER
CONSUMER = trace_pb2.Span.SPAN_KIND_CONSUMER
ERROR = trace_pb2.Status.STATUS_CODE_ERROR
UNSET = trace_pb2.Status.STATUS_CODE_UNSET


def run(url: str, otlp: OtlpReceiver, *args: str) -> subprocess.CompletedProcess[str]:
    done = subprocess.run([str(BIN / args[0]), *args[1:]], env=env(url, otlp), cwd=ROOT, capture_output=True,
                          text=True, timeout=120, stdin=subprocess.DEVNULL, check=False)
    assert done.returncode == 0, done.stderr
    return done


def env(url: str, otlp: OtlpReceiver, **extra: str) -> dict[str, str]:
    # a retry waits 3 s: time for the faulty consumer to stop before the copy is due again
    return service_env(url, OTEL_EXPORTER_OTLP_ENDPOINT=otlp.endpoint, OTEL_BSP_SCHEDULE_DELAY="200",
                       CALC_RETRY_BASE_DELAY="3", CALC_RETRY_MAX_DELAY="3", CALC_MAX_ATTEMPTS="2",
                       CALC_QUEUES="basic", **extra)


def trace(spans: list[ReceivedSpan], trace_id: str) -> list[ReceivedSpan]:
    return [s for s in spans if s.trace_id == trace_id]


def root_of(spans: list[ReceivedSpan], event_id: str, linked: bool = False) -> ReceivedSpan:
    roots = [s for s in spans if not s.parent_span_id and s.attributes.get("messaging.message.id") == event_id
             and bool(s.links) == linked]
    assert len(roots) == 1, roots
    return roots[0]


def chain(spans: list[ReceivedSpan], root: ReceivedSpan) -> list[ReceivedSpan]:
    """The trace of `root` as a chain: each span the only child of the one before; every span in it."""
    of_trace = trace(spans, root.trace_id)
    out = [root]
    while True:
        children = [s for s in of_trace if s.parent_span_id == out[-1].span_id]
        assert len(children) <= 1, children
        if not children:
            break
        out.append(children[0])
    assert len(out) == len(of_trace), [s.name for s in of_trace]
    return out


def shape(spans: list[ReceivedSpan]) -> list[tuple[str, str, int]]:
    return [(s.service, s.name, s.kind) for s in spans]


def test_real_otlp_from_every_service(vhost_url: str, tmp_path: Path) -> None:
    with OtlpReceiver() as otlp:
        faulty_log, consumer_log = tmp_path / "faulty.log", tmp_path / "consumer.log"
        faulty = start_process(["calc-consumer"], env(vhost_url, otlp, CALC_FAULT_RATE="1"), faulty_log)
        try:
            wait_for_line(faulty_log, "consuming", 60)
            flaky = run(vhost_url, otlp, "calc-producer", "send", "multiply", "6", "7").stdout.strip()
            wait_for_line(faulty_log, "retry scheduled", 30)
        finally:
            assert stop_process(faulty) == 0
        consumer = start_process(["calc-consumer"], env(vhost_url, otlp), consumer_log)
        try:
            wait_for_line(consumer_log, "consuming", 60)
            done = run(vhost_url, otlp, "calc-producer", "send", "add", "1", "2").stdout.strip()
            dead = run(vhost_url, otlp, "calc-producer", "send", "divide", "1", "0").stdout.strip()
            wait_for_line(consumer_log, "failed", 30)
            shown = _show(vhost_url, otlp, dead)
            run(vhost_url, otlp, "dlq-inspector", "replay", "--id", dead, "--yes")
            otlp.wait_for(3 + 5 + 3 + 3, timeout=60)
            time.sleep(1.0)  # nothing more may arrive
        finally:
            assert stop_process(consumer) == 0
        spans = list(otlp.spans)
    assert len(spans) == 14, [s.name for s in spans]

    completed = chain(spans, root_of(spans, done))
    assert shape(completed) == [("calc-producer", "publish calc.requests", PRODUCER),
                                ("calc-consumer", "process calc.work.basic", CONSUMER),
                                ("calc-consumer", "publish calc.results", PRODUCER)]
    assert completed[1].attributes["calc.verdict"] == "completed"
    assert completed[1].attributes["messaging.system"] == "rabbitmq"

    retried = chain(spans, root_of(spans, flaky))
    assert [s.name for s in retried] == ["publish calc.requests", "process calc.work.basic",
                                         "publish calc.retry.1", "process calc.work.basic",
                                         "publish calc.results"]
    assert (retried[1].attributes["calc.verdict"], retried[1].attributes["calc.attempt"]) == ("retry", 1)
    assert (retried[3].attributes["calc.verdict"], retried[3].attributes["calc.attempt"]) == ("completed", 2)
    assert (retried[1].status_code, retried[3].status_code) == (ERROR, UNSET)

    failed = chain(spans, root_of(spans, dead))
    assert [s.name for s in failed] == [
        "publish calc.requests", "process calc.work.basic", "publish calc.results"]
    assert failed[1].attributes["calc.failure_reason"] == "DIVISION_BY_ZERO"
    assert failed[1].status_code == ERROR and failed[1].events == ("dead-lettered",)
    assert shown == failed[0].trace_id  # `dlq-inspector show --json` names the dead letter's trace

    replay = chain(spans, root_of(spans, dead, linked=True))
    assert shape(replay) == [("calc-dlq-inspector", "publish calc.requests", PRODUCER),
                             ("calc-consumer", "process calc.work.basic", CONSUMER),
                             ("calc-consumer", "publish calc.results", PRODUCER)]
    assert replay[0].trace_id != failed[0].trace_id
    assert replay[0].links == ((failed[0].trace_id, failed[0].span_id),)
    assert replay[1].events == ("dead-lettered",)

    # the consumer's log line about the request names its trace and the span it was written in
    line, = (line for line in consumer_log.read_text().splitlines()
             if " completed " in line and f"event_id={done}" in line)
    assert f"trace_id={completed[0].trace_id}" in line and f"span_id={completed[1].span_id}" in line


def _show(url: str, otlp: OtlpReceiver, event_id: str) -> str:
    """`dlq-inspector show ID --json`'s trace_id, once the dead letter is in calc.dlq."""
    deadline = time.monotonic() + 30
    while True:
        done = subprocess.run([str(BIN / "dlq-inspector"), "show", event_id, "--json"], env=env(url, otlp),
                              cwd=ROOT, capture_output=True, text=True, timeout=60, check=False)
        if done.returncode == 0:
            trace_id = json.loads(done.stdout)["trace_id"]
            assert isinstance(trace_id, str)
            return trace_id
        assert time.monotonic() < deadline, done.stderr
        time.sleep(0.3)
