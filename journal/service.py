"""The journal service: outcomes in, rows committed a batch at a time, one multiple ack per commit."""

from __future__ import annotations

import asyncio
import contextlib
import logging

from aio_pika.abc import AbstractChannel, AbstractRobustChannel, AbstractRobustConnection
from aiormq.abc import DeliveredMessage

from journal import metrics, record
from journal.batch import Batch, Held, dead_letter_all, record_rows
from journal.health import DatabaseProbe, Health
from journal.record import Outcome, Rejected
from journal.store import DatabaseRefused, DatabaseUnavailable, Store
from journal.subscription import OnMessage, Subscription
from messaging import codec, topology
from messaging.backoff import Backoff
from messaging.errors import Transient
from messaging.logs import kv
from messaging.publisher import confirmed_channel
from messaging.settings import Settings
from messaging.tracing import Tracing

log = logging.getLogger(__name__)

LINGER_S = 0.01
"""How long a batch that is not full waits for more outcomes before it is written."""
DATABASE = Backoff(first=0.5, cap=5.0)
"""Writing a batch again after the database was unavailable or refused it."""
DRAIN_TIMEOUT_S = 30.0
"""Shutdown: how long the last batches get to commit; what is left is redelivered later."""


def traced(tracing: Tracing, handler: OnMessage) -> OnMessage:
    """`handler` in a CONSUMER span, child of the outcome's publish. It ends once the outcome
    is held: the commit is one transaction for a batch of many traces."""

    async def on_message(message: DeliveredMessage) -> None:
        properties = message.header.properties
        with tracing.processing(topology.JOURNAL_QUEUE, message.exchange or "",
                                message.routing_key or "", properties.headers,
                                message_id=properties.message_id or "",
                                correlation_id=properties.correlation_id or "",
                                delivery_tag=message.delivery_tag):
            await handler(message)

    return on_message


class JournalService:
    """Consumes calc.results.journal until `stop()`; nothing is acked before its row is committed.

    Deliveries are held in arrival order (= delivery tag order on the channel). The writer takes
    the oldest up to CALC_JOURNAL_BATCH, sends the undecodable ones to the journal DLQ, commits
    the rest in one transaction, then acks them all with one `multiple=True` ack: every tag it
    covers is of that batch or an earlier one. While the database is away the batch is retried
    and nothing is acked: the broker stops delivering once the prefetch (twice the batch) is held.
    """

    def __init__(self, settings: Settings, connection: AbstractRobustConnection, store: Store,
                 health: Health | None = None, tracing: Tracing | None = None) -> None:
        self.settings = settings
        self.tracing = tracing  # None: off (docs/operations.md, "Tracing")
        self.connection = connection
        self.store = store
        self.health = health or Health()
        self.batch_size = settings.journal_batch
        self.prefetch = min(2 * settings.journal_batch, 65_535)
        self._held: list[Held] = []
        self._arrived = asyncio.Event()
        self._consume: AbstractRobustChannel | None = None
        self._publish: AbstractChannel | None = None
        self._subscription: Subscription | None = None
        self._writer: asyncio.Task[None] | None = None
        self.probe = DatabaseProbe(self.health, store.ping, (DatabaseUnavailable, DatabaseRefused))
        self._prober: asyncio.Task[None] | None = None
        self._stopping = False
        self.acked = 0
        """Deliveries acked since start (the benchmark and tests count on it)."""

    @property
    def held(self) -> int:
        """Deliveries received and not yet acked."""
        return len(self._held)

    async def start(self) -> None:
        self._publish = await confirmed_channel(self.connection)
        await topology.declare(self._publish, self.settings, service=topology.JOURNAL)
        channel = await self.connection.channel()
        assert isinstance(channel, AbstractRobustChannel), "connect(robust=True) for the journal"
        self._consume = channel
        await channel.set_qos(prefetch_count=self.prefetch)
        self.health.database = True
        self._writer = asyncio.create_task(self._write_loop())
        self._prober = asyncio.create_task(self.probe.run())
        handler = self._on_message if self.tracing is None else traced(self.tracing, self._on_message)
        self._subscription = Subscription(channel, handler, self.health, {
            "batch": self.batch_size, "prefetch": self.prefetch, "instance": self.settings.instance_id})
        await self._subscription.start()

    async def _on_message(self, message: DeliveredMessage) -> None:
        if self._held and self._held[-1].message.channel is not message.channel:
            # a new channel: the old one's deliveries went back to the queue with it
            self._forget([h for h in self._held if h.message.channel is not message.channel])
        self._held.append(Held(message, record.read(codec.incoming_of(message))))
        metrics.HELD.set(len(self._held))
        self._arrived.set()

    def _forget(self, lost: list[Held]) -> None:
        if lost:
            gone = {id(h) for h in lost}
            self._held = [h for h in self._held if id(h) not in gone]
            log.info("deliveries of a closed channel dropped; the broker delivers them again",
                     extra=kv(count=len(lost)))

    async def _write_loop(self) -> None:
        while True:
            if not self._held:
                if self._stopping:
                    return
                self._arrived.clear()
                await self._arrived.wait()
                continue
            if len(self._held) < self.batch_size and not self._stopping:
                await asyncio.sleep(LINGER_S)
            batch = Batch(self._held[:self.batch_size])
            channel = batch.channel
            batch.items = [h for h in batch.items if h.message.channel is channel]
            self._forget([h for h in self._held[:self.batch_size] if h.message.channel is not channel])
            acked = await self._commit(batch)
            taken = {id(h) for h in batch.items}
            self._held = [h for h in self._held if id(h) not in taken]
            metrics.HELD.set(len(self._held))
            if not acked and not channel.is_closed:
                return  # stopping with the database away: a later ack would cover this batch

    async def _commit(self, batch: Batch) -> bool:
        """DLQ copies, then the rows, then one ack; each step retried until done (True) or the
        channel is gone, or, when stopping, the database stays away (False)."""
        failures = 0
        while not batch.channel.is_closed:
            try:
                todo = [h for h in batch.items if not h.done]
                assert self._publish is not None
                await dead_letter_all(self._publish, [h for h in todo if isinstance(h.read, Rejected)],
                                      self.settings.publish_timeout)
                if await record_rows(self.store, [h for h in todo if isinstance(h.read, Outcome)]):
                    continue  # some rows were refused: they are Rejected now, for the DLQ
                if await batch.ack():
                    self.acked += len(batch.items)
                self.probe.written()
                return True
            except (DatabaseUnavailable, DatabaseRefused) as exc:
                failures += 1
                kind = "refused" if isinstance(exc, DatabaseRefused) else "unavailable"
                metrics.DATABASE_ERRORS.labels(kind).inc()
                if self.health.database or failures == 1:
                    (log.error if kind == "refused" else log.warning)(
                        "journal paused: cannot write to the database; nothing is acked until it can",
                        extra=kv(error=str(exc), held=len(self._held)))
                self.health.database = False
                self.health.error = str(exc)
            except Transient as exc:  # the journal DLQ's publish was not confirmed
                failures += 1
                log.warning("could not dead-letter an outcome; retrying", extra=kv(error=str(exc)))
            if self._stopping and failures >= 3:
                return False  # stop() waits for no database: the broker delivers these again
            await asyncio.sleep(DATABASE.delay(failures))
        log.info("channel closed before its batch was acked; the broker delivers it again",
                 extra=kv(count=len(batch.items)))
        return False

    async def stop(self, timeout: float = DRAIN_TIMEOUT_S) -> None:
        """Stop consuming, commit and ack what is held (for up to `timeout` s), close the channels."""
        self._stopping = True
        if self._prober is not None:
            self._prober.cancel()
        if self._subscription is not None:
            await self._subscription.cancel()
        self._arrived.set()
        if self._writer is not None:
            try:
                await asyncio.wait_for(asyncio.shield(self._writer), timeout)
            except TimeoutError:
                log.warning("deliveries left unacked at shutdown; the broker delivers them again",
                            extra=kv(held=len(self._held)))
                self._writer.cancel()
                await asyncio.gather(self._writer, return_exceptions=True)
        underlay = self._subscription.underlay if self._subscription else None
        if underlay is not None and not underlay.is_closed:
            # a round trip: the broker has read the last ack before the channel closes
            with contextlib.suppress(Exception):
                await underlay.basic_qos(prefetch_count=self.prefetch)
            await asyncio.sleep(0.2)
        for opened in (self._consume, self._publish):
            if opened is not None and not opened.is_closed:
                with contextlib.suppress(Exception):
                    await opened.close()
        log.info("stopped", extra=kv(acked=self.acked, instance=self.settings.instance_id))
