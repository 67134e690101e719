"""A broker that stops reading from publishers (a memory alarm): publishing waits, then recovers.

With `vm_memory_high_watermark` at 0 the broker blocks every connection that publishes: it
stops reading from it, so nothing written to it is confirmed, and sends connection.blocked.
Publishes written before that notice wait in the socket; their confirm timeout
(CALC_PUBLISH_TIMEOUT) is held while the connection is blocked, and every later publish waits
for the unblock before it is written. So nothing times out, nothing is sent twice, and once the
alarm clears every request ends with exactly one outcome.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from messaging import topology
from tests.chaos.conftest import Row
from tests.chaos.harness import (
    FlowProbe,
    Ledger,
    Service,
    bulk_args,
    bulk_confirmed,
    chaos_env,
    consumer_behind_a_backlog,
    queue_stats,
    read_ids,
    services,
    wait_settled,
)
from tests.support.journal import assert_journal_matches, start_journal
from tests.support.private_node import NodeFactory

PRELOADED = 30_000
"""Requests queued before the consumer starts: it is still working through them at the alarm."""
DURING = 50
"""Requests the producer starts while the alarm holds."""
TIMEOUT = 2.0
"""CALC_PUBLISH_TIMEOUT for both services: short, so a held publish would time out during the
alarm, and above the confirm latency of a quorum calc.results.audit (RabbitMQ 4) on a loaded machine."""

_BLOCKED = "was blocked by: 'low on memory'"
_PAUSED = "WARNING messaging.publisher publishing paused: the broker blocks this connection"
_RESUMED = "WARNING messaging.publisher publishing resumed paused_s="
_TIMED_OUT = re.compile(r"no confirm for '[\w.]+' within")


QUEUE_TICK_S = 6.0
"""More than a quorum queue's tick (5 s), after which its reported counts are current."""


def _steady_ready(node: Any, queue: str, timeout: float = 60.0) -> int:
    """The ready count of `queue` once it has stayed the same for a whole QUEUE_TICK_S."""
    deadline = time.monotonic() + timeout
    value, since = queue_stats(node)[queue].ready, time.monotonic()
    while time.monotonic() < deadline:
        time.sleep(1.0)
        now = queue_stats(node)[queue].ready
        if now != value:
            value, since = now, time.monotonic()
        elif time.monotonic() - since >= QUEUE_TICK_S:
            return value
    raise AssertionError(f"{queue} kept growing during the alarm (ready {value}): a result got through")


async def test_a_memory_alarm_holds_publishing_and_nothing_times_out_is_lost_or_duplicated(
        private_node: NodeFactory, database_url: str, tmp_path: Path,
        reliability: Callable[[Row], None]) -> None:
    node = private_node()
    env = chaos_env(node.url, CALC_PUBLISH_TIMEOUT=str(TIMEOUT))
    before_ids, during_ids = tmp_path / "before.txt", tmp_path / "during.txt"
    with services() as started:
        journal = start_journal(started, env, database_url, tmp_path / "journal.log")
        consumer = consumer_behind_a_backlog(started, env, PRELOADED, before_ids, 71, tmp_path)
        # subscribed (a blocked connection could not subscribe) and busy with the backlog
        node.admin.ctl(["set_vm_memory_high_watermark", "0"])
        alarm_at = time.monotonic()
        try:
            producer = Service(bulk_args(DURING, during_ids, seed=72), env, tmp_path / "producer.log")
            started.append(producer)
            # the broker's notice (aiormq logs it), to the consumer while its results for the
            # deliveries in hand were going out, and to the producer after its 50 went out
            consumer.wait_line(_BLOCKED, 30)
            producer.wait_line(_BLOCKED, 30)
            # a quorum queue (calc.results.audit on RabbitMQ 4) reports its counts once a tick: a
            # count read now may not yet hold the results confirmed before the notice
            audit = _steady_ready(node, topology.AUDIT_QUEUE)
            # three confirm timeouts: whatever was written before the notice is held, not timed out
            time.sleep(max(3 * TIMEOUT, QUEUE_TICK_S))
            assert queue_stats(node)[topology.AUDIT_QUEUE].ready == audit, "a result got through the alarm"
            assert consumer.running() and producer.running()
            assert bulk_confirmed(producer.log) == 0, "a request was confirmed during the alarm"
            for service in (consumer, producer):
                assert not _TIMED_OUT.search(service.text()), f"{service.log.name}: a publish timed out"
        finally:
            with FlowProbe(node.url, producer.log) as probe:
                cleared_at = time.monotonic()
                node.admin.ctl(["set_vm_memory_high_watermark", "0.4"])
                assert producer.wait(120) == 0, producer.text()[-3000:]
                wait_settled(node)
        assert consumer.running(), "the consumer died"
        assert consumer.terminate() == 0
        sent = read_ids(before_ids) + read_ids(during_ids)
        ledger = await Ledger.collect(node.url, sent)
        journal_count, journal_duplicates = assert_journal_matches(ledger, database_url, node.url,
                                                                   journal.log)
    # a publish that found the connection blocked (not every run has one: the results of all the
    # deliveries in hand may have gone out before the notice) waited, and went on once
    text = consumer.text()
    assert text.count(_PAUSED) == text.count(_RESUMED) <= 1, "paused and resumed do not pair up"
    for service in (consumer, producer):
        assert not _TIMED_OUT.search(service.text()), f"{service.log.name}: a publish timed out"
    assert "retry scheduled" not in consumer.text() and "requeued" not in consumer.text()
    assert len(sent) == PRELOADED + DURING
    ledger.assert_exactly_once(max_duplicates=0)
    assert len(ledger.completed_ids | ledger.dead_ids) == len(sent)
    recovered = probe.results_resumed(cleared_at)
    reliability(Row(
        "memory alarm: the broker blocks publishing while the consumer is busy", len(sent),
        len(ledger.lost), ledger.duplicates, recovered,
        f"alarm held {cleared_at - alarm_at:.1f} s, set while the consumer worked through "
        f"{PRELOADED:,} queued requests, {DURING} more sent during it; publishes written before the "
        f"broker's notice were held past CALC_PUBLISH_TIMEOUT ({TIMEOUT:.0f} s) and confirmed after "
        f"it, later ones waited to be written; no timeout, no retry; recovery from clearing the alarm; "
        f"journal: one row per request, {journal_duplicates} duplicates", journal_count))
