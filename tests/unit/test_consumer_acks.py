"""Batched acks never cover an unconfirmed delivery; the dedupe memory is bounded (no broker)."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from consumer.acks import AckLedger
from consumer.dedupe import Completed


def _acks(batch: int = 3) -> AckLedger:
    return AckLedger(batch=batch)


def _ready(acks: AckLedger, *tags: int) -> None:
    for tag in tags:
        acks.ready(tag)




def test_contiguous_deliveries_are_acked_once_per_batch() -> None:
    acks = _acks(batch=3)
    _ready(acks, 1, 2)
    assert not acks.due
    _ready(acks, 3)
    assert acks.due
    last, count, singles = acks.take()
    assert (last, count, singles) == (3, 3, [])
    assert acks.take() == (None, 0, [])


def test_a_gap_holds_the_multiple_ack_below_it() -> None:
    acks = _acks(batch=10)
    _ready(acks, 2, 3)  # 1's result is not confirmed yet
    last, count, _ = acks.take()
    assert last is None and count == 0
    _ready(acks, 1)
    last, count, _ = acks.take()
    assert (last, count) == (3, 3)


def test_rejected_deliveries_are_passed_but_never_named() -> None:
    acks = _acks(batch=10)
    _ready(acks, 1)
    acks.settled(2)  # rejected on its own
    last, count, _ = acks.take()
    assert (last, count) == (1, 1), "tag 2 is no longer unacked: acking it is an error"
    _ready(acks, 3)
    last, count, _ = acks.take()
    assert (last, count) == (3, 1)


def test_a_stuck_delivery_does_not_stall_the_rest() -> None:
    acks = _acks(batch=3)
    _ready(acks, 2, 3, 4)  # 1 waits for a slow confirm
    assert acks.due
    last, count, singles = acks.take()
    assert last is None and count == 0 and sorted(singles) == [2, 3, 4]
    _ready(acks, 1)
    last, count, singles = acks.take()
    assert (last, count, singles) == (1, 1, []), "2-4 were acked alone; only 1 is left"


def test_the_last_flush_acks_everything_confirmed_past_a_gap() -> None:
    acks = _acks(batch=100)
    _ready(acks, 1, 3, 4, 6)  # 2 and 5 never settle here (the channel closes with them unacked)
    assert acks.take() == (1, 1, [])  # an ordinary flush waits for 2: fewer stuck than a batch
    _ready(acks, 7)
    last, count, singles = acks.take(everything=True)
    assert (last, count, sorted(singles)) == (None, 0, [3, 4, 6, 7])
    assert acks.take(everything=True) == (None, 0, []), "each tag is acked once"
    assert acks.frontier == 1


def test_a_tag_is_settled_once() -> None:
    acks = _acks(batch=10)
    _ready(acks, 1)
    acks.settled(1)  # a later nack of an already confirmed delivery must not re-open it
    last, count, _ = acks.take()
    assert (last, count) == (1, 1)
    acks.settled(None)  # a delivery without a tag is ignored


@settings(max_examples=300, deadline=None)
@given(st.data())
def test_broker_view_no_ack_covers_an_unconfirmed_or_settled_tag(data: st.DataObject) -> None:
    """Simulate the broker: acks only name unacked tags and only settle confirmed deliveries."""
    n = data.draw(st.integers(1, 60))
    batch = data.draw(st.integers(1, 8))
    order = data.draw(st.permutations(range(1, n + 1)))
    rejected = {t for t in range(1, n + 1) if data.draw(st.booleans(), label=f"reject {t}")}
    acks = _acks(batch)
    unacked = set(range(1, n + 1))
    confirmed: set[int] = set()

    def flush() -> None:
        last, _, singles = acks.take()
        for tag in singles:
            assert tag in unacked and tag in confirmed
            unacked.discard(tag)
        if last is not None:
            tag = last
            assert tag in unacked, f"multiple ack names tag {tag}, which is not unacked"
            covered = {t for t in unacked if t <= tag}
            assert covered <= confirmed, f"ack {tag} covers unconfirmed {sorted(covered - confirmed)}"
            unacked.difference_update(covered)

    for tag in order:
        confirmed.add(tag)
        if tag in rejected:
            unacked.discard(tag)  # the reject goes out first, on its own
            acks.settled(tag)
        else:
            _ready(acks, tag)
        if acks.due or data.draw(st.booleans(), label="flush now"):
            flush()
    flush()
    assert not unacked, f"left unacked: {sorted(unacked)}"


def test_completed_ids_remember_the_newest_half_capacity_at_least_and_capacity_at_most() -> None:
    completed = Completed(capacity=10)
    for i in range(23):
        completed.add(f"id-{i}")
        remembered = [j for j in range(i + 1) if f"id-{j}" in completed]
        newest = list(range(max(0, i - 4), i + 1))
        assert remembered[-len(newest):] == newest, f"after id-{i}: lost one of the newest 5"
        assert len(remembered) <= 10
    assert "id-0" not in completed and "id-22" in completed
