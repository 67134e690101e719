"""Reasons of dead letters, re-derived from bodies and `x-death` without a broker."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from calculator import Operation
from dlq_inspector.explain import REASONS, explain, parse_reason
from dlq_inspector.letters import DeadLetter, from_record, parse_deaths, to_record
from messaging import codec

MAX_BYTES = 65_536
MAX_ATTEMPTS = 4
T0 = datetime(2026, 1, 1, 12, 0, tzinfo=UTC)


def death(reason: str, queue: str = "calc.work.basic", key: str = "calc.requested.divide",
          at: datetime = T0, exchange: str = "calc.requests", **extra: Any) -> dict[str, Any]:
    return {"count": 1, "reason": reason, "queue": queue, "time": at, "exchange": exchange,
            "routing-keys": [key], **extra}


def letter(operation: Operation | int, operands: list[float], deaths: list[dict[str, Any]] | None = None,
           attempt: int = 1, key: str | None = None, properties: dict[str, Any] | None = None
           ) -> DeadLetter:
    request = codec.build_request(operation, operands, "unit", event_id="e-1")
    word = operation.word if isinstance(operation, Operation) else "add"
    props = {"content_type": codec.CONTENT_TYPE, "type": codec.TYPE_REQUESTED, "message_id": "e-1",
             "correlation_id": "c-1", "app_id": codec.APP_PRODUCER, **(properties or {})}
    headers: dict[str, Any] = {"attempt": attempt}
    if deaths is not None:
        headers["x-death"] = deaths
    return DeadLetter(request.SerializeToString(), key or f"calc.requested.{word}", "calc.dlx",
                      props, headers)


@pytest.mark.parametrize(("operation", "operands", "reason"), [
    (Operation.DIVIDE, [1.0, 0.0], "DIVISION_BY_ZERO"),
    (Operation.MODULO, [1.0, 0.0], "DIVISION_BY_ZERO"),
    (Operation.SQRT, [-1.0], "DOMAIN_ERROR"),
    (Operation.FACTORIAL, [2.5], "DOMAIN_ERROR"),
    (Operation.POWER, [10.0, 400.0], "OVERFLOW"),
    (Operation.ADD, [1.0], "INVALID_ARGUMENTS"),
    (Operation.ADD, [float("nan"), 1.0], "INVALID_ARGUMENTS"),
    (0, [1.0, 2.0], "UNKNOWN_OPERATION"),
    (99, [1.0, 2.0], "UNKNOWN_OPERATION"),
])
def test_rejected_requests_get_the_consumers_verdict(operation: Operation | int, operands: list[float],
                                                     reason: str) -> None:
    word = operation.word if isinstance(operation, Operation) else "add"
    explained = explain(letter(operation, operands, [death("rejected", key=f"calc.requested.{word}")]),
                        MAX_BYTES, MAX_ATTEMPTS)
    assert explained.reason == reason
    assert explained.event_id == "e-1" and explained.correlation_id == "c-1"
    assert explained.attempts == 1
    assert explained.died_in == "calc.work.basic"
    assert explained.last_death == explained.first_death == T0


def test_a_computable_request_that_was_rejected_ran_out_of_retries() -> None:
    deaths = [death("rejected", key="calc.requested.add", at=T0 + timedelta(seconds=9)),
              death("expired", queue="calc.retry.3", exchange="calc.retry.3", key="calc.requested.add",
                    at=T0 + timedelta(seconds=5), **{"original-expiration": "4000"})]
    explained = explain(letter(Operation.ADD, [1.0, 2.0], deaths, attempt=4), MAX_BYTES, MAX_ATTEMPTS)
    assert explained.reason == "RETRIES_EXHAUSTED"
    assert explained.attempts == 4
    assert "gave up after 4 attempts" in explained.detail and "3.0" in explained.detail
    assert explained.first_death == T0 + timedelta(seconds=5)
    assert explained.last_death == T0 + timedelta(seconds=9)
    assert explained.original_routing_key == "calc.requested.add"


def test_a_permanent_failure_that_was_retried_to_the_limit_is_retries_exhausted() -> None:
    retried = [death("rejected"), death("expired", queue="calc.retry.3", exchange="calc.retry.3")]
    at_limit = explain(letter(Operation.DIVIDE, [1.0, 0.0], retried, attempt=4), MAX_BYTES, MAX_ATTEMPTS)
    assert at_limit.reason == "RETRIES_EXHAUSTED"
    assert "DIVISION_BY_ZERO" in at_limit.detail
    # retried, then failed permanently before the limit: the consumer published DIVISION_BY_ZERO
    before = explain(letter(Operation.DIVIDE, [1.0, 0.0], retried, attempt=2), MAX_BYTES, MAX_ATTEMPTS)
    assert before.reason == "DIVISION_BY_ZERO"
    # never retried, even with a high attempt header: the verdict stands
    forged = explain(letter(Operation.DIVIDE, [1.0, 0.0], [death("rejected")], attempt=9),
                     MAX_BYTES, MAX_ATTEMPTS)
    assert forged.reason == "DIVISION_BY_ZERO"


@pytest.mark.parametrize(("x_reason", "reason", "words"), [
    ("expired", "EXPIRED", "expired"),
    ("maxlen", "MAXLEN", "length limit"),
    ("delivery_limit", "DELIVERY_LIMIT", "delivery limit"),
])
def test_broker_deaths_are_named_after_the_x_death_reason(x_reason: str, reason: str, words: str) -> None:
    explained = explain(letter(Operation.DIVIDE, [4.0, 2.0], [death(x_reason)]), MAX_BYTES, MAX_ATTEMPTS)
    assert explained.reason == reason
    assert words in explained.detail and "calc.work.basic" in explained.detail
    assert "would complete" in explained.detail
    failing = explain(letter(Operation.DIVIDE, [4.0, 0.0], [death(x_reason)]), MAX_BYTES, MAX_ATTEMPTS)
    assert failing.reason == reason and "would fail with DIVISION_BY_ZERO" in failing.detail


def test_an_unknown_broker_reason_is_reported_as_it_is() -> None:
    explained = explain(letter(Operation.ADD, [1.0, 2.0], [death("some_new_reason")]),
                        MAX_BYTES, MAX_ATTEMPTS)
    assert explained.reason == "SOME_NEW_REASON"


def test_undecodable_bodies_are_malformed_and_keep_their_message_id() -> None:
    garbage = DeadLetter(b"\xff\x00 garbage", "calc.requested.add", "calc.dlx", {"message_id": "m-9"},
                         {"x-death": [death("rejected", key="calc.requested.add")]})
    explained = explain(garbage, MAX_BYTES, MAX_ATTEMPTS)
    assert explained.reason == "MALFORMED_MESSAGE"
    assert explained.event_id == "m-9" and explained.correlation_id == "m-9"
    assert explained.operation == "undecodable" and explained.operation_group == "undecodable"
    assert explained.request is None and explained.operands == ()


@pytest.mark.parametrize(("change", "detail"), [
    ({"content_type": "application/json"}, "content type"),
    ({"type": "calc.v1.Other"}, "type"),
    ({"key": "calc.requested.add"}, "routing key"),
])
def test_malformed_by_properties_or_key_keeps_the_request(change: dict[str, str], detail: str) -> None:
    key = change.pop("key", "calc.requested.divide")
    explained = explain(letter(Operation.DIVIDE, [1.0, 2.0], [death("rejected", key=key)], properties=change),
                        MAX_BYTES, MAX_ATTEMPTS)
    assert explained.reason == "MALFORMED_MESSAGE" and detail in explained.detail
    assert explained.request is not None and explained.operation == "divide"


def test_too_large_body_is_malformed_but_still_shown() -> None:
    explained = explain(letter(Operation.ADD, [1.0] * 50, [death("rejected", key="calc.requested.add")]),
                        100, MAX_ATTEMPTS)
    assert explained.reason == "MALFORMED_MESSAGE" and "exceeds the limit" in explained.detail
    assert explained.event_id == "e-1"


def test_no_x_death_is_judged_as_a_rejection() -> None:
    explained = explain(letter(Operation.SQRT, [-9.0]), MAX_BYTES, MAX_ATTEMPTS)
    assert explained.reason == "DOMAIN_ERROR"
    assert explained.last_death is None and explained.died_in == ""
    assert explained.original_routing_key == "calc.requested.sqrt"


def test_original_routing_key_is_the_first_deaths() -> None:
    deaths = [death("rejected", key="calc.requested.later"), death("expired", key="calc.requested.first")]
    explained = explain(letter(Operation.ADD, [1.0, 2.0], deaths), MAX_BYTES, MAX_ATTEMPTS)
    assert explained.original_routing_key == "calc.requested.first"


def test_unknown_operations_group_as_unknown() -> None:
    explained = explain(letter(42, [1.0, 2.0], [death("rejected", key="calc.requested.add")]),
                        MAX_BYTES, MAX_ATTEMPTS)
    assert explained.operation == "operation 42" and explained.operation_group == "unknown"


@pytest.mark.parametrize("text", ["division_by_zero", "DIVISION_BY_ZERO", "FAILURE_REASON_DIVISION_BY_ZERO",
                                  " division-by-zero "])
def test_parse_reason_accepts_every_spelling(text: str) -> None:
    assert parse_reason(text) == "DIVISION_BY_ZERO"


def test_parse_reason_lists_the_valid_ones() -> None:
    assert parse_reason("delivery-limit") == "DELIVERY_LIMIT"
    with pytest.raises(ValueError, match="unknown reason 'nope'; expected one of DIVISION_BY_ZERO") as info:
        parse_reason("nope")
    assert all(reason in str(info.value) for reason in REASONS)
    assert "UNSPECIFIED" not in REASONS


def test_x_death_parsing_skips_junk() -> None:
    assert parse_deaths("not a list") == ()
    parsed = parse_deaths([1, {"reason": b"rejected", "queue": "q", "count": "x", "routing-keys": "k",
                               "time": 1_700_000_000}])
    assert len(parsed) == 1
    assert parsed[0].reason == "rejected" and parsed[0].count == 1 and parsed[0].routing_keys == ()
    assert parsed[0].time == datetime.fromtimestamp(1_700_000_000, UTC)


def test_export_records_round_trip_byte_for_byte() -> None:
    original = letter(Operation.DIVIDE, [1.0, 0.0], [death("rejected")], properties={"timestamp": T0})
    original = DeadLetter(original.body, original.routing_key, original.exchange, original.properties,
                          {**original.headers, "blob": b"\x00\x01", "x-first-death-reason": "rejected"}, 7)
    rebuilt = from_record(to_record(original))
    assert rebuilt == original
    assert explain(rebuilt, MAX_BYTES, MAX_ATTEMPTS).summary() == explain(
        original, MAX_BYTES, MAX_ATTEMPTS).summary()
