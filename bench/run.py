"""`make bench`: the performance report, measured side by side in one run.

    python -m bench.run [--quick]

Scenarios (bench/README section of the project README explains each):
  S1 order creation: (a) create only, (b) the outbox, (c) .delay() after commit,
     (d) everything in the request; wrk at several concurrencies, medians of repeats
  S2 relay publish rate vs a loop of apply_async; commit-to-task-start latency at 50/s,
     outbox vs .delay()
  S3 end to end: POST /api/orders -> email in the SMTP sink at fixed rates of 10, 25, 40 and 50
     orders/s (BENCH_S3_RATES)
  S4 worker throughput, base task vs plain Celery task; worker RSS over many tasks
  S5 scaling: 1 vs 2 pool processes; draining a 10k backlog
  S6 tracing: order create and the email task with OpenTelemetry on vs off
  flows: one flow of 10,000 children fans in to one next step: last child -> next step, the
     next step released and run once, rows and WAL written per child (bench/scenarios/flows.py)

Everything runs on this machine against real PostgreSQL and Redis, in a fresh database
and a claimed Redis DB. Results: bench/results/<date>.md and PNG plots next to it.

This module is the command line; the scenarios are in bench/scenarios/, the database and
processes they run on in bench/stack.py, the shared helpers in bench/measure.py.
"""

import argparse
import os
import platform
import shutil
import subprocess
import sys
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path

from bench.measure import say
from bench.scenarios.end_to_end import s3_end_to_end
from bench.scenarios.flows import s_flows
from bench.scenarios.order_creation import s1_orders
from bench.scenarios.relay import s2_relay
from bench.scenarios.tracing import s6_tracing
from bench.scenarios.workers import s4_workers, s5_scaling
from bench.stack import ROOT, Bench

RESULTS = ROOT / "bench" / "results"


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
        "commit": code_version(),
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


def code_version() -> str:
    """The commit measured, and whether the working tree differed from it."""
    git = ["git", "-C", str(ROOT)]
    head = subprocess.run(
        [*git, "rev-parse", "--short", "HEAD"], capture_output=True, text=True
    ).stdout.strip()
    dirty = subprocess.run(
        [*git, "status", "--porcelain", "--untracked-files=no"], capture_output=True, text=True
    )
    changed = sorted({line[3:].split("/")[0] for line in dirty.stdout.splitlines()})
    return f"{head or 'unknown'}" + (f" with local changes in {', '.join(changed)}" if changed else "")


def main() -> None:
    parser = argparse.ArgumentParser(description="taskyard benchmark")
    parser.add_argument("--quick", action="store_true", help="short runs (a smoke test of the benchmark)")
    parser.add_argument("--only", nargs="*", help="scenarios to run: s1 s2 s3 s4 s5 s6 flows")
    parser.add_argument("--label", default="", help="results as <date>-<label>.md (keeps the day's others)")
    args = parser.parse_args()
    if shutil.which("wrk") is None:
        sys.exit("wrk is not installed: apt-get install wrk (make bench installs it on Debian)")
    bench = Bench(quick=args.quick)
    chosen = set(args.only or ["s1", "s2", "s3", "s4", "s5", "s6", "flows"])
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
            ("s6", s6_tracing),
            ("flows", s_flows),
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

        say(f"report: {write_report(bench.results, RESULTS, args.label)}")


if __name__ == "__main__":
    main()
