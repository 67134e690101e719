"""Opening robust broker connections: TLS, retries at start, and clear errors for the unfixable."""

from __future__ import annotations

import asyncio
import logging
import ssl
import weakref
from typing import Literal, overload
from urllib.parse import unquote, urlsplit

import aio_pika
import aiormq
from aio_pika.abc import AbstractConnection, AbstractRobustConnection
from tenacity import AsyncRetrying, retry_if_exception, stop_after_delay

from messaging import backoff, frames
from messaging.errors import CalcEventsError, ConfigurationError
from messaging.logs import kv
from messaging.metrics import BrokerGauges
from messaging.publisher import blocked
from messaging.settings import Settings

log = logging.getLogger(__name__)

_RETRYABLE = (ConnectionError, OSError, asyncio.TimeoutError, aiormq.exceptions.AMQPConnectionError)
# Wrong credentials or a vhost the user may not open: waiting will not fix them, so fail at once.
# (aiormq reports a vhost that does not exist as an unexpected Connection.Close frame.)
_REFUSED = (aiormq.exceptions.AuthenticationError, aiormq.exceptions.ProbableAuthenticationError,
            aiormq.exceptions.ConnectionNotAllowed, aiormq.exceptions.InvalidFrameError)


def _worth_retrying(exc: BaseException) -> bool:
    return (isinstance(exc, _RETRYABLE) and not isinstance(exc, _REFUSED)
            and tls_verification_failure(exc) is None)


def tls_verification_failure(exc: BaseException) -> ssl.SSLCertVerificationError | None:
    """The certificate verification error behind `exc` (aiormq wraps it in AMQPConnectionError).

    An untrusted or mismatched certificate does not fix itself: retrying it until the connect
    timeout would only end in a misleading "not reachable".
    """
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        if isinstance(current, ssl.SSLCertVerificationError):
            return current
        seen.add(id(current))
        current = current.__cause__ or current.__context__
    return None


def tls_failure_message(settings: Settings, failure: ssl.SSLCertVerificationError) -> str:
    """One line saying whose certificate failed, against which CA, why, and what to set."""
    against = (f"RABBITMQ_CA_FILE={settings.rabbitmq_ca_file}" if settings.rabbitmq_ca_file
               else "the system's CA certificates (RABBITMQ_CA_FILE is not set)")
    reason = failure.verify_message or failure.reason or "verification failed"
    return (f"TLS: the certificate of {settings.safe_url} could not be verified against {against}: "
            f"{reason}; set RABBITMQ_CA_FILE to the CA that signed the broker's certificate")


def _cause(exc: BaseException, settings: Settings) -> str:
    """The error behind `exc` (aiormq wraps socket errors) in one line; never the password."""
    root = exc.__cause__ or exc
    text = f"{type(root).__name__}: {root}" if str(root) else type(root).__name__
    password = urlsplit(settings.broker_url).password
    for form in (password, unquote(password)) if password else ():
        text = text.replace(form, "***")
    return text


class BrokerUnavailable(CalcEventsError):
    """The broker could not be reached before the connect timeout."""


def ssl_context(settings: Settings) -> ssl.SSLContext | None:
    """A verifying TLS context for amqps:// (with RABBITMQ_CA_FILE when given)."""
    if not settings.rabbitmq_url.startswith("amqps://"):
        return None
    try:
        return ssl.create_default_context(cafile=settings.rabbitmq_ca_file or None)
    except (OSError, ssl.SSLError) as exc:
        raise ConfigurationError(f"cannot load RABBITMQ_CA_FILE: {exc}") from None


@overload
async def connect(settings: Settings, name: str, *, robust: Literal[True] = ...,
                  timeout: float | None = ...) -> AbstractRobustConnection: ...
@overload
async def connect(settings: Settings, name: str, *, robust: Literal[False],
                  timeout: float | None = ...) -> AbstractConnection: ...
async def connect(settings: Settings, name: str, *, robust: bool = True,
                  timeout: float | None = None) -> AbstractConnection:
    """A connection, retried with backoff for `timeout` s (default CALC_CONNECT_TIMEOUT).

    Robust by default (restored after a loss, consumers included). `robust=False` gives a plain
    connection for work that must fail loudly instead of resuming silently, such as a DLQ scan.
    """
    frames.install()  # no message the decoder cannot read may take the connection down
    context = ssl_context(settings)
    url = settings.broker_url
    limit = settings.connect_timeout if timeout is None else timeout
    opener = aio_pika.connect_robust if robust else aio_pika.connect
    retrying = AsyncRetrying(
        retry=retry_if_exception(_worth_retrying),
        wait=backoff.CONNECT.tenacity_wait,
        stop=stop_after_delay(limit),
        reraise=True,
        before_sleep=lambda state: log.warning(
            "broker not reachable, retrying",
            extra=kv(url=settings.safe_url, attempt=state.attempt_number,
                     error=type(state.outcome.exception()).__name__ if state.outcome else ""),
        ),
    )
    try:
        async for attempt in retrying:
            with attempt:
                connection = await opener(
                    url, ssl_context=context, client_properties={"connection_name": name},
                    timeout=min(settings.publish_timeout, max(limit, 1.0)),
                )
                # a service's connection is news; a one-shot command's (robust=False) is not
                log.log(logging.INFO if robust else logging.DEBUG, "connected",
                        extra=kv(url=settings.safe_url, connection=name))
                return connection
    except _REFUSED as exc:
        raise ConfigurationError(
            f"the broker refused {settings.safe_url}: wrong user or password, or a vhost that "
            f"does not exist or this user may not open ({type(exc).__name__})") from None
    except _RETRYABLE as exc:
        failure = tls_verification_failure(exc)
        if failure is not None:
            raise ConfigurationError(tls_failure_message(settings, failure)) from None
        raise BrokerUnavailable(
            f"broker {settings.safe_url} not reachable after {limit:.0f}s: "
            f"{_cause(exc, settings)}") from None
    raise AssertionError("unreachable")  # pragma: no cover


def watch(connection: AbstractConnection, gauges: BrokerGauges) -> None:
    """Keep `calc_broker_connected` and `calc_broker_blocked` true to `connection` (open now).

    connected: 0 from the close callback (a robust connection's every loss, or the close of a
    plain one), 1 again from the reconnect callback, after aio-pika restored the channels.
    blocked: aiormq has no callback for connection.blocked, only the Event the publisher waits on
    (`messaging.publisher.blocked`); the gauge reads it at each scrape. The callbacks hold the
    connection weakly: a gauge never keeps a closed connection alive.
    """
    gauges.connected.set(1)
    connection.close_callbacks.add(lambda *_: gauges.connected.set(0))
    if isinstance(connection, AbstractRobustConnection):
        connection.reconnect_callbacks.add(lambda *_: gauges.connected.set(1))
    ref = weakref.ref(connection)
    gauges.blocked.set_function(lambda: _blocked_now(ref))


def _blocked_now(ref: weakref.ref[AbstractConnection]) -> float:
    connection = ref()
    transport = getattr(connection, "transport", None) if connection is not None else None
    return 1.0 if transport is not None and blocked(transport.connection) is not None else 0.0
