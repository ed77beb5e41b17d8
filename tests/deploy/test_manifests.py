"""Kubernetes manifests and the compose file, validated against vendored JSON schemas.

Kubernetes kinds: the strict (no unknown fields) schemas of Kubernetes 1.37, trimmed to the
kinds used (deploy/schemas/kubernetes). ServiceMonitor and PrometheusRule: the Prometheus
Operator CRD schemas (deploy/schemas/crds). Compose: the compose-spec schema. All offline.
"""

from __future__ import annotations

import copy
import importlib.util
import json
from functools import cache
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml
from referencing import Registry, Resource
from referencing.jsonschema import DRAFT202012

from tests.deploy.tools import DEPLOY, SCHEMAS

KUBERNETES = DEPLOY / "kubernetes"
MANIFEST_FILES = sorted(p for p in KUBERNETES.glob("*.yaml") if p.name != "kustomization.yaml")
K8S_SCHEMAS = SCHEMAS / "kubernetes"
SCHEMA_FILES = {
    ("v1", "ConfigMap"): K8S_SCHEMAS / "configmap-v1.json",
    ("v1", "Secret"): K8S_SCHEMAS / "secret-v1.json",
    ("v1", "Service"): K8S_SCHEMAS / "service-v1.json",
    ("v1", "ServiceAccount"): K8S_SCHEMAS / "serviceaccount-v1.json",
    ("apps/v1", "Deployment"): K8S_SCHEMAS / "deployment-apps-v1.json",
    ("batch/v1", "Job"): K8S_SCHEMAS / "job-batch-v1.json",
    ("policy/v1", "PodDisruptionBudget"): K8S_SCHEMAS / "poddisruptionbudget-policy-v1.json",
    ("monitoring.coreos.com/v1", "ServiceMonitor"): SCHEMAS / "crds" / "servicemonitor_v1.json",
    ("monitoring.coreos.com/v1", "PrometheusRule"): SCHEMAS / "crds" / "prometheusrule_v1.json",
}


def _documents(path: Path) -> list[dict[str, Any]]:
    return [doc for doc in yaml.safe_load_all(path.read_text()) if doc]


MANIFESTS = [(path, doc) for path in MANIFEST_FILES for doc in _documents(path)]


def _id(item: tuple[Path, dict[str, Any]]) -> str:
    path, doc = item
    return f"{path.name}:{doc['kind']}/{doc['metadata']['name']}"


def _by_kind(kind: str) -> list[dict[str, Any]]:
    return [doc for _, doc in MANIFESTS if doc["kind"] == kind]


def _one(kind: str, name: str) -> dict[str, Any]:
    (doc,) = [doc for doc in _by_kind(kind) if doc["metadata"]["name"] == name]
    return doc


@cache
def _validator(schema_path: Path) -> jsonschema.protocols.Validator:
    # Relative references ("_definitions.json#/$defs/...") resolve against the schema's own
    # file URI, as they would for a validator reading the files from disk.
    schema = {"$id": schema_path.as_uri(), **json.loads(schema_path.read_text())}
    definitions_path = K8S_SCHEMAS / "_definitions.json"
    definitions = json.loads(definitions_path.read_text())
    registry: Registry = Registry().with_resource(
        definitions_path.as_uri(),
        Resource.from_contents(definitions, default_specification=DRAFT202012),
    )
    cls = jsonschema.validators.validator_for(schema, default=jsonschema.Draft202012Validator)
    cls.check_schema(schema)
    return cls(schema, registry=registry, format_checker=cls.FORMAT_CHECKER)


def _errors(doc: dict[str, Any]) -> list[str]:
    validator = _validator(SCHEMA_FILES[(doc["apiVersion"], doc["kind"])])
    return [
        f"{'/'.join(map(str, error.absolute_path)) or '<root>'}: {error.message}"
        for error in validator.iter_errors(doc)
    ]


# --- schema validation ------------------------------------------------------------------------


@pytest.mark.parametrize("item", MANIFESTS, ids=[_id(m) for m in MANIFESTS])
def test_manifest_matches_its_schema(item: tuple[Path, dict[str, Any]]) -> None:
    _, doc = item
    assert (doc["apiVersion"], doc["kind"]) in SCHEMA_FILES, "no vendored schema for this kind"
    assert _errors(doc) == []


def test_strict_schemas_reject_unknown_fields_and_wrong_types() -> None:
    """The vendored schemas are strict enough to catch the usual mistakes."""
    deployment = copy.deepcopy(_one("Deployment", "lead-sla-api"))
    deployment["spec"]["template"]["spec"]["containers"][0]["livenessprobe"] = {}
    deployment["spec"]["replicas"] = "two"
    errors = _errors(deployment)
    assert any("livenessprobe" in e for e in errors), errors
    assert any("replicas" in e for e in errors), errors
    monitor = copy.deepcopy(_one("ServiceMonitor", "lead-sla"))
    monitor["spec"]["endpoints"][0]["interval"] = "15 seconds"
    assert _errors(monitor)
    rule = copy.deepcopy(_one("PrometheusRule", "lead-sla"))
    rule["spec"]["groups"][0]["rules"][0]["recrod"] = "typo"
    assert _errors(rule)


def test_compose_file_matches_the_compose_spec() -> None:
    schema = json.loads((SCHEMAS / "compose" / "compose-spec.json").read_text())
    compose = yaml.safe_load((DEPLOY / "compose.yaml").read_text())
    validator = jsonschema.Draft202012Validator(schema)
    errors = [f"{list(e.absolute_path)}: {e.message}" for e in validator.iter_errors(compose)]
    assert errors == []
    broken = copy.deepcopy(compose)
    broken["services"]["lead-sla"]["depends_on"]["migrate"]["condition"] = "service_done"
    assert list(validator.iter_errors(broken))


# --- what the manifests must say ----------------------------------------------------------------

DEPLOYMENTS = {"lead-sla-api": "api", "lead-sla-worker": "worker"}


@pytest.mark.parametrize("name", sorted(DEPLOYMENTS))
def test_deployment_is_production_ready(name: str) -> None:
    deployment = _one("Deployment", name)
    spec = deployment["spec"]
    pod = spec["template"]["spec"]
    (container,) = pod["containers"]
    assert spec["replicas"] >= 2
    args = container["args"]
    assert args[0] == "serve" and args[args.index("--role") + 1] == DEPLOYMENTS[name]
    assert args[args.index("--host") + 1] == "0.0.0.0"
    assert "--skip-migrations" in args  # the migration Job runs first
    assert container["livenessProbe"]["httpGet"]["path"] == "/healthz"
    assert container["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert {"cpu", "memory"} <= set(container["resources"]["requests"])
    assert "memory" in container["resources"]["limits"]
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["runAsUser"] != 0
    assert container["securityContext"]["readOnlyRootFilesystem"] is True
    assert container["securityContext"]["allowPrivilegeEscalation"] is False
    assert container["securityContext"]["capabilities"]["drop"] == ["ALL"]
    assert {m["mountPath"] for m in container["volumeMounts"]} >= {"/tmp", "/etc/lead-sla"}
    selector = spec["selector"]["matchLabels"]
    assert selector.items() <= spec["template"]["metadata"]["labels"].items()
    assert any(
        pdb["spec"]["selector"]["matchLabels"] == selector
        for pdb in _by_kind("PodDisruptionBudget")
    ), f"no PodDisruptionBudget selects {name}"


def test_migration_job_runs_migrate() -> None:
    job = _one("Job", "lead-sla-migrate")
    (container,) = job["spec"]["template"]["spec"]["containers"]
    assert container["args"] == ["migrate"]
    assert job["spec"]["template"]["spec"]["restartPolicy"] == "Never"
    assert container["securityContext"]["readOnlyRootFilesystem"] is True


def test_configuration_comes_from_the_configmap_and_secret() -> None:
    config = _one("ConfigMap", "lead-sla-config")["data"]
    assert config["LEAD_SLA_POLICY_FILE"] == "/etc/lead-sla/policies.yaml"
    assert "policies.yaml" in _one("ConfigMap", "lead-sla-policies")["data"]
    for workload in [*_by_kind("Deployment"), *_by_kind("Job")]:
        (container,) = workload["spec"]["template"]["spec"]["containers"]
        sources = container["envFrom"]
        assert {"configMapRef": {"name": "lead-sla-config"}} in sources
        assert {"secretRef": {"name": "lead-sla-secrets"}} in sources


def test_no_secret_values_are_committed() -> None:
    secrets = [(path, doc) for path, doc in MANIFESTS if doc["kind"] == "Secret"]
    assert [path.name for path, _ in secrets] == ["secret.example.yaml"]
    (_, example) = secrets[0]
    assert "data" not in example
    for key, value in example["stringData"].items():
        assert key.startswith("LEAD_SLA_"), key
        assert "REPLACE" in value or "PASSWORD" in value, f"{key} looks like a real value"
    kustomization = yaml.safe_load((KUBERNETES / "kustomization.yaml").read_text())
    assert "secret.example.yaml" not in kustomization["resources"]


def test_policy_file_in_the_configmap_is_valid(tmp_path: Path) -> None:
    """The same check as `lead-sla policies check`, on the ConfigMap's policies.yaml."""
    from service.policy_file import load_policy_file

    path = tmp_path / "policies.yaml"
    path.write_text(_one("ConfigMap", "lead-sla-policies")["data"]["policies.yaml"])
    policy_set = load_policy_file(str(path), {})
    assert {p.id for p in policy_set.policies} >= {"first-touch", "attempts"}


def test_kustomization_lists_every_manifest_but_the_job_and_the_example_secret() -> None:
    kustomization = yaml.safe_load((KUBERNETES / "kustomization.yaml").read_text())
    listed = set(kustomization["resources"])
    on_disk = {path.name for path in MANIFEST_FILES}
    assert listed <= on_disk
    assert on_disk - listed == {"job-migrate.yaml", "secret.example.yaml"}


def test_services_and_servicemonitor_fit_together() -> None:
    monitor = _one("ServiceMonitor", "lead-sla")
    selector = monitor["spec"]["selector"]["matchLabels"]
    services = _by_kind("Service")
    scraped = [s for s in services if selector.items() <= s["metadata"]["labels"].items()]
    assert {s["metadata"]["name"] for s in scraped} == {"lead-sla", "lead-sla-worker"}
    ports = {ep["port"] for ep in monitor["spec"]["endpoints"]}
    for service in scraped:
        assert ports <= {p["name"] for p in service["spec"]["ports"]}
        # the job label comes from this Service label: the rules select job="lead-sla"
        assert service["metadata"]["labels"][monitor["spec"]["jobLabel"]] == "lead-sla"
    for component, deployment in (("api", "lead-sla-api"), ("worker", "lead-sla-worker")):
        pod_labels = _one("Deployment", deployment)["spec"]["template"]["metadata"]["labels"]
        assert any(s["spec"]["selector"].items() <= pod_labels.items() for s in scraped), component


# --- the PrometheusRule is the rules file -------------------------------------------------------


def _sync_module() -> Any:
    path = DEPLOY / "scripts" / "sync_prometheusrule.py"
    spec = importlib.util.spec_from_file_location("sync_prometheusrule", path)
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_prometheusrule_has_the_same_groups_as_the_rules_file() -> None:
    rules = yaml.safe_load((DEPLOY / "prometheus" / "rules" / "lead-sla.rules.yaml").read_text())
    assert _one("PrometheusRule", "lead-sla")["spec"]["groups"] == rules["groups"]


def test_prometheusrule_is_what_the_sync_script_writes() -> None:
    sync = _sync_module()
    expected = sync.render(sync.RULES.read_text())
    assert sync.TARGET.read_text() == expected, "run: python deploy/scripts/sync_prometheusrule.py"


# --- compose -------------------------------------------------------------------------------------


def test_compose_stack_wiring() -> None:
    compose = yaml.safe_load((DEPLOY / "compose.yaml").read_text())
    services = compose["services"]
    assert set(services) == {
        "postgres",
        "migrate",
        "lead-sla",
        "prometheus",
        "alertmanager",
        "grafana",
    }
    assert services["migrate"]["command"] == ["migrate"]
    assert services["migrate"]["depends_on"]["postgres"]["condition"] == "service_healthy"
    app = services["lead-sla"]
    assert app["depends_on"]["migrate"]["condition"] == "service_completed_successfully"
    assert app["command"][:1] == ["serve"] and "0.0.0.0" in app["command"]
    assert app["environment"]["LEAD_SLA_DATABASE_URL"].startswith("postgresql+asyncpg://")
    for name, service in services.items():
        for volume in service.get("volumes", []):
            source = volume.split(":", 1)[0]
            if source.startswith("."):
                assert (DEPLOY / source).exists(), f"{name}: {source} does not exist"
        if "build" in service:
            assert (DEPLOY / service["build"]["context"] / service["build"]["dockerfile"]).exists()
    prometheus = yaml.safe_load((DEPLOY / "prometheus" / "prometheus.yml").read_text())
    (job,) = [j for j in prometheus["scrape_configs"] if j["job_name"] == "lead-sla"]
    assert job["static_configs"][0]["targets"] == ["lead-sla:8000"]
