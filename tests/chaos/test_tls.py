"""Every service over amqps:// with RABBITMQ_CA_FILE; without the CA each fails with a clear error."""

from __future__ import annotations

import json
import secrets
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.chaos.harness import Ledger, Service, bulk_args, chaos_env, read_ids, services, wait_settled
from tests.integration.pipeline import BIN
from tests.support.private_node import NodeFactory, PrivateNode, TlsFiles
from tests.support.tls import make_server_certificates

USER = "calc-tls"

# Each service with the shortest arguments that make it connect.
COMMANDS = {
    "producer": ["calc-producer", "send", "add", "1", "2"],
    "consumer": ["calc-consumer"],
    "inspector": ["dlq-inspector", "report", "--json"],
}


@dataclass(frozen=True)
class TlsBroker:
    node: PrivateNode
    files: TlsFiles
    password: str

    @property
    def url(self) -> str:
        """amqps:// to the name in the certificate, as the services' user."""
        return f"amqps://{USER}:{self.password}@localhost:{self.node.tls_port}/"


@pytest.fixture
def tls_broker(private_node: NodeFactory, tmp_path: Path) -> Iterator[TlsBroker]:
    files = make_server_certificates(tmp_path / "certificates")
    node = private_node(tls=files)
    password = f"tls-{secrets.token_hex(8)}"
    node.admin.add_user(USER, password)
    node.admin.set_permissions("/", USER)
    yield TlsBroker(node, files, password)


def tls_connections(node: PrivateNode) -> list[dict[str, object]]:
    rows: list[dict[str, object]] = json.loads(node.admin.ctl(
        ["list_connections", "user", "ssl", "ssl_protocol", "client_properties", "--formatter", "json"]))
    return [r for r in rows if r["user"] == USER]


async def test_every_service_works_over_tls(tls_broker: TlsBroker, tmp_path: Path) -> None:
    env = chaos_env(tls_broker.url, RABBITMQ_CA_FILE=str(tls_broker.files.ca))
    ids_file = tmp_path / "ids.txt"
    with services() as started:
        consumer = Service(["calc-consumer"], env, tmp_path / "consumer.log")
        started.append(consumer)
        consumer.wait_line("consuming queue=calc.work.heavy")
        connections = tls_connections(tls_broker.node)
        assert connections and all(c["ssl"] is True for c in connections), connections
        sent = subprocess.run([str(BIN / "calc-producer"), "send", "divide", "1", "0"], env=env,
                              capture_output=True, text=True, timeout=60, check=False)
        assert sent.returncode == 0, sent.stderr
        producer = Service(bulk_args(500, ids_file, seed=88), env, tmp_path / "producer.log")
        started.append(producer)
        assert producer.wait(120) == 0, producer.text()[-3000:]
        wait_settled(tls_broker.node)
        assert consumer.terminate() == 0
    report = subprocess.run([str(BIN / "dlq-inspector"), "report", "--json"], env=env, capture_output=True,
                            text=True, timeout=60, check=False)
    assert report.returncode == 0, report.stderr
    ids = [*read_ids(ids_file), sent.stdout.strip()]
    ledger = await Ledger.collect(tls_broker.node.url, ids)  # read back over plain AMQP as guest
    ledger.assert_exactly_once()
    assert json.loads(report.stdout)["total"] == len(ledger.dead) > 0
    outputs = [consumer.text(), producer.text(), sent.stdout, sent.stderr, report.stdout, report.stderr]
    assert not [o for o in outputs if tls_broker.password in o], "the password is in a service's output"


@pytest.mark.parametrize("service", sorted(COMMANDS))
def test_without_the_ca_file_each_service_fails_with_a_clear_error(
        tls_broker: TlsBroker, service: str) -> None:
    env = chaos_env(tls_broker.url, CALC_CONNECT_TIMEOUT="5")
    program, *args = COMMANDS[service]
    if service == "inspector":
        args += ["--connect-timeout", "5"]
    done = subprocess.run([str(BIN / program), *args], env=env, capture_output=True, text=True, timeout=60,
                          check=False)
    output = done.stdout + done.stderr
    assert done.returncode == 2, output[-3000:]
    assert "Traceback" not in output, output[-3000:]
    assert "certificate" in output and "RABBITMQ_CA_FILE" in output, output[-3000:]
    assert tls_broker.password not in output
