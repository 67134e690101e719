"""A batch of held deliveries and the steps that write it: rows committed, DLQ copies, one ack."""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field

import aiormq
from aio_pika.abc import AbstractChannel
from aiormq.abc import DeliveredMessage

from journal import metrics, record
from journal.deadletter import dead_letter
from journal.record import Outcome, Rejected
from journal.store import RowRefused, Store
from messaging.logs import kv

log = logging.getLogger("journal.service")  # the journal service's lines, as before this module held them


@dataclass(slots=True)
class Held:
    """A delivery waiting for its batch: what it reads as, and how far it got."""

    message: DeliveredMessage
    read: Outcome | Rejected
    done: bool = False  # its row is committed, or its copy is confirmed in the journal DLQ


@dataclass
class Batch:
    """The oldest held deliveries of one channel, acked together once all are done."""

    items: list[Held] = field(default_factory=list)

    @property
    def channel(self) -> aiormq.abc.AbstractChannel:
        return self.items[-1].message.channel

    async def ack(self) -> bool:
        """One `multiple=True` ack up to the last tag; False when the channel is gone."""
        last = self.items[-1].message.delivery_tag
        assert last is not None
        try:
            await self.channel.basic_ack(last, multiple=True)
        except Exception as exc:  # the channel is gone: the broker delivers these again
            log.warning("could not ack a batch", extra=kv(count=len(self.items), error=repr(exc)))
            return False
        return True


async def record_rows(store: Store, items: list[Held]) -> bool:
    """Commit the rows of `items` (one transaction); True when some were refused (now Rejected)."""
    if not items:
        return False
    started = time.monotonic()
    try:
        recorded = await store.record([h.read for h in items])  # type: ignore[misc]
    except RowRefused:
        if len(items) == 1:
            raise
        # one outcome's values poison the transaction: find it by writing one at a time
        for h in items:
            try:
                await record_rows(store, [h])
            except RowRefused as exc:
                metrics.DATABASE_ERRORS.labels("row").inc()
                h.read = Rejected(record.REFUSED, str(exc)[:500])
        return True
    metrics.WRITE_SECONDS.observe(time.monotonic() - started)
    metrics.BATCH_SIZE.observe(len(items))
    metrics.BATCHES.inc()
    metrics.OUTCOMES.labels("recorded").inc(recorded.new)
    metrics.OUTCOMES.labels("updated").inc(recorded.again)
    metrics.OUTCOMES.labels("seen_again").inc(recorded.seen)
    for h in items:
        h.done = True
    return False


async def dead_letter_all(channel: AbstractChannel, items: list[Held], timeout: float) -> None:
    """Copy each of `items` to the journal DLQ with its reason; confirmed, then done."""
    for h in items:
        assert isinstance(h.read, Rejected)
        await dead_letter(channel, h.message, h.read, timeout)
        h.done = True
