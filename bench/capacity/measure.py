"""Capacity figures for docs/scaling.md, measured on this machine with real processes.

    .venv/bin/python bench/capacity/measure.py [--seconds 10] [--clients 16] [--out FILE]

One run, in order, against a fresh database and Redis DB of its own (the test suite's
isolation, tests/isolation.py):
  1. order creation over HTTP: gunicorn (2 sync workers, the Procfile's web line) and a
     threaded client POSTing one-line orders for --seconds; no relay or worker
     running, so the outbox rows pile up;
  2. the relay publishing that backlog (rows/s from the first to the last sent_at);
  3. the workers draining what the relay published: the emails queue (-c 4, SMTP sink),
     the documents queue (invoice PDFs, -c 2), and no-op tasks (jobs.ping, -c 2),
     each alone, tasks/s from TaskRun's first start to last finish;
  4. PostgreSQL and Redis work per order / per task (pg_stat_database and INFO deltas).

The client, the server and the databases share the machine's cores, so every figure is a
floor for a dedicated host; the report says how many cores there were.
"""

import argparse
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings.test")

import django  # noqa: E402

django.setup()

import redis  # noqa: E402
import requests  # noqa: E402
from django.conf import settings  # noqa: E402
from django.db import connection  # noqa: E402
from django.db.models import Max, Min  # noqa: E402

from tests.harness import Processes, free_port, wait_until  # noqa: E402
from tests.isolation import release_run_resources  # noqa: E402


def pg_counters() -> dict[str, int]:
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT xact_commit, tup_inserted, tup_updated, tup_deleted FROM pg_stat_database "
            "WHERE datname = current_database()"
        )
        row = cursor.fetchone()
        cursor.execute("SELECT pg_stat_clear_snapshot()")
    if row is None:
        raise RuntimeError("no pg_stat_database row for this database")
    return dict(zip(["commits", "inserted", "updated", "deleted"], map(int, row), strict=True))


def redis_commands() -> int:
    return int(redis.Redis.from_url(settings.REDIS_URL).info("stats")["total_commands_processed"])


def delta(after: dict[str, int], before: dict[str, int], per: int) -> dict[str, float]:
    return {key: round((after[key] - before[key]) / max(per, 1), 2) for key in after}


def load_orders(base_url: str, token: str, seconds: float, clients: int) -> dict[str, Any]:
    body = json.dumps({"lines": [{"sku": "BENCH-1", "quantity": 2, "unit_price": "9.99", "currency": "EUR"}]})
    headers = {"Authorization": f"Token {token}", "Content-Type": "application/json"}
    latencies: list[float] = []
    errors: list[int] = []
    lock = threading.Lock()
    stop_at = time.monotonic() + seconds

    def client() -> None:
        session = requests.Session()
        mine: list[float] = []
        bad: list[int] = []
        while time.monotonic() < stop_at:
            started = time.perf_counter()
            response = session.post(f"{base_url}/api/orders", data=body, headers=headers, timeout=30)
            if response.status_code == 201:
                mine.append(time.perf_counter() - started)
            else:
                bad.append(response.status_code)
        with lock:
            latencies.extend(mine)
            errors.extend(bad)

    threads = [threading.Thread(target=client) for _ in range(clients)]
    started = time.monotonic()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    elapsed = time.monotonic() - started
    latencies.sort()
    return {
        "orders": len(latencies),
        "errors": len(errors),
        "seconds": round(elapsed, 1),
        "orders_per_second": round(len(latencies) / elapsed, 1),
        "p50_ms": round(statistics.median(latencies) * 1000, 1),
        "p99_ms": round(latencies[int(len(latencies) * 0.99)] * 1000, 1),
    }


def drain(
    procs: Processes, queue: str, task: str, concurrency: int, expected: int, **env: str
) -> dict[str, Any]:
    from jobs.models import TaskRun

    commands_before = redis_commands()
    pg_before = pg_counters()
    procs.base_env.update(env)
    worker = procs.worker(f"bench-{queue}", queues=queue, concurrency=concurrency)
    wait_until(
        lambda: TaskRun.objects.filter(task_name=task, finished_at__isnull=False).count() >= expected,
        timeout=600,
        interval=0.5,
        message=f"{expected} {queue} tasks to finish",
    )
    span = TaskRun.objects.filter(task_name=task).aggregate(first=Min("started_at"), last=Max("finished_at"))
    seconds = (span["last"] - span["first"]).total_seconds()
    worker.stop()
    failed = TaskRun.objects.filter(task_name=task).exclude(state=TaskRun.State.SUCCEEDED).count()
    if failed:
        raise RuntimeError(f"{failed} {task} runs did not succeed; see {worker.log_path}")
    return {
        "queue": queue,
        "task": task,
        "concurrency": concurrency,
        "tasks": expected,
        "seconds": round(seconds, 2),
        "tasks_per_second": round(expected / seconds, 1),
        "redis_commands_per_task": round((redis_commands() - commands_before) / expected, 1),
        "postgres_per_task": delta(pg_counters(), pg_before, expected),
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--clients", type=int, default=16)
    parser.add_argument("--pings", type=int, default=3000)
    parser.add_argument("--out", type=Path, default=None, help="default: bench/capacity/runs/<UTC time>.json")
    args = parser.parse_args()

    from django.contrib.auth import get_user_model
    from rest_framework.authtoken.models import Token

    from config.celery_app import app
    from jobs.models import OutboxMessage

    original_db = connection.settings_dict["NAME"]
    connection.creation.create_test_db(verbosity=0, autoclobber=True, serialize=False)
    workdir = Path(getattr(settings, "RUN_DIR")) / "bench-capacity"  # noqa: B009 - test settings only
    procs = Processes(workdir / "logs")
    started = time.strftime("%Y-%m-%dT%H%M%SZ", time.gmtime())
    # Other processes on the machine (test runs, benchmarks) skew every figure: record the load.
    report: dict[str, Any] = {"started": started, "cores": os.cpu_count(), "loadavg_before": os.getloadavg()}
    try:
        user = get_user_model().objects.create_user(username="bench", email="bench@example.test")
        token = Token.objects.create(user=user).key

        # 1. order creation: the Procfile web line, 2 sync workers, no relay, no workers.
        port = free_port()
        web = procs.spawn(
            "web",
            [
                sys.executable, "-m", "gunicorn", "-c", "config/gunicorn_conf.py", "config.wsgi",
                "--bind", f"127.0.0.1:{port}", "--workers", "2",
            ],
            THROTTLE_USER_RATE="100000000/min",  # the benchmark measures the server, not the throttle
            LOG_LEVEL="WARNING",
        )  # fmt: skip
        base_url = f"http://127.0.0.1:{port}"
        wait_until(lambda: _answers(base_url), timeout=30, message="gunicorn to answer")
        load_orders(base_url, token, 2.0, args.clients)  # warm-up: imports, connections, caches
        pg_before = pg_counters()
        created = load_orders(base_url, token, args.seconds, args.clients)
        web.stop()  # its backends exit and flush their statistics
        time.sleep(1.5)  # pg_stat_database lags a backend's exit by up to a second
        created["postgres_per_order"] = delta(pg_counters(), pg_before, created["orders"])
        report["order_create"] = created
        report["loadavg_after_order_create"] = os.getloadavg()

        # 2. the relay publishing the backlog the API left (emails + invoices; auto-cancels are
        #    delayed 30 min and stay in the outbox).
        due = OutboxMessage.objects.filter(sent_at__isnull=True, not_before__lte=django_now()).count()
        relay = procs.relay(extra=["--no-reaper"])
        wait_until(
            lambda: (
                not OutboxMessage.objects.filter(sent_at__isnull=True, not_before__lte=django_now()).exists()
            ),
            timeout=300,
            interval=0.2,
            message="the relay to publish the backlog",
        )
        span = OutboxMessage.objects.filter(sent_at__isnull=False).aggregate(
            first=Min("sent_at"), last=Max("sent_at")
        )
        seconds = (span["last"] - span["first"]).total_seconds()
        report["relay"] = {
            "rows": due,
            "seconds": round(seconds, 2),
            "rows_per_second": round(due / seconds, 1),
        }
        relay.stop()

        emails = OutboxMessage.objects.filter(queue="emails", sent_at__isnull=False).count()
        documents = OutboxMessage.objects.filter(queue="documents", sent_at__isnull=False).count()

        # 3a. emails: the Procfile's -c 4 against the SMTP sink.
        sink_port, sink_http = free_port(), free_port()
        sink = procs.spawn(
            "smtp-sink",
            [
                sys.executable, "-m", "fakes.smtp_sink", "--smtp-port", str(sink_port),
                "--http-port", str(sink_http), "--dir", str(workdir / "sink"),
            ],
        )  # fmt: skip
        sink.wait_for_log("smtp sink:")
        report["drain_emails"] = drain(
            procs, "emails", "orders.send_confirmation_email", 4, emails, EMAIL_PORT=str(sink_port)
        )
        sink.stop()
        # 3b. invoice PDFs: -c 2, files on the local filesystem.
        report["drain_documents"] = drain(procs, "documents", "orders.render_invoice_pdf", 2, documents)
        # 3c. no-op tasks through the base task (ledger row included): the floor of task cost.
        with app.producer_or_acquire() as producer:
            for _ in range(args.pings):
                app.send_task("jobs.ping", kwargs={"token": "bench"}, queue="default", producer=producer)
        report["drain_noop"] = drain(procs, "default", "jobs.ping", 2, args.pings)
        # 4. the raw ceilings of this machine's PostgreSQL and Redis, for the extrapolation.
        report["postgres_single_insert_commits_per_second"] = pgbench_inserts(workdir)
        report["redis_ops_per_second"] = redis_benchmark()
    finally:
        procs.stop_all()
        connection.creation.destroy_test_db(original_db, verbosity=0)
        release_run_resources(settings.REDIS_URL)

    report["loadavg_after"] = os.getloadavg()
    out = args.out or ROOT / "bench" / "capacity" / "runs" / f"{started}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2) + "\n")
    print(json.dumps(report, indent=2))


def pgbench_inserts(workdir: Path) -> float | None:
    """Commits/s of one-row INSERT transactions, 8 clients (fsync and synchronous_commit as set)."""
    if not shutil.which("pgbench"):
        return None
    with connection.cursor() as cursor:
        cursor.execute(
            "CREATE TABLE IF NOT EXISTS capacity_insert "
            "(id bigserial PRIMARY KEY, payload jsonb, created timestamptz DEFAULT now())"
        )
    script = workdir / "insert.sql"
    script.write_text("INSERT INTO capacity_insert (payload) VALUES ('{\"order_id\": 1}');\n")
    db = connection.settings_dict
    result = subprocess.run(
        [
            "pgbench", "-n", "-c", "8", "-j", "2", "-T", "8", "-f", str(script),
            "-h", db["HOST"] or "127.0.0.1", "-p", str(db["PORT"] or 5432), "-U", db["USER"], db["NAME"],
        ],
        capture_output=True, text=True, timeout=60, check=True,
    )  # fmt: skip
    match = re.search(r"tps = ([\d.]+)", result.stdout)
    return round(float(match.group(1)), 0) if match else None


def redis_benchmark() -> dict[str, float] | None:
    """LPUSH/RPOP per second from one client connection each, 50 clients (redis-benchmark)."""
    if not shutil.which("redis-benchmark"):
        return None
    db = int(settings.REDIS_URL.rsplit("/", 1)[1])
    result = subprocess.run(
        ["redis-benchmark", "-n", "200000", "-c", "50", "--dbnum", str(db), "-t", "lpush,rpop", "--csv"],
        capture_output=True, text=True, timeout=120, check=True,
    )  # fmt: skip
    rates = {}
    for line in result.stdout.splitlines()[1:]:
        name, rps, *_ = (field.strip('"') for field in line.split(","))
        rates[name] = float(rps)
    return rates


def django_now() -> Any:
    from django.utils import timezone

    return timezone.now()


def _answers(base_url: str) -> bool:
    try:
        return requests.get(f"{base_url}/healthz", timeout=2).status_code == 200
    except requests.RequestException:
        return False


if __name__ == "__main__":
    main()
