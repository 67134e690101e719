"""The journal against a real broker and a real PostgreSQL: one row per request, duplicates,
supersede, bad outcomes in the journal DLQ with their reasons, and counts that add up."""

from __future__ import annotations

import asyncio
import datetime as dt
import uuid
from typing import Any

import pika
import pytest
from google.protobuf.timestamp_pb2 import Timestamp

from calculator import Operation
from gen import calc_pb2
from journal import metrics, record
from messaging import codec, topology
from producer.generator import Spec
from tests.chaos.harness import drain
from tests.integration.pipeline import (
    collect,
    pika_params,
    producer,
    publish_raw,
    running_consumer,
    settings_for,
)
from tests.support.journal import journal_rows, running_journal, wait_acked

pytestmark = pytest.mark.database


def _pika_publish(url: str, body: bytes, type_name: str) -> None:
    """A publish without message_id (aiormq would add one to a mandatory publish)."""
    connection = pika.BlockingConnection(pika_params(url))
    try:
        channel = connection.channel()
        channel.confirm_delivery()
        channel.basic_publish(topology.RESULTS_EXCHANGE, "calc.completed.add", body,
                              pika.BasicProperties(type=type_name), mandatory=True)
    finally:
        connection.close()


def _ts(second: int) -> Timestamp:
    ts = Timestamp()
    ts.FromDatetime(dt.datetime(2026, 1, 1, 0, 0, second, tzinfo=dt.UTC))
    return ts


async def _completed(url: str, request_id: str, second: int, result: float = 3.0,
                     event_id: str | None = None, by: str = "c-1") -> str:
    event = calc_pb2.CalculationCompleted(
        event_id=event_id or str(uuid.uuid4()), request_event_id=request_id, occurred_at=_ts(second),
        operation=calc_pb2.OPERATION_ADD, operands=[1.0, 2.0], result=result, processed_by=by)
    await publish_raw(url, event.SerializeToString(), "calc.completed.add", topology.RESULTS_EXCHANGE,
                      type=codec.TYPE_COMPLETED, content_type=codec.CONTENT_TYPE,
                      message_id=event.event_id, correlation_id=f"corr-{request_id}")
    return event.event_id


async def _failed(url: str, request_id: str, second: int, reason: int, detail: str = "x",
                  attempts: int = 1) -> str:
    event = calc_pb2.CalculationFailed(
        event_id=str(uuid.uuid4()), request_event_id=request_id, occurred_at=_ts(second),
        operation=calc_pb2.OPERATION_ADD, reason=reason,  # type: ignore[arg-type]
        detail=detail, attempts=attempts, processed_by="c-1")
    await publish_raw(url, event.SerializeToString(), "calc.failed.add", topology.RESULTS_EXCHANGE,
                      type=codec.TYPE_FAILED, content_type=codec.CONTENT_TYPE,
                      message_id=event.event_id, correlation_id=f"corr-{request_id}")
    return event.event_id


async def test_one_row_per_request_with_the_consumers_outcome(vhost_url: str, database_url: str) -> None:
    settings = settings_for(vhost_url, database_url=database_url, journal_batch=50)
    specs = [Spec(Operation.ADD, (2.0, float(i))) for i in range(120)] + [
        Spec(Operation.DIVIDE, (1.0, 0.0)) for _ in range(30)]
    async with running_journal(settings) as journal, running_consumer(settings), producer(settings) as p:
        sent = {await p.send(spec, quiet=True): spec for spec in specs}
        await wait_acked(journal, len(sent))
    rows = journal_rows(database_url)
    rows.assert_exactly_once(sent)
    for request_id, spec in sent.items():
        row = rows.rows[request_id]
        assert row["outcomes"] == 1 and row["correlation_id"] == request_id
        if spec.operation is Operation.DIVIDE:
            assert (row["status"], row["reason"], row["operands"]) == ("failed", "DIVISION_BY_ZERO", None)
        else:
            assert (row["status"], row["result"]) == ("completed", 2.0 + spec.operands[1])
            assert row["operation"] == "add" and row["operands"] == list(spec.operands)
        assert row["processed_by"] == settings.instance_id and row["attempts"] == 1
    # the audit queue saw exactly the same outcomes: the journal missed none
    audit = await collect(vhost_url, topology.AUDIT_QUEUE, len(sent))
    assert {e.request_event_id for e in audit.completed() + audit.failed()} == set(rows.rows)


async def test_duplicates_are_counted_and_redeliveries_are_not(vhost_url: str, database_url: str) -> None:
    settings = settings_for(vhost_url, database_url=database_url)
    seen_before = metrics.OUTCOMES.labels("seen_again")._value.get()
    async with running_journal(settings) as journal:
        first = await _completed(vhost_url, "req-a", 1, by="c-1")
        await _completed(vhost_url, "req-a", 2, by="c-2")  # a second consumer did it again
        await _completed(vhost_url, "req-a", 1, event_id=first)  # the same event delivered again
        await _completed(vhost_url, "req-b", 1)
        await wait_acked(journal, 4)
    rows = journal_rows(database_url)
    assert set(rows.rows) == {"req-a", "req-b"}
    a = rows.rows["req-a"]
    assert (a["outcomes"], a["processed_by"], a["outcome_event_id"]) == (2, "c-1", first)
    assert a["first_outcome_at"] < a["last_outcome_at"]
    assert rows.duplicates == 1
    assert metrics.OUTCOMES.labels("seen_again")._value.get() - seen_before == 1


@pytest.mark.parametrize("order", ["failure-first", "completion-first"])
async def test_a_completion_supersedes_a_failure_whatever_the_order(
        vhost_url: str, database_url: str, order: str) -> None:
    settings = settings_for(vhost_url, database_url=database_url, journal_batch=1)
    exhausted = calc_pb2.FAILURE_REASON_RETRIES_EXHAUSTED
    async with running_journal(settings) as journal:
        if order == "failure-first":  # exhausted, then replayed from the DLQ and completed
            await _failed(vhost_url, "req", 1, exhausted, "gave up after 4 attempts", attempts=4)
            completion = await _completed(vhost_url, "req", 5, result=7.0)
        else:  # a redelivered copy gave up after another consumer had completed it
            completion = await _completed(vhost_url, "req", 1, result=7.0)
            await _failed(vhost_url, "req", 5, exhausted, attempts=4)
        await wait_acked(journal, 2)
    row = journal_rows(database_url).rows["req"]
    assert (row["status"], row["result"], row["reason"], row["outcome_event_id"]) == (
        "completed", 7.0, None, completion)
    assert (row["outcomes"], row["failures"]) == (2, 1)


async def test_the_latest_failure_is_the_one_shown(vhost_url: str, database_url: str) -> None:
    settings = settings_for(vhost_url, database_url=database_url)
    async with running_journal(settings) as journal:
        # arrival order is not occurred_at order: the rule looks at occurred_at
        await _failed(vhost_url, "req", 9, calc_pb2.FAILURE_REASON_DIVISION_BY_ZERO, "division by zero")
        await _failed(vhost_url, "req", 3, calc_pb2.FAILURE_REASON_RETRIES_EXHAUSTED, "gave up", 4)
        await wait_acked(journal, 2)
    row = journal_rows(database_url).rows["req"]
    assert (row["status"], row["reason"], row["detail"], row["failures"]) == (
        "failed", "DIVISION_BY_ZERO", "division by zero", 2)


async def test_bad_outcomes_go_to_the_journal_dlq_with_their_reason(
        vhost_url: str, database_url: str) -> None:
    settings = settings_for(vhost_url, database_url=database_url)
    before = {reason: metrics.DEAD_LETTERED.labels(reason)._value.get() for reason in record.REASONS}
    no_request = calc_pb2.CalculationFailed(event_id="f-1", reason=calc_pb2.FAILURE_REASON_MALFORMED_MESSAGE)
    no_event = calc_pb2.CalculationCompleted(request_event_id="req-x", result=1.0)
    nul = calc_pb2.CalculationCompleted(event_id="e-nul", request_event_id="req\x00nul", result=1.0)
    bad: list[tuple[bytes, dict[str, Any], str]] = [
        (b"\xff\xfe not protobuf", {"type": codec.TYPE_COMPLETED}, record.UNDECODABLE),
        (b"", {"type": "calc.v1.Something"}, record.UNEXPECTED_TYPE),
        (b"", {"type": codec.TYPE_COMPLETED, "content_type": "text/plain"}, record.UNEXPECTED_TYPE),
        (no_request.SerializeToString(), {"type": codec.TYPE_FAILED}, record.NO_REQUEST),
        # (aiormq gives every mandatory publish a message_id: this one comes from pika)
        (no_event.SerializeToString(), {"type": codec.TYPE_COMPLETED, "pika": True}, record.NO_EVENT_ID),
        (nul.SerializeToString(), {"type": codec.TYPE_COMPLETED}, record.UNSTORABLE),
    ]
    async with running_journal(settings) as journal:
        for body, props, _ in bad:
            if props.pop("pika", False):
                await asyncio.to_thread(_pika_publish, vhost_url, body, str(props["type"]))
            else:
                await publish_raw(vhost_url, body, "calc.completed.add", topology.RESULTS_EXCHANGE, **props)
        good = await _completed(vhost_url, "req-good", 1)
        await wait_acked(journal, len(bad) + 1)
    letters = await drain(vhost_url, topology.JOURNAL_DLQ)
    reasons = sorted(str(m.headers["reason"]) for m in letters)
    assert reasons == sorted(reason for _, _, reason in bad)
    assert all(m.headers["detail"] for m in letters)
    assert sorted(m.body for m in letters) == sorted(body for body, _, _ in bad)  # byte for byte
    rows = journal_rows(database_url)
    assert list(rows.rows) == ["req-good"] and rows.rows["req-good"]["outcome_event_id"] == good
    counted = {r: metrics.DEAD_LETTERED.labels(r)._value.get() - before[r] for r in record.REASONS}
    assert sum(counted.values()) == len(bad) == len(letters)
    assert counted[record.UNEXPECTED_TYPE] == 2 and counted[record.REFUSED] == 0
