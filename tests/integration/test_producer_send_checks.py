"""`calc-producer send` against a real broker: a checked send publishes one request, a refused one
none, and `--unchecked` publishes what the check would refuse."""

from __future__ import annotations

import subprocess

from messaging import codec, topology
from tests.integration.pipeline import BIN, collect, queue_depth, service_env


def send(url: str, *argv: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(BIN / "calc-producer"), "send", *argv], env=service_env(url),
                          capture_output=True, text=True, timeout=60, check=False)


async def test_checked_and_unchecked_sends_reach_the_work_queue(vhost_url: str) -> None:
    checked = send(vhost_url, "add", "1", "2")
    assert checked.returncode == 0, checked.stderr
    refused = send(vhost_url, "add", "1")
    assert refused.returncode == 2
    assert refused.stderr == ("calc-producer send: error: add takes 2 operands, got 1 "
                              "(--unchecked sends it anyway)\n")
    unchecked = send(vhost_url, "--unchecked", "add", "1")
    assert unchecked.returncode == 0, unchecked.stderr
    # no consumer runs: what the producer published is still in the work queue, exactly that
    basic = topology.work_queue("basic")
    assert await queue_depth(vhost_url, basic) == 2
    queued = await collect(vhost_url, basic, 2, timeout=10)
    requests = {codec.decode_request(m.body).event_id: m for m in queued.messages}
    assert set(requests) == {checked.stdout.strip(), unchecked.stdout.strip()}
    for event_id, operands in ((checked.stdout.strip(), [1.0, 2.0]), (unchecked.stdout.strip(), [1.0])):
        message = requests[event_id]
        assert list(codec.decode_request(message.body).operands) == operands
        assert message.routing_key == topology.requested_key("add")
        assert message.app_id == "calc-producer" and message.message_id == event_id
    assert await queue_depth(vhost_url, topology.work_queue("heavy")) == 0


async def test_unchecked_sends_a_non_finite_operand_to_the_heavy_queue(vhost_url: str) -> None:
    sent = send(vhost_url, "--unchecked", "sqrt", "nan")
    assert sent.returncode == 0, sent.stderr
    queued = await collect(vhost_url, topology.work_queue("heavy"), 1, timeout=10)
    assert len(queued.messages) == 1
    request = codec.decode_request(queued.messages[0].body)
    assert request.event_id == sent.stdout.strip()
    assert len(request.operands) == 1 and request.operands[0] != request.operands[0]  # NaN
