"""Settings from the environment, and the topology table against the contract (no broker)."""

from __future__ import annotations

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
    assert "x-delivery-limit" not in queues["calc.dlq"].arguments
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
