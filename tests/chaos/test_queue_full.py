"""Full work queues (reject-publish): the producer backs off on nacks without busy-looping, loses nothing."""

from __future__ import annotations

import re
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

from tests.chaos.conftest import Row
from tests.chaos.harness import (
    FlowProbe,
    Ledger,
    Service,
    bulk_args,
    bulk_summary,
    chaos_env,
    read_ids,
    services,
    wait_settled,
    wait_until,
)
from tests.support.private_node import NodeFactory

COUNT = 3_000
MAX_LENGTH = 100
BLOCKED = 20.0
"""Seconds the queues stay full (no consumer) while the producer keeps trying."""
IN_FLIGHT = 256  # CALC_PUBLISH_IN_FLIGHT's default: the publishes that can be retrying at once
FIRST_WAIT, MAX_WAIT = 0.05, 10.0  # messaging.publisher.publish_until_confirmed's backoff

_RETRY = re.compile(r"^(\S+Z) WARNING messaging\.publisher publish not confirmed, retrying .*?attempt=(\d+)"
                    r".*nacked", re.M)


def retries(log: str) -> list[tuple[float, int]]:
    """(wall time, attempt) of every logged retry after a nack."""
    return [(datetime.strptime(ts, "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=UTC).timestamp(), int(attempt))
            for ts, attempt in _RETRY.findall(log)]


def backoff_bound(window: float) -> int:
    """Most attempts one publish can make in `window` s under capped exponential backoff (+1 slack)."""
    attempts, elapsed, wait = 1, 0.0, FIRST_WAIT
    while elapsed + wait <= window:
        elapsed += wait
        attempts += 1
        wait = min(wait * 2, MAX_WAIT)
    return attempts + 1


async def test_full_queues_make_the_producer_back_off_and_lose_nothing(
        private_node: NodeFactory, tmp_path: Path, reliability: Callable[[Row], None]) -> None:
    node = private_node()
    env = chaos_env(node.url, CALC_WORK_QUEUE_MAX_LENGTH=str(MAX_LENGTH))
    ids_file = tmp_path / "ids.txt"
    with services() as started:
        producer = Service(bulk_args(COUNT, ids_file, seed=44), env, tmp_path / "producer.log")
        started.append(producer)
        producer.wait_line("nacked", timeout=60)
        first_nack = time.time()
        time.sleep(BLOCKED)
        assert producer.running(), "the bulk ended although the queues are full"
        with FlowProbe(node.url, producer.log) as probe:
            consumer_started = time.time()
            since = time.monotonic()
            consumer = Service(["calc-consumer"], env, tmp_path / "consumer.log")
            started.append(consumer)
            assert producer.wait(300) == 0, producer.text()[-3000:]
            drained = time.monotonic() - since
            wait_until(lambda: probe.confirms_resumed(since, settle=0.0) is not None, 10, "confirms")
        recover = probe.confirms_resumed(since, settle=0.0)
        wait_settled(node)
        assert consumer.terminate() == 0
    sent = read_ids(ids_file)
    assert bulk_summary(producer.log)["confirmed"] == len(sent) == COUNT
    blocked = [(t, a) for t, a in retries(producer.text()) if first_nack - 1 <= t <= consumer_started]
    window = consumer_started - first_nack
    assert blocked, "no nack was retried while the queues were full"
    half = first_nack + window / 2
    early = sum(1 for t, _ in blocked if t < half)
    late = len(blocked) - early
    top = max(a for _, a in blocked)
    rate = len(blocked) / window
    # Backing off: each publish waits twice as long as before, so the second half of the window
    # sees fewer retries than the first, and no publish was tried more often than the backoff allows.
    assert late < early, f"retries did not slow down: {early} in the first half, {late} in the second"
    assert top <= backoff_bound(window + 1), f"a publish was tried {top} times in {window:.0f} s"
    assert len(blocked) <= IN_FLIGHT * backoff_bound(window + 1)
    ledger = await Ledger.collect(node.url, sent)
    ledger.assert_exactly_once(max_duplicates=0)
    reliability(Row(
        f"work queues full (x-max-length {MAX_LENGTH}, reject-publish) for {window:.0f} s", COUNT,
        len(ledger.lost), ledger.duplicates, recover,
        f"{len(blocked)} nack retries in {window:.0f} s ({rate:.0f}/s for up to {IN_FLIGHT} publishes "
        f"in flight; {early} in the first half, {late} in the second; at most {top} attempts per "
        f"publish); all confirmed {drained:.1f} s after a consumer started"))
