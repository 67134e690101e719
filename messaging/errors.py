"""One error hierarchy for everything calc-events raises about configuration and messaging.

Two kinds under the one base, because they are handled in opposite ways: a Transient failure is
retried (later, with a delay), a Permanent one never is (trying again gives the same answer).
"""


class CalcEventsError(Exception):
    """Base class of every calc-events error."""


class Transient(CalcEventsError):
    """A failure that may clear if the same work is tried again later."""


class Permanent(CalcEventsError):
    """A failure that trying again cannot clear: the input or the configuration must change."""


class ConfigurationError(Permanent):
    """An environment variable, a permission or the topology is wrong: an operator must fix it."""


class PublishFailed(Transient):
    """The broker did not confirm a publish (nack, timeout or lost channel)."""


class UnroutableError(Transient):
    """A mandatory publish matched no queue and was returned: an error, never a silent drop."""


class DecodeError(Permanent):
    """A body or its properties are not a valid calc.v1 event."""


class Unencodable(Permanent):
    """A message cannot be put on the wire (a property past AMQP's limits, a header it cannot hold)."""


class TransientFault(Transient):
    """A failure that may clear if the message is tried again later (the injected kind)."""
