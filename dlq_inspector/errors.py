"""The inspector's errors, under the one calc-events hierarchy (exit 1 unless said otherwise)."""

from __future__ import annotations

from messaging.errors import CalcEventsError, ConfigurationError


class InspectorError(CalcEventsError):
    """The DLQ could not be read or changed: the broker failed or refused."""


class UsageError(ConfigurationError):
    """A command line that cannot be carried out as given (exit 2)."""
