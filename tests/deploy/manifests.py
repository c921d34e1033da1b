"""The rendered deploy/k8s manifests and small readers of them, shared by the deploy tests:
the renderings (base and overlays), a resource by kind and name, a container's command and env."""

import re
from pathlib import Path

from tests.deploy import kustomize
from tests.deploy.kustomize import Doc, pod_spec

ROOT = Path(__file__).resolve().parents[2]
K8S = ROOT / "deploy" / "k8s"
RENDERINGS = {
    "base": K8S / "base",
    "overlays/example": K8S / "overlays" / "example",
    "overlays/example-rabbitmq": K8S / "overlays" / "example-rabbitmq",
}


def rendered(name: str) -> list[Doc]:
    return kustomize.render(RENDERINGS[name])


def of_kind(docs: list[Doc], kind: str) -> list[Doc]:
    return [doc for doc in docs if doc["kind"] == kind]


def named(docs: list[Doc], kind: str, name: str) -> Doc:
    [doc] = [d for d in of_kind(docs, kind) if d["metadata"]["name"] == name]
    return doc


def main_container(doc: Doc) -> Doc:
    spec = pod_spec(doc)
    assert spec is not None
    container: Doc = spec["containers"][0]
    return container


def env_of(container: Doc) -> dict[str, str]:
    return {e["name"]: e["value"] for e in container.get("env", []) if "value" in e}


def k8s_expand(words: list[str], env: dict[str, str]) -> list[str]:
    """Kubernetes' $(VAR) expansion in command/args, from the container's own env."""
    return [re.sub(r"\$\(([A-Z_][A-Z0-9_]*)\)", lambda m: env[m.group(1)], word) for word in words]


def workers(docs: list[Doc]) -> list[Doc]:
    return [d for d in of_kind(docs, "Deployment") if d["metadata"]["name"].startswith("taskyard-worker-")]


def worker_queues(doc: Doc) -> list[str]:
    command = main_container(doc)["command"]
    return command[command.index("-Q") + 1].split(",")
