"""calc.v1's enums (Operation, FailureReason) in the calculator's terms and in words, both ways."""

from __future__ import annotations

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

_PROTO_OPERATION = {op: calc_pb2.Operation.Value(f"OPERATION_{op.name}") for op in Operation}
_DOMAIN_OPERATION = {number: op for op, number in _PROTO_OPERATION.items()}

_REASON_OF_ERROR: dict[type[CalculationError], int] = {
    DivisionByZero: calc_pb2.FAILURE_REASON_DIVISION_BY_ZERO,
    DomainError: calc_pb2.FAILURE_REASON_DOMAIN_ERROR,
    Overflow: calc_pb2.FAILURE_REASON_OVERFLOW,
    InvalidArguments: calc_pb2.FAILURE_REASON_INVALID_ARGUMENTS,
    UnknownOperation: calc_pb2.FAILURE_REASON_UNKNOWN_OPERATION,
}


def proto_operation(operation: Operation) -> int:
    return _PROTO_OPERATION[operation]


def domain_operation(number: int) -> Operation:
    """The domain operation of a proto enum number; UnknownOperation for 0 or an unknown value."""
    try:
        return _DOMAIN_OPERATION[number]
    except KeyError:
        raise UnknownOperation(f"unknown operation {operation_label(number)}") from None


def operation_label(number: int) -> str:
    """`add` for a known operation, `OPERATION_UNSPECIFIED` or `operation 42` otherwise."""
    if number in _DOMAIN_OPERATION:
        return _DOMAIN_OPERATION[number].word
    if number == calc_pb2.OPERATION_UNSPECIFIED:
        return "OPERATION_UNSPECIFIED"
    return f"operation {number}"


def reason_of(error: CalculationError) -> int:
    """The FailureReason a domain error maps to, one to one."""
    return _REASON_OF_ERROR[type(error)]


def reason_name(reason: int) -> str:
    """`DIVISION_BY_ZERO` for FAILURE_REASON_DIVISION_BY_ZERO; the number for unknown values."""
    try:
        return calc_pb2.FailureReason.Name(reason).removeprefix("FAILURE_REASON_")
    except ValueError:
        return str(reason)

