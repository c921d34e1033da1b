"""Job status services: user-visible progress of long work (202 + /api/jobs/<id>), and its cancel."""

import uuid

from django.contrib.auth.models import User
from django.db import transaction
from django.utils import timezone

from jobs.errors import JobStateConflict, TaskCancelled
from jobs.models import Job, TaskRun


def job_create(*, owner: User, kind: str) -> Job:
    return Job.objects.create(owner=owner, kind=kind)


def job_progress(*, job_id: uuid.UUID | str, progress: int, message: str = "") -> None:
    """The one helper tasks use to report progress (0-100). Raises TaskCancelled once the job's
    cancel was requested: the task stops there, and the base task records it cancelled."""
    updated = Job.objects.filter(
        pk=job_id, state__in=[Job.State.QUEUED, Job.State.RUNNING], cancel_requested_at__isnull=True
    ).update(
        state=Job.State.RUNNING, progress=max(0, min(100, int(progress))), progress_message=message[:200]
    )
    if not updated and Job.objects.filter(pk=job_id, cancel_requested_at__isnull=False).exists():
        raise TaskCancelled(f"job {job_id} was cancelled")


def job_cancel(*, job_id: uuid.UUID | str, owner: User | None = None) -> Job:
    """Store the cancel (jobs/cancellation.py): a job not running now is cancelled at once and its
    task never starts; a running one stops at its next progress report or worker heartbeat.

    `owner` scopes the lookup (the API). Raises Job.DoesNotExist, or JobStateConflict when the
    job is over.
    """
    now = timezone.now()
    with transaction.atomic():
        jobs = Job.objects.select_for_update()
        job = (jobs.filter(owner=owner) if owner is not None else jobs).get(pk=job_id)
        if job.state in Job.FINISHED:
            raise JobStateConflict(f"The job is {job.state}; only a queued or running job can be cancelled.")
        job.cancel_requested_at = job.cancel_requested_at or now
        running = (
            job.task_id is not None
            and TaskRun.objects.filter(task_id=job.task_id, state=TaskRun.State.RUNNING).exists()
        )
        if not running:  # queued, or waiting for a retry: nothing to stop
            job.state, job.finished_at, job.progress_message = Job.State.CANCELLED, now, "cancelled"
        job.save(update_fields=["cancel_requested_at", "state", "finished_at", "progress_message"])
    return job


def job_succeed(
    *, job_id: uuid.UUID | str, result_file: str = "", result: dict[str, object] | None = None
) -> None:
    Job.objects.filter(pk=job_id).update(
        state=Job.State.SUCCEEDED,
        progress=100,
        progress_message="done",
        result_file=result_file,
        result=result or {},
        finished_at=timezone.now(),
    )
