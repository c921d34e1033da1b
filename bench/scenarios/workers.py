"""S4 worker throughput, base task vs plain Celery task, and worker RSS over many tasks;
S5 scaling: 1 vs 2 pool processes, draining a backlog."""

import statistics
import time

from bench.cpu import cpu_by_role, cpu_seconds
from bench.measure import done_at_least, paired, say, wait
from bench.stack import Bench


def drain(
    bench: Bench,
    task: str,
    count: int,
    concurrency: int,
    preload: bool = False,
    cpu: dict[str, float] | None = None,
    **env: str,
) -> float:
    """Messages/s a worker drains (from first publish, or from worker start for a backlog).
    With `cpu`, fills it with the CPU-ms per task each role used meanwhile (worker, PostgreSQL,
    Redis, the publishing load generator), read from the processes' own counters."""
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
    roots = {worker.pid: "worker"}
    cpu_before = cpu_seconds(roots)
    if not preload:
        started = time.perf_counter()
        publish()
    wait(lambda: int(client.get("bench:done") or 0) >= count, 600, f"{count} {task}", interval=0.02)
    rate = count / (time.perf_counter() - started)
    if cpu is not None:
        used = cpu_by_role(cpu_before, cpu_seconds(roots))
        cpu.update({role: seconds * 1000 / count for role, seconds in used.items() if role != "other"})
    worker.stop()
    return rate


def median_by_role(runs: list[dict[str, float]]) -> dict[str, float]:
    roles = sorted({role for run in runs for role in run})
    return {role: statistics.median(run.get(role, 0.0) for run in runs) for role in roles}


def rss_of_tree(pid: int) -> int:
    """Resident memory (KiB) of a process and its children."""
    from tests.harness import children_of, rss_bytes

    return sum(rss_bytes(p) for p in [pid, *children_of(pid)]) // 1024


def s4_workers(bench: Bench) -> None:
    count = 3000 if bench.quick else 10000
    cpu: dict[str, list[dict[str, float]]] = {"base": [], "plain": []}

    def measured(task: str, kind: str) -> float:
        cpu[kind].append({})
        return drain(bench, task, count, 2, cpu=cpu[kind][-1])

    base, plain = paired(
        lambda: measured("bench.noop", "base"),
        lambda: measured("bench.noop_plain", "plain"),
        reps=1 if bench.quick else 5,
    )
    for rep, (b, p) in enumerate(zip(base, plain, strict=True)):
        say(f"S4 drain rep {rep + 1}: plain {p:.0f}/s, base task {b:.0f}/s")
    bench.results["s4_throughput"] = {
        "count": count,
        "plain": statistics.median(plain),
        "base": statistics.median(base),
        "ratios": [b / p for b, p in zip(base, plain, strict=True)],
        # CPU-ms per task by role, median over the reps: where the base task's extra time goes
        "cpu_ms_per_task": {kind: median_by_role(runs) for kind, runs in cpu.items()},
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
