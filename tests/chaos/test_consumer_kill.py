"""A consumer SIGKILLed with 500 deliveries unacked: all redelivered, duplicates bounded and traceable."""

from __future__ import annotations

import time
from collections import defaultdict
from collections.abc import Callable
from pathlib import Path

from messaging import topology
from tests.chaos.conftest import Row
from tests.chaos.harness import (
    FlowProbe,
    Ledger,
    Service,
    bulk_args,
    bulk_summary,
    chaos_env,
    queue_stats,
    read_ids,
    services,
    wait_settled,
    wait_until,
)
from tests.support.journal import assert_journal_matches, start_journal
from tests.support.private_node import NodeFactory

COUNT = 30_000  # about 18,000 basic ones: the consumer takes ~3,000/s, the window check needs seconds
PREFETCH = 500
BASIC = topology.work_queue("basic")


async def test_consumer_killed_with_500_unacked_redelivers_them(
        private_node: NodeFactory, database_url: str, tmp_path: Path,
        reliability: Callable[[Row], None]) -> None:
    node = private_node()
    env = chaos_env(node.url, CALC_PREFETCH=str(PREFETCH))
    ids_file = tmp_path / "ids.txt"
    with services() as started:
        journal = start_journal(started, env, database_url, tmp_path / "journal.log")
        # A backlog first, so the consumer's prefetch window is always full while it works.
        producer = Service(bulk_args(COUNT, ids_file, seed=22), env, tmp_path / "producer.log")
        started.append(producer)
        assert producer.wait(300) == 0, producer.text()[-3000:]
        # One subscription (calc.work.basic) so that the prefetch of 500 is the whole window:
        # with both queues the broker would allow 500 per queue.
        first = Service(["calc-consumer"], {**env, "CALC_QUEUES": "basic", "CALC_INSTANCE_ID": "consumer-a"},
                        tmp_path / "consumer-a.log")
        started.append(first)
        first.wait_line("consuming")
        wait_until(lambda: first.text().count(" completed ") >= 200, 60, "200 results from consumer-a")
        in_flight = 0

        def window_full() -> bool:
            nonlocal in_flight
            in_flight = queue_stats(node)[BASIC].unacked
            return in_flight >= PREFETCH - 20

        wait_until(window_full, 30, f"about {PREFETCH} unacked deliveries", interval=0.0)
        with FlowProbe(node.url) as probe:
            killed_at = time.monotonic()
            first.kill()
            wait_until(lambda: queue_stats(node)[BASIC].unacked == 0, 30,
                       "the broker to take the deliveries back")
            second = Service(["calc-consumer"], {**env, "CALC_INSTANCE_ID": "consumer-b"},
                             tmp_path / "consumer-b.log")
            started.append(second)
            second.wait_line("consuming queue=calc.work.heavy")
            wait_until(lambda: probe.results_resumed(killed_at) is not None, 60, "results from consumer-b")
        recover = probe.results_resumed(killed_at)
        wait_settled(node)
        assert second.terminate() == 0
        sent = read_ids(ids_file)
        ledger = await Ledger.collect(node.url, sent)
        journal_count, journal_duplicates = assert_journal_matches(ledger, database_url, node.url,
                                                                   journal.log)
    assert bulk_summary(producer.log)["confirmed"] == len(sent) == COUNT
    ledger.assert_exactly_once(max_duplicates=in_flight)
    # A duplicate is a request consumer-a published an outcome for but died before acking:
    # consumer-b redid it. Both outcomes name the same request and differ only in who made them.
    by_request: dict[str, list[str]] = defaultdict(list)
    for completed in ledger.completed:
        by_request[completed.request_event_id].append(completed.processed_by)
    for failed in ledger.failed:
        by_request[failed.request_event_id].append(failed.processed_by)
    for request_id, makers in by_request.items():
        if len(makers) > 1:
            assert sorted(makers) == ["consumer-a", "consumer-b"], (request_id, makers)
    reliability(Row(
        "consumer SIGKILL with a full prefetch window", COUNT, len(ledger.lost), ledger.duplicates, recover,
        f"{in_flight} unacked at the kill (prefetch {PREFETCH}); every duplicate is one outcome from the "
        "killed consumer and one from its replacement, same request_event_id; recovery includes "
        f"starting the replacement; journal: one row per request, the {journal_duplicates} "
        "duplicates counted in its rows", journal_count))
