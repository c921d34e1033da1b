"""TaskRun bookkeeping: one row per task id, claimed when a worker starts it.

`begin` is one SQL statement: it creates the row, or takes it over when the previous
delivery is known dead (state lost, stale heartbeat, or its process is gone), and
counts the delivery. It refuses a task id that already reached a terminal state
(a duplicate delivery: its effect already happened) or that is running elsewhere.
"""

import contextlib
import os
import socket
import traceback
from dataclasses import dataclass
from datetime import timedelta
from enum import StrEnum
from typing import Any

from django.conf import settings
from django.db import DatabaseError, connection, transaction
from django.utils import timezone

from jobs.models import TaskRun

# Message header carrying the request id (core/request_id.py). Not "correlation_id": Celery's
# request context already has an attribute of that name (the AMQP correlation id = the task id).
REQUEST_ID_HEADER = "request_id"
# Message header naming the jobs.FlowStep a task runs as (jobs/flows/); kept across retries.
FLOW_STEP_HEADER = "flow_step"


_node = ""  # the Celery node name (emails@host), set in a worker before its pool forks


def set_node(name: str) -> None:
    global _node
    _node = name


def process_name() -> str:
    """<node>:<pid> of this process: a pool child in TaskRun.worker, a worker's main process in
    its Redis records (jobs/worker.py). One name, so the reaper can tell who holds what; outside
    a worker (a shell, a test) the node is the host name."""
    return f"{_node or socket.gethostname()}:{os.getpid()}"


@dataclass(frozen=True)
class TaskMeta:
    """What a running task knows about itself, from its message headers."""

    task_id: str
    task_name: str
    queue: str
    attempt: int
    root_id: str
    request_id: str
    job_id: str | None
    first_failed_at: str | None
    flow_step: int | None = None

    def next_headers(self, *, attempt: int, first_failed_at: str | None) -> dict[str, Any]:
        """Headers for the next message of this task's chain (a retry or a reschedule)."""
        headers: dict[str, Any] = {"attempt": attempt, "root_id": self.root_id}
        if first_failed_at:
            headers["first_failed_at"] = first_failed_at
        if self.request_id:
            headers[REQUEST_ID_HEADER] = self.request_id
        if self.job_id:
            headers["job_id"] = self.job_id
        if self.flow_step:
            headers[FLOW_STEP_HEADER] = self.flow_step
        return headers


def meta_from_headers(task_id: str, task_name: str, queue: str, headers: dict[str, Any]) -> TaskMeta:
    return TaskMeta(
        task_id=task_id,
        task_name=task_name,
        queue=queue,
        attempt=int(headers.get("attempt") or 1),
        root_id=str(headers.get("root_id") or task_id),
        request_id=str(headers.get(REQUEST_ID_HEADER) or ""),
        job_id=headers.get("job_id"),
        first_failed_at=headers.get("first_failed_at"),
        flow_step=int(headers[FLOW_STEP_HEADER]) if headers.get(FLOW_STEP_HEADER) else None,
    )


class Claim(StrEnum):
    RUN = "run"
    DUPLICATE = "duplicate"  # finished before, or running elsewhere: do nothing
    POISON = "poison"  # delivered too often: dead-letter without running


_BEGIN_SQL = """
INSERT INTO jobs_taskrun
    (task_id, task_name, queue, state, deliveries, attempt, root_id, worker, started_at, heartbeat_at, error)
VALUES (%(task_id)s, %(task_name)s, %(queue)s, 'running', 1, %(attempt)s, %(root_id)s, %(worker)s, now(), now(), '')
ON CONFLICT (task_id) DO UPDATE SET
    state = 'running', deliveries = jobs_taskrun.deliveries + 1, worker = EXCLUDED.worker,
    started_at = now(), heartbeat_at = now(), finished_at = NULL
WHERE jobs_taskrun.state = 'lost'
   OR (jobs_taskrun.state = 'running'
       AND (jobs_taskrun.heartbeat_at < now() - make_interval(secs => %(stale)s)
            OR jobs_taskrun.worker = %(dead_worker)s))
RETURNING deliveries
"""


def _process_gone(worker: str) -> bool:
    """True when `worker` (node:pid) ran on this host and that process no longer exists."""
    node, _, pid = worker.rpartition(":")
    if node.rpartition("@")[2] != socket.gethostname() or not pid.isdigit():
        return False
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        return False
    return False


def begin(meta: TaskMeta, *, max_deliveries: int) -> tuple[Claim, int]:
    """Claim the task id for this process. Returns (claim, deliveries so far)."""
    params = {
        "task_id": meta.task_id,
        "task_name": meta.task_name,
        "queue": meta.queue,
        "attempt": meta.attempt,
        "root_id": meta.root_id,
        "worker": process_name(),
        "stale": settings.TASKYARD_HEARTBEAT_STALE_SECONDS,
        "dead_worker": "",
    }
    deliveries = _begin_once(params)
    if deliveries is None:
        # Refused: finished, or running. A process on this host that died (a child killed
        # mid-task; its message was requeued at once) may be taken over without waiting.
        previous = TaskRun.objects.filter(task_id=meta.task_id).values_list("state", "worker").first()
        if previous and previous[0] == TaskRun.State.RUNNING and _process_gone(previous[1]):
            params["dead_worker"] = previous[1]
            deliveries = _begin_once(params)
    if deliveries is None:
        return Claim.DUPLICATE, 0
    if deliveries > max_deliveries:
        return Claim.POISON, deliveries
    return Claim.RUN, deliveries


# TaskRun rows are bookkeeping: a duplicate check and a delivery count, not the effect.
# Outside a transaction they commit asynchronously (one round trip, no wait for the WAL
# flush: ~0.35 ms less per task here). A PostgreSQL crash can lose the last fraction of a
# second of them, which only means a task may run again; its effect is guarded by its own
# ledger row (email delivery, vendor check, invoice hash, schedule slot), which commits
# durably in the task's own transaction.
_ASYNC_COMMIT = "BEGIN; SET LOCAL synchronous_commit TO off; {sql}; COMMIT"
_FINISH_SQL = "UPDATE jobs_taskrun SET state = %s, finished_at = now(), error = %s WHERE task_id = %s"


def _bookkeeping(sql: str, params: Any, *, returns: bool) -> tuple[Any, ...] | None:
    with connection.cursor() as cursor:
        if connection.in_atomic_block:  # part of the caller's transaction (a retry's outbox row)
            cursor.execute(sql, params)
            return cursor.fetchone() if returns else None
        try:
            cursor.execute(_ASYNC_COMMIT.format(sql=sql), params)
        except DatabaseError:
            with contextlib.suppress(DatabaseError):
                cursor.execute("ROLLBACK")  # don't leave the session inside a failed BEGIN
            raise
        if not returns:
            return None
        cursor.nextset()  # past BEGIN
        cursor.nextset()  # past SET LOCAL: the statement's own result
        return tuple(cursor.fetchone() or ()) or None


def _begin_once(params: dict[str, Any]) -> int | None:
    row = _bookkeeping(_BEGIN_SQL, params, returns=True)
    return int(row[0]) if row else None


def finish(task_id: str, state: TaskRun.State, error: str = "") -> None:
    _bookkeeping(_FINISH_SQL, [str(state), error[:4000], task_id], returns=False)


def heartbeat(task_ids: list[str]) -> int:
    """Refresh the heartbeat of running task ids (called by each worker's main process)."""
    if not task_ids:
        return 0
    return TaskRun.objects.filter(task_id__in=task_ids, state=TaskRun.State.RUNNING).update(
        heartbeat_at=timezone.now()
    )


def mark_lost_if_stale(stale_seconds: float) -> list[str]:
    """Running rows whose heartbeat stopped: their worker died. Mark them lost."""
    cutoff = timezone.now() - timedelta(seconds=stale_seconds)
    with transaction.atomic():
        ids = list(
            TaskRun.objects.select_for_update(skip_locked=True)
            .filter(state=TaskRun.State.RUNNING, heartbeat_at__lt=cutoff)
            .values_list("task_id", flat=True)[:500]
        )
        TaskRun.objects.filter(task_id__in=ids).update(
            state=TaskRun.State.LOST, error="worker lost (no heartbeat)"
        )
    return [str(i) for i in ids]


def format_error(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}"


def format_traceback(exc: BaseException) -> str:
    return "".join(traceback.format_exception(exc))[-8000:]
