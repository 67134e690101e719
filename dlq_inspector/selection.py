"""Which DLQ messages a command applies to: by event_id, by reason, by operation, or all."""

from __future__ import annotations

from dataclasses import dataclass, field

from dlq_inspector.explain import Explanation


@dataclass(frozen=True)
class Selection:
    """All given criteria must hold; no criteria selects everything."""

    ids: frozenset[str] = frozenset()
    reasons: frozenset[str] = frozenset()
    operations: frozenset[str] = frozenset()

    def matches(self, explanation: Explanation) -> bool:
        if self.ids and not ({explanation.event_id, explanation.letter.text("message_id")} & self.ids):
            return False
        if self.reasons and explanation.reason not in self.reasons:
            return False
        return not self.operations or explanation.operation_group in self.operations

    def describe(self) -> str:
        """`reason RETRIES_EXHAUSTED`, `3 event ids`, `every message`: for prompts and summaries."""
        parts = []
        if self.ids:
            parts.append(f"{len(self.ids)} event id{'s' if len(self.ids) != 1 else ''}")
        if self.reasons:
            parts.append("reason " + "/".join(sorted(self.reasons)))
        if self.operations:
            parts.append("operation " + "/".join(sorted(self.operations)))
        return ", ".join(parts) or "every message"


@dataclass
class Found:
    """Tracks which requested ids a scan met, to report the ones it did not."""

    wanted: frozenset[str]
    seen: set[str] = field(default_factory=set)

    def note(self, explanation: Explanation) -> None:
        for key in (explanation.event_id, explanation.letter.text("message_id")):
            if key in self.wanted:
                self.seen.add(key)

    @property
    def missing(self) -> list[str]:
        return sorted(self.wanted - self.seen)
