"""S3 end to end: POST /api/orders -> email in the SMTP sink at fixed arrival rates (10, 25, 40
and 50 orders/s by default, BENCH_S3_RATES to change), with CPU use per role."""

import email
import email.policy
import os
import threading
import time
from collections.abc import Callable

import requests

from bench.cpu import cpu_by_role, cpu_seconds
from bench.measure import pct, say, wait
from bench.stack import Bench, free_port

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
