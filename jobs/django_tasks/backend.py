"""Django's task API (`django.tasks`) on the transactional outbox and the Celery workers.

    # settings: TASKS = {"default": {"BACKEND": "jobs.django_tasks.backend.OutboxCeleryBackend"}}
    from django.tasks import task
    from jobs.django_tasks.specs import policy

    @policy(RetryPolicy(max_attempts=5), soft_time_limit=14 * 60, time_limit=15 * 60, job_kwarg="job_id")
    @task(queue_name=Queue.DOCUMENTS)
    def export_orders(job_id: str) -> str:
        return exports.order_export_run(job_id=job_id)

    with transaction.atomic():
        job = job_create(owner=user, kind="orders-export")
        result = export_orders.enqueue(job_id=str(job.id))  # an outbox row, in this transaction

Enqueue: `enqueue()` is `jobs.outbox.enqueue()` of one generic Celery task, `jobs.run_django_task`,
with kwargs {"task": <module path>, "args": [...], "kwargs": {...}}, in the caller's transaction
(refused outside one). The row id is the TaskResult id. `queue_name` is a jobs.queues.Queue,
`run_after` is the row's `not_before`, and Django's priority is mapped to the outbox's
(`outbox_priority`).

Worker: `jobs.run_django_task` runs on the project's base task (jobs.base_task.BaseTask), so a
django.tasks Task gets what every task here gets: TaskRun claim (duplicates are no-ops, poison
cap), retry classification and backoff with full jitter through the outbox, DeadLetter rows
replayable from the admin, Job status, metrics, Sentry tags and request ids. What differs
per Task (retry policy, time limits, the Job it reports on) is declared with `@policy(...)`
and kept in a registry keyed by module path: Task objects are frozen dataclasses.

Results: `get_result(id)` reads our own records (OutboxMessage, TaskRun, DeadLetter); there is
no Celery result backend. Each attempt's return value or error is kept in TaskRun.result.

    our records                                              TaskResultStatus
    outbox row waiting (not yet published, or not started)   READY
    the latest attempt's TaskRun is running                  RUNNING
    the latest attempt failed and a retry is scheduled       READY (attempts and errors so far)
      (TaskRun retried), was rescheduled or its worker died
    the latest attempt succeeded                             SUCCESSFUL (return_value)
    dead-lettered (permanent error, retries exhausted,       FAILED (errors: exception class path
      poison, time limit)                                            and traceback of each attempt)
    a dead letter replayed from the admin                    the replay's state (followed, errors kept)
"""

import logging
import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import Any, ParamSpec, TypeVar

from asgiref.sync import sync_to_async
from django.core.checks import CheckMessage, Error
from django.db import transaction
from django.tasks import Task, TaskResult, TaskResultStatus
from django.tasks.backends.base import BaseTaskBackend
from django.tasks.base import TASK_MAX_PRIORITY, TASK_MIN_PRIORITY, TaskError
from django.tasks.exceptions import InvalidTask, TaskResultDoesNotExist
from django.tasks.signals import task_enqueued
from django.utils import timezone
from django.utils.module_loading import import_string

from core.errors import RetryableError
from jobs import outbox
from jobs.django_tasks.specs import declared_spec
from jobs.errors import EnqueueError
from jobs.models import DeadLetter, OutboxMessage, TaskRun
from jobs.queues import Queue

logger = logging.getLogger(__name__)
_P = ParamSpec("_P")
_R = TypeVar("_R")

RUNNER_TASK_NAME = "jobs.run_django_task"
DECLARED_QUEUES = frozenset(q.value for q in Queue)
DEFAULT_MAX_RETURN_VALUE_BYTES = 64 * 1024  # TASKS[...]["OPTIONS"]["MAX_RETURN_VALUE_BYTES"]
OUTBOX_MAX_PRIORITY = 9  # the outbox's (and kombu's) scale: 0 runs first, 9 last
MAX_REPLAYS_FOLLOWED = 20  # get_result() follows at most this many admin replays of one result
PRIORITY_HEADER = "django_priority"  # the Task's own priority, kept on its first outbox row


def outbox_priority(priority: int) -> int:
    """Django's priority (-100..100, larger runs first) as the outbox's (0..9, 0 runs first).

    Linear and rounded down: 100 -> 0, 0 (Django's default) -> 4, -100 -> 9. kombu's Redis
    transport delivers in four bands (0-2, 3-5, 6-8, 9), so Django priorities 34..100 share the
    band of outbox rows enqueued without a priority (kombu's default 0), -33..33 come after them,
    -99..-34 after those, and -100 last.
    """
    span = TASK_MAX_PRIORITY - TASK_MIN_PRIORITY
    return (TASK_MAX_PRIORITY - priority) * OUTBOX_MAX_PRIORITY // span


def load_task(path: str) -> Task[..., Any]:
    """The Task at `path`, if it is a django.tasks Task of this backend."""
    try:
        found = import_string(path)
    except ImportError as exc:
        # Enqueued by newer code than this worker runs (a rolling deploy): worth another try.
        raise RetryableError(f"cannot import django task {path!r}: {exc}") from exc
    if not isinstance(found, Task):
        raise InvalidTask(f"{path} is not a django.tasks Task")
    if not isinstance(found.get_backend(), OutboxCeleryBackend):
        raise InvalidTask(f"{path} uses task backend {found.backend!r}, not {OutboxCeleryBackend.__name__}")
    return found


# --- the backend ------------------------------------------------------------------------
class OutboxCeleryBackend(BaseTaskBackend):
    """django.tasks backend: enqueue = an outbox row; run = jobs.run_django_task on Celery."""

    supports_defer = True  # run_after -> the outbox row's not_before
    supports_async_task = True  # `async def` tasks run with async_to_sync in the worker
    supports_get_result = True  # from OutboxMessage / TaskRun / DeadLetter, in any process
    supports_priority = True  # mapped to the outbox priority (outbox_priority)

    def __init__(self, alias: str, params: dict[str, Any]) -> None:
        super().__init__(alias, params)
        if "QUEUES" not in params:
            self.queues = set(DECLARED_QUEUES)
        self.max_return_value_bytes = self.options.get(
            "MAX_RETURN_VALUE_BYTES", DEFAULT_MAX_RETURN_VALUE_BYTES
        )

    def validate_task(self, task: Task[..., Any]) -> None:
        if task.queue_name not in DECLARED_QUEUES:
            raise InvalidTask(
                f"Queue {task.queue_name!r} is not declared in jobs.queues.Queue "
                f"({', '.join(sorted(DECLARED_QUEUES))})"
            )
        super().validate_task(task)

    def check(self, **kwargs: Any) -> list[CheckMessage]:
        errors: list[CheckMessage] = []
        unknown = sorted(self.queues - DECLARED_QUEUES)
        if unknown:
            errors.append(
                Error(
                    f"TASKS[{self.alias!r}]['QUEUES'] names queues jobs.queues.Queue does not declare: "
                    f"{', '.join(unknown)}",
                    id="taskyard.E010",
                )
            )
        limit = self.max_return_value_bytes
        if not (isinstance(limit, int) and limit > 0):
            errors.append(
                Error(
                    f"TASKS[{self.alias!r}]['OPTIONS']['MAX_RETURN_VALUE_BYTES'] must be a positive "
                    f"integer, not {limit!r}",
                    id="taskyard.E011",
                )
            )
        return errors

    # --- enqueue ------------------------------------------------------------------------
    def enqueue(self, task: Task[_P, _R], args: list[Any], kwargs: dict[str, Any]) -> TaskResult[_P, _R]:
        self.validate_task(task)
        path = task.module_path
        if not transaction.get_connection().in_atomic_block:
            raise InvalidTask(
                f"{path}.enqueue() must run inside transaction.atomic(): the outbox row is the "
                "enqueue and commits or rolls back with the data it refers to (from async code, "
                "run the writes and the enqueue in one function under sync_to_async)"
            )
        args, kwargs = list(args), dict(kwargs)
        spec = declared_spec(path)
        job_id = None
        if spec.job_kwarg:
            job_id = kwargs.get(spec.job_kwarg)
            if not job_id:
                raise InvalidTask(f"{path} reports on a Job: pass {spec.job_kwarg}=<job id> as a keyword")
        try:
            # The task's own arguments first, so an error names them as the caller wrote them.
            outbox.build_message(RUNNER_TASK_NAME, args=args, kwargs=kwargs)
            task_id = outbox.enqueue(
                RUNNER_TASK_NAME,
                kwargs={"task": path, "args": args, "kwargs": kwargs},
                queue=Queue(task.queue_name).value,
                priority=outbox_priority(task.priority),
                not_before=task.run_after,
                job_id=job_id,
                headers={PRIORITY_HEADER: task.priority},
            )
        except EnqueueError as exc:
            raise InvalidTask(f"{path}: {exc}") from exc
        if task_id is None:  # pragma: no cover - only a dedupe_key makes the outbox skip a row
            raise InvalidTask(f"{path}: the outbox did not write the row")
        result: TaskResult[_P, _R] = TaskResult(
            task=task,
            id=str(task_id),
            status=TaskResultStatus.READY,
            enqueued_at=timezone.now(),
            started_at=None,
            finished_at=None,
            last_attempted_at=None,
            args=args,
            kwargs=kwargs,
            backend=self.alias,
            errors=[],
            worker_ids=[],
        )
        # Enqueued means committed: a rolled-back enqueue never happened.
        transaction.on_commit(lambda: task_enqueued.send(type(self), task_result=result), robust=True)
        return result

    async def aenqueue(
        self, task: Task[_P, _R], args: list[Any], kwargs: dict[str, Any]
    ) -> TaskResult[_P, _R]:
        """The enqueue runs in the thread that owns the caller's connection (thread_sensitive).

        So `async_to_sync(task.aenqueue)(...)` inside `transaction.atomic()` joins that
        transaction; from a plain event loop there is no open transaction and it is refused.
        """
        return await sync_to_async(self.enqueue, thread_sensitive=True)(task, args, kwargs)

    # --- results ------------------------------------------------------------------------
    def get_result(self, result_id: str) -> TaskResult[..., Any]:
        try:
            root = uuid.UUID(str(result_id))
        except ValueError:
            raise TaskResultDoesNotExist(result_id) from None
        row = _outbox_row(root)
        if row is None:
            raise TaskResultDoesNotExist(result_id)
        # A later row of a retry chain (a retry's task id) names the first: the result is the chain's.
        chain = uuid.UUID(str(row["headers"].get("root_id") or root))
        if chain != root:
            row = _outbox_row(chain) or row
        payload = row["kwargs"]
        try:
            task = load_task(str(payload.get("task")))
        except (RetryableError, InvalidTask) as exc:
            raise TaskResultDoesNotExist(f"{result_id}: {exc}") from exc
        task = task.using(
            queue_name=row["queue"],
            priority=row["headers"].get(PRIORITY_HEADER),
            run_after=row["not_before"] if row["not_before"] > row["created_at"] else None,
        )
        history = _history(chain)
        result: TaskResult[..., Any] = TaskResult(
            task=task,
            id=str(root),
            status=history.status,
            enqueued_at=row["created_at"],
            started_at=history.runs[0].started_at if history.runs else None,
            finished_at=history.finished_at,
            last_attempted_at=history.runs[-1].started_at if history.runs else None,
            args=payload.get("args", []),
            kwargs=payload.get("kwargs", {}),
            backend=self.alias,
            errors=history.errors,
            worker_ids=[run.worker for run in history.runs if run.state != TaskRun.State.RESCHEDULED],
        )
        object.__setattr__(result, "_return_value", history.return_value)  # as Django's backends do
        return result

    async def aget_result(self, result_id: str) -> TaskResult[..., Any]:
        return await sync_to_async(self.get_result, thread_sensitive=True)(result_id)


def _outbox_row(task_id: uuid.UUID) -> dict[str, Any] | None:
    found = (
        OutboxMessage.objects.filter(pk=task_id, task_name=RUNNER_TASK_NAME)
        .values("kwargs", "queue", "headers", "created_at", "not_before")
        .first()
    )
    return dict(found) if found else None


@dataclass
class _History:
    runs: list[TaskRun]
    status: TaskResultStatus
    errors: list[TaskError]
    return_value: Any = None
    finished_at: datetime | None = None


_STATUS = {
    TaskRun.State.RUNNING: TaskResultStatus.RUNNING,
    TaskRun.State.SUCCEEDED: TaskResultStatus.SUCCESSFUL,
    TaskRun.State.RETRIED: TaskResultStatus.READY,  # the next attempt waits in the outbox
    TaskRun.State.RESCHEDULED: TaskResultStatus.READY,
    TaskRun.State.LOST: TaskResultStatus.READY,  # the reaper re-publishes it
    TaskRun.State.DEAD: TaskResultStatus.FAILED,
    TaskRun.State.CANCELLED: TaskResultStatus.FAILED,  # its Job was cancelled (django.tasks has no such status)
}


def _history(root: uuid.UUID) -> _History:
    """Every run of the retry chain that started at `root`, and of the replays that followed it."""
    runs: list[TaskRun] = []
    dead_letters: dict[str, DeadLetter] = {}
    chain: uuid.UUID | None = root
    for _ in range(MAX_REPLAYS_FOLLOWED + 1):
        segment = list(TaskRun.objects.filter(root_id=chain).order_by("started_at"))
        runs += segment
        if not segment or segment[-1].state != TaskRun.State.DEAD:
            break
        dead = DeadLetter.objects.filter(task_id=segment[-1].task_id).first()
        if dead is None:
            break
        dead_letters[str(dead.task_id)] = dead
        if dead.status != DeadLetter.Status.REPLAYED or dead.replay_task_id is None:
            break
        chain = dead.replay_task_id
        segment = []
    latest = segment[-1] if segment else None
    status = _STATUS[TaskRun.State(latest.state)] if latest else TaskResultStatus.READY
    history = _History(runs=runs, status=status, errors=[])
    for run in runs:
        outcome = run.result or {}
        if "exception_class" in outcome:
            history.errors.append(
                TaskError(exception_class_path=outcome["exception_class"], traceback=outcome["traceback"])
            )
        elif (dead := dead_letters.get(str(run.task_id))) is not None:
            history.errors.append(
                TaskError(exception_class_path=dead.exception_class, traceback=dead.traceback)
            )
        elif run.error and run.state in (TaskRun.State.RETRIED, TaskRun.State.DEAD):
            history.errors.append(TaskError(exception_class_path="builtins.Exception", traceback=run.error))
    if latest is not None and status in (TaskResultStatus.SUCCESSFUL, TaskResultStatus.FAILED):
        history.finished_at = latest.finished_at
    if latest is not None and status == TaskResultStatus.SUCCESSFUL:
        history.return_value = (latest.result or {}).get("return_value")
    return history
