"""deploy/k8s: every manifest parses and validates offline.

The base, each overlay and each component are rendered (tests/deploy/kustomize.py), then
every built-in resource is validated against the Kubernetes schemas of the oldest and the
newest release we target (kubernetes-validate, strict: unknown fields fail), and every KEDA
resource against its CRD schema (tests/deploy/schemas.py). The invariants the manifests keep
are in test_manifest_workloads.py, test_manifest_scaling.py and test_manifest_secrets.py.
"""

from pathlib import Path

import pytest
import yaml

from jobs.queues import Queue
from tests.deploy import kustomize, schemas
from tests.deploy.kustomize import Doc, pod_containers
from tests.deploy.manifests import K8S, RENDERINGS, env_of, main_container, named, of_kind, rendered


def test_every_file_under_deploy_k8s_parses_and_is_rendered():
    files = sorted(K8S.rglob("*.yaml"))
    assert files
    for path in files:
        docs = kustomize.load_documents(path)
        assert docs, f"{path} is empty"
        for doc in docs:
            assert {"apiVersion", "kind"} <= set(doc), f"{path}: a document without apiVersion/kind"
    # Every resource file is reachable from a rendering (nothing stale lies around unvalidated).
    referenced: set[Path] = set()
    for directory in [*RENDERINGS.values(), *(K8S / "components").iterdir()]:
        spec = yaml.safe_load((directory / "kustomization.yaml").read_text())
        referenced |= {(directory / r).resolve() for r in spec.get("resources", [])}
    resource_files = {p.resolve() for p in files if p.name != "kustomization.yaml"}
    assert resource_files <= referenced, f"not in any kustomization: {resource_files - referenced}"


def test_renderings_include_the_components_and_overlays_changes():
    example, rabbit = rendered("overlays/example"), rendered("overlays/example-rabbitmq")
    assert {d["metadata"].get("namespace") for d in example} == {"taskyard"}
    images = {c["image"] for d in example for c in pod_containers(d)}
    assert images == {"registry.taskyard.example/taskyard:1.0.0"}
    documents = main_container(named(example, "Deployment", "taskyard-worker-documents"))
    assert env_of(documents)["CELERY_WORKER_MAX_MEMORY_PER_CHILD"] == "400000"
    assert documents["resources"]["limits"]["memory"] == "2Gi"
    assert documents["resources"]["requests"]["memory"] == "768Mi"  # merged, not replaced
    assert env_of(documents)["DOCUMENTS_CONCURRENCY"] == "2"
    assert {t["type"] for so in of_kind(rabbit, "ScaledObject") for t in so["spec"]["triggers"]} == {
        "rabbitmq"
    }
    assert [a["metadata"]["name"] for a in of_kind(rabbit, "TriggerAuthentication")] == [
        "taskyard-broker-rabbitmq"
    ]


@pytest.mark.parametrize("version", schemas.KUBERNETES_VERSIONS)
@pytest.mark.parametrize("rendering", RENDERINGS)
def test_builtin_resources_validate_against_the_kubernetes_schemas(rendering, version):
    docs = [d for d in rendered(rendering) if not d["apiVersion"].startswith("keda.sh/")]
    assert docs
    problems = {
        f"{d['kind']}/{d['metadata']['name']}": errors
        for d in docs
        if (errors := schemas.kubernetes_errors(d, version))
    }
    assert problems == {}


def test_the_kubernetes_validation_is_not_vacuous(base):
    web = named(base, "Deployment", "taskyard-web")
    typo = {**web, "spec": {**web["spec"], "replica": 2}}  # strict: an unknown field fails
    wrong_type = {**web, "spec": {**web["spec"], "revisionHistoryLimit": "five"}}
    for version in schemas.KUBERNETES_VERSIONS:
        assert schemas.kubernetes_errors(web, version) == []
        assert any("replica" in e for e in schemas.kubernetes_errors(typo, version))
        assert schemas.kubernetes_errors(wrong_type, version)


def keda_component(name: str) -> list[Doc]:
    """The base with one component applied (the prometheus one has no overlay of its own)."""
    docs = rendered("base")
    component = K8S / "components" / name
    spec = yaml.safe_load((component / "kustomization.yaml").read_text())
    for resource in spec.get("resources", []):
        docs += kustomize.load_documents(component / resource)
    return kustomize._apply_patches(docs, component, spec["patches"])


@pytest.mark.parametrize("variant", ["base", "overlays/example-rabbitmq", "prometheus-scaling"])
def test_keda_resources_validate_against_their_crd_schema(variant):
    docs = keda_component(variant) if variant == "prometheus-scaling" else rendered(variant)
    auths = {
        a["metadata"]["name"]: {ref["parameter"] for ref in a["spec"].get("secretTargetRef", [])}
        for a in of_kind(docs, "TriggerAuthentication")
    }
    keda = [d for d in docs if d["apiVersion"].startswith("keda.sh/")]
    assert len(of_kind(keda, "ScaledObject")) == len(Queue)
    assert {
        d["metadata"]["name"]: schemas.keda_errors(d, auths) for d in keda if schemas.keda_errors(d, auths)
    } == {}


def test_the_keda_validation_is_not_vacuous(base):
    so = named(base, "ScaledObject", "taskyard-worker-emails")
    auths = {"taskyard-broker-redis": {"address", "password"}}
    missing = {**so, "spec": {k: v for k, v in so["spec"].items() if k != "scaleTargetRef"}}
    typo = {**so, "spec": {**so["spec"], "maxReplicas": 3}}
    no_list = {
        **so,
        "spec": {**so["spec"], "triggers": [{"type": "redis", "metadata": {"listLength": "5"}}]},
    }
    bad_formula = {
        **so,
        "spec": {**so["spec"], "advanced": {"scalingModifiers": {"formula": "p0 + p42", "target": "5"}}},
    }
    assert schemas.keda_errors(so, auths) == []
    assert schemas.keda_errors(bad_formula, auths) == [
        "scalingModifiers: the formula names no trigger called p42"
    ]
    assert any("scaleTargetRef" in e for e in schemas.keda_errors(missing, auths))
    assert any("maxReplicas" in e for e in schemas.keda_errors(typo, auths))
    assert set(schemas.keda_errors(no_list, auths)) >= {
        "redis: metadata.listName is required",
        "redis: one of ['address', 'host'] is required (metadata or authentication)",
    }
