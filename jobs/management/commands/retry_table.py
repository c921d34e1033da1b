"""python manage.py retry_table: the retry-policy table of docs/failures.md, from the tasks' own policies.

Every registered task and every django.tasks Task: queue, time limits, attempts, backoff,
task-specific exception classes, and the policy's note on what is retried or permanent.
Every task also retries RetryableError and the transient errors of jobs/policy.py, and
treats PermanentError, ObjectDoesNotExist, ValidationError and anything unexpected as
permanent.
"""

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from django.conf import settings
from django.core.management.base import BaseCommand
from django.utils.module_loading import import_string

from jobs.django_tasks.backend import RUNNER_TASK_NAME
from jobs.django_tasks.specs import declared_specs
from jobs.policy import RetryPolicy
from jobs.system_checks import project_tasks

HEADER = (
    "| task | queue | soft / hard limit | attempts | backoff (full jitter) | extra classes | retried / permanent |\n"
    "|---|---|---|---|---|---|---|"
)


def _names(classes: tuple[type[BaseException], ...]) -> str:
    return ", ".join(c.__name__ for c in classes)


@dataclass(frozen=True)
class Row:
    name: str
    queue: str
    policy: RetryPolicy
    soft: float
    hard: float


def documented_tasks() -> list[Row]:
    """Every Celery task (but Celery's own) and every django.tasks Task with a declared policy."""
    rows = [
        Row(
            name,
            str(task.queue),
            task.policy,
            task.soft_time_limit or settings.CELERY_TASK_SOFT_TIME_LIMIT,
            task.time_limit or settings.CELERY_TASK_TIME_LIMIT,
        )
        for name, task in project_tasks().items()
        if name != RUNNER_TASK_NAME  # the carrier of the django.tasks Tasks listed below
    ]
    for path, spec in declared_specs().items():
        queue = getattr(import_string(path), "queue_name", "")
        rows.append(
            Row(
                path,
                str(queue),
                spec.retry,
                spec.soft_time_limit or settings.CELERY_TASK_SOFT_TIME_LIMIT,
                spec.time_limit or settings.CELERY_TASK_TIME_LIMIT,
            )
        )
    return sorted(rows, key=lambda row: row.name)


def retry_table(rows: Iterable[Row] | None = None) -> str:
    lines = []
    for row in documented_tasks() if rows is None else rows:
        name, policy, soft, hard = row.name, row.policy, row.soft, row.hard
        default = RetryPolicy()
        extra = [f"retry: {_names(policy.retry_on)}"] if policy.retry_on else []
        if policy.permanent_on != default.permanent_on:
            extra.append(f"permanent: {_names(policy.permanent_on)}")
        backoff = (
            "-"
            if policy.max_attempts == 1
            else f"{policy.backoff_base:g} s doubling, cap {policy.backoff_cap:g} s"
        )
        cells = [
            f"`{name}`",
            row.queue,
            f"{soft:g} / {hard:g} s",
            str(policy.max_attempts),
            backoff,
            "; ".join(extra) or "-",
            policy.notes.replace("|", "\\|") or "-",
        ]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join([HEADER, *lines])


class Command(BaseCommand):
    help = "Print the retry-policy table of docs/failures.md (Markdown) from the registered tasks."

    def handle(self, *args: Any, **options: Any) -> None:
        self.stdout.write(retry_table())
