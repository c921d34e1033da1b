"""Real processes for tests: workers, relay, beat, gunicorn and the fakes, as subprocesses.

Each process gets the test run's database (the test database pytest-django created)
and Redis DB through its environment, logs to a file the failure message points at,
and runs in its own process group so a test can SIGKILL the whole group as an
orchestrator would.
"""

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import redis
import requests
from django.conf import settings
from django.db import connection

ROOT = Path(__file__).resolve().parent.parent
ALL_QUEUES = "emails,kyc,documents,default"


def wait_until(
    predicate: Callable[[], Any], *, timeout: float = 20.0, interval: float = 0.05, message: str = ""
) -> Any:
    """Poll `predicate` until it returns something truthy; fail after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for: {message or predicate}")
        time.sleep(interval)  # polling interval of a bounded wait, not synchronisation by sleeping


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def database_url() -> str:
    """The URL of the database the tests use (pytest-django's test database)."""
    db = connection.settings_dict
    auth = db["USER"] + (f":{db['PASSWORD']}" if db.get("PASSWORD") else "")
    return f"postgres://{auth}@{db['HOST'] or '127.0.0.1'}:{db['PORT'] or 5432}/{db['NAME']}"


def children_of(pid: int) -> list[int]:
    """A process's direct children (a prefork worker's pool), from /proc; [] once it is gone."""
    try:
        return [int(c) for c in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]
    except FileNotFoundError:
        return []


def rss_bytes(pid: int) -> int:
    """A process's resident memory, from /proc; 0 once it is gone."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    except (FileNotFoundError, ProcessLookupError):
        pass
    return 0


def child_env(**extra: str) -> dict[str, str]:
    # Tracing stays off in test processes unless a test turns it on (tests/tracing).
    env = {name: value for name, value in os.environ.items() if not name.startswith("OTEL_")}
    env.update(
        DJANGO_SETTINGS_MODULE="config.settings.test",
        DATABASE_URL=database_url(),
        PYTHONUNBUFFERED="1",
        CELERY_SKIP_CHECKS="1",
    )
    env.update(extra)
    return env


@dataclass
class Proc:
    name: str
    argv: list[str]
    env: dict[str, str]
    log_path: Path
    popen: subprocess.Popen[bytes] | None = None
    _log: Any = field(default=None, repr=False)

    def start(self) -> "Proc":
        self._log = self.log_path.open("ab")
        self.popen = subprocess.Popen(
            self.argv,
            cwd=ROOT,
            env=self.env,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        return self

    @property
    def pid(self) -> int:
        assert self.popen is not None
        return self.popen.pid

    def alive(self) -> bool:
        return self.popen is not None and self.popen.poll() is None

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def signal_group(self, sig: int) -> None:
        if self.alive():
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.pid, sig)

    def kill(self) -> None:
        """SIGKILL the whole process group (main process and pool children)."""
        self.signal_group(signal.SIGKILL)
        if self.popen is not None:
            self.popen.wait(timeout=10)

    def stop(self, timeout: float = 20.0) -> None:
        """SIGTERM to the main process, as an orchestrator sends it (Celery: a warm shutdown,
        letting pool children finish their tasks), then SIGKILL the group if it lingers."""
        if self.popen is None:
            return
        if self.alive():
            self.popen.send_signal(signal.SIGTERM)
            try:
                self.popen.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.kill()
        # Orphaned pool children, if any, go with the group.
        self.signal_group(signal.SIGKILL)
        if self._log:
            self._log.close()

    def wait_for_log(self, text: str, timeout: float = 30.0) -> None:
        wait_until(
            lambda: text in self.log() or not self.alive(),
            timeout=timeout,
            message=f"{self.name} to log {text!r}",
        )
        if not self.alive():
            raise AssertionError(f"{self.name} exited early:\n{self.log()[-3000:]}")


@dataclass
class HttpFake:
    """A fake (fakes/) started as a real process: its URL, /control, /stats and /reset."""

    proc: Proc
    port: int

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def control(self, **changes: Any) -> dict[str, Any]:
        response = requests.post(f"{self.url}/control", json=changes, timeout=5)
        response.raise_for_status()
        return dict(response.json())

    def stats(self, **params: str) -> dict[str, Any]:
        return dict(requests.get(f"{self.url}/stats", params=params, timeout=5).json())

    def reset(self) -> None:
        requests.post(f"{self.url}/reset", timeout=5).raise_for_status()


def redis_client() -> redis.Redis:
    return redis.Redis.from_url(settings.REDIS_URL)


class Processes:
    """Starts and tracks processes for one fixture; stops them all at teardown."""

    def __init__(self, log_dir: Path, env: dict[str, str] | None = None) -> None:
        self.log_dir = log_dir
        self.log_dir.mkdir(parents=True, exist_ok=True)
        self.base_env = env or child_env()
        self.procs: list[Proc] = []
        self._counter = 0

    def spawn(self, name: str, argv: list[str], **env: str) -> Proc:
        self._counter += 1
        proc = Proc(
            name=name,
            argv=argv,
            env={**self.base_env, **env},
            log_path=self.log_dir / f"{self._counter:02d}-{name}.log",
        ).start()
        self.procs.append(proc)
        return proc

    def worker(
        self,
        name: str = "w",
        queues: str = ALL_QUEUES,
        concurrency: int = 2,
        extra: list[str] | None = None,
        redis_url: str | None = None,
        idle_priority: bool = False,
        **env: str,
    ) -> Proc:
        """A real prefork worker; ready once its heartbeat key appears (in `redis_url`'s Redis)."""
        run = os.environ.get("TASKYARD_TEST_RUN_ID", "local")
        nodename = f"{name}-{run}-{self._counter + 1}@{socket.gethostname()}"
        argv = [
            sys.executable, "-m", "celery", "-A", "config", "worker", "-Q", queues, "-c", str(concurrency),
            "-P", "prefork", "-n", nodename, "--without-gossip", "--without-mingle", "-l", "INFO",
            *(extra or []),
        ]  # fmt: skip
        # idle_priority: SCHED_IDLE, CPU only when nothing else wants it (the benchmark's stand-in
        # for a worker that has its own machine in a deployment).
        prefix = ["chrt", "--idle", "0"] if idle_priority else []
        proc = self.spawn(f"worker-{name}", [*prefix, *argv], **env)
        client = redis.Redis.from_url(redis_url) if redis_url else redis_client()
        wait_until(
            lambda: client.exists(f"taskyard:alive:{nodename}:{proc.pid}") or not proc.alive(),
            timeout=40,
            message=f"worker {nodename} to be ready",
        )
        if not proc.alive():
            raise AssertionError(f"worker exited early:\n{proc.log()[-3000:]}")
        proc.nodename = nodename  # type: ignore[attr-defined]
        return proc

    def relay(self, name: str = "relay", extra: list[str] | None = None, **env: str) -> Proc:
        proc = self.spawn(name, [sys.executable, "manage.py", "relay_outbox", *(extra or [])], **env)
        proc.wait_for_log("relay started")
        return proc

    def beat(
        self,
        name: str = "beat",
        scheduler: str = "jobs.scheduling.beat:HeartbeatScheduler",  # production's: sends via the outbox
        extra: list[str] | None = None,
        **env: str,
    ) -> Proc:
        """A real `celery beat` with the project's scheduler, its state files in its own directory."""
        state = self.log_dir / f"{name}-{self._counter + 1:02d}"
        state.mkdir(parents=True, exist_ok=True)
        argv = [
            sys.executable, "-m", "celery", "-A", "config", "beat",
            "-S", scheduler, "--schedule", str(state / "celerybeat-schedule"), "--pidfile", str(state / "beat.pid"),
            "-l", "INFO", *(extra or []),
        ]  # fmt: skip
        proc = self.spawn(name, argv, **env)
        proc.wait_for_log("beat: Starting...")
        return proc

    def web(self, name: str = "web", workers: int = 1, **env: str) -> tuple[Proc, str]:
        """gunicorn with the project's config; returns the process and its base URL once /healthz answers."""
        port = free_port()
        argv = [
            sys.executable, "-m", "gunicorn", "-c", "config/gunicorn_conf.py", "config.wsgi",
            "--bind", f"127.0.0.1:{port}", "--workers", str(workers),
        ]  # fmt: skip
        proc = self.spawn(name, argv, **env)
        url = f"http://127.0.0.1:{port}"

        def answers() -> bool:
            try:
                return requests.get(f"{url}/healthz", timeout=2).status_code == 200
            except requests.RequestException:  # refused, or a read timeout while it boots
                if not proc.alive():
                    raise AssertionError(f"gunicorn exited:\n{proc.log()[-3000:]}") from None
                return False

        wait_until(answers, timeout=30, message="gunicorn to answer")
        return proc, url

    def stop_all(self) -> None:
        for proc in reversed(self.procs):
            proc.stop()
        self.procs.clear()


def cpu_seconds(pid: int) -> float:
    """CPU time (user + system) a process used so far, from /proc; 0.0 once it is gone."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError):
        return 0.0
    fields = stat[stat.rindex(")") + 2 :].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def require_os_tool(*names: str, package: str) -> str:
    """The path of the first of `names` on PATH. Missing, the test is skipped on a developer's
    machine (saying how to install it) but fails in CI (CI=true), where a skipped test would
    pass unseen: CI installs the OS tools (`make os-tools`) and must run these tests."""
    import pytest  # test tooling only

    for name in names:
        if path := shutil.which(name):
            return path
    message = f"{names[0]} is not installed (Debian package {package}; `make os-tools` installs it)"
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(f"{message}; CI must run this test", pytrace=False)
    pytest.skip(message)
