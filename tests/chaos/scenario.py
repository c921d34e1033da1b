"""Steps the chaos scenarios share: waiting for load, catching a worker mid-task, recovery."""

import json
import signal
import time
import uuid
from collections.abc import Callable
from pathlib import Path

from django.db import transaction

from jobs import outbox
from jobs.models import TaskRun
from tests.chaos.stack import ChaosStack, Load
from tests.harness import Proc, children_of, wait_until

RATE = 5.0  # requests/s of the load: one worker of two children keeps up on 2 shared cores
RECOVERY_LIMIT = 30.0  # seconds from a kill until every task the killed worker held finished


def enqueue(task: str, **kwargs: object) -> uuid.UUID:
    with transaction.atomic():
        task_id = outbox.enqueue(task, kwargs=kwargs)
    assert task_id is not None
    return task_id


def probe_records(stack: ChaosStack, key: str) -> list[dict]:
    return [json.loads(r) for r in stack.redis.client().lrange(f"probe:{key}", 0, -1)]


def wait_for_orders(load: Load, count: int, timeout: float = 30) -> None:
    start = len(load.accepted)
    wait_until(lambda: len(load.accepted) >= start + count, timeout=timeout, message=f"{count} more orders")


def outage(seconds: float) -> None:
    """Let `seconds` pass while something is down (the load keeps running meanwhile)."""
    started = time.monotonic()
    wait_until(
        lambda: time.monotonic() - started >= seconds,
        timeout=seconds + 10,
        interval=0.5,
        message="the outage",
    )


def running_on(worker: Proc) -> set[str]:
    """Task ids whose run a worker's pool children hold right now (TaskRun running)."""
    pids = [worker.pid, *children_of(worker.pid)]
    return {
        str(t)
        for t in TaskRun.objects.filter(
            state=TaskRun.State.RUNNING,
            worker__in=[f"{worker.nodename}:{pid}" for pid in pids],  # type: ignore[attr-defined]
        ).values_list("task_id", flat=True)
    }


def in_flight(stack: ChaosStack, worker: Proc) -> set[str]:
    """Task ids a worker is running or holds (received, not finished)."""
    held = stack.redis.client().zrange(f"taskyard:received:{worker.nodename}:{worker.pid}", 0, -1)  # type: ignore[attr-defined]
    ids = running_on(worker) | {h.decode() if isinstance(h, bytes) else str(h) for h in held}
    done = TaskRun.objects.filter(task_id__in=ids, state__in=TaskRun.TERMINAL).values_list(
        "task_id", flat=True
    )
    return ids - {str(d) for d in done}


def freeze_mid_task(
    worker: Proc, timeout: float = 30, select: Callable[[set[str]], set[str]] = lambda ids: ids
) -> set[str]:
    """SIGSTOP the worker's group at a moment one of its children runs a task; returns the
    running task ids (those `select` keeps). Frozen, nothing moves: what runs at the freeze runs
    at the kill."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        worker.signal_group(signal.SIGSTOP)
        wait_until(lambda: all(stopped(p) for p in [worker.pid, *children_of(worker.pid)]), timeout=5)
        if running := select(running_on(worker)):
            return running
        worker.signal_group(signal.SIGCONT)
        time.sleep(0.07)  # let the worker move on before the next look
    raise AssertionError(f"no task was running on {worker.name} in {timeout} s")


def stopped(pid: int) -> bool:
    """The process is stopped (or gone): state T in /proc/<pid>/stat."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return True
    return stat[stat.rindex(")") + 2] in "Tt"


def all_finished(task_ids: set[str]) -> Callable[[], bool]:
    def check() -> bool:
        return TaskRun.objects.filter(task_id__in=task_ids, state__in=TaskRun.TERMINAL).count() == len(
            task_ids
        )

    return check


def recovery_seconds(task_ids: set[str], killed_at: float, timeout: float = 90) -> float:
    """Seconds from the kill (a time.time()) until the last of `task_ids` finished."""
    wait_until(all_finished(task_ids), timeout=timeout, message="every task of the killed worker to finish")
    finished = TaskRun.objects.filter(task_id__in=task_ids).values_list("finished_at", flat=True)
    return max((f.timestamp() - killed_at for f in finished if f), default=0.0)


def kill_rounds(
    stack: ChaosStack, load: Load, kills: list[Callable[[Proc], object]], *, orders_between: int = 15
) -> tuple[list[int], list[float]]:
    """Kill the newest worker once per entry of `kills`, each time while a task runs on it, and
    start a new worker each time. The kills come back to back (a kill's recovery overlaps the
    next one: it is measured per kill all the same). Returns the tasks running at each kill and
    each kill's recovery time."""
    in_flight_at_kills, pending = [], []
    for round_, kill in enumerate(kills):
        wait_for_orders(load, orders_between)
        worker = stack.workers[-1]
        running = freeze_mid_task(worker)
        held = in_flight(stack, worker) | running
        killed_at = time.time()
        kill(worker)
        stack.start_worker(f"after-kill-{round_}")
        pending.append((held, killed_at))
        in_flight_at_kills.append(len(running))
    recoveries = [recovery_seconds(held, killed_at) for held, killed_at in pending]
    assert all(in_flight_at_kills), in_flight_at_kills
    assert max(recoveries) < RECOVERY_LIMIT, recoveries
    return in_flight_at_kills, recoveries
