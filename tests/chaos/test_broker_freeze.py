"""A broker frozen (SIGSTOP) while the consumer is busy: confirms time out, nothing is lost.

Unlike a memory alarm, a frozen broker sends no connection.blocked: the consumer cannot tell a
publish that waits from one that is lost. Its result publish times out (CALC_PUBLISH_TIMEOUT),
the transient path publishes a retry copy, which times out too, and the delivery is handed back
(nack, requeue); the consumer keeps running. The frames written meanwhile were waiting in the
socket, not lost: once the broker runs again they arrive, and every request ends with an outcome.
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
    chaos_env,
    consumer_behind_a_backlog,
    queue_stats,
    read_ids,
    services,
    wait_settled,
    wait_until,
)
from tests.support.private_node import NodeFactory

PRELOADED = 30_000
"""Requests queued before the consumer starts: it is still working through them at the freeze."""
WINDOW = 256 * len(WORK_QUEUES)
"""Deliveries the consumer may hold unacked: CALC_PREFETCH's default on each work queue."""
TIMEOUT = 1.0  # CALC_PUBLISH_TIMEOUT

_REQUEUED = re.compile(r"ERROR consumer\.service could not schedule retry; requeued .*"
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


async def test_a_frozen_broker_times_publishes_out_the_consumer_hands_deliveries_back_and_nothing_is_lost(
        private_node: NodeFactory, tmp_path: Path, reliability: Callable[[Row], None]) -> None:
    node = private_node()
    env = chaos_env(node.url, CALC_PUBLISH_TIMEOUT=str(TIMEOUT))
    ids = tmp_path / "ids.txt"
    with services() as started:
        consumer = consumer_behind_a_backlog(started, env, PRELOADED, ids, 81, tmp_path)
        wait_until(lambda: consumer.text().count(" completed ") >= 1_000, 60, "the consumer to be busy")
        audit = queue_stats(node)[topology.AUDIT_QUEUE].ready
        node.freeze()
        frozen_at = time.monotonic()
        try:
            # the deliveries in hand: result publish timed out, retry publish timed out, handed
            # back; then the count stays put (nothing new is delivered by a frozen broker)
            wait_until(lambda: _REQUEUED.search(consumer.text()) is not None, 30,
                       "the consumer to time out and hand deliveries back")
            _wait_stable(lambda: len(_REQUEUED.findall(consumer.text())), 2 * TIMEOUT + 1.0, 60)
            assert consumer.running(), "the consumer died while the broker was frozen"
        finally:
            node.thaw()
        thawed_at = time.monotonic()
        with FlowProbe(node.url) as probe:
            wait_until(lambda: probe.results_resumed(thawed_at) is not None, 60, "results after the thaw")
        assert queue_stats(node)[topology.AUDIT_QUEUE].ready > audit
        wait_settled(node)
        assert consumer.running(), "the consumer died"
        assert consumer.terminate() == 0
    requeued = len(_REQUEUED.findall(consumer.text()))
    assert requeued <= WINDOW, "more deliveries handed back than the consumer may hold"
    sent = read_ids(ids)
    assert len(sent) == PRELOADED
    ledger = await Ledger.collect(node.url, sent)
    # Every publish that timed out was waiting in the socket, not lost, and arrived after the
    # thaw. A handed-back delivery so comes back three times (its late result, its retry copy, its
    # redelivery): at most 2 extra outcomes for a request that completes, 3 for a failing one
    # (a late CalculationFailed, then a CalculationFailed and a DLQ entry twice).
    ledger.assert_exactly_once(max_duplicates=3 * requeued)
    assert len(ledger.completed_ids | ledger.dead_ids) == len(sent)
    reliability(Row(
        "broker frozen (SIGSTOP) while the consumer is busy: no confirms, no blocked notice", len(sent),
        len(ledger.lost), ledger.duplicates, probe.results_resumed(thawed_at),
        f"frozen {thawed_at - frozen_at:.1f} s while the consumer worked through {PRELOADED:,} queued "
        f"requests; {requeued} deliveries handed back after their result and retry publishes timed out "
        f"({TIMEOUT:.0f} s each); every duplicate comes from a publish that waited in the socket and "
        f"arrived after the thaw; recovery from the thaw"))
