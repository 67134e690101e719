"""A 3-node cluster loses the node leading the work queues mid-stream: nothing confirmed is lost."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

import aio_pika

from tests.chaos.conftest import Row
from tests.chaos.harness import (
    CHAOS_ENV,
    SETTLE_AFTER_DECLARE,
    WORK_QUEUES,
    FlowProbe,
    Ledger,
    Service,
    bulk_args,
    bulk_confirmed,
    bulk_summary,
    chaos_env,
    quorum_leader,
    read_ids,
    seconds,
    services,
    wait_settled,
    wait_until,
)
from tests.integration.pipeline import declare, settings_for
from tests.support.journal import assert_journal_matches, start_journal
from tests.support.private_node import ClusterFactory, PrivateNode

COUNT = 20_000
KILL_AFTER = 6_000


async def lead_work_queues_from(victim: PrivateNode, home: PrivateNode, audit: int) -> None:
    """Re-create the (empty) work queues through `victim`, so that it leads them.

    A quorum queue's first leader is the node that declared it. Re-declaring avoids the
    membership changes (delete_member/add_member) that hang for minutes on a loaded 3.10 node.
    """
    connection = await aio_pika.connect(home.url)
    try:
        channel = await connection.channel()
        for queue in WORK_QUEUES:
            await channel.queue_delete(queue)
    finally:
        await connection.close()
    await declare(settings_for(victim.url, audit_max_length=audit))


async def test_killing_the_work_queue_leader_loses_nothing_confirmed(
        private_cluster: ClusterFactory, database_url: str, tmp_path: Path,
        reliability: Callable[[Row], None]) -> None:
    nodes = private_cluster(3)
    # The services use one node that survives: aio-pika's connect_robust takes a single URL.
    # Classic queues (calc.dlq, calc.results.audit) live on the node that declared them, so the
    # topology is declared through that node too, and only the quorum queues' leadership moves.
    home = nodes[1]
    audit = int(CHAOS_ENV["CALC_AUDIT_MAX_LENGTH"])
    await declare(settings_for(home.url, audit_max_length=audit))
    await lead_work_queues_from(nodes[0], home, audit)
    time.sleep(SETTLE_AFTER_DECLARE)
    leader_name = quorum_leader(home, WORK_QUEUES[0])
    assert leader_name != home.nodename
    leader = next(n for n in nodes if n.nodename == leader_name)
    led = [q for q in WORK_QUEUES if quorum_leader(home, q) == leader_name]
    env = chaos_env(home.url, CALC_PREFETCH="500")
    ids_file = tmp_path / "ids.txt"
    with services() as started:
        # its queue declared through `home` (the survivor), which so leads it
        journal = start_journal(started, env, database_url, tmp_path / "journal.log")
        consumer = Service(["calc-consumer"], env, tmp_path / "consumer.log")
        started.append(consumer)
        consumer.wait_line("consuming queue=calc.work.heavy")
        producer = Service(bulk_args(COUNT, ids_file, seed=33), env, tmp_path / "producer.log")
        started.append(producer)
        with FlowProbe(home.url, producer.log) as probe:
            wait_until(lambda: bulk_confirmed(producer.log) >= KILL_AFTER, 180, f"{KILL_AFTER} confirms")
            killed_at = time.monotonic()
            leader.kill()
            wait_until(lambda: probe.confirms_resumed(killed_at) is not None, 120,
                       "confirms to resume after the leader died")
            wait_until(lambda: probe.results_resumed(killed_at) is not None, 120,
                       "results to flow again after the leader died")
            assert producer.wait(600) == 0, producer.text()[-3000:]
        results_after = probe.results_resumed(killed_at)
        confirms_after = probe.confirms_resumed(killed_at)
        new_leaders = {q: quorum_leader(home, q) for q in WORK_QUEUES}
        assert leader_name not in new_leaders.values()
        wait_settled(home)
        assert consumer.terminate() == 0
        sent = read_ids(ids_file)
        ledger = await Ledger.collect(home.url, sent)
        journal_count, journal_duplicates = assert_journal_matches(ledger, database_url, home.url,
                                                                   journal.log)
    assert bulk_summary(producer.log)["confirmed"] == len(sent) == COUNT
    # Republished requests (confirm timed out during the election) and results redone after a
    # lost ack each add an outcome; bounded by the publishes and deliveries in flight.
    ledger.assert_exactly_once(max_duplicates=256 + 2 * 500)
    recover = max(results_after or 0.0, confirms_after or 0.0)
    reliability(Row(
        "3-node cluster: work-queue leader killed mid-bulk", COUNT, len(ledger.lost), ledger.duplicates,
        recover,
        f"killed {leader.name} leading {', '.join(led)} at {KILL_AFTER:,} confirmed; services "
        f"on a surviving node; results again after {seconds(results_after)} s, confirms after "
        f"{seconds(confirms_after)} s; journal: one row per request, {journal_duplicates} "
        "duplicates counted in its rows", journal_count))
