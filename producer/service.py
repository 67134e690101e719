"""The producer: publishes CalculationRequested to calc.requests, confirmed, and never drops one."""

from __future__ import annotations

import asyncio
import itertools
import logging
import random
import sys
import time
from collections.abc import Iterable
from dataclasses import dataclass, field

from aio_pika.abc import AbstractChannel, AbstractRobustConnection

from messaging import backoff, codec, topology
from messaging import tracing as tracing_
from messaging.errors import PublishFailed
from messaging.logs import kv
from messaging.metrics import labelled
from messaging.publisher import confirmed_channel, publish, publish_until_confirmed
from messaging.settings import Settings
from producer.answer import Answer, Answers
from producer.generator import Spec, random_spec
from producer.metrics import CONFIRMED, PUBLISHED, RETRIED

log = logging.getLogger(__name__)

FIRST_RETRY_WAIT = backoff.PUBLISH.delay(1)
"""Seconds before the second attempt: the first step of publish_until_confirmed's backoff."""


@dataclass
class BulkReport:
    """What `bulk` did: counts add up to the requested count, or it raised."""

    requested: int
    confirmed: int = 0
    retried: int = 0
    seconds: float = 0.0
    event_ids: list[str] = field(default_factory=list)

    @property
    def rate(self) -> float:
        return self.confirmed / self.seconds if self.seconds else 0.0


class Producer:
    """Publishes requests on one confirmed channel of a robust connection."""

    def __init__(self, settings: Settings, connection: AbstractRobustConnection,
                 tracing: tracing_.Tracing | None = None) -> None:
        self.settings = settings
        self.connection = connection
        self.tracing = tracing  # None: off; on, each request is a PRODUCER span over all its attempts
        self._channel: AbstractChannel | None = None
        self.retries = 0
        """Publishes retried after a nack, timeout or lost channel, since start."""

    async def start(self) -> None:
        channel = await confirmed_channel(self.connection)
        await topology.declare(channel, self.settings)
        self._channel = channel

    async def send(self, spec: Spec, correlation_id: str | None = None, quiet: bool = False) -> str:
        """Publish one request until confirmed; returns its event_id. Unroutable raises."""
        assert self._channel is not None, "start() first"
        request = codec.build_request(spec.operation, spec.operands, self.settings.instance_id)
        word = spec.operation.word
        message = codec.request_message(request, correlation_id)
        key = topology.requested_key(word)
        labelled(PUBLISHED, word).inc()
        if self.tracing is None:
            attempts = await self._publish(self._channel, message, key, word)
        else:
            with self.tracing.publishing(topology.REQUESTS_EXCHANGE, key,
                                         tracing_.headers_of(message.properties),
                                         message_id=request.event_id,
                                         correlation_id=message.correlation_id or ""):
                attempts = await self._publish(self._channel, message, key, word)
        labelled(CONFIRMED, word).inc()
        level = logging.DEBUG if quiet else logging.INFO
        if log.isEnabledFor(level):
            log.log(level, "published", extra=kv(
                event_id=request.event_id, correlation_id=message.correlation_id, routing_key=key,
                operands=list(request.operands), attempts=attempts))
        return request.event_id

    async def ask(self, spec: Spec, correlation_id: str | None, timeout: float) -> tuple[str, Answer | None]:
        """`send --wait`: publish one request, then wait up to `timeout` s for its outcome.

        Returns the event_id and the Answer, or None when none came in time. The reply queue is
        bound before the publish, so even an outcome faster than the confirm is not missed.
        """
        answers = Answers(self.connection, spec.operation.word)
        await answers.open()
        try:
            event_id = await self.send(spec, correlation_id)
            try:
                return event_id, await answers.wait(event_id, correlation_id or event_id, timeout)
            except TimeoutError:
                return event_id, None
        finally:
            await answers.close()

    async def _publish(self, channel: AbstractChannel, message: codec.Outgoing, key: str, word: str) -> int:
        """Publish until confirmed; returns the attempts it took.

        The first attempt goes straight out, without tenacity's retry machinery: nearly every
        publish is confirmed at once, and that machinery is built anew for each (docs/architecture.md).
        """
        try:
            await publish(channel, topology.REQUESTS_EXCHANGE, message, key, self.settings.publish_timeout)
            return 1
        except PublishFailed as exc:
            log.warning("publish not confirmed, retrying", extra=kv(
                message_id=message.message_id, correlation_id=message.correlation_id,
                routing_key=key, attempt=1, error=str(exc)))
            self._retried(word)
        await asyncio.sleep(FIRST_RETRY_WAIT)
        return 1 + await publish_until_confirmed(channel, topology.REQUESTS_EXCHANGE, message, key,
                                                 self.settings.publish_timeout,
                                                 on_retry=lambda: self._retried(word))

    def _retried(self, word: str) -> None:
        labelled(RETRIED, word).inc()
        self.retries += 1

    async def run(self, stop: asyncio.Event, rng: random.Random) -> int:
        """One random request every CALC_INTERVAL seconds until `stop` is set."""
        sent = 0
        while not stop.is_set():
            await self.send(random_spec(rng, self.settings.failure_share))
            sent += 1
            try:
                await asyncio.wait_for(stop.wait(), self.settings.interval)
            except TimeoutError:
                pass
        return sent

    async def bulk(self, specs: Iterable[Spec], count: int, rate: float | None,
                   stop: asyncio.Event | None = None, progress: bool = True) -> BulkReport:
        """Publish `count` requests with up to CALC_PUBLISH_IN_FLIGHT unconfirmed at once.

        `rate` (per second) paces the starts; progress goes to stderr once a second.
        """
        report = BulkReport(requested=count)
        retries_before = self.retries
        started = time.monotonic()
        last_progress = started
        sent = 0
        errors: list[BaseException] = []
        # CALC_PUBLISH_IN_FLIGHT workers share one iterator: as many publishes in flight, and
        # no task, semaphore or closure per message.
        todo = enumerate(itertools.islice(specs, count))

        async def worker() -> None:
            nonlocal sent, last_progress
            for index, spec in todo:
                if errors or (stop is not None and stop.is_set()):
                    return
                if rate:
                    delay = started + index / rate - time.monotonic()
                    if delay > 0:
                        await asyncio.sleep(delay)
                sent += 1
                try:
                    event_id = await self.send(spec, quiet=True)
                except BaseException as exc:
                    errors.append(exc)
                    return
                report.event_ids.append(event_id)
                report.confirmed += 1
                now = time.monotonic()
                if progress and now - last_progress >= 1.0:
                    last_progress = now
                    _progress(sent, report.confirmed, count, now - started)

        await asyncio.gather(*(worker() for _ in range(min(self.settings.publish_in_flight, count))))
        report.seconds = time.monotonic() - started
        report.retried = self.retries - retries_before
        if progress:
            _progress(count, report.confirmed, count, report.seconds, final=True)
        if errors:
            raise errors[0]
        return report


def _progress(sent: int, confirmed: int, count: int, seconds: float, final: bool = False) -> None:
    rate = confirmed / seconds if seconds else 0.0
    end = "\n" if final else "\r"
    sys.stderr.write(f"bulk: {confirmed}/{count} confirmed ({sent} sent) {rate:,.0f} msg/s{end}")
    sys.stderr.flush()
