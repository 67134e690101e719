"""The eight operations as pure functions over floats, with guards that never hang."""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from enum import Enum

from calculator.errors import (
    DivisionByZero,
    DomainError,
    InvalidArguments,
    Overflow,
    UnknownOperation,
)

# 171! is about 1.24e309, past the largest double: the guard keeps every result finite.
FACTORIAL_MAX = 170


class Operation(Enum):
    """An operation; its value is the routing-key word of the contract."""

    ADD = "add"
    SUBTRACT = "subtract"
    MULTIPLY = "multiply"
    DIVIDE = "divide"
    MODULO = "modulo"
    POWER = "power"
    SQRT = "sqrt"
    FACTORIAL = "factorial"

    @property
    def word(self) -> str:
        return self.value

    @property
    def arity(self) -> int:
        return 1 if self in (Operation.SQRT, Operation.FACTORIAL) else 2

    @property
    def heavy(self) -> bool:
        """Heavy operations get their own work queue so they cannot starve cheap ones."""
        return self in (Operation.POWER, Operation.SQRT, Operation.FACTORIAL)

    @classmethod
    def from_word(cls, word: str) -> Operation:
        try:
            return cls(word)
        except ValueError:
            raise UnknownOperation(f"unknown operation {word!r}") from None


def _finite(value: float, what: str) -> float:
    if not math.isfinite(value):
        raise Overflow(f"{what} overflows a double")
    return value


def _add(a: float, b: float) -> float:
    return _finite(a + b, "sum")


def _subtract(a: float, b: float) -> float:
    return _finite(a - b, "difference")


def _multiply(a: float, b: float) -> float:
    return _finite(a * b, "product")


def _divide(a: float, b: float) -> float:
    if b == 0:
        raise DivisionByZero("division by zero")
    return _finite(a / b, "quotient")


def _modulo(a: float, b: float) -> float:
    if b == 0:
        raise DivisionByZero("modulo by zero")
    return _finite(a % b, "remainder")


def _power(a: float, b: float) -> float:
    if a == 0 and b < 0:
        raise DomainError("zero to a negative power")
    if a < 0 and not b.is_integer():
        raise DomainError("negative base to a non-integral power")
    try:
        # math.pow works on doubles only: it never builds a huge integer, so it cannot hang.
        result = math.pow(a, b)
    except OverflowError:
        raise Overflow("power overflows a double") from None
    return _finite(result, "power")


def _sqrt(a: float) -> float:
    if a < 0:
        raise DomainError("square root of a negative number")
    return math.sqrt(a)


def _factorial(a: float) -> float:
    if a < 0:
        raise DomainError("factorial of a negative number")
    if not a.is_integer():
        raise DomainError("factorial of a non-integral number")
    if a > FACTORIAL_MAX:
        raise Overflow(f"factorial above {FACTORIAL_MAX} overflows a double")
    return float(math.factorial(int(a)))


_BINARY: dict[Operation, Callable[[float, float], float]] = {
    Operation.ADD: _add,
    Operation.SUBTRACT: _subtract,
    Operation.MULTIPLY: _multiply,
    Operation.DIVIDE: _divide,
    Operation.MODULO: _modulo,
    Operation.POWER: _power,
}
_UNARY: dict[Operation, Callable[[float], float]] = {
    Operation.SQRT: _sqrt,
    Operation.FACTORIAL: _factorial,
}


def check_arguments(operation: Operation, operands: Sequence[float]) -> list[float]:
    """The operands as floats if the request is well formed, else InvalidArguments.

    Only the request's shape (operand count, finite operands), never the arithmetic: a producer
    can refuse what no calculation could accept and still send `divide 1 0` to fail downstream.
    """
    if len(operands) != operation.arity:
        raise InvalidArguments(
            f"{operation.word} takes {operation.arity} operand"
            f"{'s' if operation.arity > 1 else ''}, got {len(operands)}"
        )
    values = [float(x) for x in operands]
    for value in values:
        if not math.isfinite(value):
            raise InvalidArguments(f"operand {value!r} is not a finite number")
    return values


def compute(operation: Operation, operands: Sequence[float]) -> float:
    """Compute `operation` over `operands`, or raise the CalculationError that explains why not."""
    values = check_arguments(operation, operands)
    if operation in _UNARY:
        return _UNARY[operation](values[0])
    a, b = values
    return _BINARY[operation](a, b)
