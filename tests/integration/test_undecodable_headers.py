"""Messages whose AMQP header the decoder cannot read, from an independent client (pika): each is one
MALFORMED_MESSAGE, one CalculationFailed and one DLQ copy; the connection stays up, the neighbours
complete once each, and the inspector reports, shows, replays (byte for byte) and purges them."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pika
import pytest

from messaging import codec, topology
from tests.integration.pipeline import (
    BIN,
    ROOT,
    collect,
    declare,
    pika_params,
    queue_depth,
    service_env,
    settings_for,
    start_process,
    stop_process,
    wait_for_line,
)


def _nested(depth: int) -> Any:
    value: Any = 1
    for _ in range(depth):
        value = [value]
    return value


# name -> (pika properties, the words the failure's detail must hold)
POISON: dict[str, tuple[dict[str, Any], str]] = {
    "correlation_id": ({"correlation_id": b"\xff\xfe-corr"}, "correlation_id is not UTF-8: \\xff\\xfe-corr"),
    "message_id": ({"message_id": b"m-\xc3("}, "message_id is not UTF-8"),
    "app_id": ({"app_id": b"\x80app"}, "app_id is not UTF-8"),
    "reply_to": ({"reply_to": b"r\xfe"}, "reply_to is not UTF-8"),
    "header key": ({"headers": {b"\xff\xfe-k": 1}}, "headers key is not UTF-8: \\xff\\xfe-k"),
    "nested key": ({"headers": {"outer": {b"\xfe-inner": "v"}}}, "headers['outer'] key is not UTF-8"),
    "key in array": ({"headers": {"list": [1, {b"\xff": 2}]}}, "headers['list'][1] key is not UTF-8"),
    "timestamp": ({"timestamp": 2**64 - 1}, "timestamp: timestamp 18446744073709551615 is out of range"),
    "deep nesting": ({"headers": {"deep": _nested(700)}}, "nested deeper than 32 levels"),
}


def _pika_publish(url: str, messages: list[tuple[bytes, str | bytes, dict[str, Any]]]) -> None:
    params = pika_params(url)
    limit = sys.getrecursionlimit()
    sys.setrecursionlimit(10_000)  # pika encodes the deep header recursively too
    connection = pika.BlockingConnection(params)
    try:
        channel = connection.channel()
        channel.confirm_delivery()
        for body, key, properties in messages:
            channel.basic_publish(topology.REQUESTS_EXCHANGE, key, body,
                                  pika.BasicProperties(delivery_mode=2, **properties), mandatory=True)
    finally:
        connection.close()
        sys.setrecursionlimit(limit)


def _request(event_id: str) -> tuple[bytes, str]:
    request = codec.build_request(1, [2.0, 3.0], "pika", event_id=event_id)
    return request.SerializeToString(), topology.requested_key("add")


def _inspector(url: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(BIN / "dlq-inspector"), *args], env=service_env(url), cwd=ROOT,
                          capture_output=True, text=True, timeout=120, check=False)


@pytest.mark.slow
async def test_undecodable_headers_are_one_failure_each_and_the_neighbours_are_untouched(
        vhost_url: str, tmp_path: Path) -> None:
    await declare(settings_for(vhost_url))
    neighbours = [f"good-{i}" for i in range(200)]
    poisons = {name: f"poison-{index}" for index, name in enumerate([*POISON, "routing key"])}
    messages = [(*_request(event_id), {"correlation_id": event_id}) for event_id in neighbours[:100]]
    messages += [(*_request(poisons[name]), properties) for name, (properties, _) in POISON.items()]
    # a routing key that is not UTF-8, delivered to calc.work.basic through a CC header
    body, _ = _request(poisons["routing key"])
    messages.append((body, b"calc.requested.\xff\xfe", {"headers": {"CC": ["calc.requested.add"]}}))
    messages += [(*_request(event_id), {"correlation_id": event_id}) for event_id in neighbours[100:]]
    await asyncio.to_thread(_pika_publish, vhost_url, messages)

    log = tmp_path / "consumer.log"
    consumer = start_process(["calc-consumer"], service_env(vhost_url, CALC_PREFETCH="64"), log)
    try:
        wait_for_line(log, "consuming")
        results = await collect(vhost_url, topology.AUDIT_QUEUE, len(messages), timeout=120, quiet=2.0)
        assert consumer.poll() is None, "the consumer died"
    finally:
        assert stop_process(consumer) == 0
    text = log.read_text(errors="replace")
    assert "consuming again" not in text and "reader unexpected closed" not in text, text[-3000:]
    assert text.count("consuming queue=") == 2  # subscribed once per queue: never reconnected

    completed = sorted(event.request_event_id for event in results.completed())
    assert completed == sorted(neighbours)  # every neighbour once: none redone, none dead-lettered
    failed = {event.request_event_id: event for event in results.failed()}
    assert sorted(failed) == sorted(poisons.values()) and len(results.failed()) == len(poisons)
    expected = {**{name: words for name, (_, words) in POISON.items()},
                "routing key": "routing key 'calc.requested.\\xff\\xfe' does not match operation add"}
    for name, words in expected.items():
        event = failed[poisons[name]]
        assert codec.reason_name(event.reason) == "MALFORMED_MESSAGE"
        assert words in event.detail, (name, event.detail)
    failure_messages = [m for m in results.messages if m.type == codec.TYPE_FAILED]
    for message in failure_messages:  # outcomes are strict: nothing undecodable goes on
        assert message.correlation_id is None or codec.fits_short_string(message.correlation_id)
    assert await queue_depth(vhost_url, topology.DLQ) == len(poisons)

    report = _inspector(vhost_url, "report", "--json")
    assert report.returncode == 0, report.stderr
    data = json.loads(report.stdout)
    assert data["total"] == len(poisons)
    assert data["by_reason"] == {"MALFORMED_MESSAGE": len(poisons)}

    listing = _inspector(vhost_url, "list")
    assert listing.returncode == 0, listing.stderr
    assert all(event_id in listing.stdout for event_id in poisons.values())

    show = _inspector(vhost_url, "show", poisons["correlation_id"])
    assert show.returncode == 0, show.stderr
    assert "\\xff\\xfe-corr" in show.stdout and "undecodable AMQP header" in show.stdout
    show = _inspector(vhost_url, "show", poisons["header key"], "--json")
    assert show.returncode == 0, show.stderr
    assert json.loads(show.stdout)["reason"] == "MALFORMED_MESSAGE"

    # a replay sends the same octets: the consumer fails each the same way, back into the DLQ
    consumer = start_process(["calc-consumer"], service_env(vhost_url), log)
    try:
        wait_for_line(log, "consuming")
        replay = _inspector(vhost_url, "replay", "--all", "--yes", "--json")
        assert replay.returncode == 1, replay.stderr  # one could not be replayed
        replayed = json.loads(replay.stdout)
        again = await collect(vhost_url, topology.AUDIT_QUEUE, len(poisons) - 1, timeout=60, quiet=2.0)
    finally:
        assert stop_process(consumer) == 0
    # a routing key that is not UTF-8 cannot be published again: it stays, with the reason
    assert replayed["done"] == len(poisons) - 1
    assert [f["event_id"] for f in replayed["failed"]] == [poisons["routing key"]]
    assert "is not UTF-8: it cannot be published again" in replayed["failed"][0]["error"]
    # The replay sends the octets it read as they came, so those fail the same way again. It
    # cannot send what the decoder dropped (an out-of-range timestamp property, nesting past 32
    # levels), and app_id becomes the inspector's: those replays are clean requests, and complete.
    cleaned = {poisons[name] for name in ("app_id", "timestamp", "deep nesting")}
    refailed = set(poisons.values()) - cleaned - {poisons["routing key"]}
    assert sorted(e.request_event_id for e in again.failed()) == sorted(refailed)
    assert sorted(e.request_event_id for e in again.completed()) == sorted(cleaned)
    assert {e.detail for e in again.failed()} == {
        e.detail for e in results.failed() if e.request_event_id in refailed}
    assert await queue_depth(vhost_url, topology.DLQ) == len(refailed) + 1
    raw = await asyncio.to_thread(_pika_correlation_ids, vhost_url)
    assert b"\xff\xfe-corr" in raw  # the bytes as the foreign client sent them

    purge = _inspector(vhost_url, "purge", "--all", "--yes", "--json")
    assert purge.returncode == 0, purge.stderr
    assert await queue_depth(vhost_url, topology.DLQ) == 0


def _pika_correlation_ids(url: str) -> list[bytes]:
    """The correlation ids of the DLQ as raw octets, read by pika (which does not decode them)."""
    params = pika_params(url)
    connection = pika.BlockingConnection(params)
    found: list[bytes] = []
    try:
        channel = connection.channel()
        tags = []
        for _ in range(len(POISON) + 1):
            method, properties, _ = channel.basic_get(topology.DLQ, auto_ack=False)
            if method is None:
                break
            tags.append(method.delivery_tag)
            value = properties.correlation_id
            if value is not None:
                found.append(value if isinstance(value, bytes) else value.encode())
        for tag in tags:
            channel.basic_nack(tag, requeue=True)
    finally:
        connection.close()
    return found
