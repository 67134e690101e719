"""Settings from the environment, and the topology table against the contract (docs/contract.md;
no broker)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from messaging import topology
from messaging.errors import ConfigurationError
from messaging.settings import Settings, redact_url


def test_defaults_work_on_localhost() -> None:
    settings = Settings.from_env({})
    assert settings.rabbitmq_url.startswith("amqp://guest:guest@localhost:5672")
    assert settings.queues == ("basic", "heavy") and settings.interval == 1.0


def test_values_are_parsed() -> None:
    settings = Settings.from_env({"CALC_QUEUES": "heavy", "CALC_PREFETCH": "7",
                                  "CALC_FAULT_RATE": "0.5", "CALC_DECLARE_TOPOLOGY": "no"})
    assert settings.queues == ("heavy",) and settings.prefetch == 7
    assert settings.fault_rate == 0.5 and settings.declare_topology is False


@pytest.mark.parametrize(("env", "message"), [
    ({"CALC_PREFETCH": "lots"}, "CALC_PREFETCH"),
    ({"CALC_PREFETCH": "0"}, "CALC_PREFETCH"),
    ({"CALC_FAULT_RATE": "2"}, "CALC_FAULT_RATE"),
    ({"CALC_QUEUES": "basic,medium"}, "CALC_QUEUES"),
    ({"RABBITMQ_URL": "http://x"}, "RABBITMQ_URL"),
    ({"CALC_LOG_FORMAT": "xml"}, "CALC_LOG_FORMAT"),
])
def test_bad_values_name_the_variable(env: dict[str, str], message: str) -> None:
    with pytest.raises(ConfigurationError, match=message):
        Settings.from_env(env)


def test_password_file_replaces_the_password_and_is_never_shown(tmp_path: pytest.TempPathFactory) -> None:
    secret = tmp_path / "pw"  # type: ignore[operator]
    secret.write_text("s3cr3t/pw\n")
    settings = Settings.from_env({"RABBITMQ_URL": "amqps://app:old@broker:5671/calc",
                                  "RABBITMQ_PASSWORD_FILE": str(secret)})
    assert settings.broker_url == "amqps://app:s3cr3t%2Fpw@broker:5671/calc"
    assert "old" not in settings.safe_url and "s3cr3t" not in settings.safe_url
    assert redact_url("amqp://u:p@h/v") == "amqp://u:***@h/v"


def test_work_queues_bind_exactly_the_contract_keys() -> None:
    table = topology.build(Settings())
    queues = {q.name: q for q in table.queues}
    basic = {key for _, key in queues["calc.work.basic"].bindings}
    heavy = {key for _, key in queues["calc.work.heavy"].bindings}
    assert basic == {f"calc.requested.{w}" for w in ("add", "subtract", "multiply", "divide", "modulo")}
    assert heavy == {f"calc.requested.{w}" for w in ("power", "sqrt", "factorial")}
    for name in ("calc.work.basic", "calc.work.heavy"):
        args = queues[name].arguments
        assert args["x-queue-type"] == "quorum" and args["x-dead-letter-exchange"] == "calc.dlx"
        assert args["x-dead-letter-strategy"] == "at-least-once"
        assert args["x-overflow"] == "reject-publish"
        assert args["x-max-length"] > 0 and args["x-delivery-limit"] > 0
    assert queues["calc.dlq"].bindings == (("calc.dlx", "#"),)
    assert queues["calc.results.audit"].arguments["x-overflow"] == "drop-head"
    assert {e.name for e in table.exchanges} >= {"calc.requests", "calc.results", "calc.dlx"}


def test_retry_tiers_return_to_requests_with_growing_capped_delay() -> None:
    settings = Settings(max_attempts=5, retry_base_delay=1.0, retry_max_delay=5.0)
    queues = {q.name: q for q in topology.build(settings).queues}
    tiers = sorted(n for n in queues if n.startswith("calc.retry."))
    assert tiers == ["calc.retry.1", "calc.retry.2", "calc.retry.3", "calc.retry.4"]
    for name in tiers:
        assert queues[name].arguments["x-dead-letter-exchange"] == "calc.requests"
        assert "x-dead-letter-routing-key" not in queues[name].arguments  # keeps the original key
    assert [topology.retry_delay(settings, t) for t in (1, 2, 3, 4)] == [1.0, 2.0, 4.0, 5.0]


def test_definitions_mirror_the_table() -> None:
    defs = topology.definitions(Settings(), "calc")
    assert {q["name"] for q in defs["queues"]} == {q.name for q in topology.build(Settings()).queues}
    assert all(b["vhost"] == "calc" for b in defs["bindings"])


ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize(("text", "version"), [
    ("4.0.5", (4, 0, 5)), (b"3.10.7", (3, 10, 7)), ("4.1.0-rc.1", (4, 1, 0)), ("4.2", (4, 2)),
    ("", None), (None, None), ("latest", None),
])
def test_broker_versions_are_parsed(text: object, version: tuple[int, ...] | None) -> None:
    assert topology.parse_version(text) == version


def test_from_rabbitmq_4_the_dlq_and_audit_queue_are_quorum_queues_peeks_cannot_exhaust() -> None:
    queues = {q.name: q for q in topology.build(Settings(audit_max_length=77), (4, 0, 5)).queues}
    dlq, audit = queues["calc.dlq"], queues["calc.results.audit"]
    assert dict(dlq.arguments) == {"x-queue-type": "quorum", "x-delivery-limit": 2**31 - 1}
    # No dead-letter exchange: nothing may ever leave the DLQ but by the inspector's ack.
    assert not any(key.startswith("x-dead-letter") for key in dlq.arguments)
    assert dict(audit.arguments) == {"x-queue-type": "quorum", "x-max-length": 77,
                                     "x-overflow": "drop-head"}
    # An older deployment's classic queues are what a 4.x broker may still hold.
    assert dlq.existing == {"x-queue-type": "classic"}
    assert audit.existing == {"x-queue-type": "classic", "x-max-length": 77, "x-overflow": "drop-head"}
    assert all(q.existing is None for q in queues.values() if q.name not in (dlq.name, audit.name))


@pytest.mark.parametrize("version", [(3, 10, 7), (3, 13, 7), None])
def test_before_rabbitmq_4_or_unknown_they_stay_classic(version: tuple[int, ...] | None) -> None:
    queues = {q.name: q for q in topology.build(Settings(), version).queues}
    assert dict(queues["calc.dlq"].arguments) == {"x-queue-type": "classic"}
    assert queues["calc.results.audit"].arguments["x-queue-type"] == "classic"
    assert queues["calc.dlq"].existing is None
    assert queues["calc.work.basic"].arguments == topology.build(Settings()).queues[0].arguments


def test_the_deployed_definitions_declare_replicated_dlq_and_audit_queues() -> None:
    # deploy/ feeds compose's 4.0 broker and the 3-node Kubernetes cluster.
    template = json.loads((ROOT / "deploy" / "rabbitmq" / "definitions.template.json").read_text())
    types = {q["name"]: q["arguments"]["x-queue-type"] for q in template["queues"]}
    assert set(types.values()) == {"quorum"}
    dlq = next(q for q in template["queues"] if q["name"] == "calc.dlq")
    assert dlq["arguments"]["x-delivery-limit"] == topology.DLQ_DELIVERY_LIMIT


def test_definitions_for_an_older_broker_are_printed_on_request() -> None:
    def printed(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "messaging.topology", "definitions", *args],
                              cwd=ROOT, capture_output=True, text=True, check=False,
                              env={"PATH": "/usr/bin:/bin"})
    old = json.loads(printed("--broker-version", "3.10").stdout)
    assert next(q for q in old["queues"] if q["name"] == "calc.dlq")["arguments"] == {
        "x-queue-type": "classic"}
    bad = printed("--broker-version", "newest")
    assert bad.returncode == 2 and "is not a version like 4.0" in bad.stderr
