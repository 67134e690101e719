"""The pure calculator: results, every failure mapped to its error, and guards that never hang."""

from __future__ import annotations

import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from calculator import (
    FACTORIAL_MAX,
    CalculationError,
    DivisionByZero,
    DomainError,
    InvalidArguments,
    Operation,
    Overflow,
    UnknownOperation,
    compute,
)

finite = st.floats(allow_nan=False, allow_infinity=False)
any_float = st.floats(allow_nan=True, allow_infinity=True)


@pytest.mark.parametrize(("operation", "operands", "expected"), [
    (Operation.ADD, (2, 3), 5.0),
    (Operation.SUBTRACT, (2, 3), -1.0),
    (Operation.MULTIPLY, (2.5, 4), 10.0),
    (Operation.DIVIDE, (7, 2), 3.5),
    (Operation.MODULO, (-7, 3), 2.0),
    (Operation.MODULO, (7, -3), -2.0),
    (Operation.POWER, (2, 10), 1024.0),
    (Operation.POWER, (-2, 3), -8.0),
    (Operation.POWER, (4, 0.5), 2.0),
    (Operation.SQRT, (16,), 4.0),
    (Operation.FACTORIAL, (5,), 120.0),
    (Operation.FACTORIAL, (0,), 1.0),
])
def test_results(operation: Operation, operands: tuple[float, ...], expected: float) -> None:
    assert compute(operation, operands) == expected


@pytest.mark.parametrize(("operation", "operands", "error"), [
    (Operation.DIVIDE, (1, 0), DivisionByZero),
    (Operation.MODULO, (1, 0), DivisionByZero),
    (Operation.DIVIDE, (1, -0.0), DivisionByZero),
    (Operation.SQRT, (-4,), DomainError),
    (Operation.FACTORIAL, (-1,), DomainError),
    (Operation.FACTORIAL, (3.5,), DomainError),
    (Operation.POWER, (0, -1), DomainError),
    (Operation.POWER, (-8, 1 / 3), DomainError),
    (Operation.POWER, (10, 400), Overflow),
    (Operation.POWER, (1e308, 1e308), Overflow),
    (Operation.FACTORIAL, (FACTORIAL_MAX + 1,), Overflow),
    (Operation.FACTORIAL, (1e300,), Overflow),
    (Operation.MULTIPLY, (1e308, 10), Overflow),
    (Operation.ADD, (1.7e308, 1.7e308), Overflow),
    (Operation.DIVIDE, (1e308, 1e-308), Overflow),
    (Operation.ADD, (1,), InvalidArguments),
    (Operation.ADD, (1, 2, 3), InvalidArguments),
    (Operation.SQRT, (), InvalidArguments),
    (Operation.SQRT, (1, 2), InvalidArguments),
    (Operation.ADD, (math.nan, 1), InvalidArguments),
    (Operation.SQRT, (math.inf,), InvalidArguments),
    (Operation.FACTORIAL, (-math.inf,), InvalidArguments),
])
def test_failures(operation: Operation, operands: tuple[float, ...],
                  error: type[CalculationError]) -> None:
    with pytest.raises(error) as raised:
        compute(operation, operands)
    assert type(raised.value) is error
    assert str(raised.value)  # every failure carries a human detail


def test_unknown_word() -> None:
    with pytest.raises(UnknownOperation):
        Operation.from_word("cube")
    assert Operation.from_word("sqrt") is Operation.SQRT


def test_heavy_split_matches_contract() -> None:
    """calc.work.heavy takes power, sqrt and factorial (docs/contract.md, Topology)."""
    assert {op.word for op in Operation if op.heavy} == {"power", "sqrt", "factorial"}


@settings(max_examples=600, deadline=200)
@given(op=st.sampled_from(list(Operation)), operands=st.lists(any_float, max_size=4))
def test_total_function(op: Operation, operands: list[float]) -> None:
    """Every input gives a finite float or a CalculationError, fast (deadline 200 ms)."""
    try:
        result = compute(op, operands)
    except CalculationError:
        return
    assert math.isfinite(result)
    assert len(operands) == op.arity
    assert all(math.isfinite(x) for x in operands)


@given(a=finite, b=finite)
def test_modulo_takes_the_divisors_sign(a: float, b: float) -> None:
    try:
        result = compute(Operation.MODULO, (a, b))
    except DivisionByZero:
        assert b == 0
        return
    assert result == a % b
    assert result == 0 or math.copysign(1, result) == math.copysign(1, b)


@given(n=st.integers(min_value=0, max_value=FACTORIAL_MAX))
def test_factorial_exact_in_range(n: int) -> None:
    assert compute(Operation.FACTORIAL, (float(n),)) == float(math.factorial(n))


@settings(deadline=100)
@given(a=finite, b=finite)
def test_power_never_hangs_or_builds_huge_integers(a: float, b: float) -> None:
    try:
        result = compute(Operation.POWER, (a, b))
    except (DomainError, Overflow):
        return
    assert math.isfinite(result)


@given(a=finite, b=finite)
def test_add_commutes(a: float, b: float) -> None:
    try:
        assert compute(Operation.ADD, (a, b)) == compute(Operation.ADD, (b, a))
    except Overflow:
        assert not math.isfinite(a + b)
