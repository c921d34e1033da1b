"""python manage.py retry_table: the README's retry-policy table, from the tasks' own policies.

Every registered project task (not test probes): queue, time limits, attempts, backoff,
task-specific exception classes, and the policy's note on what is retried or permanent.
Every task also retries RetryableError and the transient errors of jobs/policy.py, and
treats PermanentError, ObjectDoesNotExist, ValidationError and anything unexpected as
permanent.
"""

from typing import Any

from django.conf import settings
from django.core.management.base import BaseCommand

from jobs.checks import project_tasks
from jobs.policy import RetryPolicy

HEADER = (
    "| task | queue | soft / hard limit | attempts | backoff (full jitter) | extra classes | retried / permanent |\n"
    "|---|---|---|---|---|---|---|"
)


def _names(classes: tuple[type[BaseException], ...]) -> str:
    return ", ".join(c.__name__ for c in classes)


def retry_table() -> str:
    rows = []
    for name, task in sorted(project_tasks().items()):
        if name.startswith("probe."):
            continue
        policy: RetryPolicy = task.policy
        soft = task.soft_time_limit or settings.CELERY_TASK_SOFT_TIME_LIMIT
        hard = task.time_limit or settings.CELERY_TASK_TIME_LIMIT
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
            str(task.queue),
            f"{soft} / {hard} s",
            str(policy.max_attempts),
            backoff,
            "; ".join(extra) or "-",
            policy.notes.replace("|", "\\|") or "-",
        ]
        rows.append("| " + " | ".join(cells) + " |")
    return "\n".join([HEADER, *rows])


class Command(BaseCommand):
    help = "Print the README's retry-policy table (Markdown) from the registered tasks."

    def handle(self, *args: Any, **options: Any) -> None:
        self.stdout.write(retry_table())
