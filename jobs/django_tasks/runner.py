"""The worker side of django.tasks: one Celery task, `jobs.run_django_task`, runs every Task.

It runs on the project's base task, so a django.tasks Task gets the TaskRun claim, retry
classification and backoff, dead letters, Job status and metrics like any other task; its
retry policy and time limits come from its @policy (jobs/django_tasks/specs.py).
"""

import json
import logging
from contextvars import ContextVar
from dataclasses import replace
from typing import Any, NoReturn

import sentry_sdk
from celery import shared_task
from celery import signals as celery_signals
from django.db import DatabaseError
from django.tasks import Task, TaskContext, TaskResult, TaskResultStatus
from django.tasks.exceptions import InvalidTask, TaskResultDoesNotExist
from django.tasks.signals import task_finished, task_started
from django.utils import timezone
from django.utils.json import normalize_json

from core.errors import PermanentError, RetryableError
from core.redact import redact
from jobs.base_task import BaseTask
from jobs.dead_letters import exception_class_name
from jobs.django_tasks.backend import DEFAULT_MAX_RETURN_VALUE_BYTES, RUNNER_TASK_NAME, load_task
from jobs.django_tasks.specs import DEFAULT_SPEC, TaskSpec, spec_for
from jobs.execution import Fence, TaskMeta, format_traceback, process_name
from jobs.models import TaskRun
from jobs.policy import RetryPolicy
from jobs.queues import Queue

logger = logging.getLogger(__name__)

_current_spec: ContextVar[TaskSpec] = ContextVar("django_task_spec", default=DEFAULT_SPEC)
_failing_root: ContextVar[str] = ContextVar("django_task_failing_root", default="")


class _PolicyOfTheRunningTask:
    """`policy` of the runner: the retry policy the running django.tasks Task declared."""

    def __get__(self, instance: object, owner: type | None = None) -> RetryPolicy:
        return _current_spec.get().retry


class DjangoTaskRunner(BaseTask):
    """The base task around `jobs.run_django_task`, one Celery task for every django.tasks Task."""

    # The base task reads self.policy for the poison cap, classification and backoff.
    policy = _PolicyOfTheRunningTask()

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        path = str(kwargs.get("task", ""))
        token = _current_spec.set(spec_for(path))
        try:
            sentry_sdk.set_tag("django_task", path)
            return super().__call__(*args, **kwargs)
        finally:
            _current_spec.reset(token)

    def on_failure(self, exc: Exception, task_id: str, args: Any, kwargs: Any, einfo: Any) -> None:
        # A child killed by its hard time limit is recorded here, in the worker's main process.
        token = _current_spec.set(spec_for(str((kwargs or {}).get("task", ""))))
        try:
            super().on_failure(exc, task_id, args, kwargs, einfo)
        finally:
            _current_spec.reset(token)

    def _record_failure(
        self,
        meta: TaskMeta,
        exc: BaseException,
        args: list[Any],
        kwargs: dict[str, Any],
        fence: Fence | None,
    ) -> NoReturn:
        outcome = {"exception_class": exception_class_name(exc), "traceback": redact(format_traceback(exc))}
        try:
            TaskRun.objects.filter(task_id=meta.task_id).update(result=outcome)
        except DatabaseError:
            logger.warning("%s[%s]: could not store the error for get_result()", self.name, meta.task_id)
        token = _failing_root.set(meta.root_id)
        try:
            super()._record_failure(meta, exc, args, kwargs, fence)
        finally:
            _failing_root.reset(token)

    def on_dead_letter(self, args: list[Any], kwargs: dict[str, Any], exc: BaseException) -> None:
        if root := _failing_root.get():
            _send_finished(str(kwargs.get("task", "")), root)

    def run_task(self, path: str, args: list[Any], kwargs: dict[str, Any]) -> Any:
        task = load_task(path)
        backend = task.get_backend()
        current = self._current_result(task, args, kwargs)
        task_started.send(type(backend), task_result=current)
        if task.takes_context:
            value = task.call(TaskContext(task_result=current), *args, **kwargs)
        else:
            value = task.call(*args, **kwargs)
        value = normalize_json(value)
        size = len(json.dumps(value, allow_nan=False).encode())
        limit = getattr(backend, "max_return_value_bytes", DEFAULT_MAX_RETURN_VALUE_BYTES)
        if size > limit:
            raise PermanentError(
                f"{path} returned {size} bytes of JSON; results are capped at {limit} "
                "(return an id or a file name, not the data)"
            )
        TaskRun.objects.filter(task_id=str(self.request.id)).update(result={"return_value": value})
        finished = replace(current, status=TaskResultStatus.SUCCESSFUL, finished_at=timezone.now())
        object.__setattr__(finished, "_return_value", value)
        task_finished.send(type(backend), task_result=finished)
        return value

    def _current_result(
        self, task: Task[..., Any], args: list[Any], kwargs: dict[str, Any]
    ) -> TaskResult[..., Any]:
        """This attempt as a TaskResult: RUNNING, one worker id per attempt so far (the context's)."""
        request = self.request
        try:
            return task.get_backend().get_result(str(getattr(request, "root_id", None) or request.id))
        except TaskResultDoesNotExist:  # a message sent around the outbox: this run is all we know
            now = timezone.now()
            return TaskResult(
                task=task,
                id=str(request.id),
                status=TaskResultStatus.RUNNING,
                enqueued_at=None,
                started_at=now,
                finished_at=None,
                last_attempted_at=now,
                args=args,
                kwargs=kwargs,
                backend=task.backend,
                errors=[],
                worker_ids=[process_name()],
            )


def _send_finished(path: str, root: str) -> None:
    """Django's task_finished signal for a task that failed for good (best effort)."""
    try:
        task = load_task(path)
        result = task.get_backend().get_result(root)
    except (RetryableError, InvalidTask, TaskResultDoesNotExist, DatabaseError):
        return
    task_finished.send(type(task.get_backend()), task_result=result)


@shared_task(base=DjangoTaskRunner, bind=True, name=RUNNER_TASK_NAME, queue=Queue.DEFAULT)
def run_django_task(self: DjangoTaskRunner, task: str, args: list[Any], kwargs: dict[str, Any]) -> Any:
    """Runs the django.tasks Task at module path `task` (enqueued by OutboxCeleryBackend)."""
    return self.run_task(task, args, kwargs)


@celery_signals.task_received.connect
def _apply_time_limits(request: Any = None, **_: Any) -> None:
    """Per-Task time limits: set on the request in the worker's main process, before it runs.

    Every django.tasks Task shares one Celery task, so its limits come from its @policy; the
    pool arms them from the request. Retries and replays get them too (nothing rides in headers).
    """
    if getattr(request, "name", None) != RUNNER_TASK_NAME:
        return
    spec = spec_for(str((request.kwargs or {}).get("task", "")))
    if spec.time_limit or spec.soft_time_limit:
        request.time_limits = (spec.time_limit, spec.soft_time_limit)
