"""`make bench`: the performance report, measured side by side in one run.

    python -m bench.run [--quick]

Scenarios (bench/README section of the project README explains each):
  S1 order creation: (a) create only, (b) the outbox, (c) .delay() after commit,
     (d) everything in the request; wrk at several concurrencies, medians of repeats
  S2 relay publish rate vs a loop of apply_async; commit-to-task-start latency at 50/s,
     outbox vs .delay()
  S3 end to end: POST /api/orders -> email in the SMTP sink at fixed rates of 10, 25 and 50 orders/s
  S4 worker throughput, base task vs plain Celery task; worker RSS over many tasks
  S5 scaling: 1 vs 2 pool processes; draining a 10k backlog

Everything runs on this machine against real PostgreSQL and Redis, in a fresh database
and a claimed Redis DB. Results: bench/results/<date>.md and PNG plots next to it.
"""

import argparse
import email
import email.policy
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path
from typing import Any

import psycopg
import requests

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results"
VARIANTS = {
    "a": ("create only", "bench.strategies.no_work"),
    "b": ("outbox (the project)", "orders.services.enqueue_order_work"),
    "c": (".delay() after commit", "bench.strategies.delay_after_commit"),
    "d": ("synchronous", "bench.strategies.synchronous"),
}


def say(message: str) -> None:
    print(f"[bench {datetime.now(UTC):%H:%M:%S}] {message}", flush=True)


def pct(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q / 100 * (len(ordered) - 1)))]


# --- environment -------------------------------------------------------------------------
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
                        "notifications_emailattempt, notifications_emaildelivery CASCADE"
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

    def wrk(self, port: int, connections: int, seconds: float) -> dict[str, float]:
        result = subprocess.run(
            [
                "wrk", "-t2", f"-c{connections}", f"-d{seconds}s", "--timeout", "10s",
                "-s", str(ROOT / "bench" / "post_order.lua"), f"http://127.0.0.1:{port}",
            ],
            env={**os.environ, "BENCH_TOKEN": self.token},
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
    except requests.ConnectionError:
        return None


def wait(predicate: Callable[[], Any], timeout: float, what: str, interval: float = 0.05) -> Any:
    from tests.harness import wait_until  # the tests' bounded wait: a condition, never a bare sleep

    return wait_until(predicate, timeout=timeout, interval=interval, message=what)


def started_at_least(client: Any, count: int) -> Callable[[], bool]:
    return lambda: int(client.hlen("bench:started")) >= count


def done_at_least(client: Any, count: int) -> Callable[[], bool]:
    return lambda: int(client.get("bench:done") or 0) >= count


def free_port() -> int:
    from tests.harness import free_port as port

    return port()


# --- S1 order creation -----------------------------------------------------------------
def s1_orders(bench: Bench) -> None:
    sink_dir = bench.tmp / "sink"
    from tests.conftest import start_sink

    sink = start_sink(bench.procs, sink_dir)
    fx_port = free_port()
    bench.procs.spawn(
        "fx-fake", [sys.executable, "-m", "fakes.fx_provider", "--port", str(fx_port), "--latency", "0.2"]
    ).wait_for_log("fx provider")
    ports = {v: free_port() for v in VARIANTS}
    extra = {"EMAIL_PORT": str(sink.smtp_port), "FX_PROVIDER_URL": f"http://127.0.0.1:{fx_port}"}
    webs = {v: bench.web(v, ports[v], **extra) for v in VARIANTS}
    levels = [16] if bench.quick else [4, 16, 32]
    reps = 1 if bench.quick else 3
    seconds = 4 if bench.quick else 8
    runs: dict[str, dict[int, list[dict[str, float]]]] = {v: {c: [] for c in levels} for v in VARIANTS}
    for variant in VARIANTS:  # warm every process up (imports, connections, first queries)
        bench.wrk(ports[variant], 4, 2)
    for rep in range(reps):
        for connections in levels:
            for variant in ("a", "b", "c", "d"):
                if variant == "d" and rep > 0:
                    continue  # 200 ms per request: one run says enough
                bench.reset_data()
                data = bench.wrk(ports[variant], connections, seconds)
                runs[variant][connections].append(data)
                say(
                    f"S1 {variant} ({VARIANTS[variant][0]}) c={connections} rep {rep + 1}/{reps}: "
                    f"{data['rps']:.0f} req/s p50 {data['p50_ms']:.1f} ms p99 {data['p99_ms']:.1f} ms"
                    f"{' non-2xx ' + str(int(data['non2xx'])) if data['non2xx'] else ''}"
                )
    for proc in webs.values():
        proc.stop()
    bench.reset_data()
    summary: dict[str, dict[int, dict[str, float]]] = {}
    for variant, by_level in runs.items():
        summary[variant] = {}
        for level, items in by_level.items():
            summary[variant][level] = {
                key: statistics.median(item[key] for item in items)
                for key in ("rps", "p50_ms", "p95_ms", "p99_ms", "non2xx")
            }
            summary[variant][level]["runs"] = len(items)
    bench.results["s1"] = {"levels": levels, "seconds": seconds, "reps": reps, "summary": summary}


def paired(
    first: Callable[[], float], second: Callable[[], float], *, reps: int
) -> tuple[list[float], list[float]]:
    """Run two measurements side by side `reps` times, alternating which goes first, so a
    machine that drifts (other tenants, CPU boost) weighs on both equally. The report takes
    the median of the per-pair ratios."""
    a, b = [], []
    for rep in range(reps):
        if rep % 2:
            b.append(second())
            a.append(first())
        else:
            a.append(first())
            b.append(second())
    return a, b


# --- S2 relay publish rate; commit-to-start latency ------------------------------------
def s2_relay(bench: Bench) -> None:
    from django.db import transaction

    from bench import tasks
    from jobs import outbox
    from jobs.relay import Relay

    count = 5000 if bench.quick else 20000

    def relay_rate() -> float:
        bench.reset_data()
        for start in range(0, count, 1000):
            with transaction.atomic(), outbox.batch():
                for _ in range(min(1000, count - start)):
                    outbox.enqueue("bench.noop")
        relay = Relay(batch_size=500)
        started = time.perf_counter()
        published = 0
        while (n := relay.relay_once()) > 0:
            published += n
        return published / (time.perf_counter() - started)

    def loop_rate() -> float:
        bench.reset_data()
        started = time.perf_counter()
        for _ in range(count):
            tasks.noop.apply_async()
        return count / (time.perf_counter() - started)

    relay_rates, loop_rates = paired(relay_rate, loop_rate, reps=1 if bench.quick else 5)
    for rep, (r, loop) in enumerate(zip(relay_rates, loop_rates, strict=True)):
        say(f"S2 publish rep {rep + 1}: relay {r:.0f} msg/s, apply_async loop {loop:.0f} msg/s")
    bench.reset_data()
    bench.results["s2_publish"] = {
        "count": count,
        "relay": statistics.median(relay_rates),
        "apply_async": statistics.median(loop_rates),
        "ratios": [r / loop for r, loop in zip(relay_rates, loop_rates, strict=True)],
    }
    bench.results["s2_latency"] = commit_to_start(bench, rate=50, seconds=10 if bench.quick else 20)


def commit_to_start(bench: Bench, rate: float, seconds: float) -> dict[str, dict[str, float]]:
    from django.db import transaction

    from bench import tasks
    from jobs import outbox

    relay = bench.procs.relay("relay-s2", LOG_LEVEL="INFO")
    worker = bench.procs.worker("s2", queues="default", concurrency=2)
    out: dict[str, dict[str, float]] = {}
    for mode in ("outbox", "delay"):
        bench.reset_data()
        commits: dict[str, float] = {}
        interval, next_at = 1.0 / rate, time.perf_counter()
        for i in range(int(rate * seconds)):
            mark = f"{mode}-{i}"
            if mode == "outbox":
                with transaction.atomic():
                    outbox.enqueue("bench.started", kwargs={"mark": mark})
            commits[mark] = time.time()  # committed: from here on the task may start
            if mode == "delay":
                tasks.started.delay(mark=mark)
            next_at += interval
            time.sleep(max(0.0, next_at - time.perf_counter()))
        client = bench.redis()
        wait(started_at_least(client, len(commits)), 60, f"{mode} tasks to start")
        starts = {k.decode(): float(v) for k, v in client.hgetall("bench:started").items()}
        lat = [(starts[m] - t) * 1000 for m, t in commits.items() if m in starts]
        out[mode] = {"n": len(lat), "p50_ms": pct(lat, 50), "p95_ms": pct(lat, 95), "p99_ms": pct(lat, 99)}
        say(
            f"S2 commit->start {mode} at {rate:.0f}/s: p50 {out[mode]['p50_ms']:.1f} ms p99 {out[mode]['p99_ms']:.1f} ms"
        )
    worker.stop()
    relay.stop()
    bench.reset_data()
    return out


# --- S3 end to end ---------------------------------------------------------------------
S3_RATES = tuple(float(r) for r in os.environ.get("BENCH_S3_RATES", "10,25,40,50").split(","))


def s3_end_to_end(bench: Bench) -> None:
    """POST -> email in the sink at fixed arrival rates, one stack, lowest rate first."""
    from tests.conftest import start_sink

    sink_dir = bench.tmp / "sink-e2e"
    sink = start_sink(bench.procs, sink_dir)
    port = free_port()
    env = {"EMAIL_PORT": str(sink.smtp_port)}
    bench.reset_data()
    web = bench.web("b", port, **env)
    relay = bench.procs.relay("relay-e2e", LOG_LEVEL="INFO", **env)
    # As the Procfile deploys it: emails on their own worker, so they never wait behind PDFs.
    # On this one 2-core machine the documents worker runs in the idle CPU class (SCHED_IDLE), the
    # stand-in for the separate capacity it has in a deployment.
    # Emails are I/O bound: 4 children, as the Procfile's worker_emails runs them.
    worker = bench.procs.worker("e2e-emails", queues="emails", concurrency=4, **env)
    documents = bench.procs.worker(
        "e2e-documents", queues="documents,default", concurrency=1, idle_priority=True, **env
    )

    def arrivals() -> dict[int, float]:
        found = {}
        for path in sink_dir.glob("*.eml"):
            message_id = email.message_from_bytes(path.read_bytes(), policy=email.policy.default)[
                "Message-ID"
            ]
            if message_id and message_id.startswith("<order_confirmation.order-"):
                order = int(message_id.split("order-")[1].split("@")[0])
                found[order] = int(path.name.split("-")[0]) / 1e9
        return found

    # Warm-up, not recorded: first requests pay for connections, imports and template loads.
    warm, _ = s3_send(bench, port, 10, 3)
    s3_settle(warm, arrivals)
    roots = {
        web.pid: "web (gunicorn)",
        relay.pid: "relay",
        worker.pid: "email worker",
        sink.proc.pid: "SMTP sink",
        documents.pid: "documents worker (idle class)",
    }
    runs = []
    for rate in S3_RATES:
        # The figure is 50/s for a minute; the lower rates show where the knee is.
        seconds = 10 if bench.quick else (60 if rate == 50 else 30)
        cpu_before, window_start = cpu_seconds(roots), time.perf_counter()
        sent, failures = s3_send(bench, port, rate, seconds)
        window = time.perf_counter() - window_start
        cpu = {k: v / window * 100 for k, v in cpu_by_role(cpu_before, cpu_seconds(roots)).items()}
        s3_settle(sent, arrivals)
        got = arrivals()
        latencies = [(got[o] - t) * 1000 for o, t in sent.items()]
        runs.append(
            {
                "rate": rate,
                "seconds": seconds,
                "accepted": len(sent),
                "failed_requests": failures,
                "delivered": sum(1 for o in sent if o in got),
                "p50_ms": pct(latencies, 50),
                "p95_ms": pct(latencies, 95),
                "p99_ms": pct(latencies, 99),
                "cpu_pct": dict(sorted(cpu.items(), key=lambda kv: -kv[1])),
                "latencies": latencies,
            }
        )
        say(
            f"S3 at {rate:.0f}/s: accepted {len(sent)}, delivered {runs[-1]['delivered']}, "
            f"p50 {runs[-1]['p50_ms']:.0f} ms p99 {runs[-1]['p99_ms']:.0f} ms"
        )
    emails = len(list(sink_dir.glob("*.eml")))
    bench.results["s3"] = {"runs": runs, "duplicates": emails - len(arrivals())}
    for proc in (worker, documents, relay, web, sink.proc):
        proc.stop()
    bench.reset_data()


def cpu_by_role(
    before: dict[int, tuple[str, float]], after: dict[int, tuple[str, float]]
) -> dict[str, float]:
    """CPU seconds per role between two `cpu_seconds` readings, process by process: a process
    that exited in between (a PostgreSQL backend, say) drops out instead of making its role's
    figure negative; one born in between counts from zero."""
    totals: dict[str, float] = {}
    for pid, (role, used) in after.items():
        start = before.get(pid, (role, 0.0))[1]
        totals[role] = totals.get(role, 0.0) + max(0.0, used - start)
    return totals


def cpu_seconds(roots: dict[int, str]) -> dict[int, tuple[str, float]]:
    """CPU seconds each process used so far, with its role: each process counts toward its
    nearest spawned ancestor in `roots` (pid -> role), else PostgreSQL, Redis, this load
    generator or other."""
    tick = os.sysconf("SC_CLK_TCK")
    procs: dict[int, tuple[int, str, float]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        comm = stat[stat.index("(") + 1 : stat.rindex(")")]
        fields = stat[stat.rindex(")") + 2 :].split()
        procs[int(entry.name)] = (int(fields[1]), comm, (int(fields[11]) + int(fields[12])) / tick)
    out: dict[int, tuple[str, float]] = {}
    for pid, (_, comm, used) in procs.items():
        role, cursor = None, pid
        while cursor in procs and role is None:
            role = roots.get(cursor) or ("load generator" if cursor == os.getpid() else None)
            cursor = procs[cursor][0] if cursor != procs[cursor][0] else 0
        if role is None:
            role = (
                "postgresql"
                if comm.startswith("postgres")
                else "redis"
                if comm.startswith("redis")
                else "other"
            )
        out[pid] = (role, used)
    return out


def s3_settle(sent: dict[int, float], arrivals: Callable[[], dict[int, float]]) -> None:
    wait(lambda: sent.keys() <= arrivals().keys(), 180, "every confirmation email", interval=0.5)
    # The documents worker finishes this rate's PDFs too, so the next rate starts from idle.
    wait(lambda: invoices_ready(sent) >= len(sent), 300, "this rate's invoice PDFs", interval=0.5)


def invoices_ready(orders: dict[int, float]) -> int:
    from orders.models import Invoice

    return Invoice.objects.filter(order_id__in=list(orders), status=Invoice.Status.READY).count()


def s3_send(bench: Bench, port: int, rate: float, seconds: float) -> tuple[dict[int, float], dict[str, int]]:
    """Open-loop arrivals: one thread per request, started on schedule whatever came back."""
    body = {"lines": [{"sku": "MUG-RED", "quantity": 2, "unit_price": "9.99", "currency": "EUR"}]}
    sent: dict[int, float] = {}
    failures: dict[str, int] = {}  # reason -> count: "timeout (10 s)", "HTTP 503", ...
    lock = threading.Lock()
    session = threading.local()

    def post() -> None:
        if not hasattr(session, "s"):
            session.s = requests.Session()
        started = time.time()
        try:
            response = session.s.post(
                f"http://127.0.0.1:{port}/api/orders",
                json=body,
                headers={"Authorization": f"Token {bench.token}"},
                timeout=10,
            )
            reason = "" if response.status_code == 201 else f"HTTP {response.status_code}"
        except requests.Timeout:
            reason = "timeout (10 s)"
        except requests.RequestException as exc:
            reason = type(exc).__name__
        with lock:
            if reason:
                failures[reason] = failures.get(reason, 0) + 1
            else:
                sent[response.json()["id"]] = started

    threads: list[threading.Thread] = []
    interval, next_at = 1.0 / rate, time.perf_counter()
    for i in range(int(rate * seconds)):
        thread = threading.Thread(target=post, daemon=True)
        thread.start()
        threads.append(thread)
        if i % int(rate * 10) == 0:
            say(f"S3 at {rate:.0f}/s: {i} orders sent")
        next_at += interval
        time.sleep(max(0.0, next_at - time.perf_counter()))
    for thread in threads:
        thread.join(timeout=15)
    return sent, failures


# --- S4/S5 workers -----------------------------------------------------------------------
def drain(bench: Bench, task: str, count: int, concurrency: int, preload: bool = False, **env: str) -> float:
    """Messages/s a worker drains (from first publish, or from worker start for a backlog)."""
    from bench import tasks

    bench.reset_data()
    sender = {"bench.noop": tasks.noop, "bench.noop_plain": tasks.noop_plain}[task]
    client = bench.redis()

    def publish() -> None:
        from config.celery_app import app

        with app.producer_or_acquire() as producer, producer.batch(max_size=1000):
            for _ in range(count):
                sender.apply_async(producer=producer)

    if preload:
        publish()
    started = time.perf_counter()
    worker = bench.procs.worker(
        f"drain-{task}-{concurrency}", queues="default", concurrency=concurrency, **env
    )
    if not preload:
        started = time.perf_counter()
        publish()
    wait(lambda: int(client.get("bench:done") or 0) >= count, 600, f"{count} {task}", interval=0.02)
    rate = count / (time.perf_counter() - started)
    worker.stop()
    return rate


def rss_of_tree(pid: int) -> int:
    """Resident memory (KiB) of a process and its children."""
    from tests.harness import children_of, rss_bytes

    return sum(rss_bytes(p) for p in [pid, *children_of(pid)]) // 1024


def s4_workers(bench: Bench) -> None:
    count = 3000 if bench.quick else 10000
    base, plain = paired(
        lambda: drain(bench, "bench.noop", count, 2),
        lambda: drain(bench, "bench.noop_plain", count, 2),
        reps=1 if bench.quick else 5,
    )
    for rep, (b, p) in enumerate(zip(base, plain, strict=True)):
        say(f"S4 drain rep {rep + 1}: plain {p:.0f}/s, base task {b:.0f}/s")
    bench.results["s4_throughput"] = {
        "count": count,
        "plain": statistics.median(plain),
        "base": statistics.median(base),
        "ratios": [b / p for b, p in zip(base, plain, strict=True)],
    }

    # RSS over many tasks, children never recycled (so a leak would show; Celery refuses 0 for off)
    total = 20000 if bench.quick else 100000
    bench.reset_data()
    from bench import tasks
    from config.celery_app import app

    worker = bench.procs.worker(
        "rss", queues="default", concurrency=2, CELERY_WORKER_MAX_TASKS_PER_CHILD="1000000000",
        CELERY_WORKER_MAX_MEMORY_PER_CHILD="1000000000",
    )  # fmt: skip
    client = bench.redis()
    samples: list[tuple[int, int]] = []
    sent = 0
    while sent < total:
        with app.producer_or_acquire() as producer, producer.batch(max_size=1000):
            for _ in range(5000):
                tasks.noop.apply_async(producer=producer)
        sent += 5000
        wait(done_at_least(client, sent - 1000), 600, "the worker to keep up", 0.05)
        samples.append((int(client.get("bench:done") or 0), rss_of_tree(worker.pid)))
        if sent % 20000 == 0:
            say(f"S4 RSS: {sent} tasks, {samples[-1][1] / 1024:.1f} MiB")
    wait(lambda: int(client.get("bench:done") or 0) >= total, 600, "the last tasks")
    samples.append((total, rss_of_tree(worker.pid)))
    worker.stop()
    warm = next(rss for done, rss in samples if done >= total // 10)
    bench.results["s4_rss"] = {
        "tasks": total,
        "rss_after_warmup_kib": warm,
        "rss_end_kib": samples[-1][1],
        "growth_pct": (samples[-1][1] - warm) / warm * 100,
        "samples": samples,
    }
    say(f"S4 RSS: {warm / 1024:.1f} MiB after warm-up -> {samples[-1][1] / 1024:.1f} MiB after {total}")


def s5_scaling(bench: Bench) -> None:
    count = 3000 if bench.quick else 10000
    one = drain(bench, "bench.noop", count, 1)
    two = drain(bench, "bench.noop", count, 2)
    backlog = 10000 if not bench.quick else 3000
    started = time.perf_counter()
    rate = drain(bench, "bench.noop", backlog, 2, preload=True)
    bench.results["s5"] = {
        "count": count,
        "one_process": one,
        "two_processes": two,
        "backlog": backlog,
        "backlog_rate": rate,
        "backlog_seconds": backlog / rate,
        "wall_seconds": time.perf_counter() - started,
    }
    say(
        f"S5: 1 process {one:.0f}/s, 2 processes {two:.0f}/s; {backlog} backlog drained in {backlog / rate:.1f} s"
    )


# --- machine -----------------------------------------------------------------------------
def machine(bench: Bench) -> dict[str, str]:
    import celery
    import django
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute("SHOW server_version")
        postgres = cursor.fetchone()[0]
    model = next(
        (
            line.split(":", 1)[1].strip()
            for line in Path("/proc/cpuinfo").read_text().splitlines()
            if "model name" in line
        ),
        platform.processor(),
    )
    wrk = subprocess.run(["wrk", "--version"], capture_output=True, text=True).stdout.splitlines()[0]
    return {
        "cpus": str(os.cpu_count()),
        "cpu": model,
        "memory": f"{int(Path('/proc/meminfo').read_text().split()[1]) // 1024 // 1024} GiB",
        "kernel": platform.release(),
        "python": platform.python_version(),
        "django": django.get_version(),
        "celery": celery.__version__,
        "kombu": metadata.version("kombu"),
        "postgresql": postgres,
        "redis": bench.redis().info("server")["redis_version"],
        "load tool": wrk,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description="taskyard benchmark")
    parser.add_argument("--quick", action="store_true", help="short runs (a smoke test of the benchmark)")
    parser.add_argument("--only", nargs="*", help="scenarios to run: s1 s2 s3 s4 s5")
    args = parser.parse_args()
    if shutil.which("wrk") is None:
        sys.exit("wrk is not installed: apt-get install wrk (make bench installs it on Debian)")
    bench = Bench(quick=args.quick)
    chosen = set(args.only or ["s1", "s2", "s3", "s4", "s5"])
    say(f"database {bench.db_name}, {'quick' if args.quick else 'full'} run: {' '.join(sorted(chosen))}")
    bench.setup()
    try:
        bench.results["machine"] = machine(bench)
        bench.results["started"] = datetime.now(UTC).isoformat(timespec="seconds")
        for name, scenario in (
            ("s1", s1_orders),
            ("s2", s2_relay),
            ("s3", s3_end_to_end),
            ("s4", s4_workers),
            ("s5", s5_scaling),
        ):
            if name in chosen:
                say(f"--- {name} ---")
                scenario(bench)
        bench.results["finished"] = datetime.now(UTC).isoformat(timespec="seconds")
    finally:
        bench.teardown()
        # A scenario that failed still leaves the report of those that ran (marked partial).
        bench.results["quick"] = args.quick
        bench.results.setdefault("finished", "partial: a scenario failed, see the log")
        from bench.report import write_report

        say(f"report: {write_report(bench.results, RESULTS)}")


if __name__ == "__main__":
    main()
