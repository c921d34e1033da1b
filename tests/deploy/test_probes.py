"""The manifests' probe commands, run for real against processes started with the manifests'
own container commands: the worker probe finds the worker by the node name its `-n` gives
it, and the beat probe sees beat's heartbeat. Both run as the kubelet runs them (`sh -c`,
HOSTNAME set by the container runtime) and leave no files behind.
"""

import contextlib
import os
import signal
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from jobs.scheduling.beat import HEARTBEAT_KEY
from tests.deploy import kustomize
from tests.deploy.manifests import K8S, env_of, k8s_expand, main_container, named
from tests.harness import ROOT, child_env, redis_client, wait_until

HOSTNAME = socket.gethostname()


@pytest.fixture(scope="module")
def base() -> list[kustomize.Doc]:
    return kustomize.render(K8S / "base")


def pod_env(container: kustomize.Doc, tmp_path: Path) -> dict[str, str]:
    """The test run's environment (database, Redis DB) plus what the manifest sets literally."""
    own = {k: v for k, v in env_of(container).items() if not k.startswith("METRICS_EXPORTER")}
    pod_tmp = tmp_path / "pod-tmp"
    pod_tmp.mkdir(exist_ok=True)
    return child_env(
        **own,
        HOSTNAME=HOSTNAME,  # the container runtime exports the pod name as HOSTNAME
        TMPDIR=str(pod_tmp),  # the pod's /tmp emptyDir
        PATH=f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",  # `python`, `celery`
        PYTHONPATH=str(ROOT),
    )


@contextlib.contextmanager
def running(argv: list[str], env: dict[str, str], cwd: Path, log: Path) -> Iterator[subprocess.Popen[bytes]]:
    with log.open("ab") as out:
        proc = subprocess.Popen(
            argv, cwd=cwd, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
        )
        try:
            yield proc
        finally:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(timeout=10)


def run_probe(command: list[str], env: dict[str, str], metrics_dir: Path) -> subprocess.CompletedProcess[str]:
    probe_env = {**env, "PROMETHEUS_MULTIPROC_DIR": str(metrics_dir)}  # the pod's metrics directory
    return subprocess.run(command, cwd=ROOT, env=probe_env, capture_output=True, text=True, timeout=60)


def test_worker_probe_finds_the_worker_by_its_manifest_node_name(base, transactional_db, tmp_path):
    container = main_container(named(base, "Deployment", "taskyard-worker-emails"))
    env = pod_env(container, tmp_path)
    argv = k8s_expand(container["command"], env_of(container))
    pod_metrics = tmp_path / "pod-metrics"
    pod_metrics.mkdir()
    # Given the worker started with the manifest's command (cwd: an empty directory, as on a
    # read-only root filesystem nothing may be written to it)
    workdir = tmp_path / "cwd"
    workdir.mkdir()
    with running(argv, env, workdir, tmp_path / "worker.log") as worker:
        client = redis_client()
        wait_until(
            lambda: (
                client.exists(f"taskyard:alive:emails@{HOSTNAME}:{worker.pid}") or worker.poll() is not None
            ),
            timeout=40,
            message="the emails worker to start",
        )
        assert worker.poll() is None, (tmp_path / "worker.log").read_text()[-3000:]
        probes = {
            tuple(container[p]["exec"]["command"])
            for p in ("startupProbe", "livenessProbe", "readinessProbe")
        }
        for command in probes:  # the three are one script today; each distinct one runs
            # When the kubelet runs the probe
            result = run_probe(list(command), env, pod_metrics)
            # Then the worker answers under the name the probe asks for
            assert result.returncode == 0, result.stderr
            assert f"alive: emails@{HOSTNAME}" in result.stdout
        # A probe asking for a node name the worker doesn't have fails.
        wrong = [*container["livenessProbe"]["exec"]["command"][:2]]
        wrong.append(container["livenessProbe"]["exec"]["command"][2].replace('"emails@', '"kyc@'))
        result = run_probe(wrong, env, pod_metrics)
        assert result.returncode == 1
    # The probes' metric files went to their own temporary directories, which are gone.
    assert list(pod_metrics.iterdir()) == []
    assert list((tmp_path / "pod-tmp").iterdir()) == []
    assert list(workdir.iterdir()) == []


def test_beat_probe_sees_the_heartbeat_of_beat_started_from_the_manifest(base, transactional_db, tmp_path):
    container = main_container(named(base, "Deployment", "taskyard-beat"))
    env = pod_env(container, tmp_path)
    pod_metrics = tmp_path / "pod-metrics"
    pod_metrics.mkdir()
    probe = container["livenessProbe"]["exec"]["command"]
    client = redis_client()
    client.delete(HEARTBEAT_KEY)
    # No beat: the probe fails.
    assert run_probe(probe, env, pod_metrics).returncode == 1
    workdir = tmp_path / "cwd"
    workdir.mkdir()
    with running(container["command"], env, workdir, tmp_path / "beat.log") as beat:
        wait_until(
            lambda: client.exists(HEARTBEAT_KEY) or beat.poll() is not None,
            timeout=40,
            message="beat's heartbeat",
        )
        assert beat.poll() is None, (tmp_path / "beat.log").read_text()[-3000:]
        result = run_probe(probe, env, pod_metrics)
        assert result.returncode == 0, result.stderr
        assert "beat alive" in result.stdout
    assert list(pod_metrics.iterdir()) == []
    assert list(workdir.iterdir()) == []  # nothing written to the working directory (read-only root)
