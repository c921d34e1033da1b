"""Retention: identity documents are deleted KYC_RETENTION_DAYS after the final decision.

`kyc.purge_documents` (hourly, config/schedules.py) selects by decision time, not by
schedule slot, so a missed run is caught up by the next one. Per submission: claim it
(documents_purged_at, committed; from then on a dead-letter replay cannot reopen it),
delete the files with no transaction open (the storage is S3 in production), then in
one transaction empty the Document rows' file names and record how many and by which
task, with a `documents_purged` event. The decision, reason codes and the audit trail
stay. Deleting a file that is already gone is a no-op, and a submission whose documents
still name files is due again, so a run that died half-way is finished by the next one.

It also sweeps orphans: files under kyc/ that no Document row names, older than an
hour (an upload whose request died between writing its files and committing its rows).
"""

import logging
from datetime import datetime, timedelta
from typing import Any

from django.conf import settings
from django.core.files.storage import default_storage
from django.db import transaction
from django.db.models import Exists, F, OuterRef, Q, QuerySet
from django.utils import timezone

from kyc.models import Document, Submission, SubmissionEvent
from kyc.services import STORAGE_PREFIX

logger = logging.getLogger(__name__)

BATCH = 200
ORPHAN_GRACE = timedelta(hours=1)
ORPHAN_SWEEP_DAYS = 3  # upload folders (kyc/YYYY/MM/DD) looked at, newest first


def _due(cutoff: datetime) -> QuerySet[Submission]:
    """Final, decided before the cutoff, and with files left: never purged, or a purge that
    died between its claim and its mark (documents still named)."""
    files_left = Document.objects.filter(submission=OuterRef("pk"), purged_at__isnull=True)
    return Submission.objects.filter(status__in=Submission.FINAL, decided_at__lt=cutoff).filter(
        Q(documents_purged_at__isnull=True) | Exists(files_left)
    )


def _purge_one(submission_id: Any, cutoff: datetime, task_id: str) -> int | None:
    """Returns the number of files deleted, or None if the submission was not due (any more).

    Claim, commit, delete, mark: no row lock is held while the storage (S3 in production)
    is called. The claim sets documents_purged_at, after which a dead-letter replay can no
    longer reopen the submission; a run that dies after it is finished by the next run.
    """
    now = timezone.now()
    with transaction.atomic():
        submission = _due(cutoff).select_for_update(skip_locked=True).filter(pk=submission_id).first()
        if submission is None:
            return None
        if submission.documents_purged_at is None:
            submission.documents_purged_at = now
            submission.documents_purged_by = task_id
            submission.save(update_fields=["documents_purged_at", "documents_purged_by", "updated_at"])
    documents = list(Document.objects.filter(submission_id=submission_id, purged_at__isnull=True))
    for document in documents:
        if document.file:
            default_storage.delete(document.file)  # deleting a file that is already gone is a no-op
    with transaction.atomic():
        count = Document.objects.filter(pk__in=[d.pk for d in documents], purged_at__isnull=True).update(
            file="", purged_at=now
        )
        if not count:
            return 0  # a concurrent run (a second beat) marked them first
        Submission.objects.filter(pk=submission_id).update(
            documents_purged_count=F("documents_purged_count") + count,
            documents_purged_by=task_id,
            updated_at=now,
        )
        SubmissionEvent.objects.create(
            submission_id=submission_id,
            kind=SubmissionEvent.Kind.DOCUMENTS_PURGED,
            task_id=task_id,
            detail={
                "files": count,
                "bytes": sum(d.size for d in documents),
                "retention_days": settings.KYC_RETENTION_DAYS,
            },
        )
    return count


def kyc_documents_purge(*, task_id: str = "", now: datetime | None = None) -> int:
    """Delete the documents of every submission decided more than the retention period ago."""
    cutoff = (now or timezone.now()) - timedelta(days=settings.KYC_RETENTION_DAYS)
    due = _due(cutoff).order_by("decided_at", "pk")
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
