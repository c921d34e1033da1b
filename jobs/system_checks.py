"""System checks for tasks (run by `manage.py check`, `migrate` and at worker start).

Every project task must use the base task, live on a declared queue and have a soft
time limit below its hard one: billiard only arms the hard limit after the soft one
fires, so a per-task hard limit under the global soft limit is silently ignored.
"""

from typing import Any

from django.core.checks import CheckMessage, Error, register
from django.utils.module_loading import autodiscover_modules

from jobs.app import celery_app
from jobs.queues import Queue

CELERY_BUILTINS = "celery."  # celery.chord_unlock, celery.backend_cleanup, ...: not ours


def project_tasks() -> dict[str, Any]:
    """Every registered task but Celery's own, with every installed app's tasks.py imported."""

    # Import the modules directly: Celery's import_default_modules() would run the
    # system checks again through its Django fixup, and recurse.
    autodiscover_modules("tasks")
    return {name: task for name, task in celery_app().tasks.items() if not name.startswith(CELERY_BUILTINS)}


@register("taskyard")
def check_tasks(app_configs: Any = None, **kwargs: Any) -> list[CheckMessage]:
    from jobs.base_task import BaseTask  # late: imports models

    app = celery_app()
    errors: list[CheckMessage] = []
    queues = {q.value for q in Queue}
    for name, task in project_tasks().items():
        if not isinstance(task, BaseTask):
            errors.append(Error(f"task {name} does not use jobs.base_task.BaseTask", id="taskyard.E001"))
        if getattr(task, "queue", None) not in queues:
            errors.append(Error(f"task {name} has no declared queue (jobs.queues.Queue)", id="taskyard.E002"))
        soft = task.soft_time_limit or app.conf.task_soft_time_limit
        hard = task.time_limit or app.conf.task_time_limit
        if not (soft and hard and soft < hard):
            errors.append(
                Error(
                    f"task {name}: soft time limit ({soft}) must be below the hard one ({hard})",
                    id="taskyard.E003",
                )
            )
    return errors
