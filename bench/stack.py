"""The benchmark's environment: a fresh database, a claimed Redis DB, the processes it starts
(gunicorn per design variant, workers, relays) and the wrk load generator."""

import json
import os
import shutil
import subprocess
import sys
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psycopg
import requests

from bench.measure import say, wait

ROOT = Path(__file__).resolve().parent.parent
VARIANTS = {
    "a": ("create only", "bench.strategies.no_work"),
    "b": ("outbox (the project)", "orders.services.enqueue_order_work"),
    "c": (".delay() after commit", "bench.strategies.delay_after_commit"),
    "d": ("synchronous", "bench.strategies.synchronous"),
}
# S1's floor (bench/urls.py): a bare APIView INSERTing into a table of the bench's own
BARE_PATH = "/bench/bare"
BARE_TABLE = """CREATE TABLE IF NOT EXISTS bench_bare (
    id bigserial PRIMARY KEY, body jsonb NOT NULL, created_at timestamptz NOT NULL DEFAULT now()
)"""


@dataclass
class Bench:
    quick: bool
    db_name: str = f"taskyard_bench_{uuid.uuid4().hex[:8]}"
    tmp: Path = field(default_factory=lambda: Path(f"/tmp/taskyard-bench-{uuid.uuid4().hex[:8]}"))
    env: dict[str, str] = field(default_factory=dict)
    token: str = ""
    results: dict[str, Any] = field(default_factory=dict)
    procs: Any = None

    @property
    def database_url(self) -> str:
        return f"postgres://postgres@127.0.0.1:5432/{self.db_name}"

    def setup(self) -> None:
        self.tmp.mkdir(parents=True)
        with psycopg.connect("host=127.0.0.1 user=postgres dbname=postgres", autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{self.db_name}"')
        os.environ.update(
            DJANGO_SETTINGS_MODULE="config.settings.bench",
            DATABASE_URL=self.database_url,
            PROMETHEUS_MULTIPROC_DIR=str(self.tmp / "prometheus"),
            PRIVATE_STORAGE_ROOT=str(self.tmp / "private"),
            PYTHONUNBUFFERED="1",
            CELERY_SKIP_CHECKS="1",
        )
        import django

        django.setup()
        from django.core.management import call_command

        call_command("migrate", verbosity=0)
        from django.db import connection

        with connection.cursor() as cursor:
            cursor.execute(BARE_TABLE)
        from django.contrib.auth.models import User
        from rest_framework.authtoken.models import Token

        user = User.objects.create_user("bench", "bench@example.test", "bench")
        self.token = Token.objects.create(user=user).key
        self.env = dict(os.environ)
        from tests.harness import Processes

        self.procs = Processes(self.tmp / "logs", env=self.env)

    def teardown(self) -> None:
        if self.procs is not None:
            self.procs.stop_all()
        from django.conf import settings
        from django.db import connections

        connections.close_all()
        from tests.isolation import release_run_resources

        release_run_resources(settings.REDIS_URL)
        with psycopg.connect("host=127.0.0.1 user=postgres dbname=postgres", autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{self.db_name}" WITH (FORCE)')
        if os.environ.get("BENCH_KEEP_LOGS"):
            say(f"process logs kept in {self.tmp / 'logs'}")
        else:
            shutil.rmtree(self.tmp, ignore_errors=True)

    # --- helpers -------------------------------------------------------------------
    def redis(self) -> Any:
        import redis
        from django.conf import settings

        return redis.Redis.from_url(settings.REDIS_URL)

    def reset_data(self) -> None:
        from django.db import OperationalError, connection, transaction

        # gunicorn may still be finishing requests wrk sent just before it stopped: a TRUNCATE
        # racing their INSERTs can deadlock, so retry until they have drained.
        for attempt in range(20):
            try:
                with transaction.atomic(), connection.cursor() as cursor:
                    cursor.execute("SET LOCAL lock_timeout = '2s'")
                    cursor.execute(
                        "TRUNCATE orders_orderline, orders_invoice, orders_order, jobs_outboxmessage, jobs_taskrun, "
                        "notifications_emailattempt, notifications_emaildelivery, bench_bare CASCADE"
                    )
                break
            except OperationalError:
                if attempt == 19:
                    raise
                time.sleep(0.5)
        from jobs.task_metrics import queue_keys

        client = self.redis()
        client.delete(
            *[k for q in ("emails", "kyc", "documents", "default") for k in queue_keys(q)], "bench:done"
        )
        client.delete("bench:started", "unacked", "unacked_index")

    def web(self, variant: str, port: int, **extra: str) -> Any:
        proc = self.procs.spawn(
            f"web-{variant}",
            [
                sys.executable, "-m", "gunicorn", "-c", "config/gunicorn_conf.py", "config.wsgi",
                "--bind", f"127.0.0.1:{port}", "--workers", "2", "--access-logfile", "/dev/null",
            ],
            ORDERS_ENQUEUE_WORK=VARIANTS[variant][1],
            **extra,
        )  # fmt: skip
        wait(lambda: _get(f"http://127.0.0.1:{port}/healthz"), 30, f"gunicorn {variant}")
        return proc

    def wrk(self, port: int, connections: int, seconds: float, path: str = "/api/orders") -> dict[str, float]:
        result = subprocess.run(
            [
                "wrk", "-t2", f"-c{connections}", f"-d{seconds}s", "--timeout", "10s",
                "-s", str(ROOT / "bench" / "post_order.lua"), f"http://127.0.0.1:{port}",
            ],
            env={**os.environ, "BENCH_TOKEN": self.token, "BENCH_PATH": path},
            capture_output=True, text=True, check=True,
        )  # fmt: skip
        line = next(x for x in result.stdout.splitlines() if x.startswith("BENCH "))
        data = json.loads(line[6:])
        ok = data["requests"] - data["non2xx"]
        data["rps"] = ok / (data["duration_us"] / 1e6)
        return data


def _get(url: str, **kwargs: Any) -> Any:
    try:
        return [requests.get(url, timeout=5, **kwargs)]
    except (requests.ConnectionError, requests.Timeout):  # not up yet, or a first request still slow
        return None


def free_port() -> int:
    from tests.harness import free_port as port

    return port()
