"""`send --wait`: the outcome of one request, from a queue of its own bound to calc.results.

Request/async-response over the existing topology: before publishing, an exclusive, auto-delete,
server-named queue (`amq.gen-*`) is bound to calc.results with the request's two outcome keys,
so no outcome can pass before anyone listens, and the broker deletes the queue when we go.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from typing import Any

import aiormq
from aio_pika.abc import AbstractConnection
from aiormq.abc import DeliveredMessage
from google.protobuf.message import DecodeError

from messaging import codec, topology
from messaging.enums import reason_name
from messaging.errors import CalcEventsError
from messaging.logs import kv

log = logging.getLogger(__name__)

DEFAULT_TIMEOUT_S = 30.0


class AnswerLost(CalcEventsError):
    """The connection was lost while waiting: the reply queue, and any outcome in it, are gone."""


@dataclass(frozen=True)
class Answer:
    """A request's outcome as `send --wait` prints it; `status` is completed or failed."""

    status: str
    event_id: str
    correlation_id: str
    outcome_event_id: str
    result: float | None = None
    reason: str | None = None
    detail: str | None = None
    attempts: int | None = None
    processed_by: str = ""

    def as_json(self) -> dict[str, Any]:
        return {"status": self.status, "event_id": self.event_id, "correlation_id": self.correlation_id,
                "outcome_event_id": self.outcome_event_id, "result": self.result, "reason": self.reason,
                "detail": self.detail, "attempts": self.attempts, "processed_by": self.processed_by}


def read(message: codec.Incoming) -> Answer | None:
    """The Answer an outcome message carries; None for one that does not decode as an outcome."""
    key = message.routing_key
    correlation_id = message.correlation_id or ""
    try:
        if key.startswith("calc.completed."):
            done = codec.decode_completed(message.body)
            return Answer("completed", done.request_event_id, correlation_id, done.event_id,
                          result=done.result, processed_by=done.processed_by)
        if key.startswith("calc.failed."):
            failed = codec.decode_failed(message.body)
            return Answer("failed", failed.request_event_id, correlation_id, failed.event_id,
                          reason=reason_name(failed.reason), detail=failed.detail,
                          attempts=failed.attempts, processed_by=failed.processed_by)
    except DecodeError:
        pass
    log.warning("an outcome that does not decode, skipped", extra=kv(
        routing_key=key, message_id=message.message_id, correlation_id=correlation_id))
    return None


class Answers:
    """The reply queue of one request: `open()` before publishing, `wait()` after, `close()`."""

    def __init__(self, connection: AbstractConnection, word: str) -> None:
        self.connection = connection
        self.keys = (topology.completed_key(word), topology.failed_key(word))
        self._arrived: asyncio.Queue[Answer] = asyncio.Queue()
        self._lost = asyncio.Event()
        self._channel: aiormq.abc.AbstractChannel | None = None

    async def open(self) -> str:
        """Declare and bind the queue and start consuming; returns its server-given name.

        On an aiormq channel of its own, not aio-pika's robust one: that one names queues
        itself (`amq_<uuid>`, outside the producer's permissions) and would restore the queue
        after a reconnect, empty, hiding an outcome lost with the old one.
        """
        transport = self.connection.transport
        assert transport is not None, "a connected connection"
        channel = self._channel = await transport.connection.channel(publisher_confirms=False)
        declared = await channel.queue_declare("", exclusive=True, auto_delete=True, durable=False)
        name = declared.queue
        assert name is not None
        for key in self.keys:
            await channel.queue_bind(name, topology.RESULTS_EXCHANGE, routing_key=key)
        await channel.basic_consume(name, self._on_message, no_ack=True)
        self.connection.close_callbacks.add(self._on_close)
        log.debug("waiting for outcomes", extra=kv(queue=name, keys=",".join(self.keys)))
        return name

    def _on_close(self, *_: object) -> None:
        self._lost.set()

    async def _on_message(self, message: DeliveredMessage) -> None:
        answer = read(codec.incoming_of(message))
        if answer is not None:
            self._arrived.put_nowait(answer)

    async def wait(self, event_id: str, correlation_id: str, timeout: float) -> Answer:
        """The first outcome of `event_id` with `correlation_id`; TimeoutError after `timeout` s.

        Transient failures go to the retry queues, not to calc.results, so the first outcome
        is the final one: a result after retries, or the failure that ended them.
        """
        async with asyncio.timeout(timeout):
            while True:
                answer = await self._next()
                if answer.event_id == event_id and answer.correlation_id == correlation_id:
                    return answer

    async def _next(self) -> Answer:
        if not self._arrived.empty():
            return self._arrived.get_nowait()
        getting = asyncio.ensure_future(self._arrived.get())
        lost = asyncio.ensure_future(self._lost.wait())
        try:
            await asyncio.wait((getting, lost), return_when=asyncio.FIRST_COMPLETED)
        finally:
            getting.cancel()
            lost.cancel()
        if getting.done() and not getting.cancelled():
            return getting.result()
        raise AnswerLost("the broker connection was lost while waiting for the outcome; "
                         "the request may still complete (look it up by its event_id)")

    async def close(self) -> None:
        self.connection.close_callbacks.discard(self._on_close)
        if self._channel is not None and not self._channel.is_closed:
            await self._channel.close()
