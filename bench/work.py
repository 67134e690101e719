"""The per-message work every baseline does: decode, compute, encode the outcome event.

Lighter than the consumer's contract checks (no property, size or routing-key checks), so the
baselines get the benefit of the doubt.
"""

from __future__ import annotations

import time
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime

from google.protobuf.timestamp_pb2 import Timestamp

from calculator import CalculationError, compute
from messaging import codec, enums, topology

RESULTS_EXCHANGE = topology.RESULTS_EXCHANGE
WORK_QUEUE = topology.work_queue("basic")
APP_ID = "calc-consumer"
PROCESSED_BY = "bench-baseline"


@dataclass(slots=True)
class Outcome:
    """One request's result (`ok`) or permanent failure, encoded and ready to publish."""

    ok: bool
    routing_key: str
    body: bytes
    type: str
    event_id: str
    correlation_id: str
    timestamp: int


def process(body: bytes, routing_key: str, correlation_id: str | None) -> Outcome:
    request = codec.decode_request(body)
    word = routing_key.rpartition(".")[2]
    now = Timestamp()
    now.GetCurrentTime()
    event_id = str(uuid.uuid4())
    correlation = correlation_id or request.event_id
    try:
        operation = enums.domain_operation(int(request.operation))
        result = compute(operation, list(request.operands))
    except CalculationError as exc:
        failed = codec.Failed(event_id=event_id, request_event_id=request.event_id, occurred_at=now,
                              operation=request.operation, reason=enums.reason_of(exc),  # type: ignore[arg-type]
                              detail=str(exc), attempts=1, processed_by=PROCESSED_BY)
        return Outcome(False, topology.failed_key(word), failed.SerializeToString(), codec.TYPE_FAILED,
                       event_id, correlation, now.seconds)
    completed = codec.Completed(event_id=event_id, request_event_id=request.event_id, occurred_at=now,
                                operation=request.operation, operands=request.operands, result=result,
                                processed_by=PROCESSED_BY)
    return Outcome(True, topology.completed_key(word), completed.SerializeToString(), codec.TYPE_COMPLETED,
                   event_id, correlation, now.seconds)


def aiormq_properties(out: Outcome):  # type: ignore[no-untyped-def]
    from pamqp.commands import Basic

    return Basic.Properties(content_type=codec.CONTENT_TYPE, message_type=out.type, message_id=out.event_id,
                            correlation_id=out.correlation_id, delivery_mode=2, app_id=APP_ID,
                            timestamp=datetime.fromtimestamp(out.timestamp, UTC),
                            headers={codec.ATTEMPT_HEADER: 1})


def pika_properties(out: Outcome):  # type: ignore[no-untyped-def]
    import pika

    return pika.BasicProperties(content_type=codec.CONTENT_TYPE, type=out.type, message_id=out.event_id,
                                correlation_id=out.correlation_id, delivery_mode=2, app_id=APP_ID,
                                timestamp=out.timestamp, headers={codec.ATTEMPT_HEADER: 1})


def aio_pika_message(out: Outcome):  # type: ignore[no-untyped-def]
    import aio_pika

    return aio_pika.Message(out.body, content_type=codec.CONTENT_TYPE, type=out.type,
                            message_id=out.event_id, correlation_id=out.correlation_id,
                            delivery_mode=aio_pika.DeliveryMode.PERSISTENT, app_id=APP_ID,
                            timestamp=datetime.fromtimestamp(out.timestamp, UTC),
                            headers={codec.ATTEMPT_HEADER: 1})


class Meter:
    """Counts settled deliveries (acked, rejected) and notes when `count` were settled."""

    def __init__(self, count: int) -> None:
        self.count = count
        self.settled = 0
        self.started = time.perf_counter()
        self.cpu_started = time.process_time()
        self.finished: float | None = None
        self.cpu = 0.0  # process CPU seconds (user + system) between start and the last settle

    def start(self) -> None:
        self.started = time.perf_counter()
        self.cpu_started = time.process_time()

    def add(self, n: int = 1) -> None:
        self.settled += n
        if self.finished is None and self.settled >= self.count:
            self.finished = time.perf_counter()
            self.cpu = time.process_time() - self.cpu_started

    @property
    def done(self) -> bool:
        return self.finished is not None

    @property
    def seconds(self) -> float:
        return (self.finished or time.perf_counter()) - self.started


class RangeAcker:
    """Batched `multiple=True` acks that never cover a delivery whose outcome is unconfirmed.

    `settle(tag, ack)` is called once per delivery tag of one channel, after the outcome was
    confirmed (and, for a reject, after the reject was sent). The frontier is the highest tag
    below which every tag is settled; the ack goes to the highest *ack* tag at or below it (a
    rejected tag is no longer unacked, so acking it would be an unknown delivery tag).
    """

    def __init__(self, send_ack, meter: Meter, batch: int) -> None:  # type: ignore[no-untyped-def]
        self.send_ack = send_ack
        self.meter = meter
        self.batch = batch
        self.frontier = 0
        self.ackable = 0
        self.acked = 0
        self.pending = 0  # ack-kind tags in (acked, ackable]
        self.ready: dict[int, bool] = {}

    def settle(self, tag: int, ack: bool) -> None:
        self.ready[tag] = ack
        if not ack:
            self.meter.add()
        while self.frontier + 1 in self.ready:
            self.frontier += 1
            if self.ready.pop(self.frontier):
                self.ackable = self.frontier
                self.pending += 1
        if self.pending >= self.batch:
            self.flush()

    def flush(self) -> None:
        if self.ackable > self.acked:
            self.send_ack(self.ackable)
            self.acked = self.ackable
            self.meter.add(self.pending)
            self.pending = 0
