"""Per-Task settings of django.tasks Tasks on this backend: retry policy, time limits, Job.

    @policy(RetryPolicy(max_attempts=5), soft_time_limit=14 * 60, time_limit=15 * 60, job_kwarg="job_id")
    @task(queue_name=Queue.DOCUMENTS)
    def export_orders(job_id: str) -> str: ...

Task objects are frozen dataclasses, so what differs per Task is kept in a registry keyed
by module path; the worker looks it up for every message (jobs/django_tasks/runner.py).
"""

import inspect
from collections.abc import Callable
from dataclasses import dataclass
from typing import TypeVar

from django.conf import settings
from django.tasks import Task
from django.tasks.exceptions import InvalidTask
from django.utils.module_loading import import_string

from jobs.policy import RetryPolicy


@dataclass(frozen=True)
class TaskSpec:
    retry: RetryPolicy
    soft_time_limit: float | None = None  # seconds; None: the Celery default (CELERY_TASK_*)
    time_limit: float | None = None
    job_kwarg: str | None = None  # keyword argument holding the jobs.Job id the task reports on


DEFAULT_SPEC = TaskSpec(retry=RetryPolicy())
_specs: dict[str, TaskSpec] = {}
_T = TypeVar("_T")


def policy(
    retry: RetryPolicy | None = None,
    *,
    soft_time_limit: float | None = None,
    time_limit: float | None = None,
    job_kwarg: str | None = None,
) -> Callable[[_T], _T]:
    """Declare how the worker runs a django.tasks Task: retry policy, time limits, Job.

    Put it above (or below) `@task`. `job_kwarg` names the keyword argument that carries a
    jobs.Job id: the Job then goes running / succeeded / dead with the task, as for
    `outbox.enqueue(..., job_id=...)`.
    """

    def register(target: _T) -> _T:
        if isinstance(target, Task):
            path, func = target.module_path, target.func
        elif callable(target):
            path = f"{getattr(target, '__module__', '')}.{getattr(target, '__qualname__', '')}"
            func = target
        else:
            raise TypeError("@policy decorates a django.tasks Task or its function")
        soft = soft_time_limit or settings.CELERY_TASK_SOFT_TIME_LIMIT
        hard = time_limit or settings.CELERY_TASK_TIME_LIMIT
        if not soft < hard:
            raise InvalidTask(
                f"{path}: the soft time limit ({soft}s) must be below the hard one ({hard}s); "
                "billiard only arms the hard limit after the soft one fired"
            )
        if job_kwarg is not None and job_kwarg not in inspect.signature(func).parameters:
            raise InvalidTask(f"{path}: job_kwarg {job_kwarg!r} is not a parameter of the task")
        _specs[path] = TaskSpec(
            retry=retry or RetryPolicy(),
            soft_time_limit=soft_time_limit,
            time_limit=time_limit,
            job_kwarg=job_kwarg,
        )
        return target

    return register


def spec_for(path: str) -> TaskSpec:
    """The declared spec of the Task at `path`, importing its module if it isn't yet."""
    if path in _specs or "." not in path:
        return _specs.get(path, DEFAULT_SPEC)
    try:
        found = import_string(path)  # its @policy registers it
    except Exception:  # noqa: BLE001 - the task's own run (under the base task) raises it again
        return DEFAULT_SPEC
    # `path` may be an alias (old_name = new_task) kept for messages queued before a rename.
    return _specs.get(found.module_path if isinstance(found, Task) else path, DEFAULT_SPEC)


def declared_spec(path: str) -> TaskSpec:
    """The spec declared for `path` (the default when none was), without importing anything."""
    return _specs.get(path, DEFAULT_SPEC)


def declared_specs() -> dict[str, TaskSpec]:
    """Every Task's declared spec (the deployment tests read the time limits)."""
    return dict(_specs)
