"""deploy/k8s: every manifest parses and validates offline, and the invariants hold.

The base, each overlay and each component are rendered (tests/deploy/kustomize.py), then
every built-in resource is validated against the Kubernetes schemas of the oldest and the
newest release we target (kubernetes-validate, strict: unknown fields fail), and every KEDA
resource against its CRD schema (tests/deploy/schemas.py). The invariants are computed from
the code where they can be: the Procfile, the registered Celery tasks, the settings.
"""

import ipaddress
import re
import shlex
from pathlib import Path
from typing import Any

import pytest
import yaml
from kombu.transport.redis import PRIORITY_STEPS
from kombu.transport.redis import Channel as RedisChannel

from jobs.management.commands.retry_table import documented_tasks
from jobs.queues import Queue
from jobs.task_metrics import queue_keys
from tests.deploy import kustomize, schemas
from tests.deploy.kustomize import Doc, pod_containers, pod_spec

ROOT = Path(__file__).resolve().parents[2]
K8S = ROOT / "deploy" / "k8s"
SECRET_NAME = "taskyard-secrets"
RENDERINGS = {
    "base": K8S / "base",
    "overlays/example": K8S / "overlays" / "example",
    "overlays/example-rabbitmq": K8S / "overlays" / "example-rabbitmq",
}
# Names that hold credentials: they may only ever come from the Secret.
SECRET_ENV = re.compile(
    r"SECRET|PASSWORD|TOKEN|DSN|API_KEY|ACCESS_KEY|BASIC_AUTH|DATABASE_URL|REDIS_URL|BROKER_URL"
)


def rendered(name: str) -> list[Doc]:
    return kustomize.render(RENDERINGS[name])


@pytest.fixture(scope="module")
def base() -> list[Doc]:
    return rendered("base")


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


def procfile() -> dict[str, str]:
    entries = {}
    for line in (ROOT / "Procfile").read_text().splitlines():
        if line.strip() and not line.startswith("#"):
            name, command = line.split(":", 1)
            entries[name.strip()] = command.strip()
    return entries


def procfile_argv(command: str, env: dict[str, str]) -> list[str]:
    """A Procfile line as argv, its ${VAR:-default} taken from `env` or the default."""
    expanded = re.sub(r"\$\{(\w+):-([^}]*)\}", lambda m: env.get(m.group(1), m.group(2)), command)
    return shlex.split(expanded)


def workers(docs: list[Doc]) -> list[Doc]:
    return [d for d in of_kind(docs, "Deployment") if d["metadata"]["name"].startswith("taskyard-worker-")]


def worker_queues(doc: Doc) -> list[str]:
    command = main_container(doc)["command"]
    return command[command.index("-Q") + 1].split(",")


def quantity_bytes(value: str) -> int:
    units = {"Ki": 2**10, "Mi": 2**20, "Gi": 2**30}
    number, unit = re.fullmatch(r"(\d+)(Ki|Mi|Gi)", value).groups()  # type: ignore[union-attr]
    return int(number) * units[unit]


# --- parsing and schemas -------------------------------------------------------------


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


# --- invariants ----------------------------------------------------------------------


def test_every_procfile_process_runs_its_procfile_command(base):
    workloads = {
        d["metadata"]["labels"]["taskyard.io/procfile"]: d
        for d in base
        if d["kind"] in ("Deployment", "Job") and "taskyard.io/procfile" in d["metadata"]["labels"]
    }
    assert set(workloads) == set(procfile())
    for name, command in procfile().items():
        doc = workloads[name]
        container = main_container(doc)
        if doc["kind"] == "Job":
            assert container["command"] == ["sh", "-c", command], name
            continue
        assert doc["kind"] == "Deployment", name
        env = env_of(container)
        assert k8s_expand(container["command"], env) == procfile_argv(command, env), name


def test_beat_is_one_replica_and_never_overlaps(base):
    beat = named(base, "Deployment", "taskyard-beat")
    assert beat["spec"]["replicas"] == 1
    assert beat["spec"]["strategy"] == {"type": "Recreate"}
    assert not [
        h
        for h in of_kind(base, "HorizontalPodAutoscaler")
        if h["spec"]["scaleTargetRef"]["name"] == "taskyard-beat"
    ]
    assert not [
        s for s in of_kind(base, "ScaledObject") if s["spec"]["scaleTargetRef"]["name"] == "taskyard-beat"
    ]


def task_limits() -> dict[str, list[tuple[str, float, float]]]:
    """Queue -> (task, soft, hard) of every production task on it, django.tasks Tasks included."""
    limits: dict[str, list[tuple[str, float, float]]] = {}
    for row in documented_tasks():
        if not row.name.startswith(("probe.", "tests.")):  # test-only tasks, never deployed
            limits.setdefault(row.queue, []).append((row.name, row.soft, row.hard))
    return limits


@pytest.mark.parametrize("rendering", RENDERINGS)
def test_worker_grace_period_outlasts_every_task_on_its_queues(rendering):
    limits = task_limits()
    assert "orders.exports.export_orders" in {name for tasks in limits.values() for name, _, _ in tasks}
    consumed: set[str] = set()
    for worker in workers(rendered(rendering)):
        queues = worker_queues(worker)
        consumed |= set(queues)
        grace = worker["spec"]["template"]["spec"]["terminationGracePeriodSeconds"]
        for queue in queues:
            for name, soft, hard in limits.get(queue, []):
                # The issue's bound: a warm shutdown lets the task reach its soft limit.
                assert grace > soft, f"{worker['metadata']['name']}: grace {grace}s <= {name} soft {soft}s"
                # Ours: the task may run on to its hard limit, and warm shutdown waits for it.
                assert grace >= hard, f"{worker['metadata']['name']}: grace {grace}s < {name} hard {hard}s"
    assert consumed == {q.value for q in Queue}, "every queue has a worker Deployment"
    assert set(limits) <= consumed


def test_every_workload_has_probes_requests_and_limits(base):
    for doc in base:
        if doc["kind"] == "Deployment":
            for container in pod_spec(doc)["containers"]:  # type: ignore[index]
                where = f"{doc['metadata']['name']}/{container['name']}"
                assert "livenessProbe" in container, where
                assert "readinessProbe" in container, where
        for container in pod_containers(doc):
            where = f"{doc['metadata']['name']}/{container['name']}"
            for kind in ("requests", "limits"):
                assert set(container["resources"][kind]) >= {"cpu", "memory"}, f"{where}: {kind}"
            assert container["securityContext"]["readOnlyRootFilesystem"] is True, where
            assert container["securityContext"]["allowPrivilegeEscalation"] is False, where


def test_web_and_worker_probes_use_the_projects_health_checks(base):
    web = main_container(named(base, "Deployment", "taskyard-web"))
    assert web["livenessProbe"]["httpGet"]["path"] == "/healthz"
    assert web["readinessProbe"]["httpGet"]["path"] == "/readyz"
    # Probes connect to the pod IP, which must be an allowed host (or Django answers 400).
    env = {e["name"]: e for e in web["env"]}
    assert env["POD_IP"]["valueFrom"]["fieldRef"]["fieldPath"] == "status.podIP"
    assert "$(POD_IP)" in env["ALLOWED_HOSTS"]["value"].split(",")
    beat = main_container(named(base, "Deployment", "taskyard-beat"))
    for probe in ("livenessProbe", "readinessProbe"):
        assert "manage.py beat_alive --max-age 60" in beat[probe]["exec"]["command"][-1]
    for worker in workers(base):
        container = main_container(worker)
        command = container["command"]
        node = command[command.index("-n") + 1]
        assert node == f"{worker_queues(worker)[0]}@%h"  # the Procfile's node name
        for probe in ("startupProbe", "livenessProbe", "readinessProbe"):
            script = container[probe]["exec"]["command"]
            assert script[:2] == ["sh", "-c"]
            # %h is the pod's host name, which the container runtime exports as $HOSTNAME.
            assert f'worker_alive --node "{node.replace("%h", "$HOSTNAME")}"' in script[2], worker
            # Each probe process writes metric files: they must not land in the pod's directory.
            assert 'PROMETHEUS_MULTIPROC_DIR="$(mktemp -d)"' in script[2]


def test_autoscaled_deployments_leave_replicas_to_the_autoscaler(base):
    scaled = {h["spec"]["scaleTargetRef"]["name"] for h in of_kind(base, "HorizontalPodAutoscaler")}
    scaled |= {s["spec"]["scaleTargetRef"]["name"] for s in of_kind(base, "ScaledObject")}
    assert scaled == {"taskyard-web", *(w["metadata"]["name"] for w in workers(base))}
    for deployment in of_kind(base, "Deployment"):
        name = deployment["metadata"]["name"]
        assert ("replicas" in deployment["spec"]) == (name not in scaled), name
    disrupted = {
        p["spec"]["selector"]["matchLabels"]["app.kubernetes.io/component"]
        for p in of_kind(base, "PodDisruptionBudget")
    }
    assert disrupted >= {
        "web",
        *(w["metadata"]["labels"]["app.kubernetes.io/component"] for w in workers(base)),
    }


def test_each_worker_scales_on_its_own_queue(base):
    for worker in workers(base):
        [scaler] = [
            s
            for s in of_kind(base, "ScaledObject")
            if s["spec"]["scaleTargetRef"]["name"] == worker["metadata"]["name"]
        ]
        assert scaler["spec"]["triggers"][0]["metadata"]["listName"] == worker_queues(worker)[0]
        assert 1 <= scaler["spec"]["minReplicaCount"] <= scaler["spec"]["maxReplicaCount"]
    rabbit = rendered("overlays/example-rabbitmq")
    for worker in workers(rabbit):
        [scaler] = [
            s
            for s in of_kind(rabbit, "ScaledObject")
            if s["spec"]["scaleTargetRef"]["name"] == worker["metadata"]["name"]
        ]
        assert [t["metadata"]["queueName"] for t in scaler["spec"]["triggers"]] == worker_queues(worker)


def test_each_worker_scales_on_every_priority_list_of_its_queue(base):
    """kombu's Redis transport spreads a queue over one list per priority band; the triggers
    read them all (the same keys taskyard_queue_depth sums) and scale on their sum."""
    for worker in workers(base):
        [queue] = worker_queues(worker)
        bands = [queue] + [f"{queue}{RedisChannel.sep}{step}" for step in PRIORITY_STEPS if step]
        assert queue_keys(queue) == bands
        [scaler] = [
            s
            for s in of_kind(base, "ScaledObject")
            if s["spec"]["scaleTargetRef"]["name"] == worker["metadata"]["name"]
        ]
        triggers = scaler["spec"]["triggers"]
        assert [t["metadata"]["listName"] for t in triggers] == bands
        modifiers = scaler["spec"]["advanced"]["scalingModifiers"]
        assert modifiers["formula"].replace(" ", "") == "+".join(t["name"] for t in triggers)
        assert modifiers["metricType"] == "AverageValue"
        assert {t["metadata"]["listLength"] for t in triggers} == {modifiers["target"]}


def test_workers_recycle_children_within_their_memory_limit(base):
    for worker in workers(base):
        container = main_container(worker)
        env = env_of(container)
        concurrency = int(k8s_expand([container["command"][container["command"].index("-c") + 1]], env)[0])
        per_child = int(env["CELERY_WORKER_MAX_MEMORY_PER_CHILD"]) * 1024
        assert int(env["CELERY_WORKER_MAX_TASKS_PER_CHILD"]) >= 100  # recycling costs a fork
        # Every child at its cap, plus the main process and a probe (~256 MiB), fits the limit,
        # so a child is recycled before the container is OOM-killed.
        limit = quantity_bytes(container["resources"]["limits"]["memory"])
        assert concurrency * per_child + 256 * 2**20 <= limit, worker["metadata"]["name"]


def test_workers_and_relay_export_their_metrics(base):
    for doc in [*workers(base), named(base, "Deployment", "taskyard-relay")]:
        container = main_container(doc)
        env = env_of(container)
        port = int(env["METRICS_EXPORTER_PORT"])
        assert ipaddress.ip_address(env["METRICS_EXPORTER_ADDRESS"]).is_unspecified  # reachable in the pod
        assert {"name": "metrics", "containerPort": port} in container["ports"]
        annotations = doc["spec"]["template"]["metadata"]["annotations"]
        assert annotations["prometheus.io/port"] == str(port)
    web = named(base, "Deployment", "taskyard-web")
    assert web["spec"]["template"]["metadata"]["annotations"]["prometheus.io/path"] == "/metrics"
    assert "METRICS_EXPORTER_PORT" not in env_of(main_container(web))  # gunicorn serves /metrics


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
