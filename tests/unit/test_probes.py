"""Kubernetes probes and compose healthchecks use /livez and /readyz: never the broker for liveness."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[2]
SERVICES = ("producer", "consumer-basic", "consumer-heavy", "dlq-inspector", "journal")


def _container(name: str) -> dict[str, Any]:
    documents = [d for d in yaml.safe_load_all((ROOT / "k8s" / "base" / f"{name}.yaml").read_text()) if d]
    deployment = next(d for d in documents if d["kind"] == "Deployment")
    container: dict[str, Any] = deployment["spec"]["template"]["spec"]["containers"][0]
    return container


def test_every_deployment_probes_livez_for_startup_and_liveness_and_readyz_for_readiness() -> None:
    for name in SERVICES:
        container = _container(name)
        paths = {probe: container[probe]["httpGet"]["path"]
                 for probe in ("startupProbe", "livenessProbe", "readinessProbe")}
        wanted = {"startupProbe": "/livez", "livenessProbe": "/livez", "readinessProbe": "/readyz"}
        assert paths == wanted, name
        ports = {p["name"] for p in container["ports"]}
        assert {container[p]["httpGet"]["port"] for p in paths} <= ports, name


def test_compose_healthchecks_of_the_services_ask_readyz() -> None:
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    for name in ("producer", "consumer-basic", "consumer-heavy", "dlq-inspector", "journal"):
        test = " ".join(compose["services"][name]["healthcheck"]["test"])
        assert "/readyz'" in test, name
