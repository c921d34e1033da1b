"""S6 the cost of tracing: the same processes with OpenTelemetry off; on (the default: every
instrumentation, every trace, batch span processor, OTLP/HTTP to a collector); on without SQL
spans (OTEL_PYTHON_DISABLED_INSTRUMENTATIONS=psycopg); and on with one request in ten sampled
(parentbased_traceidratio 0.1), side by side in one run, the order rotating by round:

  * order create: three gunicorns (the outbox variant), wrk at 16 connections;
  * email task: a worker (2 children) drains confirmation emails for existing orders into the
    SMTP sink.

Two figures per run: the throughput, and the CPU the measured process tree (gunicorn, or
the worker and its children, export thread included) spent per request or email. The goal
is on the CPU: on a machine shared with other work, throughput swings with the neighbours
while CPU per unit of work barely does, and where the process is CPU-bound (its own cores)
throughput is its inverse.

The collector runs with --discard: decoding spans is the collector's work, on its own machine
in a deployment; what is measured is what tracing costs the app (creating, scrubbing,
encoding and sending the spans).
"""

import random
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
# The email tasks come "from a request", as in production; its sampled flag decides theirs.
FAKE_REQUEST = "00-{trace}-{span}-{flags}"
SAMPLED = 0.1  # the sampled state: one request in ten traced, with all its tasks


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


def _drain_emails(order_ids: list[int], sampled: float) -> int:
    """Publish one confirmation email task per order; wait until all are sent. Returns how many."""
    from django.db import connection

    from config.celery_app import app
    from notifications.models import EmailDelivery

    with connection.cursor() as cursor:
        cursor.execute(
            "TRUNCATE notifications_emailattempt, notifications_emaildelivery, jobs_taskrun CASCADE"
        )
    with app.producer_or_acquire() as producer, producer.batch(max_size=1000):
        for order_id in order_ids:
            task_id = str(uuid.uuid4())
            flags = "01" if random.random() < sampled else "00"
            parent = FAKE_REQUEST.format(trace=uuid.uuid4().hex, span=uuid.uuid4().hex[:16], flags=flags)
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
    return len(order_ids)


def measured(pid: int, work: Callable[[], int]) -> dict[str, float]:
    """Run `work` (returns how many units it completed): units/s and CPU ms per unit of `pid`'s tree."""
    from bench.cpu import cpu_by_role, cpu_seconds

    before, started = cpu_seconds({pid: "measured"}), time.perf_counter()
    units = work()
    elapsed, after = time.perf_counter() - started, cpu_seconds({pid: "measured"})
    cpu = cpu_by_role(before, after).get("measured", 0.0)
    return {"rate": units / elapsed, "cpu_ms": cpu / max(units, 1) * 1000}


STATES = {
    "off": {},
    "on": {},
    "on-no-sql": {"OTEL_PYTHON_DISABLED_INSTRUMENTATIONS": "psycopg"},
    "on-sampled": {
        "OTEL_TRACES_SAMPLER": "parentbased_traceidratio",
        "OTEL_TRACES_SAMPLER_ARG": str(SAMPLED),
    },
}


def rotating(measure: Callable[[str], dict[str, float]], reps: int) -> dict[str, list[dict[str, float]]]:
    """Each state once per round, the order rotating, so drift weighs on all of them alike."""
    runs: dict[str, list[dict[str, float]]] = {state: [] for state in STATES}
    order = list(STATES)
    for rep in range(reps):
        for state in order[rep % len(order) :] + order[: rep % len(order)]:
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
    reps = 1 if bench.quick else 3
    seconds = 4 if bench.quick else 8

    # order create
    ports = {state: free_port() for state in STATES}
    webs = {state: bench.web("b", ports[state], **env[state]) for state in STATES}
    for port in ports.values():
        bench.wrk(port, 4, 2)  # warm up

    def create(state: str) -> dict[str, float]:
        bench.reset_data()

        def load() -> int:
            data = bench.wrk(ports[state], 16, seconds)
            return int(data["requests"] - data["non2xx"])

        result = measured(webs[state].pid, load)
        say(
            f"S6 order create, tracing {state}: {result['rate']:.0f} req/s, {result['cpu_ms']:.2f} CPU ms each"
        )
        return result

    bench.results["s6_create"] = _summary(rotating(create, reps))
    for proc in webs.values():
        proc.stop()

    # email task
    bench.reset_data()
    order_ids = _orders(bench, 300 if bench.quick else 600)
    smtp = {"EMAIL_PORT": str(sink.smtp_port)}

    def drain(state: str) -> dict[str, float]:
        # a fresh worker per run, started before the clock: no two compete for the queue
        worker = bench.procs.worker(f"s6-{state}", queues="emails", concurrency=2, **smtp, **env[state])
        try:
            result = measured(
                worker.pid, lambda: _drain_emails(order_ids, SAMPLED if state == "on-sampled" else 1.0)
            )
        finally:
            worker.stop()
        say(
            f"S6 email task, tracing {state}: {result['rate']:.0f} emails/s, {result['cpu_ms']:.2f} CPU ms each"
        )
        return result

    bench.results["s6_email"] = {**_summary(rotating(drain, reps)), "emails": len(order_ids)}


def _summary(runs: dict[str, list[dict[str, float]]]) -> dict[str, Any]:
    """Medians per state, and per round each traced state against the untraced one: the
    throughput ratio, and the CPU-per-unit ratio off/on (>1 would mean tracing made it cheaper)."""
    summary: dict[str, Any] = {
        state: {key: statistics.median(run[key] for run in values) for key in ("rate", "cpu_ms")}
        for state, values in runs.items()
    }
    for state in list(STATES)[1:]:
        pairs = list(zip(runs[state], runs["off"], strict=True))
        summary[f"rate_ratios_{state}"] = [a["rate"] / b["rate"] for a, b in pairs]
        summary[f"cpu_ratios_{state}"] = [b["cpu_ms"] / a["cpu_ms"] for a, b in pairs]
    return summary


def _median_spread(values: list[float]) -> str:
    spread = f" (rounds {min(values):.2f}-{max(values):.2f})" if len(values) > 1 else ""
    return f"{statistics.median(values):.2f}x{spread}"


def goal_rows(r: dict[str, Any]) -> list[tuple[str, str, str, bool | None]]:
    rows: list[tuple[str, str, str, bool | None]] = []
    for key, what in (("s6_create", "order create"), ("s6_email", "email task")):
        if key in r:
            ratios = r[key]["cpu_ratios_on"]
            rows.append(
                (
                    f"{what}: throughput per CPU, tracing on vs off",
                    f">= {GOAL}x",
                    _median_spread(ratios),
                    statistics.median(ratios) >= GOAL,
                )
            )
    return rows


def report_section(r: dict[str, Any]) -> list[str]:
    if "s6_create" not in r:
        return []
    lines = [
        "## S6 tracing",
        "",
        "OpenTelemetry off; on (every instrumentation, every trace); on without SQL spans; on with one request in ten sampled. Batch span processor, OTLP/HTTP to a collector that discards; the order rotating by round. Medians of the rounds; ratios are traced vs off, per round (throughput per CPU = off's CPU per unit / the state's).",
        "",
        "| measure | state | throughput | CPU per unit | throughput ratio | throughput per CPU ratio |",
        "|---|---|---|---|---|---|",
    ]
    for key, what, unit in (
        ("s6_create", "order create (wrk, 16 connections)", "req/s"),
        ("s6_email", "email task (2 children)", "emails/s"),
    ):
        if key not in r:
            continue
        s = r[key]
        for state in STATES:
            ratios = (
                ("", "")
                if state == "off"
                else (
                    _median_spread(s[f"rate_ratios_{state}"]),
                    _median_spread(s[f"cpu_ratios_{state}"]),
                )
            )
            lines.append(
                f"| {what} | {state} | {s[state]['rate']:.0f} {unit} | {s[state]['cpu_ms']:.2f} ms | {ratios[0]} | {ratios[1]} |"
            )
    return [*lines, ""]


DOCUMENTED_RUN = "2026-12-01-tracing.json"  # in bench/results/: the run docs/performance.md shows


def cost_table(r: dict[str, Any]) -> str:
    """docs/performance.md's summary of an S6 run (medians of the rounds), from its results."""
    lines = [
        "| measure | off | on | no SQL spans | 10 % sampled |",
        "|---|---|---|---|---|",
    ]
    for key, what, per in (
        ("s6_create", "order create", "request (gunicorn)"),
        ("s6_email", "email task", "email (worker)"),
    ):
        s = r[key]
        cpu = " | ".join(f"{s[state]['cpu_ms']:.1f} ms" for state in STATES)
        ratios = [f"{statistics.median(s[f'cpu_ratios_{state}']):.2f}x" for state in list(STATES)[1:]]
        ratios[0] = f"**{ratios[0]}**"
        lines += [
            f"| {what}, CPU per {per} | {cpu} |",
            f"| {what}, throughput per CPU vs off | | {' | '.join(ratios)} |",
        ]
    return "\n".join(lines)
