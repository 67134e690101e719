"""One error hierarchy for everything calc-events raises about configuration and messaging."""


class CalcEventsError(Exception):
    """Base class of every calc-events error."""


class ConfigurationError(CalcEventsError):
    """An environment variable is missing or has a value that cannot be used."""


class PublishFailed(CalcEventsError):
    """The broker did not confirm a publish (nack, timeout or lost channel)."""


class UnroutableError(CalcEventsError):
    """A mandatory publish matched no queue and was returned: an error, never a silent drop."""


class DecodeError(CalcEventsError):
    """A body or its properties are not a valid calc.v1 event."""


class TransientFault(CalcEventsError):
    """A failure that may clear if the message is tried again later."""
