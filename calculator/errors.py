"""Domain errors of a calculation, one per permanent FailureReason of the contract."""


class CalculationError(Exception):
    """A calculation that has no valid result; the message is the human detail."""


class DivisionByZero(CalculationError):
    """Divide or modulo by zero."""


class DomainError(CalculationError):
    """The operation has no real result for these operands."""


class Overflow(CalculationError):
    """The result is not finite, or an operand is past a documented guard."""


class InvalidArguments(CalculationError):
    """Wrong operand count, or a NaN or infinite operand."""


class UnknownOperation(CalculationError):
    """An operation this version does not know."""
