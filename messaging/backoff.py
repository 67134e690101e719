"""Capped exponential backoff: the one rule every wait-and-try-again in the project follows."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Backoff:
    """`first` seconds after the first failure, doubling after each next one, never over `cap`."""

    first: float
    cap: float

    def delay(self, failures: int) -> float:
        """Seconds to wait after `failures` failed attempts in a row (1 for the first)."""
        if failures < 1:
            return 0.0
        # past 2**64 the cap has long been reached; the exponent stays small enough for a float
        return min(self.cap, self.first * 2.0 ** min(failures - 1, 64))

    def tenacity_wait(self, retry_state: Any) -> float:
        """The same rule as a tenacity `wait=` (its attempt_number counts the failures)."""
        return self.delay(retry_state.attempt_number)


PUBLISH = Backoff(first=0.05, cap=10.0)
"""A publish that was nacked, timed out or lost its channel (producer and consumer)."""

CONNECT = Backoff(first=0.5, cap=5.0)
"""A broker that could not be reached at start, until CALC_CONNECT_TIMEOUT."""

RESUBSCRIBE = Backoff(first=0.5, cap=10.0)
"""The consumer consuming again after its channel was reopened or its subscription cancelled."""

INSPECTOR = Backoff(first=0.2, cap=2.0)
"""A DLQ inspector action (replay, purge) whose publish or settle failed."""
