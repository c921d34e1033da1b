"""S6 the cost of tracing: the same processes with OpenTelemetry off, on (the default: every
instrumentation, batch span processor, OTLP/HTTP to a collector), and on without SQL spans
(OTEL_PYTHON_DISABLED_INSTRUMENTATIONS=psycopg), side by side in one run, the order of the
three rotating from one round to the next:

  * order create: three gunicorns (the outbox variant), wrk at 16 connections;
  * email task: a worker (2 children) drains confirmation emails for existing orders into the
    SMTP sink.

The collector runs with --discard: decoding spans is the collector's work, on its own machine
in a deployment; what is measured is what tracing costs the app (creating, scrubbing,
encoding and sending the spans).
"""

import statistics
import sys
import time
import uuid
from collections.abc import Callable
from decimal import Decimal
from typing import Any

from bench.measure import say, wait
from bench.stack import Bench, free_port

GOAL = 0.95  # traced throughput / untraced, both measures
FAKE_REQUEST = "00-{trace}-{span}-01"  # the email tasks come "from a request", as in production


def _collector(bench: Bench) -> str:
    port = free_port()
    bench.procs.spawn(
        "otlp-collector",
        [sys.executable, "-m", "fakes.otlp_collector", "--port", str(port), "--discard"],
    ).wait_for_log("otlp collector:")
    return f"http://127.0.0.1:{port}"


def _orders(bench: Bench, count: int) -> list[int]:
    from django.contrib.auth.models import User

    from orders.services import LineInput, order_create

    user = User.objects.get(username="bench")
    line = LineInput(sku="MUG-RED", quantity=1, unit_price=Decimal("9.99"), currency="EUR")
    return [order_create(user=user, lines=[line]).pk for _ in range(count)]


def _drain_emails(order_ids: list[int]) -> float:
    """Emails/s: publish one confirmation email task per order, wait until all are sent."""
    from django.db import connection

    from config.celery_app import app
    from notifications.models import EmailDelivery

    with connection.cursor() as cursor:
        cursor.execute(
            "TRUNCATE notifications_emailattempt, notifications_emaildelivery, jobs_taskrun CASCADE"
        )
    started = time.perf_counter()
    with app.producer_or_acquire() as producer, producer.batch(max_size=1000):
        for order_id in order_ids:
            task_id = str(uuid.uuid4())
            parent = FAKE_REQUEST.format(trace=uuid.uuid4().hex, span=uuid.uuid4().hex[:16])
            app.send_task(
                "orders.send_confirmation_email",
                kwargs={"order_id": order_id},
                task_id=task_id,
                queue="emails",
                headers={"attempt": 1, "root_id": task_id, "traceparent": parent},
                producer=producer,
            )
    sent = EmailDelivery.objects.filter(status=EmailDelivery.Status.SENT)
    wait(lambda: sent.count() >= len(order_ids), 600, f"{len(order_ids)} emails", interval=0.1)
    return len(order_ids) / (time.perf_counter() - started)


STATES = {"off": {}, "on": {}, "on-no-sql": {"OTEL_PYTHON_DISABLED_INSTRUMENTATIONS": "psycopg"}}


def rotating(measure: Callable[[str], float], reps: int) -> dict[str, list[float]]:
    """Each state once per round, the order rotating, so drift weighs on all of them alike."""
    runs: dict[str, list[float]] = {state: [] for state in STATES}
    order = list(STATES)
    for rep in range(reps):
        for state in order[rep % 3 :] + order[: rep % 3]:
            runs[state].append(measure(state))
    return runs


def s6_tracing(bench: Bench) -> None:
    from tests.conftest import start_sink

    endpoint = _collector(bench)
    sink = start_sink(bench.procs, bench.tmp / "sink-s6")
    env = {
        state: ({"OTEL_EXPORTER_OTLP_ENDPOINT": endpoint, **extra} if state != "off" else {})
        for state, extra in STATES.items()
    }
    reps = 1 if bench.quick else 5
    seconds = 4 if bench.quick else 8

    # order create
    ports = {state: free_port() for state in STATES}
    webs = [bench.web("b", ports[state], **env[state]) for state in STATES]
    for port in ports.values():
        bench.wrk(port, 4, 2)  # warm up

    def create(state: str) -> float:
        bench.reset_data()
        data = bench.wrk(ports[state], 16, seconds)
        say(f"S6 order create, tracing {state}: {data['rps']:.0f} req/s p99 {data['p99_ms']:.1f} ms")
        return float(data["rps"])

    bench.results["s6_create"] = _summary(rotating(create, reps))
    for proc in webs:
        proc.stop()

    # email task
    bench.reset_data()
    order_ids = _orders(bench, 300 if bench.quick else 600)
    smtp = {"EMAIL_PORT": str(sink.smtp_port)}

    def drain(state: str) -> float:
        # a fresh worker per run, started before the clock: no two compete for the queue
        worker = bench.procs.worker(f"s6-{state}", queues="emails", concurrency=2, **smtp, **env[state])
        try:
            rate = _drain_emails(order_ids)
        finally:
            worker.stop()
        say(f"S6 email task, tracing {state}: {rate:.0f} emails/s")
        return rate

    bench.results["s6_email"] = {**_summary(rotating(drain, reps)), "emails": len(order_ids)}


def _summary(runs: dict[str, list[float]]) -> dict[str, Any]:
    """Medians, and per round the ratio of each traced state to the untraced one."""
    summary: dict[str, Any] = {state: statistics.median(values) for state, values in runs.items()}
    for state in ("on", "on-no-sql"):
        summary[f"ratios_{state}"] = [a / b for a, b in zip(runs[state], runs["off"], strict=True)]
    summary["ratios"] = summary["ratios_on"]
    return summary


def goal_rows(r: dict[str, Any]) -> list[tuple[str, str, str, bool | None]]:
    rows: list[tuple[str, str, str, bool | None]] = []
    for key, what in (("s6_create", "order create throughput"), ("s6_email", "email task throughput")):
        if key in r:
            ratios = r[key]["ratios"]
            ratio = statistics.median(ratios)
            spread = f" (rounds {min(ratios):.2f}-{max(ratios):.2f})" if len(ratios) > 1 else ""
            rows.append((f"{what}, tracing on vs off", f">= {GOAL}x", f"{ratio:.2f}x{spread}", ratio >= GOAL))
    return rows


def report_section(r: dict[str, Any]) -> list[str]:
    if "s6_create" not in r:
        return []
    lines = [
        "## S6 tracing",
        "",
        "OpenTelemetry off, on (every instrumentation), and on without SQL spans; batch span processor, OTLP/HTTP to a collector that discards; order rotating by round; medians:",
        "",
        "| measure | off | on | on/off | on, no SQL spans | no-SQL/off |",
        "|---|---|---|---|---|---|",
    ]
    for key, what, unit in (
        ("s6_create", "order create (wrk, 16 connections)", "req/s"),
        ("s6_email", "email task (2 children)", "emails/s"),
    ):
        if key in r:
            s = r[key]
            on, no_sql = (statistics.median(s[f"ratios_{state}"]) for state in ("on", "on-no-sql"))
            lines.append(
                f"| {what} | {s['off']:.0f} {unit} | {s['on']:.0f} {unit} | {on:.2f}x "
                f"| {s['on-no-sql']:.0f} {unit} | {no_sql:.2f}x |"
            )
    return [*lines, ""]
