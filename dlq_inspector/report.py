"""Aggregating explanations into the DLQ report: counts by reason, operation and routing key, ages."""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from aio_pika.abc import AbstractConnection

from dlq_inspector.explain import REASONS, Explanation, explain
from dlq_inspector.letters import DeadLetter
from dlq_inspector.reader import DlqScan
from messaging.settings import Settings
from messaging.topology import DLQ


@dataclass
class Report:
    """Built one explanation at a time (`add`), so a scan never holds more than the counters."""

    queue: str = DLQ
    total: int = 0
    bytes: int = 0
    by_reason: Counter[str] = field(default_factory=Counter)
    by_operation: Counter[str] = field(default_factory=Counter)
    by_routing_key: Counter[str] = field(default_factory=Counter)
    by_reason_and_operation: Counter[tuple[str, str]] = field(default_factory=Counter)
    """Counts by (reason, operation group): an operation outside the enum is `unknown`, so the
    pairs, unlike `by_operation`'s labels, are a bounded set (the metric's series)."""
    oldest_death: datetime | None = None
    newest_death: datetime | None = None
    expected: int | None = None
    """Ready messages the broker reported when the scan began (None: read from a file)."""
    complete: bool = True
    """False when the scan ended before reading `expected` messages (another reader holds some)."""
    scanned_at: datetime = field(default_factory=lambda: datetime.now(UTC))
    scan_seconds: float = 0.0

    def add(self, explanation: Explanation) -> None:
        self.total += 1
        self.bytes += len(explanation.letter.body)
        self.by_reason[explanation.reason] += 1
        self.by_operation[explanation.operation] += 1
        self.by_routing_key[explanation.original_routing_key] += 1
        self.by_reason_and_operation[explanation.reason, explanation.operation_group] += 1
        died = explanation.last_death
        if died is not None:
            if self.oldest_death is None or died < self.oldest_death:
                self.oldest_death = died
            if self.newest_death is None or died > self.newest_death:
                self.newest_death = died

    def oldest_age(self, now: datetime | None = None) -> float | None:
        """Seconds since the oldest message died, at `now` (default: this moment)."""
        if self.oldest_death is None:
            return None
        return max(0.0, ((now or datetime.now(UTC)) - self.oldest_death).total_seconds())

    def reasons(self) -> dict[str, int]:
        """Every known reason with its count (zeros included), then any other reason seen."""
        counts = {reason: self.by_reason.get(reason, 0) for reason in REASONS}
        counts.update({r: n for r, n in sorted(self.by_reason.items()) if r not in counts})
        return counts

    def as_json(self) -> dict[str, Any]:
        def ordered(counter: Counter[str]) -> dict[str, int]:
            return dict(sorted(counter.items(), key=lambda kv: (-kv[1], kv[0])))

        age = self.oldest_age(self.scanned_at)
        return {
            "queue": self.queue,
            "total": self.total,
            "bytes": self.bytes,
            "by_reason": ordered(self.by_reason),
            "by_operation": ordered(self.by_operation),
            "by_routing_key": ordered(self.by_routing_key),
            "oldest_death": self.oldest_death.isoformat() if self.oldest_death else None,
            "newest_death": self.newest_death.isoformat() if self.newest_death else None,
            "oldest_age_seconds": round(age, 3) if age is not None else None,
            "expected": self.expected,
            "complete": self.complete,
            "scanned_at": self.scanned_at.isoformat(),
            "scan_seconds": round(self.scan_seconds, 3),
        }


async def summarize(letters: AsyncIterator[DeadLetter], max_bytes: int, max_attempts: int) -> Report:
    """The report of a stream of letters, explaining each and keeping none."""
    report = Report()
    async for letter in letters:
        report.add(explain(letter, max_bytes, max_attempts))
    return report


async def scan_report(connection: AbstractConnection, settings: Settings) -> Report:
    """Scan calc.dlq once into a report (every message handed back when it returns)."""
    started = time.monotonic()
    async with DlqScan(connection) as scan:
        report = await summarize(scan.letters(), settings.max_message_bytes, settings.max_attempts)
        report.expected, report.complete = scan.expected, scan.complete
    report.scan_seconds = time.monotonic() - started
    return report
