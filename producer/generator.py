"""Random calculation requests for demos and load: mostly valid, a configurable share built to fail."""

from __future__ import annotations

import random
from dataclasses import dataclass

from calculator import Operation


@dataclass(frozen=True)
class Spec:
    """An operation and operands, before it becomes an event."""

    operation: Operation
    operands: tuple[float, ...]


# Each fails for a different FailureReason, so every demo shows the whole DLQ path.
FAILING: tuple[Spec, ...] = (
    Spec(Operation.DIVIDE, (1.0, 0.0)),          # DIVISION_BY_ZERO
    Spec(Operation.MODULO, (7.0, 0.0)),          # DIVISION_BY_ZERO
    Spec(Operation.SQRT, (-4.0,)),               # DOMAIN_ERROR
    Spec(Operation.FACTORIAL, (3.5,)),           # DOMAIN_ERROR
    Spec(Operation.POWER, (0.0, -1.0)),          # DOMAIN_ERROR
    Spec(Operation.POWER, (10.0, 400.0)),        # OVERFLOW
    Spec(Operation.FACTORIAL, (171.0,)),         # OVERFLOW
    Spec(Operation.MULTIPLY, (1e308, 10.0)),     # OVERFLOW
)


def valid(rng: random.Random) -> Spec:
    operation = rng.choice(list(Operation))
    if operation is Operation.FACTORIAL:
        return Spec(operation, (float(rng.randint(0, 20)),))
    if operation is Operation.SQRT:
        return Spec(operation, (round(rng.uniform(0, 1000), 3),))
    if operation is Operation.POWER:
        return Spec(operation, (round(rng.uniform(0.5, 10), 3), float(rng.randint(-3, 6))))
    a = round(rng.uniform(-1000, 1000), 3)
    b = round(rng.uniform(-1000, 1000), 3) or 1.0
    return Spec(operation, (a, b))


def random_spec(rng: random.Random, failure_share: float) -> Spec:
    if rng.random() < failure_share:
        return rng.choice(FAILING)
    return valid(rng)
