"""A consumer whose broker is killed: /readyz fails, /livez does not, and both are 200 once it is back."""

from __future__ import annotations

import time
from pathlib import Path

from tests.chaos.harness import Service, chaos_env, services, wait_until
from tests.integration.test_health_endpoints import free_port, probe
from tests.support.private_node import NodeFactory


def test_a_consumer_without_its_broker_is_live_not_ready_and_ready_again_after(
        private_node: NodeFactory, tmp_path: Path) -> None:
    node = private_node()
    port = free_port()
    with services() as started:
        consumer = Service(["calc-consumer"], chaos_env(node.url, CALC_METRICS_PORT=str(port)),
                           tmp_path / "consumer.log")
        started.append(consumer)
        consumer.wait_line("consuming queue=calc.work.heavy")
        wait_until(lambda: probe(port, "/readyz")[0] == 200, 30, "ready once subscribed")

        node.kill()
        wait_until(lambda: probe(port, "/readyz")[0] == 503, 30, "/readyz to fail without the broker")
        assert probe(port, "/readyz")[1]["detail"] == "broker connection lost; reconnecting"
        outage_started = time.monotonic()
        while time.monotonic() - outage_started < 12:  # past /livez's 10 s: liveness never follows
            assert probe(port, "/livez")[0] == 200, "/livez failed while the broker was away"
            assert probe(port, "/readyz")[0] == 503, "ready without a broker"
            time.sleep(0.5)

        node.start()
        wait_until(lambda: probe(port, "/readyz")[0] == 200, 90, "ready again once the broker is back")
        assert "consuming again" in consumer.text()  # ready only after the subscriptions came back
        assert probe(port, "/livez")[0] == 200
        assert consumer.running()
        assert consumer.terminate() == 0
