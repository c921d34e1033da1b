"""deploy/k8s invariant: no secret values in the manifests; credentials come from the Secret."""

import re
from typing import Any

import pytest

from tests.deploy.kustomize import pod_containers
from tests.deploy.manifests import RENDERINGS, of_kind, rendered

SECRET_NAME = "taskyard-secrets"
# Names that hold credentials: they may only ever come from the Secret.
SECRET_ENV = re.compile(
    r"SECRET|PASSWORD|TOKEN|DSN|API_KEY|ACCESS_KEY|BASIC_AUTH|DATABASE_URL|REDIS_URL|BROKER_URL"
)


@pytest.mark.parametrize("rendering", RENDERINGS)
def test_no_secret_values_in_the_manifests(rendering):
    docs = rendered(rendering)
    assert of_kind(docs, "Secret") == []

    def walk(node: Any, path: str) -> None:
        if isinstance(node, dict):
            for key, value in node.items():
                walk(value, f"{path}/{key}")
        elif isinstance(node, list):
            for i, value in enumerate(node):
                walk(value, f"{path}/{i}")
        elif isinstance(node, str):
            assert not re.search(r"://[^/\s:@]+:[^/\s@]+@", node), f"credentials in a URL at {path}"

    for doc in docs:
        walk(doc, f"{doc['kind']}/{doc['metadata']['name']}")
        for container in pod_containers(doc):
            for env in container.get("env", []):
                if SECRET_ENV.search(env["name"]):
                    assert "secretKeyRef" in env.get("valueFrom", {}), (
                        f"{env['name']} must come from the Secret"
                    )
                if "secretKeyRef" in env.get("valueFrom", {}):
                    assert env["valueFrom"]["secretKeyRef"]["name"] == SECRET_NAME
            for source in container.get("envFrom", []):
                if "secretRef" in source:
                    assert source["secretRef"]["name"] == SECRET_NAME
        if doc["kind"] == "ConfigMap":
            for key in doc["data"]:
                assert not SECRET_ENV.search(key), f"ConfigMap {doc['metadata']['name']} holds {key}"
        for ref in (
            doc.get("spec", {}).get("secretTargetRef", []) if doc["kind"] == "TriggerAuthentication" else []
        ):
            assert ref["name"] == SECRET_NAME
    # And every container does get the Secret, whole.
    for doc in docs:
        for container in pod_containers(doc):
            assert {"secretRef": {"name": SECRET_NAME}} in container["envFrom"], container["name"]
