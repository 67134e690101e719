"""The inspector's broker connection: plain (not robust), so a lost connection ends a scan loudly."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import aio_pika
import aiormq
from aio_pika.abc import AbstractChannel, AbstractConnection
from tenacity import AsyncRetrying, retry_if_exception, stop_after_delay, wait_exponential

from dlq_inspector.errors import InspectorError
from messaging import topology
from messaging.connection import BrokerUnavailable, ssl_context
from messaging.errors import CalcEventsError, ConfigurationError
from messaging.logs import kv
from messaging.settings import Settings

log = logging.getLogger(__name__)

# A robust connection would silently re-consume after a reconnect and deliver the head of the
# DLQ a second time in the middle of a scan; a scan must instead fail and be run again.
_RETRYABLE = (ConnectionError, OSError, asyncio.TimeoutError)
BROKER_ERRORS = (aiormq.exceptions.AMQPError, aiormq.exceptions.ChannelInvalidStateError, ConnectionError,
                 OSError, asyncio.TimeoutError)


def _retryable(exc: BaseException) -> bool:
    return isinstance(exc, _RETRYABLE) and not isinstance(
        exc, aiormq.exceptions.ProbableAuthenticationError | aiormq.exceptions.InvalidFrameError)


async def open_connection(settings: Settings, name: str, timeout: float) -> AbstractConnection:
    """Connect, retrying for up to `timeout` seconds; refused credentials or vhost fail at once."""
    retrying = AsyncRetrying(
        retry=retry_if_exception(_retryable),
        wait=wait_exponential(multiplier=0.2, max=2),
        stop=stop_after_delay(timeout),
        reraise=True,
    )
    try:
        async for attempt in retrying:
            with attempt:
                connection = await aio_pika.connect(
                    settings.broker_url, ssl_context=ssl_context(settings),
                    client_properties={"connection_name": name},
                    timeout=min(settings.publish_timeout, max(timeout, 1.0)))
                log.debug("connected", extra=kv(url=settings.safe_url, connection=name))
                return connection
    except aiormq.exceptions.ProbableAuthenticationError:
        raise ConfigurationError(
            f"the broker refused the credentials of {settings.safe_url} (ACCESS_REFUSED)") from None
    except _RETRYABLE as exc:
        raise BrokerUnavailable(
            f"broker {settings.safe_url} not reachable after {timeout:.0f}s: {type(exc).__name__}"
        ) from None
    except aiormq.exceptions.AMQPError as exc:
        # e.g. NOT_ALLOWED for a vhost that does not exist, answered with Connection.Close
        raise ConfigurationError(f"the broker refused {settings.safe_url}: {_reply_text(exc)}") from None
    raise AssertionError("unreachable")  # pragma: no cover


def _reply_text(exc: BaseException) -> str:
    if "Connection.Close" in str(exc):  # aiormq keeps no reply text for a refused Connection.Open
        return "the connection was closed at open (does the vhost exist, may this user use it?)"
    return str(exc)


async def declare_topology(channel: AbstractChannel, settings: Settings) -> None:
    """topology.declare, with a hint when the user may not declare (least-privilege deployments)."""
    try:
        await topology.declare(channel, settings)
    except aiormq.exceptions.ChannelAccessRefused as exc:
        hint = (" (a least-privilege user cannot declare: set CALC_DECLARE_TOPOLOGY=false)"
                if settings.declare_topology else "")
        raise ConfigurationError(f"the broker refused access: {exc.args[0] if exc.args else exc}"
                                 f"{hint}") from None


@asynccontextmanager
async def connected(settings: Settings, name: str, timeout: float) -> AsyncIterator[AbstractConnection]:
    """A connection with the topology declared (as every service does); broker errors -> exit 1."""
    connection = await open_connection(settings, name, timeout)
    try:
        async with connection.channel() as channel:
            await declare_topology(channel, settings)
        yield connection
    except (CalcEventsError, BrokenPipeError):  # BrokenPipeError: stdout closed (`| head`)
        raise
    except BROKER_ERRORS as exc:
        raise InspectorError(f"broker failure: {exc!r}") from None
    finally:
        try:
            await connection.close()
        except BROKER_ERRORS:
            pass  # already gone; the broker requeues whatever the scan held
