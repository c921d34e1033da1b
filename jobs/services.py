"""Job status services: user-visible progress of long work (202 + /api/jobs/<id>)."""

import uuid

from django.contrib.auth.models import User
from django.utils import timezone

from jobs.models import Job


def job_create(*, owner: User, kind: str) -> Job:
    return Job.objects.create(owner=owner, kind=kind)


def job_progress(*, job_id: uuid.UUID | str, progress: int, message: str = "") -> None:
    """The one helper tasks use to report progress (0-100)."""
    Job.objects.filter(pk=job_id, state__in=[Job.State.QUEUED, Job.State.RUNNING]).update(
        state=Job.State.RUNNING, progress=max(0, min(100, int(progress))), progress_message=message[:200]
    )


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
