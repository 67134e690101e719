"""10,000 hostile bodies and property sets: the consumer never dies, every one ends somewhere."""

from __future__ import annotations

import math
import os
import random
import struct
from pathlib import Path
from typing import Any

import aio_pika
import pytest

from gen import calc_pb2
from messaging import codec, topology
from tests.integration.pipeline import (
    collect,
    queue_depth,
    service_env,
    settings_for,
    start_process,
    stop_process,
    wait_for_line,
)

WORDS = ["add", "subtract", "multiply", "divide", "modulo", "power", "sqrt", "factorial"]
SPECIALS = [math.nan, math.inf, -math.inf, 0.0, -0.0, 1e308, -1e308, 5e-324, 170.0, 171.0, 3.5, -1.0]


def _valid(rng: random.Random, event_id: str) -> calc_pb2.CalculationRequested:
    op = rng.randint(0, 10)  # includes UNSPECIFIED and unknown numbers
    count = rng.choice([0, 1, 2, 2, 2, 3, rng.randint(4, 5000)])
    operands = [rng.choice(SPECIALS) if rng.random() < 0.3 else rng.uniform(-1e6, 1e6)
                for _ in range(count)]
    return codec.build_request(op, operands, "fuzz", event_id=event_id)


def _case(rng: random.Random, index: int) -> tuple[bytes, str, dict[str, Any]]:
    """One hostile message: body, routing key, properties."""
    event_id = f"fuzz-{index}"
    word = rng.choice(WORDS)
    props: dict[str, Any] = {}
    kind = rng.randrange(10)
    request = _valid(rng, event_id)
    body = request.SerializeToString()
    if kind == 0:
        body = body[: rng.randint(0, max(0, len(body) - 1))]  # truncated protobuf
    elif kind == 1:
        body = rng.randbytes(rng.randint(0, 300))  # random bytes
    elif kind == 2:
        body = b""
    elif kind == 3:
        body = rng.randbytes(1024 * 1024 if rng.random() < 0.05 else 70_000)  # over the size limit
    elif kind == 4:  # a double where a string belongs, a string where the operands belong
        body = b"\x09" + struct.pack("<d", rng.random()) + b"\x22\x03abc"
    elif kind == 5:
        props["type"] = rng.choice(["calc.v1.CalculationFailed", "text", ""])
        props["content_type"] = rng.choice(["application/json", "application/x-protobuf", ""])
    elif kind == 6:
        props["headers"] = {"attempt": rng.choice([0, -5, "x", 2**40, 1.5, None])}
    elif kind == 7:  # a correct request, so every run also has completions
        body = codec.build_request(1, [rng.uniform(-9, 9), rng.uniform(-9, 9)], "fuzz",
                                   event_id=event_id).SerializeToString()
        word = "add"
    return body, topology.requested_key(word), props


def _rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError("no VmRSS")


@pytest.mark.slow
async def test_ten_thousand_hostile_messages(vhost_url: str, tmp_path: Path) -> None:
    total = int(os.environ.get("CALC_FUZZ_TOTAL", "10000"))
    env = service_env(vhost_url, CALC_AUDIT_MAX_LENGTH="20000", CALC_PREFETCH="200",
                      CALC_MAX_MESSAGE_BYTES="65536")
    log = tmp_path / "consumer.log"
    consumer = start_process(["calc-consumer"], env, log)
    rng = random.Random(20261128)
    try:
        wait_for_line(log, "consuming")
        connection = await aio_pika.connect(vhost_url)
        try:
            channel = await connection.channel(publisher_confirms=True, on_return_raises=True)
            await topology.declare(channel, settings_for(vhost_url, audit_max_length=20000))
            exchange = await channel.get_exchange(topology.REQUESTS_EXCHANGE)
            rss_start = 0
            for index in range(total):
                body, key, props = _case(rng, index)
                headers = props.pop("headers", None)
                await exchange.publish(aio_pika.Message(body, headers=headers, **props), key,
                                       mandatory=True, timeout=30)
                if index == 1000:
                    rss_start = _rss_kib(consumer.pid)
        finally:
            await connection.close()
        results = await collect(vhost_url, topology.AUDIT_QUEUE, total, timeout=300, quiet=1.0)
        rss_end = _rss_kib(consumer.pid)
        dlq_depth = await queue_depth(vhost_url, topology.DLQ)
        assert consumer.poll() is None, "the consumer died"
    finally:
        assert stop_process(consumer) == 0
    completed, failed = len(results.completed()), len(results.failed())
    assert completed + failed == total  # every message ended once: a result or a failure
    assert failed == dlq_depth  # and every failure is in the DLQ
    assert completed >= total // 20  # the valid tenth (and lucky others) completed
    for name in ("calc.work.basic", "calc.work.heavy"):
        assert await queue_depth(vhost_url, name) == 0  # nothing loops
    reasons = {codec.reason_name(e.reason) for e in results.failed()}
    assert {"MALFORMED_MESSAGE", "INVALID_ARGUMENTS", "UNKNOWN_OPERATION"} <= reasons
    assert any("exceeds the limit" in e.detail for e in results.failed())
    # memory stays flat: 9,000 messages (some of 1 MiB) after the first 1,000 add < 30 MiB
    assert rss_end - rss_start < 30 * 1024, (rss_start, rss_end)
