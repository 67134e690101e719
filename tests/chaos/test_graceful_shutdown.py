"""SIGTERM to the consumer and to the producer during a bulk: nothing lost, nothing left unacked."""

from __future__ import annotations

import re
import time
from collections.abc import Callable
from pathlib import Path

from tests.chaos.conftest import Row
from tests.chaos.harness import (
    FlowProbe,
    Ledger,
    Service,
    bulk_args,
    bulk_confirmed,
    bulk_summary,
    chaos_env,
    read_ids,
    services,
    wait_settled,
    wait_until,
)
from tests.support.journal import assert_journal_matches, start_journal
from tests.support.private_node import NodeFactory

COUNT = 20_000
STOP_CONSUMER_AT = 3_000
STOP_PRODUCER_AT = 8_000


async def test_sigterm_during_a_bulk_loses_nothing_and_leaves_nothing_unacked(
        private_node: NodeFactory, database_url: str, tmp_path: Path,
        reliability: Callable[[Row], None]) -> None:
    node = private_node()
    env = chaos_env(node.url, CALC_PREFETCH="500")
    ids_file = tmp_path / "ids.txt"
    with services() as started:
        journal = start_journal(started, env, database_url, tmp_path / "journal.log")
        first = Service(["calc-consumer"], {**env, "CALC_INSTANCE_ID": "consumer-a"},
                        tmp_path / "consumer-a.log")
        started.append(first)
        first.wait_line("consuming queue=calc.work.heavy")
        producer = Service(bulk_args(COUNT, ids_file, seed=66), env, tmp_path / "producer.log")
        started.append(producer)
        with FlowProbe(node.url, producer.log) as probe:
            wait_until(lambda: bulk_confirmed(producer.log) >= STOP_CONSUMER_AT, 120,
                       f"{STOP_CONSUMER_AT} confirms")
            wait_until(lambda: first.text().count(" completed ") >= 1000, 60, "consumer-a at work")
            stopping = time.monotonic()
            assert first.terminate(60) == 0, first.text()[-3000:]
            stop_seconds = time.monotonic() - stopping
            # A rolling restart: the replacement starts once the old one is gone.
            second = Service(["calc-consumer"], {**env, "CALC_INSTANCE_ID": "consumer-b"},
                             tmp_path / "consumer-b.log")
            started.append(second)
            second.wait_line("consuming queue=calc.work.heavy")
            wait_until(lambda: probe.results_resumed(stopping + stop_seconds) is not None, 60,
                       "results from consumer-b")
            recover = stop_seconds + (probe.results_resumed(stopping + stop_seconds) or 0.0)
            wait_until(lambda: bulk_confirmed(producer.log) >= STOP_PRODUCER_AT, 120,
                       f"{STOP_PRODUCER_AT} confirms")
            producer_status = producer.terminate(60)
        wait_settled(node)
        assert second.terminate() == 0
        sent = read_ids(ids_file)
        ledger = await Ledger.collect(node.url, sent)
        journal_count, journal_duplicates = assert_journal_matches(ledger, database_url, node.url,
                                                                   journal.log)
    assert producer_status == 0, "SIGTERM stops a bulk like a service: exit 0"
    assert '"stopped_by_signal": true' in producer.text()
    log = first.text()
    assert "shutting down" in log and "stopped" in log
    assert "left unacked" not in log, "consumer-a gave up waiting for its in-flight work"
    in_flight = int(re.search(r"shutting down in_flight=(\d+)", log).group(1))  # type: ignore[union-attr]
    # The bulk stops starting requests, waits for the confirms of those in flight, and reports them.
    summary = bulk_summary(producer.log)
    assert summary["confirmed"] == len(sent)
    assert STOP_PRODUCER_AT <= len(sent) < COUNT
    # Not one duplicate: consumer-a settled everything it took before it exited, so consumer-b
    # redid nothing; and no outcome exists for a request the producer did not report confirmed.
    ledger.assert_exactly_once(max_duplicates=0)
    reliability(Row(
        "SIGTERM to consumer and producer during a bulk", len(sent), len(ledger.lost), ledger.duplicates,
        recover,
        f"consumer exited 0 in {stop_seconds:.1f} s finishing {in_flight} in flight, nothing unacked; "
        f"bulk stopped at {len(sent):,} of {COUNT:,}, all reported ids confirmed (exit {producer_status}); "
        f"recovery includes starting the replacement; journal: one row per request, "
        f"{journal_duplicates} duplicates", journal_count))
