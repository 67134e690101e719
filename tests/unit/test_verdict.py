"""The consumer's verdict on a delivery, in the contract's order of reasons (no broker)."""

from __future__ import annotations

import pytest

from calculator import Operation
from gen import calc_pb2
from messaging import codec
from messaging.verdict import evaluate

R = calc_pb2


def _incoming(request: codec.Requested | None = None, body: bytes | None = None,
              routing_key: str | None = None, **props: object) -> codec.Incoming:
    if body is None:
        assert request is not None
        body = request.SerializeToString()
    if routing_key is None and request is not None:
        routing_key = "calc.requested." + codec.operation_label(int(request.operation))
    return codec.Incoming(body=body, routing_key=routing_key or "", **props)  # type: ignore[arg-type]


def _request(op: Operation | int, *operands: float, event_id: str = "e-1") -> codec.Requested:
    return codec.build_request(op, operands, "test", event_id=event_id)


def test_completed_with_result_and_default_correlation() -> None:
    outcome = evaluate(_incoming(_request(Operation.ADD, 2, 3)), 1024)
    assert outcome.ok and outcome.result == 5.0
    assert outcome.event_id == "e-1" and outcome.correlation_id == "e-1" and outcome.word == "add"


def test_correlation_id_is_carried() -> None:
    outcome = evaluate(_incoming(_request(Operation.ADD, 2, 3), correlation_id="c-9"), 1024)
    assert outcome.correlation_id == "c-9"


@pytest.mark.parametrize(("op", "operands", "reason"), [
    (Operation.DIVIDE, (1, 0), R.FAILURE_REASON_DIVISION_BY_ZERO),
    (Operation.SQRT, (-1,), R.FAILURE_REASON_DOMAIN_ERROR),
    (Operation.FACTORIAL, (171,), R.FAILURE_REASON_OVERFLOW),
    (Operation.ADD, (1,), R.FAILURE_REASON_INVALID_ARGUMENTS),
    (Operation.ADD, (float("nan"), 1), R.FAILURE_REASON_INVALID_ARGUMENTS),
])
def test_calculation_failures(op: Operation, operands: tuple[float, ...], reason: int) -> None:
    outcome = evaluate(_incoming(_request(op, *operands)), 1024)
    assert outcome.reason == reason and outcome.event_id == "e-1" and outcome.detail


def test_unknown_operation_before_routing_key() -> None:
    request = _request(99, 1, 2)
    outcome = evaluate(_incoming(request, routing_key="calc.requested.add"), 1024)
    assert outcome.reason == R.FAILURE_REASON_UNKNOWN_OPERATION
    assert outcome.operation == 99 and outcome.word == "add"
    unspecified = evaluate(_incoming(_request(0, 1, 2), routing_key="calc.requested.add"), 1024)
    assert unspecified.reason == R.FAILURE_REASON_UNKNOWN_OPERATION


def test_routing_key_disagreeing_with_body_is_malformed() -> None:
    outcome = evaluate(_incoming(_request(Operation.ADD, 1, 2), routing_key="calc.requested.divide"), 1024)
    assert outcome.reason == R.FAILURE_REASON_MALFORMED_MESSAGE
    assert outcome.event_id == "e-1" and outcome.word == "divide"


def test_undecodable_body_has_no_request_event_id() -> None:
    outcome = evaluate(_incoming(body=b"\xff\xff\xff\xff", routing_key="calc.requested.add",
                                 correlation_id="c-1"), 1024)
    assert outcome.reason == R.FAILURE_REASON_MALFORMED_MESSAGE
    assert outcome.event_id == "" and outcome.correlation_id == "c-1" and outcome.word == "add"


def test_missing_event_id_is_malformed() -> None:
    request = _request(Operation.ADD, 1, 2)
    request.event_id = ""
    outcome = evaluate(_incoming(request), 1024)
    assert outcome.reason == R.FAILURE_REASON_MALFORMED_MESSAGE and "event_id" in outcome.detail


@pytest.mark.parametrize("props", [
    {"type": "calc.v1.CalculationCompleted"},
    {"content_type": "application/json"},
])
def test_wrong_type_or_content_type_is_malformed_but_keeps_the_id(props: dict[str, str]) -> None:
    outcome = evaluate(_incoming(_request(Operation.ADD, 1, 2), **props), 1024)
    assert outcome.reason == R.FAILURE_REASON_MALFORMED_MESSAGE and outcome.event_id == "e-1"


@pytest.mark.parametrize("props", [
    {},
    {"type": codec.TYPE_REQUESTED, "content_type": codec.CONTENT_TYPE},
    {"type": "", "content_type": ""},
])
def test_absent_or_exact_properties_are_accepted(props: dict[str, str]) -> None:
    assert evaluate(_incoming(_request(Operation.ADD, 1, 2), **props), 1024).ok


def test_oversized_body_is_malformed() -> None:
    request = _request(Operation.ADD, *([1.0] * 100))
    outcome = evaluate(_incoming(request), 64)
    assert outcome.reason == R.FAILURE_REASON_MALFORMED_MESSAGE and "exceeds" in outcome.detail


def test_unknown_fields_are_ignored() -> None:
    body = _request(Operation.ADD, 1, 2).SerializeToString() + b"\xa0\x06\x01"  # field 100, varint
    assert evaluate(_incoming(body=body, routing_key="calc.requested.add"), 1024).result == 3.0


@pytest.mark.parametrize(("headers", "attempt"), [
    ({}, 1), ({"attempt": 3}, 3), ({"attempt": b"2"}, 2), ({"attempt": "x"}, 1), ({"attempt": 0}, 1),
    ({"attempt": 2**40}, 2**32 - 1), ({"attempt": float("inf")}, 1), ({"attempt": 1.5}, 1),
])
def test_attempt_header(headers: dict[str, object], attempt: int) -> None:
    assert codec.Incoming(body=b"", routing_key="", headers=headers).attempt == attempt


from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

_header_values = st.one_of(st.none(), st.integers(), st.floats(), st.text(max_size=5),
                           st.binary(max_size=5), st.booleans())


@settings(max_examples=3000, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(body=st.one_of(st.binary(max_size=200),
                      st.builds(lambda op, xs, eid: codec.build_request(op, xs, "h", event_id=eid)
                                .SerializeToString(),
                                st.integers(-(2**31), 2**31 - 1),
                                st.lists(st.floats(), max_size=5), st.text(max_size=8))),
       routing_key=st.one_of(st.sampled_from(["calc.requested.add", "calc.requested.sqrt", "", "x"]),
                             st.text(max_size=20)),
       content_type=st.one_of(st.none(), st.sampled_from([codec.CONTENT_TYPE, "text/plain"])),
       type_=st.one_of(st.none(), st.sampled_from([codec.TYPE_REQUESTED, "other"])),
       attempt=_header_values)
def test_any_delivery_gets_a_verdict_that_encodes(body: bytes, routing_key: str,
                                                   content_type: str | None, type_: str | None,
                                                   attempt: object) -> None:
    incoming = codec.Incoming(body=body, routing_key=routing_key, content_type=content_type,
                              type=type_, headers={"attempt": attempt})
    outcome = evaluate(incoming, 1024)
    assert outcome.ok or outcome.detail
    assert 1 <= incoming.attempt <= codec.MAX_ATTEMPT
    # whatever the verdict, the event that states it can be built and sent
    if outcome.ok:
        assert outcome.request is not None
        codec.completed_message(outcome.request, outcome.result, outcome.correlation_id, "t",
                                incoming.attempt)
    else:
        codec.failed_message(outcome.event_id, outcome.operation, outcome.reason, outcome.detail,
                             incoming.attempt, outcome.correlation_id, "t")


def test_an_undecodable_header_is_malformed_and_keeps_the_request() -> None:
    incoming = _incoming(_request(Operation.ADD, 2, 3), correlation_id="\udcff\udcfe",
                         undecodable="correlation_id is not UTF-8: \\xff\\xfe")
    outcome = evaluate(incoming, 1024)
    assert outcome.reason == R.FAILURE_REASON_MALFORMED_MESSAGE
    assert outcome.detail == "undecodable AMQP header: correlation_id is not UTF-8: \\xff\\xfe"
    assert outcome.event_id == "e-1"  # the body decoded: its event_id is the request_event_id
    assert outcome.correlation_id == ""  # octets that are not UTF-8 are not carried, nor replaced


def test_an_undecodable_header_and_body_name_both() -> None:
    outcome = evaluate(_incoming(body=b"\xff\xff", routing_key="calc.requested.add",
                                 undecodable="app_id is not UTF-8: \\x80"), 1024)
    assert outcome.reason == R.FAILURE_REASON_MALFORMED_MESSAGE and outcome.request is None
    assert outcome.detail.startswith("undecodable AMQP header: app_id is not UTF-8")
    assert "body is not a CalculationRequested" in outcome.detail


@pytest.mark.parametrize(("event_id", "correlation_id", "ok"), [
    ("e" * 255, None, True),  # fits a short string: it is the correlation_id
    ("e" * 256, None, False),
    ("é" * 128, None, False),  # 256 bytes of UTF-8
    ("e" * 1000, "c-1", True),  # its own correlation_id: the long event_id is carried in the body only
])
def test_an_event_id_that_cannot_be_the_correlation_id(event_id: str, correlation_id: str | None,
                                                       ok: bool) -> None:
    outcome = evaluate(_incoming(_request(Operation.ADD, 2, 3, event_id=event_id),
                                 correlation_id=correlation_id), 65536)
    assert outcome.ok is ok
    if not ok:
        assert outcome.reason == R.FAILURE_REASON_MALFORMED_MESSAGE
        assert "cannot stand in for it" in outcome.detail and outcome.correlation_id == ""
    assert codec.fits_short_string(outcome.correlation_id)


_DEATH = {"queue": "calc.retry.1", "reason": "expired", "count": 1, "exchange": "calc.retry.1",
          "routing-keys": ["calc.requested.add"], "time": __import__("datetime").datetime(2026, 1, 1)}


@pytest.mark.parametrize(("headers", "forged"), [
    ({}, []),
    ({"attempt": 2, "x-custom": [1]}, []),  # x- headers dead-lettering does not read are left alone
    ({"x-death": [_DEATH], "x-first-death-reason": "expired", "x-delivery-count": 2}, []),
    ({"x-death": [1]}, ["x-death"]),
    ({"x-death": "boom"}, ["x-death"]),
    ({"x-death": [{}]}, ["x-death"]),
    ({"x-death": [{**_DEATH, "count": True}]}, ["x-death"]),
    ({"x-death": [{**_DEATH, "routing-keys": [b"\xff"]}]}, ["x-death"]),
    ({"x-death": [{**_DEATH, "original-expiration": 5}]}, ["x-death"]),
    ({"x-death": [_DEATH, 2]}, ["x-death"]),
    ({"x-first-death-queue": 5, "x-last-death-reason": None, "x-delivery-count": "2"},
     ["x-first-death-queue", "x-last-death-reason", "x-delivery-count"]),
])
def test_forged_broker_headers(headers: dict[str, object], forged: list[str]) -> None:
    assert codec.forged_headers(headers) == forged


def test_a_routing_key_that_was_not_utf8_gives_the_failure_the_bodys_word() -> None:
    """calc.failed.<word> is a routing key the broker must accept: never escaped octets."""
    outcome = evaluate(_incoming(_request(Operation.ADD, 2, 3), routing_key="calc.requested.\udcff"), 1024)
    assert outcome.reason == R.FAILURE_REASON_MALFORMED_MESSAGE
    assert outcome.word == "add"
    assert outcome.detail == "routing key 'calc.requested.\\xff' does not match operation add"
