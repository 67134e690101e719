"""Polling helpers: wait until a condition holds, and ask a port whether it speaks AMQP."""

from __future__ import annotations

import socket
import time
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")

# AMQP 0-9-1 protocol header; a broker answers it with a Connection.Start method frame (type 1).
_PROTOCOL_HEADER = b"AMQP\x00\x00\x09\x01"
_FRAME_METHOD = 1


def wait_for(
    predicate: Callable[[], T],
    timeout: float,
    interval: float = 0.2,
    description: str = "condition",
) -> T:
    """Call `predicate` until it returns something truthy and return that; TimeoutError after `timeout` s.

    Exceptions raised by `predicate` propagate: a predicate that can tell "never" from "not yet"
    should raise to stop the wait early.
    """
    deadline = time.monotonic() + timeout
    while True:
        result = predicate()
        if result:
            return result
        if time.monotonic() >= deadline:
            raise TimeoutError(f"timed out after {timeout:.0f}s waiting for {description}")
        time.sleep(interval)


def amqp_handshake_ok(host: str, port: int, timeout: float = 2.0) -> bool:
    """True when `host:port` answers the AMQP 0-9-1 protocol header with Connection.Start.

    A TCP accept alone is not enough: some brokers (and docker's userland proxy) accept
    connections before RabbitMQ can speak AMQP on them.
    """
    try:
        with socket.create_connection((host, port), timeout=timeout) as sock:
            sock.settimeout(timeout)
            sock.sendall(_PROTOCOL_HEADER)
            first = sock.recv(1)
    except OSError:
        return False
    return first == bytes([_FRAME_METHOD])
