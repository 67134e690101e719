"""calc.v1's enums in the calculator's terms: one to one both ways, and a word for every number."""

from __future__ import annotations

import pytest

from calculator import (
    CalculationError,
    DivisionByZero,
    DomainError,
    InvalidArguments,
    Operation,
    Overflow,
    UnknownOperation,
)
from gen import calc_pb2
from messaging import codec, enums


def test_every_operation_goes_to_its_proto_number_and_back() -> None:
    numbers = {enums.proto_operation(op) for op in Operation}
    assert len(numbers) == len(Operation) and calc_pb2.OPERATION_UNSPECIFIED not in numbers
    for op in Operation:
        assert enums.domain_operation(enums.proto_operation(op)) is op
        assert enums.operation_label(enums.proto_operation(op)) == op.word
        assert calc_pb2.Operation.Name(enums.proto_operation(op)) == f"OPERATION_{op.name}"


@pytest.mark.parametrize(("number", "label"), [(0, "OPERATION_UNSPECIFIED"), (42, "operation 42"),
                                               (-7, "operation -7")])
def test_a_number_outside_the_enum_is_an_unknown_operation_with_a_label(number: int, label: str) -> None:
    assert enums.operation_label(number) == label
    with pytest.raises(UnknownOperation, match=f"^unknown operation {label}$"):
        enums.domain_operation(number)


def test_each_domain_error_has_its_own_reason() -> None:
    errors: list[CalculationError] = [DivisionByZero("x"), DomainError("x"), Overflow("x"),
                                      InvalidArguments("x"), UnknownOperation("x")]
    names = [enums.reason_name(enums.reason_of(error)) for error in errors]
    assert names == ["DIVISION_BY_ZERO", "DOMAIN_ERROR", "OVERFLOW", "INVALID_ARGUMENTS",
                     "UNKNOWN_OPERATION"]
    assert enums.reason_name(calc_pb2.FAILURE_REASON_RETRIES_EXHAUSTED) == "RETRIES_EXHAUSTED"
    assert enums.reason_name(9999) == "9999"  # a reason from a newer contract still has a name


def test_the_codec_still_offers_what_the_consumer_reads_there() -> None:
    assert codec.reason_of is enums.reason_of and codec.reason_name is enums.reason_name
    assert codec.domain_operation is enums.domain_operation
    assert codec.operation_label is enums.operation_label
    from messaging.death_headers import forged_headers
    assert codec.forged_headers is forged_headers
