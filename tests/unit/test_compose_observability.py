"""docker-compose.yml's observability profile: Prometheus with the repo's config and rules, Jaeger for
OTLP, neither started without the profile, and every service told where traces go."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]


def _services() -> dict[str, Any]:
    services: dict[str, Any] = yaml.safe_load((ROOT / "docker-compose.yml").read_text())["services"]
    return services


def test_prometheus_and_jaeger_run_only_in_the_profile() -> None:
    services = _services()
    profiled = {name for name, s in services.items() if s.get("profiles")}
    assert profiled == {"prometheus", "jaeger"}
    assert all(services[name]["profiles"] == ["observability"] for name in profiled)
    assert services["prometheus"]["image"] == "prom/prometheus:v2"
    assert services["jaeger"]["image"] == "jaegertracing/all-in-one:1.76.0"


def test_prometheus_loads_the_repos_config_and_rules() -> None:
    prometheus = _services()["prometheus"]
    assert "./deploy/prometheus:/etc/prometheus:ro" in prometheus["volumes"]
    assert "--config.file=/etc/prometheus/prometheus.yml" in prometheus["command"]
    config = yaml.safe_load((ROOT / "deploy" / "prometheus" / "prometheus.yml").read_text())
    assert config["rule_files"] == ["rules.yml"]  # relative to the config: /etc/prometheus/rules.yml


def test_jaeger_takes_otlp_over_http_and_every_service_may_be_pointed_at_it() -> None:
    services = _services()
    assert any(port.endswith(":4318") for port in services["jaeger"]["ports"])
    apps = {name: s for name, s in services.items() if s.get("image", "").startswith("calc-events")}
    assert len(apps) == 5
    for name, service in apps.items():
        endpoint = service["environment"]["OTEL_EXPORTER_OTLP_ENDPOINT"]
        assert endpoint == "${OTEL_EXPORTER_OTLP_ENDPOINT:-}", name


@pytest.mark.skipif(shutil.which("docker") is None, reason="no docker CLI on this machine")
def test_docker_compose_accepts_the_profile() -> None:
    result = subprocess.run(["docker", "compose", "--profile", "observability", "config", "--quiet"],
                            cwd=ROOT, capture_output=True, text=True, timeout=60, check=False)
    assert result.returncode == 0, result.stderr
