"""Shared fixtures. Everything runs against the real PostgreSQL and Redis of this machine,
isolated per run (tests/isolation.py); flow tests start real worker and relay processes."""

import json
import signal
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from django.conf import settings
from django.contrib.auth import get_user_model
from django.contrib.auth.models import User
from django.utils import timezone
from rest_framework.authtoken.models import Token
from rest_framework.test import APIClient

from jobs.models import OutboxMessage, TaskRun
from jobs.task_metrics import queue_keys
from tests.harness import Proc, Processes, free_port, redis_client, wait_until
from tests.isolation import release_run_resources


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    release_run_resources(settings.REDIS_URL)  # each xdist worker releases its own claim


@pytest.fixture(autouse=True)
def _forget_failed_logins() -> Iterator[None]:
    """Failed-login counters (core/login_guard.py) outlive a test in Redis; users like
    "alice" are in many tests, so each test starts with none."""
    yield
    client = redis_client()
    keys = list(client.scan_iter(match="*login-fail:*", count=1000))
    if keys:
        client.delete(*keys)


# --- users and clients --------------------------------------------------------------
@pytest.fixture
def make_user(db: None) -> Any:
    counter = iter(range(1, 10_000))

    def make(username: str | None = None, **extra: Any) -> User:
        name = username or f"user{next(counter)}"
        return get_user_model().objects.create_user(
            username=name, email=f"{name}@example.test", password="pw-for-tests-only", **extra
        )

    return make


@pytest.fixture
def user(make_user: Any) -> User:
    return make_user("alice", first_name="Alice")


@pytest.fixture
def other_user(make_user: Any) -> User:
    return make_user("mallory")


def client_for(user: User | None) -> APIClient:
    client = APIClient()
    if user is not None:
        token, _ = Token.objects.get_or_create(user=user)
        client.credentials(HTTP_AUTHORIZATION=f"Token {token.key}")
    return client


@pytest.fixture
def api(user: User) -> APIClient:
    """An API client authenticated as `user` with a real token."""
    return client_for(user)


@pytest.fixture
def anon() -> APIClient:
    return APIClient()


# --- the SMTP sink --------------------------------------------------------------------
@dataclass
class Sink:
    proc: Proc
    smtp_port: int
    http_port: int
    directory: Path

    def messages(self) -> list[Any]:
        import email
        import email.policy

        return [
            email.message_from_bytes(p.read_bytes(), policy=email.policy.default)
            for p in sorted(self.directory.glob("*.eml"))
        ]

    def set_mode(self, mode: str) -> None:
        import requests

        requests.post(
            f"http://127.0.0.1:{self.http_port}/control", data=json.dumps({"mode": mode}), timeout=5
        ).raise_for_status()

    def clear(self) -> None:
        for path in self.directory.glob("*"):
            path.unlink()


def start_sink(procs: Processes, directory: Path) -> Sink:
    smtp_port, http_port = free_port(), free_port()
    proc = procs.spawn(
        "smtp-sink",
        [
            sys.executable, "-m", "fakes.smtp_sink", "--smtp-port", str(smtp_port),
            "--http-port", str(http_port), "--dir", str(directory),
        ],
    )  # fmt: skip
    proc.wait_for_log("smtp sink:")
    return Sink(proc, smtp_port, http_port, directory)


# --- the running stack: SMTP sink, relay, worker --------------------------------------
class Stack:
    """The session's SMTP sink, relay and worker (all queues, 2 children).

    Started on first use and kept for the session; a test that needs the machine to
    itself (kill -9 scenarios) stops it with `isolated` and it restarts on next use.
    """

    def __init__(self, base: Path) -> None:
        self.base = base
        self.procs: Processes | None = None
        self.env: dict[str, str] = {}  # extra environment for every process the stack starts
        self.sink: Sink
        self.worker: Proc
        self.relay: Proc

    def start(self) -> "Stack":
        if self.procs is not None:
            return self
        self.procs = Processes(self.base / "logs")
        self.procs.base_env.update(self.env)
        try:
            self.sink = start_sink(self.procs, self.base / "sink")
            self.procs.base_env.update(EMAIL_PORT=str(self.sink.smtp_port))
            self.worker = self.procs.worker("stack")
            self.relay = self.procs.relay()
        except BaseException:
            self.stop()
            raise
        return self

    def stop(self) -> None:
        if self.procs is not None:
            self.procs.stop_all()
            self.procs = None

    def use_env(self, **env: str) -> None:
        """Start the stack's processes with these variables too (a fake's URL, say).

        A running stack that lacks them is stopped; the next `live` test restarts it.
        """
        if all(self.env.get(name) == value for name, value in env.items()):
            return
        self.env.update(env)
        self.stop()

    @contextmanager
    def relay_paused(self) -> Iterator[None]:
        """SIGSTOP the session relay, so a test's own relays are the only publishers."""
        self.relay.signal_group(signal.SIGSTOP)
        try:
            yield
        finally:
            self.relay.signal_group(signal.SIGCONT)

    def wait_idle(self, timeout: float = 30.0) -> None:
        wait_idle(timeout)


def wait_idle(timeout: float = 30.0) -> None:
    """Everything published and nothing queued or running: the end state tests assert on."""
    client = redis_client()

    def idle() -> bool:
        # In the order work flows (outbox -> broker -> running): a task moving forward between
        # two queries is seen by the later one.
        return (
            not OutboxMessage.objects.filter(sent_at__isnull=True, not_before__lte=timezone.now()).exists()
            and sum(client.llen(q) for q in ("emails", "kyc", "documents", "default")) == 0
            and not TaskRun.objects.filter(state=TaskRun.State.RUNNING).exists()
        )

    wait_until(idle, timeout=timeout, interval=0.1, message="the stack to go idle")


@pytest.fixture(scope="session")
def stack(
    django_db_setup: None, django_db_blocker: Any, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Stack]:
    with django_db_blocker.unblock():
        shared = Stack(tmp_path_factory.mktemp("stack"))
        yield shared
        shared.stop()


@pytest.fixture
def live(stack: Stack, transactional_db: None) -> Iterator[Stack]:
    """The running stack, with a committed database the worker can see; idle again after the test."""
    stack.start()
    stack.sink.clear()
    yield stack
    try:
        stack.wait_idle()
    finally:
        stack.sink.set_mode("ok")


@pytest.fixture
def isolated(stack: Stack, transactional_db: None, tmp_path: Path) -> Iterator[Processes]:
    """No shared processes: the test starts (and may kill) its own; all stopped afterwards."""
    stack.stop()
    procs = Processes(tmp_path / "logs")
    try:
        yield procs
    finally:
        procs.stop_all()
        purge_broker()


def purge_broker() -> None:
    """Drop messages a test left in the broker, so they can't run against the next test's rows."""
    client = redis_client()
    keys = [key for queue in ("emails", "kyc", "documents", "default") for key in queue_keys(queue)]
    client.delete(*keys, "unacked", "unacked_index")
