"""The subset of kustomize that deploy/k8s uses, in pure Python, so tests need no kubectl.

Supported: `resources` (files and kustomization directories), `components`, `patches`
(strategic merge, including `$patch: delete`, and JSON 6902 with a `target`), `namespace`
and `images`, applied in kustomize's order (resources, components, patches, namespace,
images). Anything else in a kustomization raises, so the manifests can't start using a
feature this renderer would silently ignore.

Strategic merge follows Kubernetes' merge keys for the lists the patches touch (containers
and env by name, volume mounts by path, ports by container port); other lists, and every
list in a custom resource (kustomize uses JSON merge semantics for those), are replaced.
"""

import copy
from pathlib import Path
from typing import Any

import yaml

Doc = dict[str, Any]

KUSTOMIZATION_KEYS = {"apiVersion", "kind", "resources", "components", "namespace", "images", "patches"}
COMPONENT_KEYS = {"apiVersion", "kind", "resources", "patches"}
TARGET_KEYS = {"group", "version", "kind", "name"}
MERGE_KEYS = {
    "containers": "name",
    "initContainers": "name",
    "env": "name",
    "volumes": "name",
    "volumeMounts": "mountPath",
    "ports": "containerPort",
    "imagePullSecrets": "name",
}
BUILTIN_GROUPS = {
    "",
    "apps",
    "batch",
    "policy",
    "autoscaling",
    "networking.k8s.io",
    "rbac.authorization.k8s.io",
}
CLUSTER_SCOPED = {"Namespace", "ClusterRole", "ClusterRoleBinding", "CustomResourceDefinition"}


def load_documents(path: Path) -> list[Doc]:
    return [doc for doc in yaml.safe_load_all(path.read_text()) if doc is not None]


def render(directory: Path) -> list[Doc]:
    """The resources `kubectl kustomize <directory>` would print, for the supported subset."""
    kustomization = _load_kustomization(directory, "Kustomization", KUSTOMIZATION_KEYS)
    docs = _resources(directory, kustomization)
    for component in kustomization.get("components", []):
        component_dir = (directory / component).resolve()
        spec = _load_kustomization(component_dir, "Component", COMPONENT_KEYS)
        docs += _resources(component_dir, spec)
        docs = _apply_patches(docs, component_dir, spec.get("patches", []))
    docs = _apply_patches(docs, directory, kustomization.get("patches", []))
    if "namespace" in kustomization:
        for doc in docs:
            if doc["kind"] not in CLUSTER_SCOPED:
                doc["metadata"]["namespace"] = kustomization["namespace"]
    for image in kustomization.get("images", []):
        _set_image(docs, image)
    _check_unique(docs)
    return docs


def _load_kustomization(directory: Path, kind: str, allowed: set[str]) -> Doc:
    spec: Doc = yaml.safe_load((directory / "kustomization.yaml").read_text())
    if spec.get("kind") != kind:
        raise ValueError(f"{directory}: expected a {kind}, found {spec.get('kind')}")
    unknown = set(spec) - allowed
    if unknown:
        raise NotImplementedError(f"{directory}: kustomize fields this renderer lacks: {sorted(unknown)}")
    return spec


def _resources(directory: Path, spec: Doc) -> list[Doc]:
    docs: list[Doc] = []
    for entry in spec.get("resources", []):
        path = (directory / entry).resolve()
        docs += render(path) if path.is_dir() else load_documents(path)
    return docs


def identity(doc: Doc) -> tuple[str, str, str]:
    return (
        doc["apiVersion"].split("/")[0] if "/" in doc["apiVersion"] else "",
        doc["kind"],
        doc["metadata"]["name"],
    )


def _check_unique(docs: list[Doc]) -> None:
    seen: set[tuple[str, str, str]] = set()
    for doc in docs:
        key = identity(doc)
        if key in seen:
            raise ValueError(f"duplicate resource {key}")
        seen.add(key)


def _apply_patches(docs: list[Doc], directory: Path, patches: list[Doc]) -> list[Doc]:
    for entry in patches:
        unknown = set(entry) - {"patch", "path", "target"}
        if unknown:
            raise NotImplementedError(f"patch fields this renderer lacks: {sorted(unknown)}")
        text = entry["patch"] if "patch" in entry else (directory / entry["path"]).read_text()
        body = yaml.safe_load(text)
        if isinstance(body, list):  # JSON 6902 operations
            targets = _matching(docs, entry.get("target"))
            for doc in targets:
                for op in body:
                    _json6902(doc, op)
        else:
            docs = _strategic_merge(docs, body)
    return docs


def _matching(docs: list[Doc], target: Doc | None) -> list[Doc]:
    if not target or set(target) - TARGET_KEYS:
        raise NotImplementedError(f"JSON 6902 patches need a target of {sorted(TARGET_KEYS)}: {target}")
    found = []
    for doc in docs:
        group, _, version = doc["apiVersion"].rpartition("/")
        if (
            target.get("group", group) == group
            and target.get("version", version) == version
            and target.get("kind", doc["kind"]) == doc["kind"]
            and target.get("name", doc["metadata"]["name"]) == doc["metadata"]["name"]
        ):
            found.append(doc)
    if not found:
        raise ValueError(f"patch target matches nothing: {target}")
    return found


def _json6902(doc: Doc, op: Doc) -> None:
    parts = [p.replace("~1", "/").replace("~0", "~") for p in op["path"].lstrip("/").split("/")]
    parent: Any = doc
    for part in parts[:-1]:
        parent = parent[int(part)] if isinstance(parent, list) else parent[part]
    last = parts[-1]
    if op["op"] in ("add", "replace"):
        value = copy.deepcopy(op["value"])
        if isinstance(parent, list):
            if last == "-":
                parent.append(value)
            elif op["op"] == "add":
                parent.insert(int(last), value)
            else:
                parent[int(last)] = value
        else:
            if op["op"] == "replace" and last not in parent:
                raise ValueError(f"replace of a missing path {op['path']}")
            parent[last] = value
    elif op["op"] == "remove":
        del parent[int(last) if isinstance(parent, list) else last]
    else:
        raise NotImplementedError(f"JSON 6902 op {op['op']}")


def _strategic_merge(docs: list[Doc], patch: Doc) -> list[Doc]:
    key = identity(patch)
    matches = [i for i, doc in enumerate(docs) if identity(doc) == key]
    if len(matches) != 1:
        raise ValueError(f"strategic merge patch for {key} matches {len(matches)} resources")
    index = matches[0]
    if patch.get("$patch") == "delete":
        return docs[:index] + docs[index + 1 :]
    builtin = key[0] in BUILTIN_GROUPS
    docs[index] = _merge(docs[index], patch, builtin=builtin)
    return docs


def _merge(base: Any, patch: Any, *, builtin: bool, field: str = "") -> Any:
    if isinstance(base, dict) and isinstance(patch, dict):
        merged = dict(base)
        for name, value in patch.items():
            if value is None:
                merged.pop(name, None)
            elif name in merged:
                merged[name] = _merge(merged[name], value, builtin=builtin, field=name)
            else:
                merged[name] = copy.deepcopy(value)
        return merged
    merge_key = MERGE_KEYS.get(field) if builtin else None
    if isinstance(base, list) and isinstance(patch, list) and merge_key:
        merged_list = [copy.deepcopy(item) for item in base]
        for item in patch:
            for i, existing in enumerate(merged_list):
                if existing.get(merge_key) == item.get(merge_key):
                    merged_list[i] = _merge(existing, item, builtin=builtin)
                    break
            else:
                merged_list.append(copy.deepcopy(item))
        return merged_list
    return copy.deepcopy(patch)


def _set_image(docs: list[Doc], image: Doc) -> None:
    unknown = set(image) - {"name", "newName", "newTag", "digest"}
    if unknown:
        raise NotImplementedError(f"image fields this renderer lacks: {sorted(unknown)}")
    for doc in docs:
        for container in pod_containers(doc):
            name, _, _tag = container["image"].partition(":")
            if name == image["name"]:
                new = image.get("newName", name)
                if "digest" in image:
                    container["image"] = f"{new}@{image['digest']}"
                else:
                    container["image"] = f"{new}:{image['newTag']}" if "newTag" in image else new


def pod_spec(doc: Doc) -> Doc | None:
    if doc["kind"] in ("Deployment", "StatefulSet", "DaemonSet", "Job"):
        spec: Doc = doc["spec"]["template"]["spec"]
        return spec
    return None


def pod_containers(doc: Doc) -> list[Doc]:
    spec = pod_spec(doc)
    if spec is None:
        return []
    return [*spec.get("initContainers", []), *spec["containers"]]
