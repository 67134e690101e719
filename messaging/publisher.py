"""Confirmed, mandatory publishing that turns every broker answer into a result or a typed error."""

from __future__ import annotations

import asyncio
import logging
import struct
import time
import weakref
from collections.abc import Callable
from typing import cast

import aio_pika
import aiormq
from aio_pika.abc import AbstractChannel
from prometheus_client import Counter, Histogram
from tenacity import AsyncRetrying, RetryCallState, retry_if_exception_type

from messaging import backoff
from messaging.codec import Outgoing
from messaging.deadlines import Deadlines
from messaging.errors import ConfigurationError, PublishFailed, Unencodable, UnroutableError
from messaging.logs import kv
from messaging.metrics import Labels, confirm_seconds

log = logging.getLogger(__name__)

_CHANNEL_ERRORS = (aiormq.exceptions.AMQPError, ConnectionError, RuntimeError)
# What pamqp raises while encoding frames (in the caller's task, before anything is written): a
# property past its limit, a value of a type AMQP cannot hold, text that is not UTF-8.
_ENCODING_ERRORS = (TypeError, ValueError, OverflowError, struct.error)

# aiormq clears this Event when the broker sends connection.blocked (a memory or disk alarm) and
# sets it on connection.unblocked; its public `ready()` waits on it but never returns for a
# connection that closes while blocked. tests/unit/test_publisher_blocked.py fails if aiormq
# renames it.
_UNBLOCKED = "_Connection__connection_unblocked"


def _is_blocked(connection: object) -> bool:
    return blocked(connection) is not None


def blocked(connection: object) -> asyncio.Event | None:
    """The Event that `connection` waits on while the broker blocks it, or None when it is not blocked."""
    event = getattr(connection, _UNBLOCKED, None)
    return event if isinstance(event, asyncio.Event) and not event.is_set() else None


class Publisher:
    """Publishes on one `confirmed_channel`, waiting for each confirm; made where a service is wired.

    It holds what every publish on the channel shares: the channel's aiormq channel, one timer for
    all confirm timeouts (`Deadlines`), whether the broker has paused it, and the children of the
    `calc_publish_outcomes_total` counter it counts into (`outcomes`; None counts nothing), and the
    `calc_publish_confirm_seconds` histogram that times each confirmed publish (`confirms`).
    """

    def __init__(self, channel: AbstractChannel, confirm_timeout: float,
                 outcomes: Counter | None = None, confirms: Histogram | None = None) -> None:
        self.channel = channel
        self.confirm_timeout = confirm_timeout
        self._deadlines = Deadlines(confirm_timeout)
        self._underlay: aiormq.abc.AbstractChannel | None = None
        self._paused_since: float | None = None
        self._outcomes = Labels(outcomes) if outcomes is not None else None
        self._confirms = confirms

    def _count(self, app: str, exchange: str, routing_key: str, outcome: str) -> None:
        if self._outcomes is not None:
            self._outcomes(app, exchange, routing_key.rpartition(".")[2], outcome).inc()

    async def publish(self, exchange: str, message: Outgoing, routing_key: str) -> None:
        """Publish to `exchange` (mandatory) and wait for the broker's confirm.

        Raises Unencodable when the message cannot be encoded (nothing was sent), UnroutableError
        when the message was returned (routed to no queue), ConfigurationError when the broker
        refuses it (a permission, a missing exchange) and PublishFailed when it was nacked (e.g. a
        full queue with overflow reject-publish), timed out, or the channel was lost: in each of
        the last cases the broker may not have the message. While the broker blocks the
        connection (a memory or disk alarm) it waits: before writing, and for the confirm of a
        publish written just before the broker's notice.
        """
        app = message.properties.app_id or ""
        try:
            # the channel's aiormq channel, as aio-pika's Exchange.publish does, without building an
            # aio-pika Message: the properties are already the wire's. Asked of aio-pika again only
            # once it is closed; a robust channel then waits for its reconnect, which the confirm
            # timeout does not count (it never did).
            underlay = self._underlay
            if underlay is None or underlay.is_closed:
                underlay = self._underlay = await self.channel.get_underlay_channel()
            connection = underlay.connection
            unblocked = blocked(connection)
            if unblocked is not None:
                await self._while_blocked(connection, unblocked)
            # asyncio.timeout() without a timer per publish, held while the broker blocks the
            # connection: a publish written just before its notice is waiting in the socket, and
            # timing it out would only send a copy after it
            written = time.monotonic()
            with self._deadlines.limit(_is_blocked, connection):
                # wait=False: no future per publish for the socket write; the confirm comes after it
                await cast(aiormq.Channel, underlay).basic_publish(
                    message.body, exchange=exchange, routing_key=routing_key,
                    properties=message.properties, mandatory=True, wait=False)
            if self._confirms is not None:  # ~1.5 µs a publish: docs/operations.md#metrics
                self._confirms.observe(time.monotonic() - written)
            self._count(app, exchange, routing_key, "confirmed")
        except aiormq.exceptions.PublishError:
            self._count(app, exchange, routing_key, "returned")
            raise UnroutableError(
                f"{exchange} routed {routing_key!r} to no queue (message returned)") from None
        except aiormq.exceptions.DeliveryError:
            self._count(app, exchange, routing_key, "nacked")
            raise PublishFailed(f"{exchange} nacked {routing_key!r} (queue full?)") from None
        except (aiormq.exceptions.ChannelAccessRefused, aiormq.exceptions.ChannelNotFoundEntity) as exc:
            # Not transient: retrying a publish the broker forbids, or to an exchange that does not
            # exist, would loop forever. The operator has to fix permissions or the topology.
            self._count(app, exchange, routing_key, "refused")
            raise ConfigurationError(f"the broker refused publishing to {exchange!r}: {exc}") from None
        except TimeoutError:
            self._count(app, exchange, routing_key, "timeout")
            raise PublishFailed(f"no confirm for {routing_key!r} within {self.confirm_timeout}s") from None
        except RecursionError as exc:  # a RuntimeError, but an encoding one: headers nested too deep
            self._count(app, exchange, routing_key, "unencodable")
            raise Unencodable(f"cannot encode the message for {routing_key!r}: {exc}") from None
        except _CHANNEL_ERRORS as exc:
            self._count(app, exchange, routing_key, "lost")
            raise PublishFailed(f"channel lost while publishing {routing_key!r}: {exc!r}") from None
        except _ENCODING_ERRORS as exc:
            self._count(app, exchange, routing_key, "unencodable")
            raise Unencodable(f"cannot encode the message for {routing_key!r}: {exc}") from None

    async def _while_blocked(self, connection: aiormq.abc.AbstractConnection,
                             unblocked: asyncio.Event) -> None:
        """Wait until the broker unblocks `connection` (or it closes) before publishing on it.

        A blocked broker reads nothing from the connection: a publish written now would only wait
        in the socket. Waiting here is the backpressure the alarm asks for, and is not counted
        against the confirm timeout (as a reconnect is not).
        """
        if self._paused_since is None:
            self._paused_since = time.monotonic()
            log.warning("publishing paused: the broker blocks this connection (memory or disk alarm)")
        closing = connection.closing
        waiting = asyncio.ensure_future(unblocked.wait())
        try:
            await asyncio.wait((waiting, closing), return_when=asyncio.FIRST_COMPLETED)
        finally:
            waiting.cancel()
            closing.cancel()
        started, self._paused_since = self._paused_since, None
        if started is not None:
            log.warning("publishing resumed", extra=kv(paused_s=round(time.monotonic() - started, 1)))

    async def publish_until_confirmed(self, exchange: str, message: Outgoing, routing_key: str,
                                      wait: backoff.Backoff = backoff.PUBLISH,
                                      on_retry: Callable[[], None] | None = None) -> int:
        """Publish, retrying nacks, timeouts and lost channels with capped exponential backoff.

        Never gives up on a transient failure (nothing is dropped); an unroutable message is a
        configuration error and raises at once. Returns the number of attempts it took.
        """
        retrying = AsyncRetrying(
            retry=retry_if_exception_type(PublishFailed),
            wait=wait.tenacity_wait,
            reraise=True,
            before_sleep=lambda state: _retrying(state, message, routing_key, on_retry),
        )
        async for attempt in retrying:
            with attempt:
                await self.publish(exchange, message, routing_key)
                # inside the block: a failed attempt is swallowed by `with` and decided by tenacity
                return attempt.retry_state.attempt_number
        raise AssertionError("unreachable")  # pragma: no cover

    async def close(self) -> None:
        if not self.channel.is_closed:
            await self.channel.close()


def _retrying(state: RetryCallState, message: Outgoing, routing_key: str,
              on_retry: Callable[[], None] | None) -> None:
    log.warning("publish not confirmed, retrying", extra=kv(
        message_id=message.message_id, correlation_id=message.correlation_id,
        routing_key=routing_key, attempt=state.attempt_number,
        error=str(state.outcome.exception()) if state.outcome else ""))
    if on_retry is not None:
        on_retry()


async def confirmed_channel(connection: aio_pika.abc.AbstractConnection) -> aio_pika.abc.AbstractChannel:
    """A channel with publisher confirms on and returned messages raised as errors."""
    return await connection.channel(publisher_confirms=True, on_return_raises=True)


# Until the producer and the inspector hold a Publisher of their own: one per channel (and the
# counter and histogram they count into, made on first use so that a service defining them itself
# never meets them).
_publishers: weakref.WeakKeyDictionary[AbstractChannel, Publisher] = weakref.WeakKeyDictionary()
_shared_outcomes: list[Counter] = []
_shared_confirms: list[Histogram] = []


def _publisher_of(channel: AbstractChannel, confirm_timeout: float) -> Publisher:
    publisher = _publishers.get(channel)
    if publisher is None or publisher.confirm_timeout != confirm_timeout:
        if not _shared_outcomes:
            _shared_outcomes.append(Counter(
                "calc_publish_outcomes_total",
                "Confirmed publishes and why others were not confirmed, by exchange and operation word",
                ["app", "exchange", "operation", "outcome"]))
            _shared_confirms.append(confirm_seconds(None))
        publisher = _publishers[channel] = Publisher(channel, confirm_timeout, _shared_outcomes[0],
                                                     _shared_confirms[0])
    return publisher


async def publish(channel: AbstractChannel, exchange: str, message: Outgoing, routing_key: str,
                  confirm_timeout: float) -> None:
    """`Publisher.publish` for a caller that holds only the channel (see `_publisher_of`)."""
    await _publisher_of(channel, confirm_timeout).publish(exchange, message, routing_key)


async def publish_until_confirmed(channel: AbstractChannel, exchange: str, message: Outgoing,
                                  routing_key: str, confirm_timeout: float, max_backoff: float = 10.0,
                                  on_retry: Callable[[], None] | None = None) -> int:
    """`Publisher.publish_until_confirmed` for a caller that holds only the channel."""
    wait = backoff.Backoff(backoff.PUBLISH.first, max_backoff)
    return await _publisher_of(channel, confirm_timeout).publish_until_confirmed(
        exchange, message, routing_key, wait, on_retry)
