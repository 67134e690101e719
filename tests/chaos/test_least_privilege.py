"""The deployed users' permissions: each service works with its own and is refused everything else."""

from __future__ import annotations

import json
import secrets
import subprocess
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pika
import pika.exceptions
import pytest

from messaging import topology
from tests.chaos.harness import Ledger, Service, bulk_args, read_ids, services, wait_settled
from tests.integration.pipeline import BIN, ROOT, service_env
from tests.support.private_node import NodeFactory, PrivateNode

DEPLOY = ROOT / "deploy" / "rabbitmq"
VHOST = "calc"
ACCESS_REFUSED = 403


@dataclass(frozen=True)
class User:
    name: str
    password: str
    url: str


def render_deployed_definitions(target: Path, passwords: dict[str, str]) -> Path:
    """Render deploy/rabbitmq's template with `passwords` into `target` by its own script."""
    env = {"PATH": "/usr/bin:/bin", "CALC_DEFINITIONS_TEMPLATE": str(DEPLOY / "definitions.template.json"),
           "CALC_DEFINITIONS_FILE": str(target), **passwords}
    rendered = subprocess.run(["sh", str(DEPLOY / "render-definitions.sh")], env=env, capture_output=True,
                              text=True, timeout=30, check=False)
    assert rendered.returncode == 0, rendered.stderr
    return target


@pytest.fixture
def deployed(private_node: NodeFactory, tmp_path: Path) -> Iterator[tuple[PrivateNode, dict[str, User]]]:
    """A node with the deployment's vhost, users, permissions and topology, fresh passwords.

    A private node imports the rendered definitions once it runs; a container loads them at boot
    (`load_definitions`, as docker compose deploys it), so it has no guest user.
    """
    template = json.loads((DEPLOY / "definitions.template.json").read_text())
    passwords = {entry["password"].strip("${}"): f"pw-{secrets.token_hex(8)}" for entry in template["users"]}
    definitions = render_deployed_definitions(tmp_path / "definitions.json", passwords)
    node = private_node(definitions=definitions)
    users: dict[str, User] = {}
    for entry in template["users"]:
        name, password = entry["name"], passwords[entry["password"].strip("${}")]
        users[name] = User(name, password, f"amqp://{name}:{password}@127.0.0.1:{node.amqp_port}/{VHOST}")
    yield node, users


Action = Callable[[pika.adapters.blocking_connection.BlockingChannel], object]


def refused(user: User, action: Action) -> bool:
    """True when the broker closes the channel with ACCESS_REFUSED (403) for `action`."""
    connection = pika.BlockingConnection(pika.URLParameters(user.url))
    try:
        action(connection.channel())
    except pika.exceptions.ChannelClosedByBroker as exc:
        return bool(exc.reply_code == ACCESS_REFUSED)
    finally:
        if connection.is_open:
            connection.close()
    return False


def publish_to(exchange: str) -> Action:
    def action(channel: pika.adapters.blocking_connection.BlockingChannel) -> None:
        channel.confirm_delivery()
        channel.basic_publish(exchange, "calc.requested.add", b"x", mandatory=True)
    return action


def test_each_user_is_refused_what_its_service_does_not_do(
        deployed: tuple[PrivateNode, dict[str, User]]) -> None:
    _, users = deployed
    producer, consumer, inspector = users["calc-producer"], users["calc-consumer"], users["calc-inspector"]
    get_dlq = lambda ch: ch.basic_get(topology.DLQ)  # noqa: E731
    purge_dlq = lambda ch: ch.queue_purge(topology.DLQ)  # noqa: E731
    foreign_exchange = lambda ch: ch.exchange_declare("calc.rogue", "topic", durable=True)  # noqa: E731
    assert refused(producer, get_dlq), "the producer may read calc.dlq"
    assert refused(producer, foreign_exchange), "the producer may declare an exchange"
    assert refused(producer, purge_dlq)
    assert refused(producer, publish_to(topology.RESULTS_EXCHANGE)), "the producer may forge results"
    assert refused(consumer, purge_dlq), "the consumer may purge calc.dlq"
    assert refused(consumer, get_dlq)
    assert refused(consumer, foreign_exchange)
    assert refused(consumer, publish_to(topology.REQUESTS_EXCHANGE)), "the consumer may forge requests"
    assert refused(inspector, lambda ch: ch.basic_get(topology.work_queue("basic")))
    assert refused(inspector, lambda ch: ch.queue_purge(topology.work_queue("basic")))
    assert refused(inspector, foreign_exchange)
    assert refused(inspector, publish_to(topology.RESULTS_EXCHANGE))
    # and what each service does need is allowed (a passive check of the topology needs nothing)
    assert not refused(producer, publish_to(topology.REQUESTS_EXCHANGE))
    assert not refused(inspector, get_dlq)
    assert not refused(producer, lambda ch: ch.queue_declare(topology.DLQ, passive=True))


async def test_the_pipeline_works_with_least_privilege_users(
        deployed: tuple[PrivateNode, dict[str, User]], tmp_path: Path) -> None:
    node, users = deployed
    passive = {"CALC_DECLARE_TOPOLOGY": "false"}
    ids_file = tmp_path / "ids.txt"
    with services() as started:
        consumer = Service(["calc-consumer"], service_env(users["calc-consumer"].url, **passive),
                           tmp_path / "consumer.log")
        started.append(consumer)
        consumer.wait_line("consuming queue=calc.work.heavy")
        producer = Service(bulk_args(500, ids_file, seed=77, failure_share=0.2),
                           service_env(users["calc-producer"].url, **passive), tmp_path / "producer.log")
        started.append(producer)
        assert producer.wait(120) == 0, producer.text()[-3000:]
        wait_settled(node, VHOST)
        assert consumer.terminate() == 0
    report = subprocess.run([str(BIN / "dlq-inspector"), "report", "--json"],
                            env=service_env(users["calc-inspector"].url, **passive), capture_output=True,
                            text=True, timeout=60, check=False)
    assert report.returncode == 0, report.stderr
    sent = read_ids(ids_file)
    ledger = await Ledger.collect(users["calc-admin"].url, sent)
    ledger.assert_exactly_once()
    assert json.loads(report.stdout)["total"] == len(ledger.dead) > 50
    logs = {p.name: p.read_text(errors="replace") for p in sorted(tmp_path.glob("*.log"))}  # noqa: ASYNC240
    logs["inspector"] = report.stdout + report.stderr
    for user in users.values():
        leaked = [name for name, text in logs.items() if user.password in text]
        assert not leaked, f"{user.name}'s password is in {leaked}"


@pytest.mark.parametrize("service", [["calc-producer", "send", "add", "1", "2"], ["calc-consumer"]],
                         ids=["producer", "consumer"])
def test_a_service_user_declaring_the_topology_gets_a_clear_error(
        deployed: tuple[PrivateNode, dict[str, User]], service: list[str]) -> None:
    """Declaring needs `configure`, which no service user has: the error must say what to do."""
    _, users = deployed
    user = users[f"calc-{service[0].split('-')[1]}"]
    done = subprocess.run([str(BIN / service[0]), *service[1:]], env=service_env(user.url),
                          capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == 2, done.stderr[-3000:]
    assert "Traceback" not in done.stderr, done.stderr[-3000:]
    assert "ACCESS_REFUSED" in done.stderr and "CALC_DECLARE_TOPOLOGY=false" in done.stderr, done.stderr
    assert user.password not in done.stdout + done.stderr


def test_send_wait_works_as_the_producer_user_which_reads_no_other_queue(
        deployed: tuple[PrivateNode, dict[str, User]], tmp_path: Path) -> None:
    """The producer's reply queue (amq.gen-*, bound to calc.results) is all it may read."""
    _, users = deployed
    producer = users["calc-producer"]
    passive = {"CALC_DECLARE_TOPOLOGY": "false"}
    assert refused(producer, lambda ch: ch.basic_get(topology.AUDIT_QUEUE)), "the producer may read results"
    assert refused(producer, lambda ch: ch.queue_declare("calc.mine", exclusive=True))
    assert refused(producer, lambda ch: ch.queue_bind("amq.gen-none", topology.DEAD_LETTER_EXCHANGE, "#"))
    with services() as started:
        consumer = Service(["calc-consumer"], service_env(users["calc-consumer"].url, **passive),
                           tmp_path / "consumer.log")
        started.append(consumer)
        consumer.wait_line("consuming queue=calc.work.heavy")
        waited = subprocess.run([str(BIN / "calc-producer"), "send", "divide", "1", "0", "--wait", "--json"],
                                env=service_env(producer.url, **passive), capture_output=True, text=True,
                                timeout=90, check=False)
        assert waited.returncode == 5, waited.stderr[-3000:]
        assert json.loads(waited.stdout)["reason"] == "DIVISION_BY_ZERO"
        assert consumer.terminate() == 0
