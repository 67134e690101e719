"""The inspector's broker connection: plain (not robust), so a lost connection ends a scan loudly."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import aiormq
from aio_pika.abc import AbstractChannel, AbstractConnection

from dlq_inspector.errors import InspectorError
from messaging import topology
from messaging.connection import connect
from messaging.errors import CalcEventsError, ConfigurationError
from messaging.settings import Settings

log = logging.getLogger(__name__)

BROKER_ERRORS = (aiormq.exceptions.AMQPError, aiormq.exceptions.ChannelInvalidStateError, ConnectionError,
                 OSError, asyncio.TimeoutError)


async def open_connection(settings: Settings, name: str, timeout: float) -> AbstractConnection:
    """Connect, retrying for up to `timeout` seconds; refused credentials or vhost fail at once.

    Plain, not robust: a robust reconnect would silently re-consume and deliver the head of the
    DLQ a second time in the middle of a scan; a scan must instead fail and be run again.
    """
    return await connect(settings, name, robust=False, timeout=timeout)


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
