"""Flows: one flow of 10,000 children fans in to one next step (jobs/flows/).

Measures: the time from the last child's outcome to the next step's start, that the next step
was released (one outbox row) and ran exactly once, the children's rate against the same
tasks enqueued without a flow, the transaction that starts the flow, and the rows and WAL
written per child. The figures also go to
bench/results/flows-fan-in.json (this scenario's own file).
"""

import json
import time
from typing import Any

from bench.measure import say, wait
from bench.stack import ROOT, Bench

RESULT_FILE = ROOT / "bench" / "results" / "flows-fan-in.json"


def _writes() -> dict[str, int]:
    """Rows inserted + updated + deleted so far, per jobs table."""
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT relname, n_tup_ins + n_tup_upd + n_tup_del FROM pg_stat_user_tables"
            " WHERE relname LIKE 'jobs\\_%%'"
        )
        return {name: int(count) for name, count in cursor.fetchall()}


def _wal_lsn() -> int:
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_current_wal_lsn() - '0/0'::pg_lsn")
        return int(cursor.fetchone()[0])


def _stats_flushed(before: dict[str, int], expected_rows: int) -> dict[str, int]:
    """Backends report their table counters at most once a second, and when idle or exiting."""
    from django.db import connection

    deadline = time.monotonic() + 30
    while True:
        with connection.cursor() as cursor:
            cursor.execute("SELECT pg_stat_clear_snapshot()")
        after = _writes()
        grown = {t: after.get(t, 0) - before.get(t, 0) for t in after}
        if sum(grown.values()) >= expected_rows or time.monotonic() > deadline:
            return {t: n for t, n in grown.items() if n}
        time.sleep(0.5)  # waiting for the statistics collector, bounded by the deadline


def _plain_rate(bench: Bench, count: int) -> float:
    """The same no-op tasks, enqueued alone (no flow): the rate the flow's children compare to."""
    from django.db import transaction

    from bench.measure import done_at_least
    from jobs import outbox

    bench.reset_data()
    for start in range(0, count, 1000):
        with transaction.atomic(), outbox.batch():
            for _ in range(min(1000, count - start)):
                outbox.enqueue("bench.noop")
    relay = bench.procs.relay("relay-plain", LOG_LEVEL="INFO")
    worker = bench.procs.worker("plain", queues="default", concurrency=2)
    started = time.perf_counter()
    wait(done_at_least(bench.redis(), count), 1800, "the plain tasks")
    rate = count / (time.perf_counter() - started)
    worker.stop()
    relay.stop()
    say(f"flows: the same {count} tasks without a flow: {rate:.0f}/s")
    bench.reset_data()
    return rate


def s_flows(bench: Bench) -> None:
    from django.db import connection, transaction

    from jobs.flows.definition import Step
    from jobs.flows.services import flow_start
    from jobs.models import Flow, FlowStep, OutboxMessage, TaskRun

    children = 1000 if bench.quick else 10_000
    bench.reset_data()
    with connection.cursor() as cursor:
        cursor.execute("TRUNCATE jobs_flowstep, jobs_flow CASCADE")
    plain_rate = _plain_rate(bench, children)
    names = [f"child-{i:05d}" for i in range(children)]
    steps = [Step(name, "bench.noop") for name in names]
    steps.append(Step("next", "bench.started", kwargs={"mark": "fan-in"}, after=tuple(names)))
    writes_before, wal_before = _writes(), _wal_lsn()
    started = time.perf_counter()
    with transaction.atomic():
        flow = flow_start(kind="bench-fan-in", steps=steps)
    start_seconds = time.perf_counter() - started
    wal_start = _wal_lsn()
    say(f"flows: started a flow of {children} children + 1 in {start_seconds:.2f} s")

    relay = bench.procs.relay("relay-flows", LOG_LEVEL="INFO")  # it says when it started
    worker = bench.procs.worker("flows", queues="default", concurrency=2)
    run_started = time.perf_counter()

    def finished() -> bool:
        flow.refresh_from_db()
        return flow.state in Flow.FINISHED

    wait(finished, 1800, "the fan-in flow to finish", interval=0.5)
    run_seconds = time.perf_counter() - run_started
    worker.stop()
    relay.stop()

    child_rows = FlowStep.objects.filter(flow=flow).exclude(name="next")
    last_child = max(at for at in child_rows.values_list("finished_at", flat=True) if at is not None)
    nxt = FlowStep.objects.get(flow=flow, name="next")
    next_runs = list(TaskRun.objects.filter(root_id=nxt.root_id))
    released = OutboxMessage.objects.filter(headers__flow_step=nxt.pk).count()
    started_at = float(bench.redis().hget("bench:started", "fan-in") or 0)
    grown = _stats_flushed(writes_before, expected_rows=4 * children)
    wal = _wal_lsn() - wal_before
    result: dict[str, Any] = {
        "children": children,
        "state": flow.state,
        "start_transaction_seconds": round(start_seconds, 3),
        "children_per_second": round(children / run_seconds, 1),
        "same_tasks_without_a_flow_per_second": round(plain_rate, 1),
        "last_child_to_next_step_ms": round((next_runs[0].started_at - last_child).total_seconds() * 1000, 1),
        "last_child_to_next_step_body_ms": round((started_at - last_child.timestamp()) * 1000, 1),
        "next_step_outbox_rows": released,
        "next_step_runs": len(next_runs),
        "rows_written_per_child": round(sum(grown.values()) / children, 2),
        "rows_written_per_child_by_table": {t: round(n / children, 2) for t, n in sorted(grown.items())},
        "wal_bytes_per_child": round((wal - (wal_start - wal_before)) / children),
        "wal_bytes_per_child_start": round((wal_start - wal_before) / children),
        "worker_concurrency": 2,
    }
    bench.results["flows"] = result
    RESULT_FILE.write_text(
        json.dumps({**result, "machine": bench.results.get("machine", {})}, indent=1) + "\n"
    )
    say(
        f"flows: {children} children at {result['children_per_second']}/s; last child -> next step "
        f"{result['last_child_to_next_step_ms']} ms; next step released {released}x, ran {len(next_runs)}x; "
        f"{result['rows_written_per_child']} rows and {result['wal_bytes_per_child']} WAL bytes per child"
    )
    bench.reset_data()
