"""A broker that stops confirming (a memory alarm blocks every publisher): confirm timeouts, then recovery.

With `vm_memory_high_watermark` at 0 the broker stops reading from every connection that
publishes: no confirm comes back. The consumer's result publish and then its retry publish time
out (CALC_PUBLISH_TIMEOUT), it hands the delivery back (nack, requeue) and keeps running; the
producer retries its timed-out publishes with backoff. Once the alarm clears, the frames
waiting in the sockets reach the broker, and every request ends with an outcome.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable
from pathlib import Path

from messaging import topology
from tests.chaos.conftest import Row
from tests.chaos.harness import (
    WORK_QUEUES,
    FlowProbe,
    Ledger,
    Service,
    bulk_args,
    chaos_env,
    queue_stats,
    read_ids,
    services,
    wait_settled,
    wait_until,
)
from tests.support.private_node import NodeFactory

PRELOADED = 30_000
"""Requests queued before the consumer starts: it is still working through them at the alarm."""
DURING = 50
"""Requests the producer starts while the alarm holds."""
WINDOW = 256 * len(WORK_QUEUES)
"""Deliveries the consumer may hold unacked: CALC_PREFETCH's default on each work queue."""
TIMEOUT = 1.0  # CALC_PUBLISH_TIMEOUT for both services

_REQUEUED = re.compile(r"ERROR consumer\.service could not schedule retry; requeued .*"
                       r"error=\"no confirm for 'calc\.requested\.\w+' within 1\.0s\"")
_PRODUCER_RETRY = re.compile(r"WARNING messaging\.publisher publish not confirmed, retrying .*"
                             r"error=\"no confirm for 'calc\.requested\.\w+' within 1\.0s\"")
_FIRST_TIMEOUT = re.compile(r"WARNING producer\.service publish not confirmed, retrying .*"
                            r"error=\"no confirm for 'calc\.requested\.\w+' within 1\.0s\"")


def _wait_stable(count: Callable[[], int], quiet: float, timeout: float) -> None:
    """Until `count()` has not changed for `quiet` seconds."""
    deadline = time.monotonic() + timeout
    last, since = count(), time.monotonic()
    while time.monotonic() - since < quiet:
        assert time.monotonic() < deadline, f"still changing after {timeout:.0f}s"
        time.sleep(0.2)
        now = count()
        if now != last:
            last, since = now, time.monotonic()


async def test_publishes_unconfirmed_during_a_memory_alarm_time_out_and_nothing_is_lost(
        private_node: NodeFactory, tmp_path: Path, reliability: Callable[[Row], None]) -> None:
    node = private_node()
    env = chaos_env(node.url, CALC_PUBLISH_TIMEOUT=str(TIMEOUT))
    before_ids, during_ids = tmp_path / "before.txt", tmp_path / "during.txt"
    with services() as started:
        preload = Service(bulk_args(PRELOADED, before_ids, seed=71), env, tmp_path / "preload.log")
        started.append(preload)
        assert preload.wait(120) == 0, preload.text()[-3000:]

        consumer = Service(["calc-consumer"], env, tmp_path / "consumer.log")
        started.append(consumer)
        consumer.wait_line("consuming queue=calc.work.heavy")
        # subscribed (a blocked connection could not subscribe) and busy with the backlog
        node.admin.ctl(["set_vm_memory_high_watermark", "0"])
        alarm_at = time.monotonic()
        try:
            producer = Service(bulk_args(DURING, during_ids, seed=72), env, tmp_path / "producer.log")
            started.append(producer)
            # the deliveries of the window in flight: result publish timed out, retry publish
            # timed out, requeued; the producer's first attempts timed out and are retried
            # as many as were in flight when the broker stopped reading: wait for the first, then
            # for the count to stay put for longer than both timeouts of one delivery take
            wait_until(lambda: _REQUEUED.search(consumer.text()) is not None, 60,
                       "the consumer to time out and requeue deliveries")
            _wait_stable(lambda: len(_REQUEUED.findall(consumer.text())), 2 * TIMEOUT + 1.0, 60)
            wait_until(lambda: _FIRST_TIMEOUT.search(producer.text()) is not None
                       and _PRODUCER_RETRY.search(producer.text()) is not None, 30,
                       "the producer to time out and retry")
            audit = queue_stats(node)[topology.AUDIT_QUEUE].ready
            time.sleep(2 * TIMEOUT)
            assert queue_stats(node)[topology.AUDIT_QUEUE].ready == audit, "a result got through the alarm"
            assert consumer.running() and producer.running()
        finally:
            with FlowProbe(node.url, producer.log) as probe:
                cleared_at = time.monotonic()
                node.admin.ctl(["set_vm_memory_high_watermark", "0.4"])
                assert producer.wait(120) == 0, producer.text()[-3000:]
                wait_settled(node)
        assert consumer.running(), "the consumer died"
        assert consumer.terminate() == 0
    requeued = len(_REQUEUED.findall(consumer.text()))
    assert requeued <= WINDOW, "more deliveries requeued than the consumer may hold"
    resent = len(_PRODUCER_RETRY.findall(producer.text())) + len(_FIRST_TIMEOUT.findall(producer.text()))
    sent = read_ids(before_ids) + read_ids(during_ids)
    assert len(sent) == PRELOADED + DURING
    ledger = await Ledger.collect(node.url, sent)
    # Every publish that timed out was waiting in the socket, not lost: it arrives when the alarm
    # clears. A requeued delivery so comes back three times (its late result, its retry copy, its
    # redelivery): at most 2 extra outcomes for a request that completes, 3 for a failing one
    # (a late CalculationFailed, then a CalculationFailed and a DLQ entry twice). Each timed-out
    # request publish adds a copy of its request: 1 extra outcome, or 2 (failed and dead-lettered).
    ledger.assert_exactly_once(max_duplicates=3 * requeued + 2 * resent)
    assert len(ledger.completed_ids | ledger.dead_ids) == len(sent)
    recovered = probe.results_resumed(cleared_at)
    reliability(Row(
        "memory alarm: the broker stops confirming while the consumer is busy", len(sent),
        len(ledger.lost), ledger.duplicates, recovered,
        f"alarm held {cleared_at - alarm_at:.1f} s, set while the consumer worked through "
        f"{PRELOADED:,} queued requests, {DURING} more sent during it; {requeued} deliveries requeued "
        f"after their result and retry publishes timed out ({TIMEOUT:.0f} s each), {resent} request "
        f"publishes timed out and retried; every duplicate comes from a publish that waited in the "
        f"socket and arrived when the alarm cleared; recovery from clearing the alarm"))
