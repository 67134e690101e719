"""A request that kills the consumer every time ends in calc.dlq through the delivery limit."""

from __future__ import annotations

import json
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

from tests.chaos.conftest import Row
from tests.chaos.harness import (
    Ledger,
    Service,
    bulk_args,
    chaos_env,
    read_ids,
    services,
    wait_settled,
)
from tests.integration.pipeline import BIN
from tests.support.journal import assert_journal_matches, start_journal, unanswered_ids
from tests.support.private_node import NodeFactory

POISON_SOURCE = "crash-me"
DELIVERY_LIMIT = 3
PREFETCH = 256  # CALC_PREFETCH's default
CRASH_STATUS = 70
EACH_SIDE = 300
"""Ordinary requests published before and after the poison one."""
SURVIVAL = 6.0
"""Seconds a consumer must live after connecting for the supervisor to call the crash loop over."""


async def test_poison_request_reaches_the_dlq_through_the_delivery_limit(
        private_node: NodeFactory, database_url: str, tmp_path: Path,
        reliability: Callable[[Row], None]) -> None:
    node = private_node()
    env = chaos_env(node.url, CALC_DELIVERY_LIMIT=str(DELIVERY_LIMIT), CALC_PREFETCH=str(PREFETCH))
    with services() as started:
        journal = start_journal(started, env, database_url, tmp_path / "journal.log")
        before = Service(bulk_args(EACH_SIDE, tmp_path / "before.txt", seed=51), env, tmp_path / "before.log")
        started.append(before)
        assert before.wait(120) == 0, before.text()[-2000:]
        poison = subprocess.run(
            [str(BIN / "calc-producer"), "send", "add", "1", "2"],
            env={**env, "CALC_INSTANCE_ID": POISON_SOURCE}, capture_output=True, text=True, timeout=60,
            check=False)
        assert poison.returncode == 0, poison.stderr
        poison_id = poison.stdout.strip()
        after = Service(bulk_args(EACH_SIDE, tmp_path / "after.txt", seed=52), env, tmp_path / "after.log")
        started.append(after)
        assert after.wait(120) == 0, after.text()[-2000:]

        # The supervisor: start the consumer again each time it dies, until the poison is gone.
        crashes = 0
        began = time.monotonic()
        crash_env = {**env, "CALC_TEST_CRASH_SOURCE": POISON_SOURCE}
        while True:
            consumer = Service(["calc-consumer"], crash_env, tmp_path / f"consumer-{crashes}.log")
            started.append(consumer)
            consumer.wait_line("connected")
            try:
                status = consumer.process.wait(SURVIVAL)
            except subprocess.TimeoutExpired:
                break  # nothing left to crash on
            assert status == CRASH_STATUS, consumer.text()[-2000:]
            assert "test crash hook" in consumer.text()
            crashes += 1
            assert crashes <= DELIVERY_LIMIT + 2, "the delivery limit never dead-lettered the poison request"
        recover = time.monotonic() - began
        wait_settled(node)
        assert consumer.terminate() == 0
        # the inspector reads the DLQ before the ledger drains it; its verdict is checked last
        reported = inspector_reasons(env)
        sent = read_ids(tmp_path / "before.txt") + read_ids(tmp_path / "after.txt")
        ledger = await Ledger.collect(node.url, [*sent, poison_id])
        # a row for every request but the poison one, which has no outcome, so no row
        journal_count, journal_duplicates = assert_journal_matches(ledger, database_url, node.url,
                                                                   journal.log)
        assert unanswered_ids(ledger) == {poison_id}
    # Requests delivered together with the poison one die with it each time; none may be
    # dead-lettered for that.
    collateral = sorted(i for i, r in ledger.dead if i != poison_id and "delivery_limit" in r)
    assert not collateral, (f"{len(collateral)} ordinary requests dead-lettered by the delivery limit: "
                            "they shared the poison request's prefetch window when it crashed")
    # The first crash cuts a full prefetch window short: outcomes confirmed but not yet acked are
    # redone after the restart (at least once). Later crashes should hold the poison request only.
    ledger.assert_exactly_once(max_duplicates=PREFETCH)
    reasons = dict(ledger.dead)
    assert reasons[poison_id] == {"delivery_limit"}
    assert poison_id not in ledger.completed_ids | ledger.failed_ids, "the poison request got an outcome"
    # a crash per delivery: the first delivery and DELIVERY_LIMIT redeliveries
    assert crashes == DELIVERY_LIMIT + 1
    assert reported.get("DELIVERY_LIMIT") == 1, reported
    reliability(Row(
        "poison request crashing the consumer (supervisor restarts)", len(sent) + 1, len(ledger.lost),
        ledger.duplicates, recover,
        f"{crashes} crashes, then dead-lettered with reason delivery_limit (CALC_DELIVERY_LIMIT="
        f"{DELIVERY_LIMIT}; x-death and dlq-inspector report --json agree); recovery = first crash "
        f"to a consumer that stays up; journal: one row per request but the poison one (no "
        f"outcome), {journal_duplicates} duplicates counted in its rows", journal_count))


def inspector_reasons(env: dict[str, str]) -> dict[str, int]:
    done = subprocess.run([str(BIN / "dlq-inspector"), "report", "--json"], env=env, capture_output=True,
                          text=True, timeout=120, check=False)
    assert done.returncode == 0, done.stderr
    reasons: dict[str, int] = json.loads(done.stdout)["by_reason"]
    return reasons
