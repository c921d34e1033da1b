"""KYC tasks: IDs in, a service call, a declared retry policy. Nothing else."""

from typing import Any

from celery import shared_task
from django.conf import settings

from jobs.base_task import BaseTask
from jobs.policy import RetryPolicy
from jobs.queues import Queue
from kyc import checks, retention, services
from notifications.services import email_mark_failed

CHECK_POLICY = RetryPolicy(
    max_attempts=8,
    backoff_base=settings.KYC_RETRY_BACKOFF_BASE_SECONDS,
    backoff_cap=600.0,
    notes=(
        "vendor 5xx, 408/425/429, timeouts and connection errors retried (Retry-After honoured); "
        "vendor 4xx, malformed answers, missing submission: permanent. Rate-limited: rescheduled, "
        "no attempt spent"
    ),
)
EMAIL_POLICY = RetryPolicy(
    max_attempts=8,
    backoff_base=2.0,
    backoff_cap=300.0,
    notes="SMTP 4xx and connection errors retried; SMTP 5xx, missing submission: permanent",
)
HOUSEKEEPING = RetryPolicy(
    max_attempts=3, notes="database and storage errors; the next hourly run catches up"
)


class CheckTask(BaseTask):
    def on_dead_letter(self, args: list[Any], kwargs: dict[str, Any], exc: BaseException) -> None:
        checks.kyc_check_mark_failed(
            submission_id=str(kwargs.get("submission_id", "")), error=str(exc), task_id=self.request.id or ""
        )


@shared_task(
    base=CheckTask,
    bind=True,
    name="kyc.run_check",
    queue=Queue.KYC,
    policy=CHECK_POLICY,
    soft_time_limit=checks.CHECK_SOFT_TIME_LIMIT,
    time_limit=checks.CHECK_TIME_LIMIT,
)
def run_check(self: BaseTask, submission_id: str, poll: int = 0) -> str:
    return checks.kyc_check_run(
        submission_id=submission_id,
        poll=poll,
        task_id=self.request.id or "",
        replay=getattr(self.request, "replay_of", None) is not None,  # a dead letter replayed from the admin
    )


class ResultEmailTask(BaseTask):
    def on_dead_letter(self, args: list[Any], kwargs: dict[str, Any], exc: BaseException) -> None:
        decision = str(kwargs.get("decision", ""))
        email_mark_failed(
            template=services.EMAIL_TEMPLATES.get(decision, ""),
            ledger_key=f"kyc:{kwargs.get('submission_id')}:{decision}",
            error=str(exc),
        )


@shared_task(
    base=ResultEmailTask,
    bind=True,
    name="kyc.send_result_email",
    queue=Queue.EMAILS,
    policy=EMAIL_POLICY,
    soft_time_limit=30,
    time_limit=45,
)
def send_result_email(self: BaseTask, submission_id: str, decision: str) -> str:
    return services.kyc_result_email_send(
        submission_id=submission_id, decision=decision, task_id=self.request.id or ""
    )


@shared_task(
    base=BaseTask,
    bind=True,
    name="kyc.purge_documents",
    queue=Queue.DEFAULT,
    policy=HOUSEKEEPING,
    soft_time_limit=10 * 60,
    time_limit=11 * 60,
)
def purge_documents(self: BaseTask) -> int:
    return retention.kyc_documents_purge(task_id=self.request.id or "")
