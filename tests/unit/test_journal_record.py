"""What the journal makes of one outcome delivery: its row, or the reason it goes to the journal DLQ."""

from __future__ import annotations

import math
from dataclasses import replace
from datetime import UTC, datetime

import pytest

from gen import calc_pb2
from journal import record, render
from journal.health import Health
from journal.schema import LATEST, MIGRATIONS
from messaging import codec


def _incoming(event: object, type_name: str = codec.TYPE_COMPLETED, **kw: object) -> codec.Incoming:
    body = event.SerializeToString() if hasattr(event, "SerializeToString") else event
    return codec.Incoming(body=body, routing_key="calc.completed.add", type=type_name,  # type: ignore[arg-type]
                          content_type=codec.CONTENT_TYPE, correlation_id="corr", **kw)  # type: ignore[arg-type]


def test_a_completion_becomes_its_row() -> None:
    event = calc_pb2.CalculationCompleted(event_id="e", request_event_id="r", result=3.5,
                                          operation=calc_pb2.OPERATION_DIVIDE, operands=[7.0, 2.0],
                                          processed_by="c-1")
    event.occurred_at.FromSeconds(1_700_000_000)
    row = record.read(_incoming(event, headers={"attempt": 3}))
    assert isinstance(row, record.Outcome)
    assert (row.request_event_id, row.event_id, row.status, row.operation, row.operands, row.result) == (
        "r", "e", "completed", "divide", [7.0, 2.0], 3.5)
    assert (row.attempts, row.correlation_id, row.processed_by) == (3, "corr", "c-1")
    assert row.occurred_at == datetime.fromtimestamp(1_700_000_000, UTC)


def test_a_failure_becomes_its_row_without_operands() -> None:
    event = calc_pb2.CalculationFailed(event_id="e", request_event_id="r", operation=calc_pb2.OPERATION_SQRT,
                                       reason=calc_pb2.FAILURE_REASON_DOMAIN_ERROR, detail="sqrt\x00(-1)",
                                       attempts=2)
    row = record.read(_incoming(event, codec.TYPE_FAILED))
    assert isinstance(row, record.Outcome)
    assert (row.status, row.reason, row.detail, row.attempts, row.operands, row.result) == (
        "failed", "DOMAIN_ERROR", "sqrt\\x00(-1)", 2, None, None)


@pytest.mark.parametrize(("body", "type_name", "extra", "reason"), [
    (b"\xff\xff", codec.TYPE_COMPLETED, {}, record.UNDECODABLE),
    (b"", "calc.v1.CalculationRequested", {}, record.UNEXPECTED_TYPE),
    (b"", None, {}, record.UNEXPECTED_TYPE),
    (b"", codec.TYPE_COMPLETED, {"content_type": "application/json"}, record.UNEXPECTED_TYPE),
    (calc_pb2.CalculationFailed(event_id="e"), codec.TYPE_FAILED, {}, record.NO_REQUEST),
    (calc_pb2.CalculationCompleted(request_event_id="r"), codec.TYPE_COMPLETED, {}, record.NO_EVENT_ID),
    (calc_pb2.CalculationCompleted(request_event_id="r" * 256, event_id="e"), codec.TYPE_COMPLETED, {},
     record.UNSTORABLE),
    (calc_pb2.CalculationCompleted(request_event_id="r", event_id="e\x00"), codec.TYPE_COMPLETED, {},
     record.UNSTORABLE),
])
def test_what_cannot_be_recorded_says_why(body: object, type_name: str | None, extra: dict[str, str],
                                          reason: str) -> None:
    incoming = replace(_incoming(body, type_name), **extra)  # type: ignore[arg-type]
    rejected = record.read(incoming)
    assert isinstance(rejected, record.Rejected)
    assert rejected.reason == reason and rejected.reason in record.REASONS and rejected.detail


def test_message_id_stands_in_for_a_missing_event_id() -> None:
    row = record.read(_incoming(calc_pb2.CalculationCompleted(request_event_id="r"), message_id="m"))
    assert isinstance(row, record.Outcome) and row.event_id == "m"


def test_migrations_are_numbered_one_by_one() -> None:
    assert [m.version for m in MIGRATIONS] == list(range(1, LATEST + 1))


def test_json_has_no_nan_and_iso_times() -> None:
    data = render.jsonable({"t": datetime(2026, 1, 1, tzinfo=UTC), "x": [math.inf, math.nan, 1.5]})
    assert data == {"t": "2026-01-01T00:00:00+00:00", "x": ["inf", "nan", 1.5]}
    assert render.lookup_json("k", []) == {"id": "k", "status": "pending", "results": []}
    assert "pending" in render.lookup_text("k", [])


def test_health_live_needs_a_recent_beat_and_ready_needs_all_three() -> None:
    health = Health()
    assert health.live(now=5.0) == (False, "not started")
    health.beat = 100.0
    assert health.live(now=105.0)[0] and not health.live(now=111.0)[0]
    health.broker = health.consuming = True
    health.error = "the database is read-only"
    assert health.ready() == (False, "not database: the database is read-only")
    health.database = True
    assert health.ready() == (True, "ok")


def test_a_forged_attempt_past_postgresql_integer_is_kept_at_its_ceiling() -> None:
    event = calc_pb2.CalculationCompleted(event_id="e", request_event_id="r")
    row = record.read(_incoming(event, headers={"attempt": 4_000_000_000}))
    assert isinstance(row, record.Outcome) and row.attempts == record.ATTEMPTS_MAX
