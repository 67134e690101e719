"""The journal's settings, broker user, compose services and Kubernetes manifests agree with the code."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest
import yaml

from messaging import topology
from messaging.errors import ConfigurationError
from messaging.settings import Settings

ROOT = Path(__file__).resolve().parents[2]


def _compose() -> dict[str, Any]:
    data: dict[str, Any] = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    return data


def test_database_password_file_replaces_the_password_and_is_never_shown(tmp_path: Path) -> None:
    secret = tmp_path / "pw"
    secret.write_text("p@ss/w0rd\n")
    settings = Settings.from_env({"DATABASE_URL": "postgresql://journal:old@db:5432/calc",
                                  "DATABASE_PASSWORD_FILE": str(secret)})
    assert settings.database_dsn == "postgresql://journal:p%40ss%2Fw0rd@db:5432/calc"
    assert settings.safe_database_url == "postgresql://journal:***@db:5432/calc"
    assert Settings().database_dsn == "postgresql://postgres@localhost:5432/postgres"


@pytest.mark.parametrize(("url", "message"), [
    ("mysql://u:p@h/db", "must start with postgresql://"),
    ("postgresql://u:secret@/db", "names no host"),
    ("postgresql://u:secret@h:99999/db", "port that is not a number"),
    ("postgresql://u:secret@h:5432", "names no database"),
    ("postgresql://u:se cret@h/db", "must not hold spaces"),
])
def test_bad_database_urls_name_the_variable_and_never_the_password(url: str, message: str) -> None:
    with pytest.raises(ConfigurationError, match=message) as caught:
        Settings.from_env({"DATABASE_URL": url})
    assert "DATABASE_URL" in str(caught.value) and "secret" not in str(caught.value)


def test_database_password_file_errors_say_which_file(tmp_path: Path) -> None:
    settings = Settings.from_env({"DATABASE_PASSWORD_FILE": str(tmp_path / "missing")})
    with pytest.raises(ConfigurationError, match="cannot read DATABASE_PASSWORD_FILE"):
        settings.database_dsn  # noqa: B018
    with pytest.raises(ConfigurationError, match="CALC_JOURNAL_BATCH"):
        Settings.from_env({"CALC_JOURNAL_BATCH": "0"})


def test_only_the_journal_declares_its_queues_and_definitions_have_them() -> None:
    built = topology.build(Settings())
    everyone = topology.declared_by(built, "")
    journal = topology.declared_by(built, topology.JOURNAL)
    mine = {topology.JOURNAL_QUEUE, topology.JOURNAL_DLQ}
    assert not mine & {q.name for q in everyone.queues}
    assert mine <= {q.name for q in journal.queues}
    assert {q.name for q in journal.queues} - mine == {q.name for q in everyone.queues}
    queue = next(q for q in built.queues if q.name == topology.JOURNAL_QUEUE)
    assert queue.bindings == ((topology.RESULTS_EXCHANGE, "#"),)
    assert queue.arguments["x-queue-type"] == "quorum" and "x-max-length" not in queue.arguments
    assert queue.arguments["x-dead-letter-exchange"] == topology.JOURNAL_DLX
    names = {q["name"] for q in topology.definitions(Settings(), "calc")["queues"]}
    assert mine <= names


def test_the_journal_user_reads_its_queue_and_writes_its_dlx_only() -> None:
    template = json.loads((ROOT / "deploy" / "rabbitmq" / "definitions.template.json").read_text())
    perms = next(p for p in template["permissions"] if p["user"] == "calc-journal")
    assert perms["configure"] == "^$"
    assert perms["read"] == "^calc\\.results\\.journal$"
    assert perms["write"] == "^calc\\.results\\.journal\\.dlx$"


def test_compose_journal_logs_in_as_itself_with_both_secrets_and_postgres_is_healthchecked() -> None:
    compose = _compose()
    journal = compose["services"]["journal"]
    env = journal["environment"]
    assert env["RABBITMQ_URL"] == "amqp://calc-journal@rabbitmq:5672/calc"
    assert env["RABBITMQ_PASSWORD_FILE"] == "/run/secrets/calc_journal_password"
    assert env["DATABASE_PASSWORD_FILE"] == "/run/secrets/postgres_password"
    assert "@" in env["DATABASE_URL"] and ":" not in env["DATABASE_URL"].split("@")[0].split("//")[1]
    assert sorted(journal["secrets"]) == ["calc_journal_password", "postgres_password"]
    # as the service reads it: `${VAR:-default}` unset in the test's environment is its default
    Settings.from_env({k: re.sub(r"\$\{\w+:-([^}]*)\}", r"\1", str(v)) for k, v in env.items()})
    postgres = compose["services"]["postgres"]
    assert postgres["image"] == "postgres:17" and postgres["secrets"] == ["postgres_password"]
    assert postgres["environment"]["POSTGRES_PASSWORD_FILE"] == "/run/secrets/postgres_password"
    assert "pg_isready" in postgres["healthcheck"]["test"]
    assert any(v.startswith("postgres-data:") for v in postgres["volumes"])
    assert compose["secrets"]["postgres_password"] == {"environment": "CALC_POSTGRES_PASSWORD"}
    assert journal["depends_on"]["postgres"]["condition"] == "service_healthy"


def test_compose_builds_the_image_once() -> None:
    services = _compose()["services"]
    ours = {name: s for name, s in services.items() if s.get("image") == "calc-events:local"}
    builders = [name for name, s in ours.items() if "build" in s]
    assert builders == ["producer"]
    assert all(s["pull_policy"] == "never" for name, s in ours.items() if name not in builders)


def test_kubernetes_runs_the_journal_against_a_database_secret() -> None:
    base = ROOT / "k8s" / "base"
    documents = [d for name in ("journal.yaml", "postgres.yaml")
                 for d in yaml.safe_load_all((base / name).read_text()) if d]
    kinds = {d["kind"]: d for d in documents}
    assert {"Deployment", "StatefulSet", "Service", "Secret"} <= set(kinds)
    kustomization = yaml.safe_load((base / "kustomization.yaml").read_text())
    assert {"journal.yaml", "postgres.yaml"} <= set(kustomization["resources"])
    assert "password" in kinds["Secret"]["stringData"]
    container = kinds["Deployment"]["spec"]["template"]["spec"]["containers"][0]
    env = {e["name"]: e.get("value") for e in container["env"]}
    assert env["DATABASE_PASSWORD_FILE"] and env["RABBITMQ_PASSWORD_FILE"]
    assert container["command"] == ["calc-journal", "serve"]
    assert container["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert container["livenessProbe"]["httpGet"]["path"] == "/livez"
