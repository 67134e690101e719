"""Confirmed, mandatory publishing that turns every broker answer into a result or a typed error."""

from __future__ import annotations

import logging
import weakref
from collections.abc import Callable
from typing import cast

import aio_pika
import aiormq
from aio_pika.abc import AbstractChannel
from prometheus_client import Counter
from tenacity import AsyncRetrying, RetryCallState, retry_if_exception_type, wait_exponential

from messaging.codec import Outgoing
from messaging.deadlines import Deadlines
from messaging.errors import ConfigurationError, PublishFailed, UnroutableError
from messaging.logs import kv
from messaging.metrics import labelled

log = logging.getLogger(__name__)

PUBLISH_OUTCOMES = Counter(
    "calc_publish_outcomes_total",
    "Confirmed publishes and why others were not confirmed, by exchange and operation word",
    ["app", "exchange", "operation", "outcome"])  # outcome: confirmed|nacked|returned|refused|timeout|lost

_CHANNEL_ERRORS = (aiormq.exceptions.AMQPError, ConnectionError, RuntimeError)

_deadlines: dict[float, Deadlines] = {}
_underlays: weakref.WeakKeyDictionary[AbstractChannel, aiormq.abc.AbstractChannel] = (
    weakref.WeakKeyDictionary())


def _count(app: str, exchange: str, routing_key: str, outcome: str) -> None:
    labelled(PUBLISH_OUTCOMES, app, exchange, routing_key.rpartition(".")[2], outcome).inc()


async def publish(channel: AbstractChannel, exchange: str, message: Outgoing, routing_key: str,
                  confirm_timeout: float) -> None:
    """Publish to `exchange` (mandatory) on a `confirmed_channel` and wait for the broker's confirm.

    Raises UnroutableError when the message was returned (routed to no queue) and PublishFailed
    when it was nacked (e.g. a full queue with overflow reject-publish), timed out, or the
    channel was lost: in each of those cases the broker may not have the message.
    """
    app = message.properties.app_id or ""
    deadlines = _deadlines.get(confirm_timeout) or _deadlines.setdefault(confirm_timeout,
                                                                         Deadlines(confirm_timeout))
    try:
        # the channel's aiormq channel, as aio-pika's Exchange.publish does, without building an
        # aio-pika Message: the properties are already the wire's. Asked of aio-pika again only
        # once it is closed; a robust channel then waits for its reconnect, which the confirm
        # timeout does not count (it never did).
        underlay = _underlays.get(channel)
        if underlay is None or underlay.is_closed:
            underlay = _underlays[channel] = await channel.get_underlay_channel()
        with deadlines.limit():  # asyncio.timeout() without a timer per publish
            # wait=False: no future per publish for the socket write; the confirm comes after it
            await cast(aiormq.Channel, underlay).basic_publish(
                message.body, exchange=exchange, routing_key=routing_key,
                properties=message.properties, mandatory=True, wait=False)
        _count(app, exchange, routing_key, "confirmed")
    except aiormq.exceptions.PublishError:
        _count(app, exchange, routing_key, "returned")
        raise UnroutableError(
            f"{exchange} routed {routing_key!r} to no queue (message returned)") from None
    except aiormq.exceptions.DeliveryError:
        _count(app, exchange, routing_key, "nacked")
        raise PublishFailed(f"{exchange} nacked {routing_key!r} (queue full?)") from None
    except (aiormq.exceptions.ChannelAccessRefused, aiormq.exceptions.ChannelNotFoundEntity) as exc:
        # Not transient: retrying a publish the broker forbids, or to an exchange that does not
        # exist, would loop forever. The operator has to fix permissions or the topology.
        _count(app, exchange, routing_key, "refused")
        raise ConfigurationError(f"the broker refused publishing to {exchange!r}: {exc}") from None
    except TimeoutError:
        _count(app, exchange, routing_key, "timeout")
        raise PublishFailed(f"no confirm for {routing_key!r} within {confirm_timeout}s") from None
    except _CHANNEL_ERRORS as exc:
        _count(app, exchange, routing_key, "lost")
        raise PublishFailed(f"channel lost while publishing {routing_key!r}: {exc!r}") from None


async def publish_until_confirmed(channel: AbstractChannel, exchange: str, message: Outgoing,
                                  routing_key: str, confirm_timeout: float, max_backoff: float = 10.0,
                                  on_retry: Callable[[], None] | None = None) -> int:
    """Publish, retrying nacks, timeouts and lost channels with capped exponential backoff.

    Never gives up on a transient failure (nothing is dropped); an unroutable message is a
    configuration error and raises at once. Returns the number of attempts it took.
    """
    retrying = AsyncRetrying(
        retry=retry_if_exception_type(PublishFailed),
        wait=wait_exponential(multiplier=0.05, max=max_backoff),
        reraise=True,
        before_sleep=lambda state: _retrying(state, message, routing_key, on_retry),
    )
    async for attempt in retrying:
        with attempt:
            await publish(channel, exchange, message, routing_key, confirm_timeout)
            # inside the block: a failed attempt is swallowed by `with` and decided by tenacity
            return attempt.retry_state.attempt_number
    raise AssertionError("unreachable")  # pragma: no cover


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


