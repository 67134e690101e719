"""Helpers for pipeline tests: run the consumer in-process or as a process, publish raw, collect."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

import aio_pika
import pika
from aio_pika.abc import AbstractIncomingMessage, AbstractRobustConnection

from consumer.service import ConsumerService
from messaging import codec, topology
from messaging.connection import connect
from messaging.settings import Settings
from producer.service import Producer

ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent

# Fast retries so tests take seconds; every service of one test shares these (same topology).
FAST = {"CALC_RETRY_BASE_DELAY": "0.2", "CALC_RETRY_MAX_DELAY": "2", "CALC_CONNECT_TIMEOUT": "30"}


def pika_params(url: str) -> pika.ConnectionParameters:
    """pika's connection parameters for `url`: a client independent of aiormq and pamqp."""
    parts = urlsplit(url)
    return pika.ConnectionParameters(
        host=parts.hostname, port=parts.port or 5672, virtual_host=unquote(parts.path[1:]) or "/",
        credentials=pika.PlainCredentials(unquote(parts.username or "guest"),
                                          unquote(parts.password or "guest")))


def settings_for(url: str, **overrides: Any) -> Settings:
    base = Settings.from_env({"RABBITMQ_URL": url, **FAST})
    return replace(base, **overrides)


@dataclass
class Collected:
    """Messages taken from one queue, with their decoded protobuf where it applies."""

    messages: list[AbstractIncomingMessage] = field(default_factory=list)

    def completed(self) -> list[codec.Completed]:
        return [codec.decode_completed(m.body) for m in self.messages if m.type == codec.TYPE_COMPLETED]

    def failed(self) -> list[codec.Failed]:
        return [codec.decode_failed(m.body) for m in self.messages if m.type == codec.TYPE_FAILED]


async def collect(url: str, queue: str, count: int, timeout: float = 30.0,
                  quiet: float = 0.5) -> Collected:
    """Take (ack) messages from `queue` until `count` arrived and `quiet` s passed with no more."""
    out = Collected()
    connection = await aio_pika.connect(url)
    try:
        channel = await connection.channel()
        q = await channel.get_queue(queue, ensure=False)
        deadline = time.monotonic() + timeout
        last = time.monotonic()
        while time.monotonic() < deadline:
            message = await q.get(no_ack=True, fail=False)
            if message is None:
                if len(out.messages) >= count and time.monotonic() - last >= quiet:
                    break
                await asyncio.sleep(0.05)
                continue
            out.messages.append(message)
            last = time.monotonic()
    finally:
        await connection.close()
    return out


async def queue_depth(url: str, queue: str) -> int:
    connection = await aio_pika.connect(url)
    try:
        channel = await connection.channel()
        declared = await channel.declare_queue(queue, passive=True)
        return int(declared.declaration_result.message_count or 0)
    finally:
        await connection.close()


async def publish_raw(url: str, body: bytes, routing_key: str,
                      exchange: str = topology.REQUESTS_EXCHANGE, **properties: Any) -> None:
    """Publish exactly these bytes and properties (confirmed, mandatory): a foreign client."""
    connection = await aio_pika.connect(url)
    try:
        channel = await connection.channel(publisher_confirms=True, on_return_raises=True)
        ex = await channel.get_exchange(exchange, ensure=False)
        await ex.publish(aio_pika.Message(body, **properties), routing_key, mandatory=True, timeout=10)
    finally:
        await connection.close()


@contextlib.asynccontextmanager
async def running_consumer(settings: Settings) -> AsyncIterator[ConsumerService]:
    """A ConsumerService in this event loop, stopped (gracefully) at exit."""
    connection = await connect(settings, "test-consumer")
    service = ConsumerService(settings, connection)
    try:
        await service.start()
        yield service
    finally:
        await service.stop()
        await connection.close()


@contextlib.asynccontextmanager
async def producer(settings: Settings) -> AsyncIterator[Producer]:
    connection: AbstractRobustConnection = await connect(settings, "test-producer")
    try:
        p = Producer(settings, connection)
        await p.start()
        yield p
    finally:
        await connection.close()


async def declare(settings: Settings) -> None:
    connection = await connect(settings, "test-declare")
    try:
        await topology.declare(await connection.channel(), settings)
    finally:
        await connection.close()


def service_env(url: str, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CALC_")}
    env.update(FAST)
    env.update({"RABBITMQ_URL": url, "PYTHONUNBUFFERED": "1"})
    env.update(extra)
    return env


def start_process(args: Sequence[str], env: Mapping[str, str], log: Path) -> subprocess.Popen[bytes]:
    handle = log.open("wb")
    return subprocess.Popen([str(BIN / args[0]), *args[1:]], env=dict(env), stdout=handle,
                            stderr=subprocess.STDOUT, cwd=ROOT)


def wait_for_line(log: Path, text: str, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if log.exists() and text in log.read_text(errors="replace"):
            return
        time.sleep(0.1)
    tail = log.read_text(errors="replace")[-3000:] if log.exists() else ""
    raise AssertionError(f"{text!r} not in {log} after {timeout}s:\n{tail}")


def stop_process(process: subprocess.Popen[bytes], timeout: float = 30.0) -> int:
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
    try:
        return process.wait(timeout)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()
        raise AssertionError("process did not stop within its timeout after SIGTERM") from None
