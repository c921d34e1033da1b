"""Retention (kyc/retention.py) called directly: what is due, what is kept, orphans."""

import os
import time
from datetime import timedelta
from pathlib import Path

import pytest
from django.conf import settings as django_settings
from django.utils import timezone

from kyc.checks import kyc_check_run
from kyc.models import Document, Submission, SubmissionEvent
from kyc.retention import kyc_documents_purge, sweep_orphans
from kyc.services import storage_name
from tests.conftest import client_for
from tests.kyc.conftest import kyc_files, upload

pytestmark = pytest.mark.django_db


def submission(user, *, status: str, decided_days_ago: float | None) -> Submission:
    response = upload(client_for(user))
    assert response.status_code == 202, response.json()
    decided = timezone.now() - timedelta(days=decided_days_ago) if decided_days_ago is not None else None
    Submission.objects.filter(pk=response.json()["id"]).update(status=status, decided_at=decided)
    return Submission.objects.get(pk=response.json()["id"])


def test_only_final_submissions_past_the_retention_period_lose_their_files(make_user):
    due = submission(make_user(), status="rejected", decided_days_ago=31)
    failed = submission(make_user(), status="failed", decided_days_ago=40)
    recent = submission(make_user(), status="approved", decided_days_ago=29)
    still_open = submission(make_user(), status="checking", decided_days_ago=None)
    Submission.objects.filter(pk=still_open.pk).update(created_at=timezone.now() - timedelta(days=90))
    kept = {Document.objects.get(submission=s).file for s in (recent, still_open)}
    # when the purge runs
    assert kyc_documents_purge(task_id="task-1") == 2
    # then only the two due ones are purged, and they keep their decision
    for gone in (due, failed):
        gone.refresh_from_db()
        assert gone.documents_purged_at is not None
        assert (gone.documents_purged_count, gone.documents_purged_by) == (1, "task-1")
        assert Document.objects.get(submission=gone).file == ""
    assert Submission.objects.get(pk=due.pk).status == "rejected"
    stored = {str(p.relative_to(django_settings.PRIVATE_STORAGE_ROOT)) for p in kyc_files()}
    assert stored == kept
    # a second run finds nothing more to do and writes no second event
    assert kyc_documents_purge(task_id="task-2") == 0
    assert SubmissionEvent.objects.filter(kind="documents_purged").count() == 2


def test_the_period_is_a_setting(make_user, settings):
    settings.KYC_RETENTION_DAYS = 7
    old = submission(make_user(), status="approved", decided_days_ago=8)
    assert kyc_documents_purge() == 1
    old.refresh_from_db()
    assert old.documents_purged_at is not None
    assert SubmissionEvent.objects.get(kind="documents_purged").detail["retention_days"] == 7


def test_a_purged_failed_submission_cannot_be_reopened_by_a_replay(make_user):
    failed = submission(make_user(), status="failed", decided_days_ago=31)
    kyc_documents_purge()
    result = kyc_check_run(submission_id=str(failed.pk), replay=True)
    assert "documents are gone" in result
    assert Submission.objects.get(pk=failed.pk).status == "failed"


def test_orphaned_upload_files_are_swept_after_an_hour(user):
    # given a referenced file, an orphan from two hours ago and an orphan from just now
    referenced = submission(user, status="pending", decided_days_ago=None)
    root = Path(django_settings.PRIVATE_STORAGE_ROOT)
    old_orphan, new_orphan = root / storage_name("pdf"), root / storage_name("png")
    for path in (old_orphan, new_orphan):
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"%PDF-")
    referenced_path = root / Document.objects.get(submission=referenced).file
    two_hours_ago = time.time() - 2 * 3600
    for path in (old_orphan, referenced_path):
        os.utime(path, (two_hours_ago, two_hours_ago))
    # when the sweep runs
    assert sweep_orphans() == 1
    # then only the old orphan is gone
    assert not old_orphan.exists()
    assert new_orphan.exists()
    assert referenced_path.exists()  # as old, but a Document row names it


def test_a_purge_that_died_after_its_claim_is_finished_by_the_next_run(make_user):
    # given a run that claimed the submission, then died before deleting anything
    claimed = submission(make_user(), status="approved", decided_days_ago=31)
    Submission.objects.filter(pk=claimed.pk).update(
        documents_purged_at=timezone.now(), documents_purged_by="dead-run"
    )
    # when the next run comes
    assert kyc_documents_purge(task_id="next-run") == 1
    # then the files are gone and the row says who finished it
    assert kyc_files() == []
    claimed.refresh_from_db()
    assert (claimed.documents_purged_count, claimed.documents_purged_by) == (1, "next-run")
    assert kyc_documents_purge(task_id="third-run") == 0
