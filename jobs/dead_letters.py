"""Dead letters: record, replay, resolve, discard. The admin calls these services."""

import hashlib
import logging
from datetime import datetime
from typing import Any

from django.contrib.auth.models import User
from django.db import transaction
from django.db.models import Count, Max, Min, QuerySet
from django.utils import timezone

from core.redact import normalise, redact
from jobs import outbox, tracing
from jobs.errors import PoisonMessageError
from jobs.execution import (
    FLOW_STEP_HEADER,
    REQUEST_ID_HEADER,
    Fence,
    Superseded,
    TaskMeta,
    format_traceback,
    meta_from_headers,
)
from jobs.flows.revive import step_reopen
from jobs.models import DeadLetter, Job, TaskRun
from jobs.task_metrics import task_event

logger = logging.getLogger(__name__)

ALERT_TASK = "jobs.alert_dead_letter"

# A dead-lettered job as its owner sees it (GET /api/jobs/<id>): code and message by the dead
# letter's reason. Exception text can carry host names, SQL or personal data: it stays in the
# DeadLetter row, the logs and Sentry.
JOB_FAILURES: dict[str, tuple[str, str]] = {
    "permanent": ("job-failed", "The job failed and retrying cannot help. We have been alerted."),
    "exhausted": ("job-retries-exhausted", "The job kept failing and was stopped. We have been alerted."),
    "poison": (
        "job-crashed",
        "The job stopped its worker repeatedly and was set aside. We have been alerted.",
    ),
    "timeout": ("job-timed-out", "The job ran past its time limit and was stopped. We have been alerted."),
}


def fingerprint(task_name: str, exc_class: str, message: str) -> str:
    return hashlib.sha256(f"{task_name}|{exc_class}|{normalise(message)}".encode()).hexdigest()[:16]


def exception_class_name(exc: BaseException) -> str:
    cls = type(exc)
    return f"{cls.__module__}.{cls.__qualname__}"


def dead_letter_record(
    *,
    meta: TaskMeta,
    exc: BaseException,
    reason: str,
    args: list[Any],
    kwargs: dict[str, Any],
    alert: bool = True,
    fence: Fence | None = None,
) -> DeadLetter:
    """Write the dead letter (before the message is acked) and close the task's records.

    One transaction: the DeadLetter row (unique per task id, so a worker that dies
    after this commit and gets the message again cannot write a second one), the
    TaskRun and Job states, and the alert's outbox row.
    """
    now = timezone.now()
    message = redact(str(exc))[:2000]
    exc_class = exception_class_name(exc)
    first_failed = datetime.fromisoformat(meta.first_failed_at) if meta.first_failed_at else now
    with transaction.atomic():
        dead_letter, created = DeadLetter.objects.get_or_create(
            task_id=meta.task_id,
            defaults={
                "root_id": meta.root_id,
                "task_name": meta.task_name,
                "queue": meta.queue,
                "args": list(args),
                "kwargs": dict(kwargs),
                "headers": {
                    k: v
                    for k, v in (
                        (REQUEST_ID_HEADER, meta.request_id),
                        ("job_id", meta.job_id),
                        (FLOW_STEP_HEADER, meta.flow_step),
                    )
                    if v
                }
                | tracing.current_headers(),  # the failed attempt's span: a replay links to it
                "exception_class": exc_class,
                "message": message,
                "traceback": redact(format_traceback(exc)),
                "attempts": meta.attempt,
                "reason": reason,
                "first_failed_at": first_failed,
                "last_failed_at": now,
                "fingerprint": fingerprint(meta.task_name, exc_class, message),
            },
        )
        runs = TaskRun.objects.filter(task_id=meta.task_id)
        if fence is not None:  # only while the run still holds its task id: else nothing is written
            runs = runs.filter(epoch=fence.epoch, state=TaskRun.State.RUNNING)
        ended = runs.update(state=TaskRun.State.DEAD, finished_at=now, error=f"{exc_class}: {message}"[:4000])
        if fence is not None and not ended:
            raise Superseded(f"task {meta.task_id} was taken over before its dead letter was written")
        if meta.job_id:
            code, text = JOB_FAILURES.get(reason, JOB_FAILURES["permanent"])
            Job.objects.filter(pk=meta.job_id).exclude(state=Job.State.SUCCEEDED).update(
                state=Job.State.DEAD, error_code=code, error=text, finished_at=now
            )
        if created and alert:
            outbox.enqueue(ALERT_TASK, kwargs={"dead_letter_id": dead_letter.pk})
    if created:
        task_event(meta.task_name, "dead_lettered")
        logger.error(
            "dead letter %s: %s[%s] %s after %d attempt(s) (%s)",
            dead_letter.pk,
            meta.task_name,
            meta.task_id,
            exc_class,
            meta.attempt,
            reason,
        )
    return dead_letter


def _act(dead_letter: DeadLetter, status: str, actor: User | None, note: str) -> None:
    dead_letter.status = status
    dead_letter.acted_by = actor
    dead_letter.acted_at = timezone.now()
    if note:
        dead_letter.note = note
    dead_letter.save(update_fields=["status", "acted_by", "acted_at", "note", "replay_task_id"])


def dead_letter_replay(*, dead_letter_id: int, actor: User | None, note: str = "") -> str | None:
    """Run the task again through the outbox, with a new task id and a fresh attempt budget.

    Only an open dead letter can be replayed: the row lock and the status check make a
    second click (or a concurrent bulk replay) a no-op. Returns the new task id or None.
    """
    with transaction.atomic():
        dead_letter = DeadLetter.objects.select_for_update().get(pk=dead_letter_id)
        if dead_letter.status != DeadLetter.Status.OPEN:
            return None
        headers = {
            k: v
            for k, v in dead_letter.headers.items()
            if k in {REQUEST_ID_HEADER, "job_id", FLOW_STEP_HEADER}
        }
        headers["replay_of"] = dead_letter.pk
        headers.update(tracing.replay_headers(dead_letter.headers))
        # A flow step rejoins its flow (reviving the flows its failure failed), or runs on its own.
        if FLOW_STEP_HEADER in headers and not step_reopen(step_id=int(headers[FLOW_STEP_HEADER])):
            del headers[FLOW_STEP_HEADER]
        task_id = outbox.enqueue(
            dead_letter.task_name,
            args=dead_letter.args,
            kwargs=dead_letter.kwargs,
            queue=dead_letter.queue,
            headers=headers,
        )
        if job_id := headers.get("job_id"):
            Job.objects.filter(pk=job_id).update(
                state=Job.State.QUEUED, error_code="", error="", finished_at=None
            )
        dead_letter.replay_task_id = task_id
        _act(dead_letter, DeadLetter.Status.REPLAYED, actor, note)
    logger.info("dead letter %s replayed as %s", dead_letter_id, task_id)
    return str(task_id)


def dead_letter_close(*, dead_letter_id: int, actor: User | None, status: str, note: str) -> bool:
    """Resolve (fixed by hand) or discard (not worth doing) an open dead letter."""
    if status not in (DeadLetter.Status.RESOLVED, DeadLetter.Status.DISCARDED):
        raise ValueError(f"cannot close a dead letter as {status!r}")
    with transaction.atomic():
        dead_letter = DeadLetter.objects.select_for_update().get(pk=dead_letter_id)
        if dead_letter.status != DeadLetter.Status.OPEN:
            return False
        _act(dead_letter, status, actor, note)
    return True


def open_groups() -> QuerySet[Any, Any]:
    """Open dead letters grouped by fingerprint, biggest group first."""
    return (
        DeadLetter.objects.filter(status=DeadLetter.Status.OPEN)
        .values("fingerprint", "task_name", "exception_class")
        .annotate(count=Count("id"), first=Min("created_at"), last=Max("created_at"), sample_id=Min("id"))
        .order_by("-count", "-last")
    )


def broker_dead_letter_record(*, headers: dict[str, Any], body: Any) -> DeadLetter | None:
    """A message RabbitMQ dead-lettered after its delivery limit: record it like our own.

    Celery's protocol 2 carries the task name and id in the headers and [args, kwargs, embed]
    in the body; RabbitMQ's x-death header says which queue and how often it was delivered.
    """
    task_id, task_name = headers.get("id"), headers.get("task")
    if not task_id or not task_name:
        logger.error("broker dead letter without a task id or name; dropped: %s", sorted(headers))
        return None
    deaths = headers.get("x-death") or [{}]
    queue = str(deaths[0].get("queue") or "default")
    deliveries = headers.get("x-delivery-count")
    args, kwargs = (
        (list(body[0]), dict(body[1])) if isinstance(body, list | tuple) and len(body) >= 2 else ([], {})
    )
    meta = meta_from_headers(str(task_id), str(task_name), queue, headers)
    exc = PoisonMessageError(
        f"RabbitMQ delivery limit reached ({deliveries or '?'} deliveries); dead-lettered by the broker"
    )
    return dead_letter_record(meta=meta, exc=exc, reason="poison", args=args, kwargs=kwargs)
