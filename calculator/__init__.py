"""The pure calculation domain: operations, their guards, and the errors they raise."""

from calculator.errors import (
    CalculationError,
    DivisionByZero,
    DomainError,
    InvalidArguments,
    Overflow,
    UnknownOperation,
)
from calculator.operations import (
    FACTORIAL_MAX,
    Operation,
    check_arguments,
    compute,
)

__all__ = [
    "FACTORIAL_MAX",
    "CalculationError",
    "DivisionByZero",
    "DomainError",
    "InvalidArguments",
    "Operation",
    "Overflow",
    "UnknownOperation",
    "check_arguments",
    "compute",
]
