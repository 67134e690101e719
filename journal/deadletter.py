"""Setting aside an outcome the journal cannot record: calc.results.journal.dlq, with its reason."""

from __future__ import annotations

import logging

from aio_pika.abc import AbstractChannel
from aiormq.abc import DeliveredMessage

from journal import metrics
from journal.record import Rejected
from messaging import codec, topology
from messaging.logs import kv
from messaging.publisher import publish

log = logging.getLogger(__name__)

REASON_HEADER = "reason"
DETAIL_HEADER = "detail"
DETAIL_HEADER_MAX = 500


async def dead_letter(channel: AbstractChannel, message: DeliveredMessage, rejected: Rejected,
                      timeout: float) -> None:
    """Publish the delivery, body and properties as they came, with `reason` and `detail` headers,
    to calc.results.journal.dlx; returns once confirmed (raises PublishFailed otherwise)."""
    incoming = codec.incoming_of(message)
    copy = codec.copy_message(message.body, message.header.properties, incoming.attempt)
    assert copy.properties.headers is not None
    copy.properties.headers[REASON_HEADER] = rejected.reason
    copy.properties.headers[DETAIL_HEADER] = rejected.detail[:DETAIL_HEADER_MAX]
    key = incoming.routing_key if codec.fits_short_string(incoming.routing_key) else "undecodable"
    await publish(channel, topology.JOURNAL_DLX, copy, key, timeout)
    metrics.DEAD_LETTERED.labels(rejected.reason).inc()
    metrics.OUTCOMES.labels("dead_lettered").inc()
    log.warning("outcome sent to the journal DLQ", extra=kv(
        message_id=incoming.message_id, correlation_id=incoming.correlation_id,
        reason=rejected.reason, detail=rejected.detail))
