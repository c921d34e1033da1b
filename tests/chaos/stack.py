"""The chaos stack: real processes on their own Redis, broken on purpose by the tests.

Every scenario gets a fresh stack: a redis-server of its own (own port, appendonly on,
so stopping and starting it keeps what was queued, unlike the machine's Redis), the SMTP
sink, gunicorn, the relay and workers, all pointed at that Redis; with `kyc=True` also the
KYC vendor fake. A load generator posts orders (and KYC submissions) through the real API;
tests/chaos/effects.py checks the end state.
"""

import os
import shutil
import threading
import time
import uuid
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any, cast

import redis
import requests
from django.contrib.auth.models import User
from django.db.models import Exists, OuterRef
from django.utils import timezone
from rest_framework.authtoken.models import Token

from jobs.models import OutboxMessage, TaskRun
from tests.conftest import Sink, start_sink
from tests.harness import Proc, Processes, free_port, wait_until
from tests.isolation import REDIS_DB_VAR
from tests.kyc.conftest import FLOW_ENV, KycVendor, pdf_bytes, start_vendor

ORDER = {"lines": [{"sku": "MUG-RED", "quantity": 2, "unit_price": "9.99", "currency": "EUR"}]}
QUEUES = ("emails", "kyc", "documents", "default")


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
    """Posts orders at a steady rate through the real API until stopped; every `kyc_every`-th
    request is a KYC submission instead. Answers other than 201/202 are kept by status."""

    url: str
    token: str
    rate: float
    kyc_every: int = 0
    kyc_tokens: list[str] = field(default_factory=list)  # one user per submission: one open at a time
    accepted: list[int] = field(default_factory=list)
    kyc_accepted: list[str] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)
    problems: list[dict[str, Any]] = field(default_factory=list)  # problem+json bodies of refusals
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    def start(self) -> "Load":
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        return self

    def _post(self, session: requests.Session, n: int) -> None:
        headers = {"Authorization": f"Token {self.token}"}
        if self.kyc_every and n % self.kyc_every == 0 and self.kyc_tokens:
            headers = {"Authorization": f"Token {self.kyc_tokens.pop()}"}
            files = {"files": ("passport.pdf", pdf_bytes(marker=f"n{n}"), "application/pdf")}
            response = session.post(
                f"{self.url}/api/kyc/submissions/",
                data={"document_type": "passport"},
                files=files,
                headers=headers,
                timeout=10,
            )
            if response.status_code == 202:
                self.kyc_accepted.append(response.json()["id"])
                return
        else:
            response = session.post(f"{self.url}/api/orders", json=ORDER, headers=headers, timeout=10)
            if response.status_code == 201:
                self.accepted.append(response.json()["id"])
                return
        self.failures.append(f"{response.status_code} {response.text[:200]}")
        if response.headers.get("Content-Type", "").startswith("application/problem+json"):
            self.problems.append(response.json())

    def _run(self) -> None:
        session = requests.Session()
        interval, next_at, n = 1.0 / self.rate, time.monotonic(), 0
        while not self._stop.is_set():
            n += 1
            try:
                self._post(session, n)
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
        for queue in QUEUES:
            channel: Any = conn.channel()
            try:
                total += int(channel.queue_declare(queue=queue, passive=True).message_count)
            except ChannelError:
                pass  # never declared, or an empty Redis list: nothing waiting
            finally:
                channel.close()
    return total


class ChaosStack:
    def __init__(self, base: Path, broker_url: str = "", *, kyc: bool = False, **env: str) -> None:
        self.base = base
        self.procs = Processes(base / "logs")
        self.redis = OwnRedis(self.procs, base / "redis")
        self.broker_url = broker_url  # empty: the stack's own Redis is the broker too
        self.env = env
        self.kyc = kyc
        self.vendor: KycVendor | None = None
        self.workers: list[Proc] = []
        self.sink: Sink
        self.web_url = ""
        self.relay: Proc
        self.restarts: list[str] = []  # workers the supervisor found dead and replaced
        self._supervising = threading.Event()

    def start(
        self, *, workers: int = 1, concurrency: int = 2, relay_env: dict[str, str] | None = None
    ) -> "ChaosStack":
        self.redis.start()
        self.broker_url = self.broker_url or self.redis.url
        self.procs.base_env.update(
            REDIS_URL=self.redis.url,
            CELERY_BROKER_URL=self.broker_url,
            # Defaults where they decide the figures (heartbeats, reaper); faster elsewhere.
            **{"OUTBOX_LOST_AFTER_SECONDS": "10", **self.env},
        )
        if self.kyc:
            self.vendor = start_vendor(self.procs, "--decision-delay", "0.5")
            self.procs.base_env.update(KYC_VENDOR_URL=self.vendor.url, **FLOW_ENV)
        self.sink = start_sink(self.procs, self.base / "sink")
        self.procs.base_env["EMAIL_PORT"] = str(self.sink.smtp_port)
        # Each boots Django: side by side, the stack is up in the time of the slowest.
        with ThreadPoolExecutor(max_workers=2 + workers) as pool:
            web = pool.submit(self.procs.web, "web", workers=2)
            relay = pool.submit(self.start_relay, **(relay_env or {}))
            started = [
                pool.submit(self.start_worker, f"w{n}", concurrency=concurrency) for n in range(workers)
            ]
            _, self.web_url = web.result()
            self.relay = relay.result()
            for worker in started:
                worker.result()
        self.workers.sort(key=lambda w: w.name)  # w0 first, whichever was ready first
        return self

    def start_relay(self, **env: str) -> Proc:
        return self.procs.relay(f"relay-{len(self.procs.procs)}", **cast(dict[str, Any], env))

    def start_worker(self, name: str, concurrency: int = 2, **env: str) -> Proc:
        worker = self.procs.worker(
            name, concurrency=concurrency, redis_url=self.redis.url, **cast(dict[str, Any], env)
        )
        self.workers.append(worker)
        return worker

    def load(self, user: Any, rate: float = 10.0, kyc_every: int = 0) -> Load:
        token, _ = Token.objects.get_or_create(user=user)
        kyc_tokens = []
        if kyc_every:  # enough users for two minutes of submissions
            users = User.objects.bulk_create(
                User(username=f"kyc-{uuid.uuid4().hex[:12]}", email=f"kyc{n}@example.com")
                for n in range(int(120 * rate / kyc_every))
            )
            kyc_tokens = [
                t.key
                for t in Token.objects.bulk_create(Token(user=u, key=Token.generate_key()) for u in users)
            ]
        return Load(self.web_url, token.key, rate, kyc_every=kyc_every, kyc_tokens=kyc_tokens).start()

    def supervise(self) -> None:
        """Restart a worker that exited on its own, as a deployment's supervisor would. With Redis
        as the broker, Celery may exit with 'Unrecoverable error: AttributeError(... hostname)'
        when Redis goes away while kombu restores an unacked message (celery/kombu#582)."""
        self._supervising.set()

        def loop() -> None:
            while self._supervising.is_set():
                for worker in list(self.workers):
                    if not worker.alive() and worker.name not in self.restarts:
                        self.restarts.append(worker.name)
                        try:
                            self.start_worker(f"restarted-{len(self.restarts)}")
                        except AssertionError:
                            self.restarts.append(f"{worker.name}: restart failed")
                time.sleep(0.5)  # the supervisor's polling period

        threading.Thread(target=loop, daemon=True).start()

    def stop(self) -> None:
        """SIGKILL everything: the scenario is over and verified, and a warm shutdown of each
        process would cost the suite seconds per scenario."""
        self._supervising.clear()
        for proc in reversed(self.procs.procs):
            proc.kill()
            proc.stop()  # closes its log; the group is gone already
        self.procs.procs.clear()

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


def seconds_until(predicate: Callable[[], Any], since: float, timeout: float, message: str) -> float:
    """Wait for `predicate`; the seconds from `since` (a time.monotonic()) until it held."""
    wait_until(predicate, timeout=timeout, interval=0.1, message=message)
    return time.monotonic() - since
