"""deploy/k8s invariants of the workloads, computed from the code where they can be: each
Procfile process runs its Procfile command, beat never overlaps, grace periods outlast the
tasks (from the registered tasks' limits), probes, resources, child recycling and metrics."""

import ipaddress
import re
import shlex

import pytest

from jobs.management.commands.retry_table import documented_tasks
from jobs.queues import Queue
from tests.deploy.kustomize import pod_containers, pod_spec
from tests.deploy.manifests import (
    RENDERINGS,
    ROOT,
    env_of,
    k8s_expand,
    main_container,
    named,
    of_kind,
    rendered,
    worker_queues,
    workers,
)


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


def quantity_bytes(value: str) -> int:
    units = {"Ki": 2**10, "Mi": 2**20, "Gi": 2**30}
    number, unit = re.fullmatch(r"(\d+)(Ki|Mi|Gi)", value).groups()  # type: ignore[union-attr]
    return int(number) * units[unit]


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
                # The bound: a warm shutdown lets the task reach its soft limit.
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
