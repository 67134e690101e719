"""messaging.lifecycle: the health endpoint's port, heartbeat and readiness checks (no broker)."""

from __future__ import annotations

import asyncio
import json
import socket
import urllib.error
import urllib.request

import pytest

from messaging import lifecycle
from messaging.errors import ConfigurationError
from messaging.health import Readiness


def _get(port: int, path: str) -> tuple[int, dict[str, str]]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5) as answer:
            return answer.status, json.loads(answer.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


def test_a_taken_port_is_a_configuration_error_and_exit_2(capsys: pytest.CaptureFixture[str]) -> None:
    with socket.socket() as taken:
        taken.bind(("0.0.0.0", 0))  # where the health server binds
        taken.listen()
        port = taken.getsockname()[1]

        async def service() -> int:
            async with lifecycle.health(port, Readiness()):
                return lifecycle.EXIT_OK

        with pytest.raises(ConfigurationError, match=rf"port {port} \(CALC_METRICS_PORT\): Address already"):
            asyncio.run(service())
        assert lifecycle.run(service) == lifecycle.EXIT_USAGE
    assert capsys.readouterr().err == (f"error: cannot serve /metrics on port {port} (CALC_METRICS_PORT): "
                                       "Address already in use\n")


async def test_none_serves_nothing_and_zero_any_free_port() -> None:
    async with lifecycle.health(None, Readiness()) as nothing:
        assert nothing is None
    async with lifecycle.health(0, Readiness()) as server:
        assert server is not None and server.port > 0
        await asyncio.sleep(0.05)
        assert (await asyncio.to_thread(_get, server.port, "/livez"))[0] == 200


class _Connection:
    """Only what lifecycle.connected reads: aio-pika's `connected` event."""

    def __init__(self) -> None:
        self.connected = asyncio.Event()


async def test_readiness_follows_the_connection_and_then_the_service() -> None:
    connection = _Connection()
    readiness = Readiness("subscribing")
    readiness.require(lifecycle.connected(connection))  # type: ignore[arg-type]
    assert readiness.state() == (False, "broker connection lost; reconnecting")
    connection.connected.set()
    assert readiness.state() == (False, "subscribing")
    readiness.ready()
    assert readiness.state() == (True, "ready") and readiness.is_ready
    connection.connected.clear()  # a robust connection while it reconnects
    assert readiness.state() == (False, "broker connection lost; reconnecting")
