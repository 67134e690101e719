"""The consumer's memory of requests it completed, so that a redelivered one is not done twice."""

from __future__ import annotations


class Completed:
    """Bounded memory of event_ids completed by this process, for duplicate redeliveries.

    Two generations of sets: the newest `capacity / 2` ids at least, `capacity` at most. When
    the current one is full it becomes the previous one and the oldest generation is dropped
    whole: O(1) per id, no per-entry bookkeeping, and memory that stops growing once the first
    generations have filled (an ordered dict evicting one id at a time kept resizing).
    """

    def __init__(self, capacity: int = 100_000) -> None:
        self._generation = max(1, capacity // 2)
        self._current: set[str] = set()
        self._previous: set[str] = set()

    def __contains__(self, event_id: object) -> bool:
        return event_id in self._current or event_id in self._previous

    def add(self, event_id: str) -> None:
        self._current.add(event_id)
        if len(self._current) >= self._generation:
            self._previous, self._current = self._current, set()
