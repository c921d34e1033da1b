"""Retention: identity documents are deleted KYC_RETENTION_DAYS after the final decision.

`kyc.purge_documents` (hourly, config/schedules.py) selects by decision time, not by
schedule slot, so a missed run is caught up by the next one. Per submission, in one
short transaction that holds the submission's row lock (a replay cannot reopen it
meanwhile): delete the files, empty the Document rows' file names, record on the
submission when, how many and by which task, and add a `documents_purged` event. The
decision, reason codes and the audit trail stay. Deleting a file that is already gone
is a no-op, so a run that crashed half-way is simply repeated.

It also sweeps orphans: files under kyc/ that no Document row names, older than an
hour (an upload whose request died between writing its files and committing its rows).
"""

import logging
from datetime import datetime, timedelta
from typing import Any

from django.conf import settings
from django.core.files.storage import default_storage
from django.db import transaction
from django.db.models import Q, Sum
from django.utils import timezone

from kyc.models import Document, Submission, SubmissionEvent
from kyc.services import STORAGE_PREFIX

logger = logging.getLogger(__name__)

BATCH = 200
ORPHAN_GRACE = timedelta(hours=1)
ORPHAN_SWEEP_DAYS = 3  # upload folders (kyc/YYYY/MM/DD) looked at, newest first


def _purge_one(submission_id: Any, cutoff: datetime, task_id: str) -> int | None:
    """Returns the number of files deleted, or None if the submission was not due (any more)."""
    now = timezone.now()
    with transaction.atomic():
        submission = (
            Submission.objects.select_for_update(skip_locked=True)
            .filter(
                pk=submission_id,
                status__in=Submission.FINAL,
                decided_at__lt=cutoff,
                documents_purged_at__isnull=True,
            )
            .first()
        )
        if submission is None:
            return None
        documents = Document.objects.filter(submission=submission, purged_at__isnull=True)
        names = [name for name in documents.values_list("file", flat=True) if name]
        size = documents.aggregate(total=Sum("size"))["total"] or 0
        for name in names:
            default_storage.delete(name)
        count = documents.update(file="", purged_at=now)
        Submission.objects.filter(pk=submission.pk).update(
            documents_purged_at=now, documents_purged_count=count, documents_purged_by=task_id, updated_at=now
        )
        SubmissionEvent.objects.create(
            submission=submission,
            kind=SubmissionEvent.Kind.DOCUMENTS_PURGED,
            task_id=task_id,
            detail={"files": count, "bytes": size, "retention_days": settings.KYC_RETENTION_DAYS},
        )
    return count


def kyc_documents_purge(*, task_id: str = "", now: datetime | None = None) -> int:
    """Delete the documents of every submission decided more than the retention period ago."""
    cutoff = (now or timezone.now()) - timedelta(days=settings.KYC_RETENTION_DAYS)
    due = Submission.objects.filter(
        status__in=Submission.FINAL, decided_at__lt=cutoff, documents_purged_at__isnull=True
    ).order_by("decided_at", "pk")
    purged_submissions = purged_files = 0
    after: tuple[datetime | None, Any] | None = None
    while True:
        page = due
        if after is not None:  # keyset: a submission skipped (locked) is not looked at again
            page = page.filter(Q(decided_at__gt=after[0]) | Q(decided_at=after[0], pk__gt=after[1]))
        rows = list(page.values_list("decided_at", "pk")[:BATCH])
        if not rows:
            break
        for _, pk in rows:
            count = _purge_one(pk, cutoff, task_id)
            if count is not None:
                purged_submissions += 1
                purged_files += count
        after = rows[-1]
    orphans = sweep_orphans(now=now)
    logger.info(
        "kyc retention: %d file(s) of %d submission(s) deleted, %d orphan(s)",
        purged_files,
        purged_submissions,
        orphans,
    )
    return purged_files + orphans


def sweep_orphans(*, now: datetime | None = None) -> int:
    """Delete upload files that no Document row names and that are older than the grace period."""
    now = now or timezone.now()
    deleted = 0
    for days_ago in range(ORPHAN_SWEEP_DAYS):
        folder = f"{STORAGE_PREFIX}/{now - timedelta(days=days_ago):%Y/%m/%d}"
        try:
            _, names = default_storage.listdir(folder)
        except FileNotFoundError:
            continue
        paths = [f"{folder}/{name}" for name in names]
        known = set(Document.objects.filter(file__in=paths).values_list("file", flat=True))
        for path in paths:
            if path in known or default_storage.get_modified_time(path) > now - ORPHAN_GRACE:
                continue
            default_storage.delete(path)
            deleted += 1
    return deleted
