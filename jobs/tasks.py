"""Infrastructure tasks: liveness ping, dead-letter alerts and digest, housekeeping."""

from datetime import timedelta

from celery import shared_task
from django.conf import settings
from django.core.mail import mail_admins
from django.utils import timezone

from core.models import IdempotencyKey
from core.redis import redis_client
from jobs import dead_letters, reaper
from jobs.base_task import BaseTask
from jobs.django_tasks import runner  # noqa: F401 - registers jobs.run_django_task and its hooks
from jobs.models import DeadLetter, Flow, OutboxMessage, TaskRun
from jobs.policy import RetryPolicy
from jobs.queues import Queue

HOUSEKEEPING = RetryPolicy(max_attempts=3, notes="database errors only; the next run catches up")


@shared_task(base=BaseTask, name="jobs.ping", queue=Queue.DEFAULT, policy=RetryPolicy(max_attempts=1))
def ping(token: str) -> str:
    """Writes `taskyard:pong:<token>`: proves a message went broker -> worker -> Redis."""
    redis_client().set(f"taskyard:pong:{token}", "pong", ex=300)
    return "pong"


@shared_task(
    base=BaseTask,
    name="jobs.alert_dead_letter",
    queue=Queue.DEFAULT,
    policy=RetryPolicy(max_attempts=5, alert=False, notes="SMTP errors retried; never alerts about itself"),
)
def alert_dead_letter(dead_letter_id: int) -> bool:
    """Email the admins about a new dead letter, at most once per fingerprint per window.

    Sentry already has the event (the task's exception is re-raised after it is recorded).
    The email names the task, the error class and the admin link; never arguments or PII.
    """
    dead_letter = DeadLetter.objects.get(pk=dead_letter_id)
    window = settings.DEAD_LETTER_ALERT_WINDOW_SECONDS
    if not redis_client().set(
        f"taskyard:dl-alert:{dead_letter.fingerprint}", dead_letter_id, nx=True, ex=window
    ):
        return False  # this fingerprint already alerted within the window
    open_in_group = DeadLetter.objects.filter(
        fingerprint=dead_letter.fingerprint, status=DeadLetter.Status.OPEN
    ).count()
    mail_admins(
        subject=f"Dead letter: {dead_letter.task_name} {dead_letter.exception_class.rsplit('.', 1)[-1]}",
        message=(
            f"Task {dead_letter.task_name} failed for good ({dead_letter.reason}, "
            f"{dead_letter.attempts} attempt(s)).\n"
            f"Error: {dead_letter.exception_class}: {dead_letter.message}\n"
            f"Fingerprint {dead_letter.fingerprint}: {open_in_group} open dead letter(s).\n"
            f"Review and replay: /{settings.ADMIN_URL}jobs/deadletter/?fingerprint={dead_letter.fingerprint}\n"
        ),
    )
    return True


@shared_task(base=BaseTask, name="jobs.dead_letter_digest", queue=Queue.DEFAULT, policy=HOUSEKEEPING)
def dead_letter_digest() -> int:
    """Daily: the fingerprints with dead letters open for more than 24 hours."""
    cutoff = timezone.now() - timedelta(hours=24)
    stale = [g for g in dead_letters.open_groups() if g["first"] < cutoff]
    if stale:
        lines = [
            f"{g['count']:>5}  {g['task_name']}  {g['exception_class']}  ({g['fingerprint']})" for g in stale
        ]
        mail_admins(
            subject=f"{len(stale)} dead-letter group(s) open for more than 24 h",
            message="Open dead letters older than 24 hours, by fingerprint:\n\n" + "\n".join(lines),
        )
    return len(stale)


@shared_task(base=BaseTask, name="jobs.purge_outbox", queue=Queue.DEFAULT, policy=HOUSEKEEPING)
def purge_outbox() -> int:
    """Delete sent outbox rows, finished task runs and finished flows older than the retention period."""
    cutoff = timezone.now() - timedelta(days=settings.OUTBOX_RETENTION_DAYS)
    sent, _ = OutboxMessage.objects.filter(sent_at__lt=cutoff).delete()
    runs, _ = TaskRun.objects.filter(finished_at__lt=cutoff).delete()
    # A flow goes with its steps and nested flows; a nested flow only with the flow it is part of.
    flows, _ = Flow.objects.filter(finished_at__lt=cutoff, parent_step__isnull=True).delete()
    return sent + runs + flows


@shared_task(base=BaseTask, name="jobs.purge_idempotency_keys", queue=Queue.DEFAULT, policy=HOUSEKEEPING)
def purge_idempotency_keys() -> int:
    deleted, _ = IdempotencyKey.objects.filter(expires_at__lt=timezone.now()).delete()
    return deleted


@shared_task(base=BaseTask, name="jobs.reap_stuck_tasks", queue=Queue.DEFAULT, policy=HOUSEKEEPING)
def reap_stuck_tasks() -> int:
    """Backstop for the reaper the relay runs every few seconds."""
    return reaper.reap().republished
