"""The chaos stack: real processes on their own Redis, broken on purpose by the tests.

Every scenario gets a fresh stack: a redis-server of its own (own port, appendonly on,
so stopping and starting it keeps what was queued, unlike the machine's Redis), the SMTP
sink, gunicorn, the relay and workers, all pointed at that Redis. A load generator posts
orders through the real API; `verify()` checks the end state the issue asks for: every
accepted order has its confirmation email (one Message-ID) and its invoice PDF, nothing
is left running or unpublished, and every failure is a DeadLetter row.
"""

import email
import email.policy
import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
import redis
import requests
from django.db.models import Exists, OuterRef
from django.utils import timezone
from rest_framework.authtoken.models import Token

from jobs.models import DeadLetter, OutboxMessage, TaskRun
from orders.models import Invoice
from tests.conftest import Sink, start_sink
from tests.harness import Proc, Processes, free_port, wait_until
from tests.isolation import REDIS_DB_VAR

RESULTS = Path(__file__).resolve().parents[2] / "var" / "chaos-results.json"
ORDER = {"lines": [{"sku": "MUG-RED", "quantity": 2, "unit_price": "9.99", "currency": "EUR"}]}


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if "tests/chaos/" in str(item.fspath):
            item.add_marker(pytest.mark.chaos)
            # Under pytest-xdist the scenarios run one after another on one worker (`--dist
            # loadgroup`): two of them at once would make each other's recovery times.
            item.add_marker(pytest.mark.xdist_group("chaos"))


def record_result(scenario: str, **figures: Any) -> None:
    """Figures for docs/reliability.md, collected across scenarios of a run."""
    RESULTS.parent.mkdir(exist_ok=True)
    data = json.loads(RESULTS.read_text()) if RESULTS.exists() else {}
    data[scenario] = {"at": timezone.now().isoformat(timespec="seconds"), **figures}
    RESULTS.write_text(json.dumps(data, indent=1, sort_keys=True))


class OwnRedis:
    """A redis-server for one scenario: stop and start it without touching anyone else's."""

    def __init__(self, procs: Processes, directory: Path) -> None:
        self.procs, self.directory = procs, directory
        self.port = free_port()
        self.proc: Proc | None = None
        directory.mkdir(parents=True, exist_ok=True)

    @property
    def url(self) -> str:
        # The run's DB number: test settings keep it when they read REDIS_URL (tests/isolation.py).
        return f"redis://127.0.0.1:{self.port}/{os.environ.get(REDIS_DB_VAR, '0')}"

    def client(self) -> redis.Redis:
        return redis.Redis.from_url(self.url, socket_timeout=5)

    def start(self) -> None:
        server = shutil.which("redis-server") or "/usr/bin/redis-server"
        self.proc = self.procs.spawn(
            "redis",
            [
                server, "--port", str(self.port), "--bind", "127.0.0.1", "--dir", str(self.directory),
                "--appendonly", "yes", "--appendfsync", "everysec", "--save", "",
            ],
        )  # fmt: skip
        wait_until(self._ping, timeout=20, message="redis-server to answer")

    def _ping(self) -> bool:
        try:
            return bool(self.client().ping())
        except redis.RedisError:
            return False

    def stop(self) -> None:
        """SIGTERM: Redis writes its append-only file and exits (a clean restart)."""
        assert self.proc is not None
        self.proc.stop(timeout=20)


@dataclass
class Load:
    """Posts orders at a steady rate through the real API until stopped."""

    url: str
    token: str
    rate: float
    accepted: list[int] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    def start(self) -> "Load":
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        return self

    def _run(self) -> None:
        session = requests.Session()
        interval, next_at = 1.0 / self.rate, time.monotonic()
        while not self._stop.is_set():
            try:
                response = session.post(
                    f"{self.url}/api/orders",
                    json=ORDER,
                    headers={"Authorization": f"Token {self.token}"},
                    timeout=10,
                )
                if response.status_code == 201:
                    self.accepted.append(response.json()["id"])
                else:
                    self.failures.append(f"{response.status_code} {response.text[:200]}")
            except requests.RequestException as exc:
                self.failures.append(type(exc).__name__)
            next_at += interval
            self._stop.wait(max(0.0, next_at - time.monotonic()))

    def stop(self) -> "Load":
        self._stop.set()
        if self._thread:
            self._thread.join(timeout=30)
        return self


def broker_depth(url: str) -> int:
    """Messages waiting in all task queues, asked of the broker itself (Redis or RabbitMQ)."""
    from kombu import Connection
    from kombu.exceptions import ChannelError

    total = 0
    with Connection(url, connect_timeout=3) as conn:
        for queue in ("emails", "kyc", "documents", "default"):
            channel: Any = conn.channel()
            try:
                total += int(channel.queue_declare(queue=queue, passive=True).message_count)
            except ChannelError:
                pass  # never declared, or an empty Redis list: nothing waiting
            finally:
                channel.close()
    return total


class ChaosStack:
    def __init__(self, base: Path, broker_url: str = "", **env: str) -> None:
        self.base = base
        self.procs = Processes(base / "logs")
        self.redis = OwnRedis(self.procs, base / "redis")
        self.broker_url = broker_url  # empty: the stack's own Redis is the broker too
        self.env = env
        self.workers: list[Proc] = []
        self.sink: Sink
        self.web_url = ""
        self.relay: Proc

    def start(self, *, workers: int = 1, concurrency: int = 2) -> "ChaosStack":
        self.redis.start()
        self.broker_url = self.broker_url or self.redis.url
        self.procs.base_env.update(
            REDIS_URL=self.redis.url,
            CELERY_BROKER_URL=self.broker_url,
            # Defaults where they decide the figures (heartbeats, reaper); faster elsewhere.
            **{"OUTBOX_LOST_AFTER_SECONDS": "10", **self.env},
        )
        self.sink = start_sink(self.procs, self.base / "sink")
        self.procs.base_env["EMAIL_PORT"] = str(self.sink.smtp_port)
        port = free_port()
        self.procs.spawn(
            "web",
            [
                sys.executable, "-m", "gunicorn", "-c", "config/gunicorn_conf.py", "config.wsgi",
                "--bind", f"127.0.0.1:{port}", "--workers", "2",
            ],
        )  # fmt: skip
        self.web_url = f"http://127.0.0.1:{port}"
        wait_until(lambda: _answers(f"{self.web_url}/healthz"), timeout=30, message="gunicorn")
        self.relay = self.start_relay()
        for n in range(workers):
            self.start_worker(f"w{n}", concurrency=concurrency)
        return self

    def start_relay(self) -> Proc:
        return self.procs.relay(f"relay-{len(self.procs.procs)}")

    def start_worker(self, name: str, concurrency: int = 2) -> Proc:
        worker = self.procs.worker(name, concurrency=concurrency, redis_url=self.redis.url)
        self.workers.append(worker)
        return worker

    def load(self, user: Any, rate: float = 10.0) -> Load:
        token, _ = Token.objects.get_or_create(user=user)
        return Load(self.web_url, token.key, rate).start()

    def stop(self) -> None:
        self.procs.stop_all()

    # --- the end state -------------------------------------------------------------
    def idle(self) -> bool:
        """No work anywhere in the pipeline, checked in the order work flows through it
        (outbox -> broker -> published -> running), so a task moving forward between two
        queries is seen by the later one."""
        try:
            return (
                # retries and reschedules due soon are work in progress; 30-minute auto-cancels are not
                not OutboxMessage.objects.filter(
                    sent_at__isnull=True, not_before__lte=timezone.now() + timedelta(seconds=120)
                ).exists()
                and broker_depth(self.broker_url) == 0
                # published but never started: queued, held by a worker, or lost by the broker
                and not OutboxMessage.objects.filter(sent_at__isnull=False)
                .exclude(Exists(TaskRun.objects.filter(task_id=OuterRef("pk"))))
                .exists()
                and not TaskRun.objects.filter(state__in=[TaskRun.State.RUNNING, TaskRun.State.LOST]).exists()
            )
        except (redis.RedisError, OSError):
            return False

    def wait_idle(self, timeout: float = 120) -> float:
        """Idle on every look for half a second: a task that retried or rescheduled between
        the queries of one look shows up in the next."""
        started = time.monotonic()
        idle_since: list[float] = []

        def settled() -> bool:
            if not self.idle():
                idle_since.clear()
                return False
            idle_since[:] = idle_since or [time.monotonic()]
            return time.monotonic() - idle_since[0] >= 0.5

        wait_until(settled, timeout=timeout, interval=0.1, message="the chaos stack to finish all work")
        return time.monotonic() - started

    def emails(self) -> Counter[str]:
        """Raw emails in the sink by Message-ID (a duplicate shows as a count of 2)."""
        ids: Counter[str] = Counter()
        for path in (self.base / "sink").glob("*.eml"):
            message = email.message_from_bytes(path.read_bytes(), policy=email.policy.default)
            ids[str(message["Message-ID"])] += 1
        return ids

    def verify(self, accepted: list[int], *, dead_letters_expected: bool = False) -> dict[str, int]:
        """Every accepted order: one confirmation email (by Message-ID) and a PDF; nothing silently missing."""
        emails = self.emails()
        confirmations = {f"<order_confirmation.order-{order}@taskyard.test>" for order in accepted}
        missing_email = sorted(confirmations - set(emails))
        missing_pdf = list(
            Invoice.objects.filter(order_id__in=accepted)
            .exclude(status=Invoice.Status.READY)
            .values_list("order_id", flat=True)
        )
        dead = DeadLetter.objects.count()
        figures = {
            "orders_accepted": len(accepted),
            "emails_unique": len(confirmations & set(emails)),
            "emails_raw": sum(emails[m] for m in confirmations),
            "email_duplicates": sum(emails[m] - 1 for m in confirmations if emails[m] > 1),
            "pdfs": len(accepted) - len(missing_pdf),
            "dead_letters": dead,
            "stuck_task_runs": TaskRun.objects.filter(
                state__in=[TaskRun.State.RUNNING, TaskRun.State.LOST]
            ).count(),
        }
        assert not missing_email, (
            f"{len(missing_email)} orders have no confirmation email: {missing_email[:5]}\n"
            + self.explain([int(m.split("order-")[1].split("@")[0]) for m in missing_email[:3]])
        )
        assert not missing_pdf, f"{len(missing_pdf)} orders have no PDF: {missing_pdf[:5]}"
        assert figures["stuck_task_runs"] == 0
        if not dead_letters_expected:
            assert dead == 0, list(
                DeadLetter.objects.values_list("task_name", "exception_class", "message")[:5]
            )
        return figures

    def explain(self, order_ids: list[int]) -> str:
        """What the records say about the confirmation email of these orders (for a failure message)."""
        from notifications.models import EmailDelivery

        lines = []
        for order_id in order_ids:
            for row in OutboxMessage.objects.filter(kwargs__order_id=order_id, task_name__contains="email"):
                run = (
                    TaskRun.objects.filter(task_id=row.id)
                    .values("state", "deliveries", "worker", "error")
                    .first()
                )
                lines.append(
                    f"order {order_id}: outbox {row.id} sent_at={row.sent_at} attempts={row.publish_attempts} run={run}"
                )
            delivery = (
                EmailDelivery.objects.filter(ledger_key=f"order:{order_id}")
                .values("status", "attempts")
                .first()
            )
            lines.append(f"order {order_id}: delivery={delivery}")
        return "\n".join(lines)


def _answers(url: str) -> bool:
    try:
        return requests.get(url, timeout=3).status_code == 200
    except requests.RequestException:
        return False


@pytest.fixture
def chaos(stack: Any, transactional_db: None, tmp_path: Path) -> Iterator[Any]:
    """Builds a ChaosStack on demand (the shared test stack is stopped first)."""
    stack.stop()
    built: list[ChaosStack] = []

    def make(**env: str) -> ChaosStack:
        chaos_stack = ChaosStack(tmp_path / f"chaos{len(built)}", **env)
        built.append(chaos_stack)
        return chaos_stack

    try:
        yield make
    finally:
        for chaos_stack in built:
            chaos_stack.stop()


def kill_group(proc: Proc) -> None:
    proc.signal_group(signal.SIGKILL)
    if proc.popen is not None:
        proc.popen.wait(timeout=10)


def run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(list(args), capture_output=True, text=True, timeout=30)
