"""/livez follows the event loop, /readyz what the service says; both over real HTTP."""

from __future__ import annotations

import asyncio
import json
import time
import urllib.error
import urllib.request

import pytest
from prometheus_client import CollectorRegistry, Counter

from messaging.health import HealthServer, Heartbeat, Readiness


def _get(port: int, path: str) -> tuple[int, dict[str, object] | str]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5) as answer:
            status, body = answer.status, answer.read().decode()
    except urllib.error.HTTPError as exc:
        status, body = exc.code, exc.read().decode()
    return status, json.loads(body) if body.startswith("{") else body


async def _in_thread(port: int, path: str) -> tuple[int, dict[str, object] | str]:
    return await asyncio.to_thread(_get, port, path)


async def test_livez_fails_while_the_loop_is_blocked_and_readyz_follows_the_service() -> None:
    registry = CollectorRegistry()
    Counter("calc_test_total", "a test counter", registry=registry).inc(3)
    heartbeat, readiness = Heartbeat(beat=0.05, stale_after=0.3), Readiness()
    heartbeat.start()
    server = HealthServer(0, heartbeat, readiness, registry=registry, host="127.0.0.1")
    server.start()
    try:
        await asyncio.sleep(0.1)
        status, body = await _in_thread(server.port, "/livez")
        assert status == 200 and isinstance(body, dict) and body["status"] == "ok"
        assert await _in_thread(server.port, "/readyz") == (503, {"status": "failing", "detail": "starting"})
        readiness.ready()
        assert (await _in_thread(server.port, "/readyz"))[0] == 200
        readiness.not_ready("broker connection lost")
        assert await _in_thread(server.port, "/readyz") == (
            503, {"status": "failing", "detail": "broker connection lost"})
        status, metrics = await _in_thread(server.port, "/metrics")
        assert status == 200 and "calc_test_total 3.0" in str(metrics)
        assert (await _in_thread(server.port, "/nope"))[0] == 404

        # the loop blocked (a CPU-bound bug, a sync call): the HTTP thread still answers, /livez fails
        def probe_later() -> tuple[int, dict[str, object] | str]:
            time.sleep(0.5)
            return _get(server.port, "/livez")

        probe = asyncio.get_running_loop().run_in_executor(None, probe_later)
        time.sleep(1.0)  # blocks the loop on purpose
        blocked_status, blocked_body = await probe
        assert blocked_status == 503 and "event loop silent" in str(blocked_body)
        await asyncio.sleep(0.1)  # the loop runs again: alive again
        assert (await _in_thread(server.port, "/livez"))[0] == 200
    finally:
        server.close()
        await heartbeat.stop()
    assert heartbeat.alive() == (False, "heartbeat not running")


def test_a_port_in_use_is_an_os_error() -> None:
    first = HealthServer(0, Heartbeat(), Readiness(), host="127.0.0.1")
    try:
        with pytest.raises(OSError):
            HealthServer(first.port, Heartbeat(), Readiness(), host="127.0.0.1")
    finally:
        first.close()


class _Flags:
    """A service's own liveness and readiness (the journal's shape): the protocols, no Heartbeat."""

    def alive(self) -> tuple[bool, str]:
        return True, "ok"

    def state(self) -> tuple[bool, str]:
        return False, "not database"


async def test_prefix_routes_get_the_rest_of_the_path_and_any_liveness_object_serves() -> None:
    seen: list[str] = []

    def lookup(key: str) -> tuple[int, bytes, str]:
        seen.append(key)
        return 200, f'{{"id": "{key}"}}'.encode(), "application/json"

    flags = _Flags()
    server = HealthServer(0, flags, flags, prefixes={"/results/": lookup}, host="127.0.0.1")
    server.start()
    try:
        assert await _in_thread(server.port, "/results/a%20b?x=1") == (200, {"id": "a b"})
        assert (await _in_thread(server.port, "/livez"))[0] == 200
        ready = await _in_thread(server.port, "/readyz")
        assert ready == (503, {"status": "failing", "detail": "not database"})
        status, body = await _in_thread(server.port, "/results/")
        assert status == 404 and "/results/ID" in str(body)
    finally:
        server.close()
    assert seen == ["a b"]
