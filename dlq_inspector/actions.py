"""What changes the DLQ (replay, purge) and what archives it (export), one scan each."""

from __future__ import annotations

import asyncio
import json
import time
from collections import Counter
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any, TextIO

from aio_pika.abc import AbstractChannel
from tenacity import AsyncRetrying, retry_if_exception_type, stop_after_attempt

from dlq_inspector.broker import BROKER_ERRORS
from dlq_inspector.explain import Explanation, explain
from dlq_inspector.letters import DeadLetter, to_record
from dlq_inspector.reader import Delivery, DlqScan
from dlq_inspector.render import Progress
from dlq_inspector.selection import Found, Selection
from messaging import backoff, codec, topology, tracing
from messaging.errors import CalcEventsError, PublishFailed, Unencodable
from messaging.frames import printable
from messaging.publisher import publish
from messaging.settings import Settings

REPLAY_ATTEMPT = 1  # a replay is a fresh start: the consumer's full retry budget applies again
PUBLISH_TRIES = 4  # a nack (work queue full) or timeout is retried this often, then the message stays


@dataclass
class ActionResult:
    """What a replay or purge did; `done` counts messages replayed/purged (or that would be)."""

    action: str
    dry_run: bool
    selection: str
    scanned: int = 0
    selected: int = 0
    done: int = 0
    done_by_reason: Counter[str] = field(default_factory=Counter)
    failed: list[dict[str, str]] = field(default_factory=list)
    missing_ids: list[str] = field(default_factory=list)
    complete: bool = True
    seconds: float = 0.0

    def as_json(self) -> dict[str, Any]:
        return {
            "action": self.action, "dry_run": self.dry_run, "selection": self.selection,
            "scanned": self.scanned, "selected": self.selected, "done": self.done,
            "done_by_reason": dict(sorted(self.done_by_reason.items())), "failed": self.failed,
            "missing_ids": self.missing_ids, "complete": self.complete,
            "seconds": round(self.seconds, 3),
        }

    def note_done(self, explanation: Explanation) -> None:
        self.done += 1
        self.done_by_reason[explanation.reason] += 1

    def note_failed(self, explanation: Explanation, error: str) -> None:
        self.failed.append({"event_id": explanation.event_id, "error": error})

    def finish(self, found: Found, scan: DlqScan, started: float) -> None:
        self.missing_ids = found.missing
        self.complete = scan.complete
        self.seconds = time.monotonic() - started


OnMessage = Callable[[Explanation], None]
OnFailure = Callable[[Explanation, str], None]


class _Pace:
    """At most `rate` per second (None: unpaced), so a big replay does not flood the consumers."""

    def __init__(self, rate: float | None) -> None:
        self.interval = 1.0 / rate if rate else 0.0
        self.next = time.monotonic()

    async def wait(self) -> None:
        if not self.interval:
            return
        now = time.monotonic()
        if self.next > now:
            await asyncio.sleep(self.next - now)
        self.next = max(self.next, now) + self.interval


async def _publish(channel: AbstractChannel, delivery: Delivery, routing_key: str,
                   settings: Settings, traces: tracing.Tracing | None = None) -> None:
    if not codec.fits_short_string(routing_key):  # octets a decoder had to escape: not sendable
        raise Unencodable(f"its routing key '{printable(routing_key)}' is not UTF-8: it cannot be "
                          "published again (purge it, or export it to keep the bytes)")
    message = codec.copy_message(delivery.message.body, delivery.message.properties, REPLAY_ATTEMPT,
                                 app_id=codec.APP_INSPECTOR)
    if traces is None:
        await _until_confirmed(channel, message, routing_key, settings)
        return
    # a new trace (the dead letter's has ended), linked to it: the copy carries the new context
    with traces.publishing(topology.REQUESTS_EXCHANGE, routing_key, tracing.headers_of(message.properties),
                           message_id=message.message_id or "", correlation_id=message.correlation_id or "",
                           parent=tracing.fresh(), links=tracing.link_to(delivery.letter.headers)) as span:
        span.set_attribute("calc.replay", True)
        await _until_confirmed(channel, message, routing_key, settings)


async def _until_confirmed(channel: AbstractChannel, message: codec.Outgoing, routing_key: str,
                           settings: Settings) -> None:
    """Publish, retrying a nack or timeout PUBLISH_TRIES times in all."""
    retrying = AsyncRetrying(retry=retry_if_exception_type(PublishFailed),
                             stop=stop_after_attempt(PUBLISH_TRIES),
                             wait=backoff.INSPECTOR.tenacity_wait, reraise=True)
    async for attempt in retrying:
        with attempt:
            await publish(channel, topology.REQUESTS_EXCHANGE, message, routing_key,
                          settings.publish_timeout)


async def _republish_then_ack(channel: AbstractChannel, delivery: Delivery, explanation: Explanation,
                              settings: Settings, traces: tracing.Tracing | None = None) -> str | None:
    """Republish one message and remove it from the DLQ only once the broker confirmed the copy.

    Returns why it did not (None when it did): a copy not confirmed leaves the message in the
    DLQ untouched; a failed ack after the confirm leaves both, a duplicate, never a loss.
    """
    try:
        await _publish(channel, delivery, explanation.original_routing_key, settings, traces)
    except CalcEventsError as exc:
        return str(exc)
    try:
        await delivery.ack()
    except BROKER_ERRORS as exc:
        return f"replayed, but still in the DLQ (a later replay duplicates it): {exc!r}"
    return None


async def replay(scan: DlqScan, channel: AbstractChannel, selection: Selection, settings: Settings,
                 *, dry_run: bool, on_done: OnMessage, on_failed: OnFailure, progress: Progress,
                 rate: float | None = None, traces: tracing.Tracing | None = None) -> ActionResult:
    """Republish the selected messages to calc.requests; each leaves the DLQ only once confirmed.

    The copy keeps body, properties and client headers, with a fresh `attempt` and app_id
    `calc-dlq-inspector` (the contract's app_id names the publisher; the body's `source` still
    names the producer), and goes out with its original routing key. A crash
    between the confirm and the ack leaves the message in the DLQ as well: a duplicate the
    consumer handles by event_id, never a loss. A message that cannot be published (no queue
    bound to its key, a full work queue) stays in the DLQ and is reported as failed. With
    `traces`, each copy starts a new trace whose span links to the dead letter's.
    """
    result = ActionResult("replay", dry_run, selection.describe())
    found = Found(selection.ids)
    slots = asyncio.Semaphore(settings.publish_in_flight)  # CALC_PUBLISH_IN_FLIGHT
    pending: set[asyncio.Task[None]] = set()
    pace = _Pace(rate)
    started = time.monotonic()

    async def one(delivery: Delivery, explanation: Explanation) -> None:
        try:
            error = await _republish_then_ack(channel, delivery, explanation, settings, traces)
        finally:
            slots.release()
        if error is None:
            result.note_done(explanation)
            on_done(explanation)
        else:
            result.note_failed(explanation, error)
            on_failed(explanation, error)

    async for delivery in scan.deliveries():
        result.scanned += 1
        explanation = explain(delivery.letter, settings.max_message_bytes, settings.max_attempts)
        found.note(explanation)
        if selection.matches(explanation):
            result.selected += 1
            if dry_run:
                result.note_done(explanation)
                on_done(explanation)
            else:
                await pace.wait()
                await slots.acquire()
                task = asyncio.create_task(one(delivery, explanation))
                pending.add(task)
                task.add_done_callback(pending.discard)
        progress.update(f"scanned {result.scanned}/{scan.expected}, selected {result.selected}, "
                        f"replayed {result.done}, failed {len(result.failed)}")
    if pending:
        await asyncio.gather(*pending)
    progress.update(f"scanned {result.scanned}/{scan.expected}, selected {result.selected}, "
                    f"replayed {result.done}, failed {len(result.failed)}", force=True)
    progress.done()
    result.finish(found, scan, started)
    return result


async def purge(scan: DlqScan, selection: Selection, settings: Settings, *, dry_run: bool,
                on_done: OnMessage, progress: Progress) -> ActionResult:
    """Remove (ack) the selected messages; every other one goes back in its place."""
    result = ActionResult("purge", dry_run, selection.describe())
    found = Found(selection.ids)
    started = time.monotonic()
    async for delivery in scan.deliveries():
        result.scanned += 1
        explanation = explain(delivery.letter, settings.max_message_bytes, settings.max_attempts)
        found.note(explanation)
        if selection.matches(explanation):
            result.selected += 1
            if not dry_run:
                await delivery.ack()
            result.note_done(explanation)
            on_done(explanation)
        progress.update(f"scanned {result.scanned}/{scan.expected}, purged {result.done}")
    progress.done()
    result.finish(found, scan, started)
    return result


def export_line(explanation: Explanation) -> str:
    """One JSON line: the explanation (for people and jq) and the raw message (to rebuild it)."""
    return json.dumps({**explanation.summary(), **to_record(explanation.letter)},
                      separators=(",", ":"), ensure_ascii=False)


async def export(letters: AsyncIterator[DeadLetter], out: TextIO, selection: Selection,
                 settings: Settings, progress: Progress) -> Counter[str]:
    """Write the selected messages as JSON lines; returns how many were written, by reason."""
    written: Counter[str] = Counter()
    async for letter in letters:
        explanation = explain(letter, settings.max_message_bytes, settings.max_attempts)
        if selection.matches(explanation):
            out.write(export_line(explanation) + "\n")
            written[explanation.reason] += 1
        progress.update(f"exported {written.total()}")
    progress.done()
    return written
