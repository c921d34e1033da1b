"""Offline schema validation: Kubernetes' own schemas (kubernetes-validate) and KEDA's CRDs.

kubernetes-validate ships the JSON schemas of every Kubernetes release; `strict` rejects
unknown fields, the typo a real API server would silently prune. Loading them costs ~1 s
per (version, kind), so validators are cached (the same steps as
`kubernetes_validate.validate`, which reloads them on every call).

KEDA's resources are custom: their schema is the CRD's openAPIV3Schema, which no Python
package ships. KEDA_SCHEMAS restates the parts of keda.sh/v1alpha1 ScaledObject and
TriggerAuthentication that taskyard uses, with the CRD's required fields and types, and
closed objects (`additionalProperties: false`) so a misspelt key fails here instead of
being pruned by the API server. TRIGGER_METADATA adds what each scaler requires.
"""

import functools
import re
from typing import Any

import jsonschema
import kubernetes_validate
from kubernetes_validate import utils as kv
from referencing import Registry, Resource

# The oldest release the manifests target (native preStop `sleep`, probe-level grace periods)
# and the newest the installed kubernetes-validate knows.
KUBERNETES_VERSIONS = ("1.30.0", kv.latest_version())


@functools.cache
def _kubernetes_validator(version: str, kind: str, api_version: str) -> jsonschema.protocols.Validator:
    schema_dir = f"v{version}-local-strict"
    group_version = re.sub(r"^([^./]*)(?:\.[^/]*)?/", r"\1-", api_version)
    schema = kv.schema_contents(
        f"kubernetes-json-schema/{schema_dir}/{kind.lower()}-{group_version}.json", version
    )
    definitions = kv.schema_contents(f"kubernetes-json-schema/{schema_dir}/_definitions.json", version)
    registry: Registry[Any] = Resource.from_contents(definitions) @ (
        Resource.from_contents(schema) @ Registry()
    )
    validator: jsonschema.protocols.Validator = jsonschema.Draft202012Validator(schema, registry=registry)
    return validator


def kubernetes_errors(doc: dict[str, Any], version: str) -> list[str]:
    if version not in kv.all_versions():
        raise kubernetes_validate.VersionNotSupportedError(version=version)
    validator = _kubernetes_validator(version, doc["kind"], doc["apiVersion"])
    return [f"{'/'.join(map(str, e.absolute_path))}: {e.message}" for e in validator.iter_errors(doc)]


def _closed(properties: dict[str, Any], required: list[str] | None = None) -> dict[str, Any]:
    schema: dict[str, Any] = {"type": "object", "properties": properties, "additionalProperties": False}
    if required:
        schema["required"] = required
    return schema


INT32 = {"type": "integer", "minimum": -(2**31), "maximum": 2**31 - 1}
STRING = {"type": "string"}
METADATA = _closed(
    {
        "name": STRING,
        "namespace": STRING,
        "labels": {"type": "object", "additionalProperties": STRING},
        "annotations": {"type": "object", "additionalProperties": STRING},
    },
    ["name"],
)
HPA_RULES = _closed(
    {
        "stabilizationWindowSeconds": {**INT32, "minimum": 0, "maximum": 3600},
        "selectPolicy": {"enum": ["Max", "Min", "Disabled"]},
        "policies": {
            "type": "array",
            "items": _closed(
                {
                    "type": {"enum": ["Pods", "Percent"]},
                    "value": {**INT32, "minimum": 1},
                    "periodSeconds": {**INT32, "minimum": 1, "maximum": 1800},
                },
                ["type", "value", "periodSeconds"],
            ),
        },
    }
)
SCALED_OBJECT = _closed(
    {
        "apiVersion": {"const": "keda.sh/v1alpha1"},
        "kind": {"const": "ScaledObject"},
        "metadata": METADATA,
        "spec": _closed(
            {
                "scaleTargetRef": _closed(
                    {"apiVersion": STRING, "kind": STRING, "name": STRING, "envSourceContainerName": STRING},
                    ["name"],
                ),
                "pollingInterval": {**INT32, "minimum": 1},
                "cooldownPeriod": {**INT32, "minimum": 0},
                "initialCooldownPeriod": {**INT32, "minimum": 0},
                "idleReplicaCount": {**INT32, "minimum": 0},
                "minReplicaCount": {**INT32, "minimum": 0},
                "maxReplicaCount": {**INT32, "minimum": 1},
                "fallback": _closed(
                    {"failureThreshold": {**INT32, "minimum": 1}, "replicas": {**INT32, "minimum": 0}},
                    ["failureThreshold", "replicas"],
                ),
                "advanced": _closed(
                    {
                        "restoreToOriginalReplicaCount": {"type": "boolean"},
                        "scalingModifiers": _closed(
                            {
                                "formula": STRING,
                                "target": STRING,
                                "activationTarget": STRING,
                                "metricType": {"enum": ["AverageValue", "Value"]},
                            },
                        ),
                        "horizontalPodAutoscalerConfig": _closed(
                            {
                                "name": STRING,
                                "behavior": _closed({"scaleUp": HPA_RULES, "scaleDown": HPA_RULES}),
                            }
                        ),
                    }
                ),
                "triggers": {
                    "type": "array",
                    "minItems": 1,
                    "items": _closed(
                        {
                            "type": STRING,
                            "name": STRING,
                            "useCachedMetrics": {"type": "boolean"},
                            "metricType": {"enum": ["AverageValue", "Value", "Utilization"]},
                            "metadata": {"type": "object", "additionalProperties": STRING},
                            "authenticationRef": _closed(
                                {
                                    "name": STRING,
                                    "kind": {
                                        "enum": ["TriggerAuthentication", "ClusterTriggerAuthentication"]
                                    },
                                },
                                ["name"],
                            ),
                        },
                        ["type", "metadata"],
                    ),
                },
            },
            ["scaleTargetRef", "triggers"],
        ),
    },
    ["apiVersion", "kind", "metadata", "spec"],
)
TRIGGER_AUTHENTICATION = _closed(
    {
        "apiVersion": {"const": "keda.sh/v1alpha1"},
        "kind": {"const": "TriggerAuthentication"},
        "metadata": METADATA,
        "spec": _closed(
            {
                "secretTargetRef": {
                    "type": "array",
                    "items": _closed(
                        {"parameter": STRING, "name": STRING, "key": STRING}, ["parameter", "name", "key"]
                    ),
                },
                "env": {
                    "type": "array",
                    "items": _closed(
                        {"parameter": STRING, "name": STRING, "containerName": STRING}, ["parameter", "name"]
                    ),
                },
                "podIdentity": _closed({"provider": STRING, "identityId": STRING}, ["provider"]),
            }
        ),
    },
    ["apiVersion", "kind", "metadata", "spec"],
)
KEDA_SCHEMAS = {"ScaledObject": SCALED_OBJECT, "TriggerAuthentication": TRIGGER_AUTHENTICATION}

# Per scaler: metadata keys it requires, and keys of which one must come from metadata or
# the TriggerAuthentication (parameter names), from KEDA's scaler documentation.
TRIGGER_METADATA: dict[str, dict[str, Any]] = {
    "redis": {
        "required": {"listName"},
        "one_of": [{"address", "host"}],
        "numeric": {"listLength", "activationListLength", "databaseIndex"},
    },
    "rabbitmq": {
        "required": {"queueName", "mode", "value"},
        "one_of": [{"host"}],
        "numeric": {"value", "activationValue"},
    },
    "prometheus": {
        "required": {"serverAddress", "query", "threshold"},
        "one_of": [],
        "numeric": {"threshold", "activationThreshold"},
    },
}


def keda_errors(doc: dict[str, Any], auth_parameters: dict[str, set[str]]) -> list[str]:
    """Schema errors, plus scaler metadata errors given each TriggerAuthentication's parameters."""
    validator = jsonschema.Draft202012Validator(KEDA_SCHEMAS[doc["kind"]])
    errors = [f"{'/'.join(map(str, e.absolute_path))}: {e.message}" for e in validator.iter_errors(doc)]
    if errors or doc["kind"] != "ScaledObject":
        return errors
    modifiers = doc["spec"].get("advanced", {}).get("scalingModifiers")
    if modifiers:
        # KEDA's admission webhook: a formula needs a target and names only named triggers.
        names = {t.get("name") for t in doc["spec"]["triggers"]}
        if "target" not in modifiers:
            errors.append("scalingModifiers: a formula needs a target")
        unknown = set(re.findall(r"[A-Za-z_]\w*", modifiers.get("formula", ""))) - names
        errors += [
            f"scalingModifiers: the formula names no trigger called {name}" for name in sorted(unknown)
        ]
    for trigger in doc["spec"]["triggers"]:
        rules = TRIGGER_METADATA.get(trigger["type"])
        if rules is None:
            errors.append(f"trigger type {trigger['type']}: not one taskyard documents")
            continue
        metadata = set(trigger["metadata"])
        auth = trigger.get("authenticationRef", {}).get("name")
        if auth is not None and auth not in auth_parameters:
            errors.append(f"authenticationRef {auth}: no such TriggerAuthentication")
        provided = metadata | auth_parameters.get(auth or "", set())
        errors += [f"{trigger['type']}: metadata.{key} is required" for key in rules["required"] - metadata]
        errors += [
            f"{trigger['type']}: one of {sorted(group)} is required (metadata or authentication)"
            for group in rules["one_of"]
            if not group & provided
        ]
        errors += [
            f"{trigger['type']}: metadata.{key} must be a number in a string"
            for key in rules["numeric"] & metadata
            if not re.fullmatch(r"\d+(\.\d+)?", trigger["metadata"][key])
        ]
    return errors
