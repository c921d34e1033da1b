"""Helpers of the django.tasks backend tests: enqueue in a transaction, wait for a result,
a fresh marker, the generic task's metrics counter and the exception that rolls back."""

import uuid
from typing import Any

from django.db import transaction
from django.tasks import TaskResult, TaskResultStatus
from prometheus_client import CollectorRegistry
from prometheus_client.multiprocess import MultiProcessCollector

from jobs.django_tasks.backend import RUNNER_TASK_NAME
from tests.harness import wait_until

READY, RUNNING = TaskResultStatus.READY, TaskResultStatus.RUNNING
FAILED, SUCCESSFUL = TaskResultStatus.FAILED, TaskResultStatus.SUCCESSFUL


def enqueue(django_task: Any, *args: Any, **kwargs: Any) -> TaskResult:
    with transaction.atomic():
        return django_task.enqueue(*args, **kwargs)


def wait_result(result: TaskResult, *, status: str | None = None, timeout: float = 30.0) -> TaskResult:
    """Refresh `result` from the database until it has finished (or reached `status`)."""

    def reached() -> bool:
        result.refresh()
        return result.status == status if status else result.is_finished

    wait_until(reached, timeout=timeout, interval=0.1, message=f"{result.task.name}[{result.id}]")
    return result


def key() -> str:
    return uuid.uuid4().hex


def task_counter(outcome: str) -> float:
    """taskyard_tasks_total of the generic task, summed over every process of this run."""
    registry = CollectorRegistry()
    MultiProcessCollector(registry)
    labels = {"task": RUNNER_TASK_NAME, "outcome": outcome}
    return registry.get_sample_value("taskyard_tasks_total", labels) or 0.0


class Rollback(Exception):
    pass
