"""Worker hygiene over a long run: pool children are recycled and memory stays bounded.

A real worker (prefork, 2 children) drains a few thousand tasks through the base task with
a tiny --max-tasks-per-child, as the manifests' CELERY_WORKER_MAX_TASKS_PER_CHILD does at
scale. TaskRun records which child (host:pid) ran each task, so recycling is counted
exactly; the children's and the main process' RSS are sampled from /proc meanwhile.
--max-memory-per-child is shown the same way with a limit every child exceeds.
"""

import math
import threading

from django.db.models import Count

from config.celery_app import app
from jobs.models import TaskRun
from tests.harness import Processes, children_of, rss_bytes, wait_until

MiB = 2**20


class RssSampler(threading.Thread):
    def __init__(self, pid: int) -> None:
        super().__init__(daemon=True)
        self.pid = pid
        self.main: list[int] = []
        self.child_peak = 0
        self.stopped = threading.Event()

    def run(self) -> None:
        while not self.stopped.wait(0.1):
            self.main.append(rss_bytes(self.pid))
            for child in children_of(self.pid):
                self.child_peak = max(self.child_peak, rss_bytes(child))


def publish_pings(count: int) -> None:
    with app.producer_or_acquire() as producer:
        for _ in range(count):
            app.send_task("jobs.ping", kwargs={"token": "recycling"}, queue="default", producer=producer)


def runs_per_child() -> dict[str, int]:
    rows = TaskRun.objects.filter(task_name="jobs.ping", state=TaskRun.State.SUCCEEDED)
    return {row["worker"]: row["n"] for row in rows.values("worker").annotate(n=Count("task_id"))}


def test_children_are_recycled_and_memory_stays_bounded_over_thousands_of_tasks(isolated: Processes):
    tasks, per_child = 1500, 50
    # Given a worker whose children exit after 50 tasks each
    worker = isolated.worker(
        "recycling", queues="default", concurrency=2, extra=["--max-tasks-per-child", str(per_child)]
    )
    sampler = RssSampler(worker.pid)
    sampler.start()
    # When it drains 1,500 tasks
    publish_pings(tasks)
    wait_until(
        lambda: sum(runs_per_child().values()) >= tasks, timeout=90, interval=0.5, message="the pings to run"
    )
    sampler.stopped.set()
    sampler.join()
    # Then no child ran more than its quota, so at least tasks/quota children came and went
    counts = runs_per_child()
    assert max(counts.values()) <= per_child
    assert len(counts) >= math.ceil(tasks / per_child)
    # and memory stayed flat: each child is a fresh fork, and the main process doesn't grow
    # with the number of tasks it handed out.
    warm = sampler.main[len(sampler.main) // 10 :]
    growth = max(warm) - min(warm)
    print(
        f"\n{tasks} tasks, {len(counts)} children, child RSS peak {sampler.child_peak / MiB:.0f} MiB, "
        f"main RSS {min(warm) / MiB:.0f}-{max(warm) / MiB:.0f} MiB"
    )
    assert sampler.child_peak < 200 * MiB
    assert growth < 16 * MiB, f"main process grew {growth / MiB:.1f} MiB"


def test_a_child_over_its_memory_cap_is_replaced_after_its_task(isolated: Processes):
    tasks = 20
    # A 1 KiB cap: every child is over it after any task, so each task gets a fresh child.
    worker = isolated.worker("memcap", queues="default", concurrency=2, extra=["--max-memory-per-child", "1"])
    publish_pings(tasks)
    wait_until(
        lambda: sum(runs_per_child().values()) >= tasks, timeout=60, interval=0.2, message="the pings to run"
    )
    counts = runs_per_child()
    assert len(counts) >= tasks - 2  # a child may take a second prefetched task before it exits
    assert worker.alive()
