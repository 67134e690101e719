"""A 3-node RabbitMQ 4 cluster loses the node leading calc.dlq while failures are being dead-lettered
and the inspector scans: no dead letter is lost, and the inspector goes on reading the survivors.

On 4.0 and later calc.dlq is a quorum queue replicated on all three nodes (messaging/topology.py);
before 4.0 it is a classic queue on one node, which this scenario would lose, so it is skipped.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import aio_pika
import aiormq
import pytest

from dlq_inspector.errors import InspectorError
from dlq_inspector.reader import DlqScan
from messaging import topology
from tests.chaos.conftest import Row
from tests.chaos.harness import (
    CHAOS_ENV,
    SETTLE_AFTER_DECLARE,
    Ledger,
    Service,
    bulk_args,
    bulk_confirmed,
    bulk_summary,
    chaos_env,
    queue_stats,
    quorum_leader,
    read_ids,
    services,
    wait_settled,
    wait_until,
)
from tests.integration.pipeline import BIN, ROOT, declare, settings_for
from tests.support.broker import choose_chaos_node_kind
from tests.support.private_node import ClusterFactory, PrivateNode, server_script

COUNT = 6_000
FAILURE_SHARE = 0.3  # about 1,800 dead letters
KILL_AT_DEAD = 400  # dead letters in calc.dlq when its leader is killed
SCAN_WINDOW = 200  # several windows (channels) per scan


@dataclass
class Scan:
    started: float
    ended: float
    read: int
    expected: int
    complete: bool
    error: str = ""


class Scanner:
    """Scans calc.dlq over and over, as `dlq-inspector serve` does, recording each scan."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.scans: list[Scan] = []
        self.reading = asyncio.Event()
        """Set while a scan has read part of the DLQ and holds it (the moment to kill)."""
        self.stop = asyncio.Event()

    async def run(self) -> None:
        while not self.stop.is_set():
            started = time.monotonic()
            read, expected, complete, error = 0, 0, False, ""
            try:
                connection = await aio_pika.connect(self.url, timeout=10)
                try:
                    async with DlqScan(connection, window=SCAN_WINDOW, idle_timeout=5.0) as scan:
                        expected = scan.expected
                        async for _delivery in scan.deliveries():
                            read += 1
                            if read == expected // 2 and read >= KILL_AT_DEAD // 2:
                                self.reading.set()
                                await asyncio.sleep(1.0)  # hold half the DLQ through the kill
                        complete = scan.complete
                finally:
                    await connection.close()
            except (TimeoutError, InspectorError, aiormq.exceptions.AMQPError, ConnectionError,
                    OSError) as exc:
                error = repr(exc)
            self.scans.append(Scan(started, time.monotonic(), read, expected, complete, error))
            self.reading.clear()
            await asyncio.sleep(0.2)


def skip_before_replicated(version: tuple[int, ...] | None) -> None:
    if version is None or version < topology.REPLICATED_SINCE:
        pytest.skip(f"RabbitMQ {version}: calc.dlq is a classic queue on one node before 4.0 "
                    "(run with CALC_CHAOS_BROKER=container for 4.0)")


def dlq_depth(node: PrivateNode) -> int:
    stats = queue_stats(node).get(topology.DLQ)
    return stats.total if stats else 0


async def test_killing_the_dlq_leader_loses_no_dead_letter_and_the_inspector_reads_on(
        private_cluster: ClusterFactory, tmp_path: Path, reliability: Callable[[Row], None]) -> None:
    if choose_chaos_node_kind()[0] == "private":  # skip before starting three nodes for nothing
        ctl = server_script().parent / "rabbitmqctl"
        skip_before_replicated(topology.parse_version(subprocess.run(
            [str(ctl), "version"], capture_output=True, text=True, timeout=60, check=False).stdout))
    nodes = private_cluster(3)
    home, victim = nodes[1], nodes[0]
    skip_before_replicated(topology.parse_version(home.admin.ctl(["version"]).strip()))
    audit = int(CHAOS_ENV["CALC_AUDIT_MAX_LENGTH"])
    # Everything led by `home`, where the services connect, except calc.dlq: a quorum queue's
    # first leader is the node that declared it, so it is declared (empty) again through `victim`.
    await declare(settings_for(home.url, audit_max_length=audit))
    connection = await aio_pika.connect(home.url)
    try:
        await (await connection.channel()).queue_delete(topology.DLQ)
    finally:
        await connection.close()
    await declare(settings_for(victim.url, audit_max_length=audit))
    time.sleep(SETTLE_AFTER_DECLARE)
    assert quorum_leader(home, topology.DLQ) == victim.nodename
    assert quorum_leader(home, topology.AUDIT_QUEUE) == home.nodename

    env = chaos_env(home.url, CALC_PREFETCH="200")
    ids_file = tmp_path / "ids.txt"
    scanner = Scanner(home.url)
    with services() as started:
        consumer = Service(["calc-consumer"], env, tmp_path / "consumer.log")
        started.append(consumer)
        consumer.wait_line("consuming queue=calc.work.heavy")
        producer = Service(bulk_args(COUNT, ids_file, seed=41, failure_share=FAILURE_SHARE), env,
                           tmp_path / "producer.log")
        started.append(producer)
        scanning = asyncio.create_task(scanner.run())
        try:
            await asyncio.to_thread(wait_until, lambda: dlq_depth(home) >= KILL_AT_DEAD, 180,
                                    f"{KILL_AT_DEAD} dead letters")
            await asyncio.wait_for(scanner.reading.wait(), 120)
            dead_before = dlq_depth(home)
            confirmed_before = bulk_confirmed(producer.log)
            killed_at = time.monotonic()
            await asyncio.to_thread(victim.kill)
            await asyncio.to_thread(wait_until, lambda: quorum_leader(home, topology.DLQ) != victim.nodename,
                                    60, "calc.dlq to elect a new leader")
            new_leader = quorum_leader(home, topology.DLQ)
            await asyncio.to_thread(wait_until, lambda: dlq_depth(home) > dead_before, 120,
                                    "dead letters to reach calc.dlq again")
            dead_again = time.monotonic() - killed_at
            assert await asyncio.to_thread(producer.wait, 600) == 0, producer.text()[-3000:]
            await asyncio.to_thread(wait_settled, home)

            def scanned_after_kill() -> list[Scan]:
                return [s for s in scanner.scans if s.started > killed_at + 1.0]

            def two_complete_scans() -> bool:
                return sum(s.complete and not s.error for s in scanned_after_kill()) >= 2

            await asyncio.to_thread(wait_until, two_complete_scans, 120,
                                    "two complete scans after the kill")
        finally:
            scanner.stop.set()
            await asyncio.wait_for(scanning, 120)
        assert consumer.terminate() == 0

    after = scanned_after_kill()
    failed = [s for s in after if s.error or not s.complete]
    assert not failed, f"scans after the kill that failed or ended early: {failed}"
    recovered = min(s.ended for s in after if s.complete) - killed_at
    # The inspector as people run it, on the survivors: every dead letter explained.
    report = subprocess.run([str(BIN / "dlq-inspector"), "report", "--json"], env=env, cwd=ROOT,
                            capture_output=True, text=True, timeout=120, check=False)
    assert report.returncode == 0, report.stderr
    reported = json.loads(report.stdout)
    assert reported["complete"]

    sent = read_ids(ids_file)
    assert bulk_summary(producer.log)["confirmed"] == len(sent) == COUNT
    ledger = await Ledger.collect(home.url, sent)
    assert reported["total"] == len(ledger.dead)
    # Every CalculationFailed has its dead letter (assert_exactly_once); a dead letter copied
    # twice (the dead-letter worker retrying into the new leader) counts as a duplicate.
    ledger.assert_exactly_once(max_duplicates=256 + 2 * 200)
    lost_dead = ledger.failed_ids - ledger.dead_ids
    assert not lost_dead
    reliability(Row(
        "3-node cluster: calc.dlq leader killed while dead-lettering and scanning", COUNT,
        len(ledger.lost) + len(lost_dead), ledger.duplicates, recovered,
        f"killed {victim.name} leading calc.dlq (new leader {new_leader}) at {confirmed_before:,} "
        f"confirmed, {dead_before:,} dead letters, mid-scan; {len(ledger.dead_ids):,} dead letters, "
        f"none lost; dead letters again after {dead_again:.1f} s; {len(after)} scans after the kill, "
        f"all complete"))
