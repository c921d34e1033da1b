"""TaskRun bookkeeping: one row per task id, claimed when a worker starts it, fenced.

`begin` is one SQL statement: it creates the row (epoch 1), or takes it over when the
previous run is known dead (state lost, stale heartbeat, or its process is gone), counting
the delivery and incrementing the epoch. It refuses a task id that already reached a terminal
state (a duplicate delivery: its effect already happened) or that a live run holds. The
epoch is the run's owner token (`Fence`): every later write of the run is conditional on it.
"""

import logging
import os
import socket
import traceback
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass
from datetime import timedelta
from enum import StrEnum
from typing import Any

from django.conf import settings
from django.db import connection, transaction
from django.utils import timezone

from jobs.models import TaskRun

logger = logging.getLogger(__name__)

# Message header carrying the request id (core/request_id.py). Not "correlation_id": Celery's
# request context already has an attribute of that name (the AMQP correlation id = the task id).
REQUEST_ID_HEADER = "request_id"
# Message header naming the jobs.FlowStep a task runs as (jobs/flows/); kept across retries.
FLOW_STEP_HEADER = "flow_step"


_node = ""  # the Celery node name (emails@host), set in a worker before its pool forks


def set_node(name: str) -> None:
    global _node
    _node = name


def process_name(pid: int | None = None) -> str:
    """<node>:<pid> of this process: a pool child in TaskRun.worker, a worker's main process in
    its Redis records (jobs/worker.py). One name, so the reaper can tell who holds what; outside
    a worker (a shell, a test) the node is the host name."""
    return f"{_node or socket.gethostname()}:{pid or os.getpid()}"


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
    DUPLICATE = "duplicate"  # finished before: its effect happened, do nothing
    RUNNING_ELSEWHERE = "running_elsewhere"  # a live run holds it: do nothing here (see begin)
    POISON = "poison"  # delivered too often: dead-letter without running


class Superseded(Exception):
    """This run lost its task id to a takeover (a newer epoch): its writes are refused."""


@dataclass(frozen=True)
class Fence:
    """The owner token of a run: its task id and epoch. A takeover increments the epoch.

    Every write a run makes after it started is conditional on still holding it: `finish`,
    retries and dead letters (jobs/base_task.py), outbox rows written inside the task
    (jobs/outbox.py), and every effect-ledger claim (emails, vendor checks, schedule slots,
    invoices). A run that stalled past the stale threshold and wakes up after the reaper
    re-published its task finds its writes refused (`Superseded`) instead of applied.
    """

    task_id: str
    epoch: int
    predecessor_gone: bool = False  # the run taken over is known dead (its process is gone)

    @property
    def token(self) -> str:
        """What ledgers store as their claimant: `<task id>:<epoch>`."""
        return f"{self.task_id}:{self.epoch}"

    @property
    def predecessor_token(self) -> str:
        """The previous run's token, when that run is known dead (its claims may be taken at once)."""
        return f"{self.task_id}:{self.epoch - 1}" if self.predecessor_gone else ""

    def holds(self) -> bool:
        """Right now, without a lock: does this run still hold its task id? (Checked just
        before an effect that no transaction can fence, such as an SMTP send.)"""
        with connection.cursor() as cursor:
            cursor.execute(HOLD_SQL.removesuffix(" FOR SHARE"), [self.task_id, self.epoch])
            return cursor.fetchone() is not None

    def hold(self) -> None:
        """Inside a transaction: lock this run's row for share, or raise Superseded.

        FOR SHARE makes a concurrent takeover (an UPDATE of the row) wait until the caller's
        transaction commits, so a ledger claim and a takeover never interleave.
        """
        with connection.cursor() as cursor:
            cursor.execute(HOLD_SQL, [self.task_id, self.epoch])
            if cursor.fetchone() is None:
                raise Superseded(f"task {self.task_id} epoch {self.epoch} was taken over")


# The run still holds its task id: the condition a fenced statement checks, locking the row for
# share so a takeover waits until the statement's transaction ends. Its epoch is current, and the
# reaper has not declared it lost; a state the run itself just wrote (dead, retried) in the same
# transaction still counts as held, so a dead letter and its alert's outbox row commit together.
_OWNER_SQL = (
    "SELECT 1 FROM jobs_taskrun WHERE task_id = {task} AND epoch = {epoch} AND state <> 'lost' FOR SHARE"
)
HOLD_SQL = _OWNER_SQL.format(task="%s", epoch="%s")


def owner_cte(fence: "Fence | None") -> tuple[str, dict[str, Any]]:
    """For a one-statement ledger claim: `WITH owner AS (<sql>) ... WHERE EXISTS (SELECT 1 FROM
    owner)`, with named parameters. Without a fence (a call outside a task) the owner always is."""
    if fence is None:
        return "SELECT 1", {}
    sql = _OWNER_SQL.format(task="%(fence_task_id)s", epoch="%(fence_epoch)s")
    return sql, {"fence_task_id": fence.task_id, "fence_epoch": fence.epoch}


_current: ContextVar[Fence | None] = ContextVar("task_fence", default=None)


def current_fence() -> Fence | None:
    """The fence of the task running in this context (None outside a task: shell, tests)."""
    return _current.get()


def fence_of(task_id: str) -> Fence | None:
    """The fence of the task id's current run, for the worker's main process, which records for
    a child it knows is over (killed by its hard time limit) without having run it itself."""
    epoch = TaskRun.objects.filter(task_id=task_id).values_list("epoch", flat=True).first()
    return Fence(task_id, epoch) if epoch is not None else None


def hold_current() -> None:
    """Inside a transaction of a running task: hold its fence (no-op outside a task). Call it
    first in a ledger's claim or mark, so a run that was taken over writes nothing."""
    if (fence := current_fence()) is not None:
        fence.hold()


@contextmanager
def fenced(fence: Fence) -> Iterator[Fence]:
    token = _current.set(fence)
    try:
        yield fence
    finally:
        _current.reset(token)


_BEGIN_SQL = """
WITH previous AS (SELECT worker FROM jobs_taskrun WHERE task_id = %(task_id)s)
INSERT INTO jobs_taskrun
    (task_id, task_name, queue, state, deliveries, epoch, attempt, root_id, worker, started_at,
     heartbeat_at, error)
VALUES (%(task_id)s, %(task_name)s, %(queue)s, 'running', 1, 1, %(attempt)s, %(root_id)s, %(worker)s,
        now(), now(), '')
ON CONFLICT (task_id) DO UPDATE SET
    state = 'running', deliveries = jobs_taskrun.deliveries + 1, epoch = jobs_taskrun.epoch + 1,
    worker = EXCLUDED.worker, started_at = now(), heartbeat_at = now(), finished_at = NULL
WHERE jobs_taskrun.state = 'lost'
   OR (jobs_taskrun.state = 'running'
       AND (jobs_taskrun.heartbeat_at < now() - make_interval(secs => %(stale)s)
            OR jobs_taskrun.worker = %(dead_worker)s))
RETURNING deliveries, epoch, (SELECT worker FROM previous)
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


@dataclass(frozen=True)
class Begun:
    claim: Claim
    deliveries: int = 0
    fence: Fence | None = None


def begin(meta: TaskMeta, *, max_deliveries: int) -> Begun:
    """Claim the task id for this process: a new row (epoch 1), or a takeover (epoch + 1) of a
    run that is lost, stale or whose process is gone.

    Refused, it says why: DUPLICATE when the task id finished (its effect happened), or
    RUNNING_ELSEWHERE when a live run holds it. Neither runs the task here. The running copy
    either finishes, or dies and is re-published by the reaper from its outbox row, so the
    message acked here is not lost (the base task makes sure that row exists).
    """
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
    row = _bookkeeping(_BEGIN_SQL, params)
    if row is None:
        # Refused: finished, or running. A process on this host that died (a child killed
        # mid-task; its message was requeued at once) may be taken over without waiting.
        previous = TaskRun.objects.filter(task_id=meta.task_id).values_list("state", "worker").first()
        if previous is None or previous[0] != TaskRun.State.RUNNING:
            return Begun(Claim.DUPLICATE)
        if not _process_gone(previous[1]):
            return Begun(Claim.RUNNING_ELSEWHERE)
        params["dead_worker"] = previous[1]
        row = _bookkeeping(_BEGIN_SQL, params)
        if row is None:  # someone else took it over meanwhile
            return Begun(Claim.RUNNING_ELSEWHERE)
    deliveries, epoch, predecessor = int(row[0]), int(row[1]), row[2]
    fence = Fence(meta.task_id, epoch, predecessor_gone=bool(predecessor) and _process_gone(predecessor))
    if deliveries > max_deliveries:
        return Begun(Claim.POISON, deliveries, fence)
    return Begun(Claim.RUN, deliveries, fence)


# TaskRun rows are bookkeeping: a duplicate check, a delivery count and the epoch, not the
# effect. Outside a transaction they commit asynchronously (no wait for the WAL flush: ~0.35 ms
# less per task here). A PostgreSQL crash can lose the last fraction of a second of them, which
# only means a task may run again; a lost epoch increment leaves the newer run holding an epoch
# the database no longer has, so its fenced writes are refused, never doubled. Effects are
# guarded by their own ledger rows, which commit durably in the task's own transaction.
# How: the statement runs on its own (autocommit), so it is its own transaction, and a
# transaction-local set_config in its RETURNING list turns synchronous_commit off for that
# commit only (evaluated before the commit, and only when the statement wrote its row). One
# statement with one result, rather than BEGIN; SET LOCAL; ...; COMMIT and four results.
_ASYNC_COMMIT = ", set_config('synchronous_commit', 'off', true)"
_FINISH_SQL = """
UPDATE jobs_taskrun SET state = %s, finished_at = now(), error = %s
WHERE task_id = %s AND epoch = %s AND state = 'running'
RETURNING 1
"""


def _bookkeeping(sql: str, params: Any) -> tuple[Any, ...] | None:
    """Run a TaskRun statement ending in RETURNING; its row, or None when it matched none."""
    # Inside the caller's transaction (a retry's outbox row) it commits with it, durably.
    statement = sql if connection.in_atomic_block else sql.rstrip() + _ASYNC_COMMIT
    with connection.cursor() as cursor:
        cursor.execute(statement, params)
        row = cursor.fetchone()
    return tuple(row) if row is not None else None


def finish(fence: Fence, state: TaskRun.State, error: str = "") -> bool:
    """Record how the run ended, if it still holds the task id. False: superseded, not applied."""
    applied = _bookkeeping(_FINISH_SQL, [str(state), error[:4000], fence.task_id, fence.epoch])
    if applied is None:
        logger.warning("task %s epoch %d: superseded; its %s was refused", fence.task_id, fence.epoch, state)
        return False
    return True


_HEARTBEAT_SQL = """
UPDATE jobs_taskrun SET heartbeat_at = now()
FROM (SELECT unnest(%s::uuid[]) AS task_id, unnest(%s::text[]) AS worker) AS held
WHERE jobs_taskrun.task_id = held.task_id AND jobs_taskrun.worker = held.worker
  AND jobs_taskrun.state = 'running'
"""


def heartbeat(runs: list[tuple[str, str]]) -> int:
    """Refresh the heartbeat of the runs this worker's pool children hold: (task id, child's
    process name). A run taken over elsewhere has another worker on its row and is not touched."""
    if not runs:
        return 0
    with connection.cursor() as cursor:
        cursor.execute(_HEARTBEAT_SQL, [[task_id for task_id, _ in runs], [worker for _, worker in runs]])
        return int(cursor.rowcount)


def mark_lost_if_stale(stale_seconds: float, *, held: set[str]) -> list[str]:
    """Running rows whose heartbeat stopped: their worker died or stalled. Mark them lost.

    Rows a live worker reports holding (its last Redis snapshot) are left alone: their
    heartbeat is late, not their worker gone.
    """
    cutoff = timezone.now() - timedelta(seconds=stale_seconds)
    with transaction.atomic():
        ids = [
            str(task_id)
            for task_id in TaskRun.objects.select_for_update(skip_locked=True)
            .filter(state=TaskRun.State.RUNNING, heartbeat_at__lt=cutoff)
            .values_list("task_id", flat=True)[:500]
            if str(task_id) not in held
        ]
        TaskRun.objects.filter(task_id__in=ids).update(
            state=TaskRun.State.LOST, error="worker lost (no heartbeat)"
        )
    return ids


def format_error(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}"


def format_traceback(exc: BaseException) -> str:
    return "".join(traceback.format_exception(exc))[-8000:]
