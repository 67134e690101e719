"""Every manifest under k8s/ validates offline: built-in kinds against Kubernetes' own schemas
(kubernetes-validate), custom resources against the CRD schemas kept in k8s/crds/."""

from __future__ import annotations

import copy
import json
import re
from collections.abc import Iterator
from dataclasses import fields
from pathlib import Path
from typing import Any

import jsonschema
import kubernetes_validate
import pytest
import yaml

from consumer.service import DRAIN_TIMEOUT_S, SETTLE_GRACE_S
from messaging import topology
from messaging.settings import Settings, _env_name

ROOT = Path(__file__).resolve().parents[2]
BASE = ROOT / "k8s" / "base"
CRDS = ROOT / "k8s" / "crds"
# The oldest Kubernetes still commonly run, and the newest the schemas know.
VERSIONS = ("1.29", kubernetes_validate.latest_version())
CUSTOM_GROUPS = ("rabbitmq.com", "keda.sh", "monitoring.coreos.com")

Doc = dict[str, Any]


def _load(path: Path) -> list[Doc]:
    return [doc for doc in yaml.safe_load_all(path.read_text()) if doc]


def _kustomization() -> Doc:
    return _load(BASE / "kustomization.yaml")[0]


def _documents() -> list[tuple[str, Doc]]:
    return [(f"{name}#{i}", doc) for name in _kustomization()["resources"]
            for i, doc in enumerate(_load(BASE / name))]


def _id(item: tuple[str, Doc]) -> str:
    where, doc = item
    return f"{where}:{doc['kind']}/{doc['metadata']['name']}"


def _custom(doc: Doc) -> bool:
    return str(doc["apiVersion"]).split("/")[0] in CUSTOM_GROUPS


def _of_kind(kind: str) -> dict[str, Doc]:
    return {doc["metadata"]["name"]: doc for _, doc in _documents() if doc["kind"] == kind}


def _crd_schemas() -> dict[tuple[str, str], Doc]:
    """(apiVersion, kind) -> the openAPIV3Schema of that version, from k8s/crds/."""
    schemas = {}
    for path in sorted(CRDS.glob("*.yaml")):
        for crd in _load(path):
            spec = crd["spec"]
            for version in spec["versions"]:
                schemas[(f"{spec['group']}/{version['name']}", spec["names"]["kind"])] = \
                    version["schema"]["openAPIV3Schema"]
    return schemas


def _strict(schema: Doc) -> Doc:
    """The schema with unknown fields rejected, as `kubectl apply` (strict field validation) does."""
    schema = copy.deepcopy(schema)

    def walk(node: Any) -> None:
        if isinstance(node, dict):
            if ("properties" in node and "additionalProperties" not in node
                    and not node.get("x-kubernetes-preserve-unknown-fields")):
                node["additionalProperties"] = False
            for value in node.values():
                walk(value)
        elif isinstance(node, list):
            for value in node:
                walk(value)

    walk(schema)
    return schema


def _validate_custom(doc: Doc) -> None:
    schema = _crd_schemas()[(doc["apiVersion"], doc["kind"])]
    jsonschema.Draft7Validator(_strict(schema)).validate(doc)


def _containers(doc: Doc) -> Iterator[Doc]:
    yield from doc["spec"]["template"]["spec"]["containers"]


def test_kustomization_lists_every_manifest_in_base() -> None:
    listed = set(_kustomization()["resources"])
    present = {p.name for p in BASE.glob("*.yaml")} - {"kustomization.yaml"}
    assert listed == present


@pytest.mark.parametrize("version", VERSIONS)
@pytest.mark.parametrize("item", [d for d in _documents() if not _custom(d[1])], ids=_id)
def test_builtin_resources_match_the_kubernetes_schema(item: tuple[str, Doc], version: str) -> None:
    kubernetes_validate.validate(item[1], version, strict=True)


@pytest.mark.parametrize("path", sorted(CRDS.glob("*.yaml")), ids=lambda p: p.name)
def test_crd_files_are_valid_custom_resource_definitions(path: Path) -> None:
    for crd in _load(path):
        kubernetes_validate.validate(crd, VERSIONS[-1], strict=True)
        jsonschema.Draft7Validator.check_schema(crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"])


@pytest.mark.parametrize("item", [d for d in _documents() if _custom(d[1])], ids=_id)
def test_custom_resources_match_their_crd_schema(item: tuple[str, Doc]) -> None:
    _, doc = item
    assert (doc["apiVersion"], doc["kind"]) in _crd_schemas(), "no CRD schema in k8s/crds for it"
    _validate_custom(doc)


def test_the_validators_reject_a_misspelt_field() -> None:
    scaled = copy.deepcopy(_of_kind("ScaledObject")["consumer-basic"])
    scaled["spec"]["minReplicas"] = 2
    with pytest.raises(jsonschema.ValidationError):
        _validate_custom(scaled)
    deployment = copy.deepcopy(_of_kind("Deployment")["producer"])
    deployment["spec"]["template"]["spec"]["containers"][0]["livenesProbe"] = {}
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(deployment, VERSIONS[-1], strict=True)


def test_rabbitmq_cluster_of_three_loads_the_definitions() -> None:
    cluster = _of_kind("RabbitmqCluster")["calc-rabbitmq"]
    spec = cluster["spec"]
    assert spec["replicas"] == 3
    assert spec["image"].startswith("rabbitmq:4.0")
    config = spec["rabbitmq"]["additionalConfig"]
    assert "load_definitions = /etc/rabbitmq/definitions/definitions.json" in config
    # The operator merges this into its StatefulSet's pod template: it must be a valid one.
    template = spec["override"]["statefulSet"]["spec"]["template"]
    for version in VERSIONS:
        kubernetes_validate.validate({"apiVersion": "v1", "kind": "PodTemplate",
                                      "metadata": {"name": "calc-rabbitmq"}, "template": template},
                                     version, strict=True)
    pod = template["spec"]
    (init,) = pod["initContainers"]
    env = {e["name"]: e["value"] for e in init["env"]}
    template_text = (ROOT / "deploy" / "rabbitmq" / "definitions.template.json").read_text()
    placeholders = set(re.findall(r"\$\{([A-Z][A-Z0-9_]*)\}", template_text))
    assert {k.removesuffix("_FILE") for k in env if k.endswith("_PASSWORD_FILE")} == placeholders
    secret = _of_kind("Secret")["calc-rabbitmq-users"]
    for key in (v for k, v in env.items() if k.endswith("_PASSWORD_FILE")):
        assert Path(key).name in secret["stringData"], key
    assert env["CALC_DEFINITIONS_FILE"].startswith("/definitions/")
    (rabbitmq,) = pod["containers"]
    mounts = {m["name"]: m["mountPath"] for m in rabbitmq["volumeMounts"]}
    assert mounts["calc-definitions"] == "/etc/rabbitmq/definitions"
    volumes = {v["name"]: v for v in pod["volumes"]}
    assert volumes["calc-definitions-template"]["configMap"]["name"] in _of_kind("ConfigMap")


def test_deployments_are_hardened_and_probed() -> None:
    deployments = _of_kind("Deployment")
    assert set(deployments) == {"producer", "consumer-basic", "consumer-heavy", "dlq-inspector", "journal"}
    for name, deployment in deployments.items():
        pod = deployment["spec"]["template"]["spec"]
        assert pod["securityContext"]["runAsNonRoot"] is True, name
        assert pod["automountServiceAccountToken"] is False, name
        for container in _containers(deployment):
            assert container["image"] == "calc-events", name
            assert container["securityContext"] == {"allowPrivilegeEscalation": False,
                                                    "readOnlyRootFilesystem": True,
                                                    "capabilities": {"drop": ["ALL"]}}, name
            for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
                assert probe in container, f"{name}: {probe}"
            for bound in ("requests", "limits"):
                assert set(container["resources"][bound]) == {"cpu", "memory"}, name


def test_consumers_get_time_to_drain_and_let_their_acks_land() -> None:
    needed = DRAIN_TIMEOUT_S + SETTLE_GRACE_S + 5  # and 5 s to close and exit
    deployments = _of_kind("Deployment")
    for name in ("consumer-basic", "consumer-heavy"):
        grace = deployments[name]["spec"]["template"]["spec"]["terminationGracePeriodSeconds"]
        assert grace >= needed, f"{name}: SIGKILL after {grace} s, a stop may take {needed} s"


def test_deployments_log_in_as_their_own_user_with_known_settings() -> None:
    known = {_env_name(f.name) for f in fields(Settings)}
    config = _of_kind("ConfigMap")["calc-config"]["data"]
    assert set(config) <= known
    assert config["CALC_DECLARE_TOPOLOGY"] == "false"
    secret = _of_kind("Secret")["calc-rabbitmq-users"]["stringData"]
    definitions = json.loads((ROOT / "deploy" / "rabbitmq" / "definitions.template.json").read_text())
    users = {u["name"] for u in definitions["users"]}
    for name, deployment in _of_kind("Deployment").items():
        (container,) = _containers(deployment)
        env = {e["name"]: e.get("value") for e in container["env"]}
        assert set(env) <= known, name
        assert [e["configMapRef"]["name"] for e in container["envFrom"]] == ["calc-config"]
        url = re.fullmatch(r"amqp://([a-z-]+)@calc-rabbitmq:5672/calc", env["RABBITMQ_URL"])
        assert url and url.group(1) in users - {"calc-admin"}, name
        volumes = {v["name"]: v for v in deployment["spec"]["template"]["spec"]["volumes"]}
        (item,) = volumes["password"]["secret"]["items"]
        assert item["key"] == url.group(1).removeprefix("calc-") + "-password", name
        assert item["key"] in secret
        mount = {m["name"]: m["mountPath"] for m in container["volumeMounts"]}["password"]
        assert env["RABBITMQ_PASSWORD_FILE"] == f"{mount}/{item['path']}"
        settings = Settings.from_env({**config, **{k: v for k, v in env.items() if v is not None}})
        assert settings.rabbitmq_url == env["RABBITMQ_URL"]


def test_keda_scales_each_consumer_on_its_own_work_queue() -> None:
    deployments = _of_kind("Deployment")
    auths = _of_kind("TriggerAuthentication")
    secret = _of_kind("Secret")["calc-rabbitmq-users"]["stringData"]
    scaled = _of_kind("ScaledObject")
    assert set(scaled) == {"consumer-basic", "consumer-heavy"}
    for name, obj in scaled.items():
        spec = obj["spec"]
        target = deployments[spec["scaleTargetRef"]["name"]]
        (container,) = _containers(target)
        queues = {e["name"]: e.get("value") for e in container["env"]}["CALC_QUEUES"]
        (trigger,) = spec["triggers"]
        assert trigger["type"] == "rabbitmq"
        assert trigger["metadata"]["queueName"] == topology.work_queue(queues), name
        assert trigger["metadata"]["protocol"] == "amqp"
        assert 1 <= spec["minReplicaCount"] <= spec["maxReplicaCount"]
        auth = auths[trigger["authenticationRef"]["name"]]
        for ref in auth["spec"]["secretTargetRef"]:
            assert ref["key"] in secret
    # KEDA reads the depth as calc-monitor, which may do nothing but a passive declare.
    assert re.fullmatch(r"amqp://calc-monitor:[^@]+@calc-rabbitmq\.calc-events\.svc:5672/calc",
                        secret["monitor-amqp-url"])
    assert secret["monitor-amqp-url"].split(":")[2].split("@")[0] == secret["monitor-password"]


def test_disruption_budgets_select_real_pods() -> None:
    deployments = _of_kind("Deployment")
    budgets = _of_kind("PodDisruptionBudget")
    assert budgets
    for name, budget in budgets.items():
        selector = budget["spec"]["selector"]["matchLabels"]
        if name == "calc-rabbitmq":
            # The Cluster Operator labels its pods with the cluster's name.
            assert selector["app.kubernetes.io/name"] in _of_kind("RabbitmqCluster")
            continue
        matched = [d for d in deployments.values()
                   if selector.items() <= d["spec"]["template"]["metadata"]["labels"].items()]
        assert len(matched) == 1, name


def _compose_scrape_jobs() -> dict[str, Doc]:
    config = yaml.safe_load((ROOT / "deploy" / "prometheus" / "prometheus.yml").read_text())
    return {job["job_name"]: job for job in config["scrape_configs"]}


def test_podmonitors_scrape_every_service_on_a_port_it_serves() -> None:
    """One PodMonitor per Deployment; `job` is the Deployment's name, as in compose's prometheus.yml."""
    monitors = _of_kind("PodMonitor")
    jobs = _compose_scrape_jobs()
    for name, deployment in _of_kind("Deployment").items():
        labels = deployment["spec"]["template"]["metadata"]["labels"]
        selecting = [m for m in monitors.values()
                     if m["spec"]["selector"]["matchLabels"].items() <= labels.items()]
        assert len(selecting) == 1, f"{name}: scraped by {len(selecting)} PodMonitors"
        spec = selecting[0]["spec"]
        assert labels[spec["jobLabel"]] == name and name in jobs, name
        ports = {p["name"]: p["containerPort"] for c in _containers(deployment) for p in c["ports"]}
        for endpoint in spec["podMetricsEndpoints"]:
            assert endpoint["path"] == "/metrics", name
            assert endpoint["port"] in ports, f"{name}: no container port named {endpoint['port']}"
            assert ports[endpoint["port"]] == jobs[name]["dns_sd_configs"][0]["port"], name


def test_rabbitmq_podmonitor_reads_the_alarms_and_the_calc_queues() -> None:
    (cluster,) = _of_kind("RabbitmqCluster")
    spec = _of_kind("PodMonitor")["calc-rabbitmq"]["spec"]
    # The labels the Cluster Operator puts on its pods; it names the plugin's port `prometheus`.
    assert spec["selector"]["matchLabels"] == {"app.kubernetes.io/name": cluster,
                                               "app.kubernetes.io/component": "rabbitmq"}
    assert spec["jobLabel"] == "app.kubernetes.io/component"
    endpoints = {e["path"]: e for e in spec["podMetricsEndpoints"]}
    assert set(endpoints) == {"/metrics", "/metrics/detailed"}
    assert {e["port"] for e in endpoints.values()} == {"prometheus"}
    # The same families and vhost as docker compose's scrape: the rules read both alike.
    assert endpoints["/metrics/detailed"]["params"] == _compose_scrape_jobs()["rabbitmq-queues"]["params"]
