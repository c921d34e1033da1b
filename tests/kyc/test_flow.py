"""The KYC flow end to end: API -> outbox -> relay -> worker -> vendor fake -> decision -> email."""

import uuid
from datetime import timedelta

import pytest
from django.db import transaction
from django.utils import timezone

from config.celery_app import app as celery_app
from jobs import outbox
from jobs.dead_letters import dead_letter_replay
from jobs.models import DeadLetter, OutboxMessage, TaskRun
from kyc.models import Document, Submission, SubmissionEvent, VendorAttempt, VendorCheck
from notifications.models import EmailDelivery
from tests.conftest import client_for
from tests.harness import wait_until
from tests.kyc.conftest import image_bytes, kyc_files, pdf_bytes, upload, upload_file

pytestmark = pytest.mark.django_db(transaction=True)


def start(api, *files) -> dict:
    response = upload(api, *files)
    assert response.status_code == 202, response.json()
    return response.json()


def wait_status(submission_id: str, *statuses: str, timeout: float = 30) -> Submission:
    return wait_until(
        lambda: Submission.objects.filter(pk=submission_id, status__in=statuses).first(),
        timeout=timeout,
        message=f"submission {submission_id} to be {statuses}",
    )


def mails_for(sink, submission_id: str) -> list:
    return [m for m in sink.messages() if f"kyc-{submission_id}" in m["Message-ID"]]


def attempts(submission_id: str) -> list[tuple[str, str, int | None]]:
    rows = VendorAttempt.objects.filter(vendor_check__submission_id=submission_id).order_by("started_at")
    return [(a.kind, a.outcome, a.status_code) for a in rows]


def test_happy_path_approved_with_one_check_and_one_email(kyc_live, vendor, api, user):
    body = start(api, upload_file(pdf_bytes()), upload_file(image_bytes("JPEG"), "back.jpg", "image/jpeg"))
    submission_id = body["id"]
    # when the worker has sent it, polled the decision and emailed the user
    wait_status(submission_id, "approved")
    [mail] = wait_until(lambda: mails_for(kyc_live.sink, submission_id), message="the result email")
    kyc_live.wait_idle()
    # then the client sees the decision with the vendor's reason codes and the timestamps
    detail = api.get(body["url"]).json()
    assert detail["status"] == "approved"
    assert detail["reason_codes"] == ["clear"]
    assert detail["check_started_at"] is not None
    submission = Submission.objects.get(pk=submission_id)
    assert submission.check_started_at
    assert submission.decided_at
    assert submission.created_at <= submission.check_started_at <= submission.decided_at
    # one check at the vendor, sent once, with both documents; then polled until decided
    stats = vendor.stats()
    assert stats["submits_by_key"] == {submission_id: 1}
    assert stats["checks"] == 1
    assert stats["reads"] >= 1
    check = VendorCheck.objects.get(submission_id=submission_id)
    assert (check.status, check.decision, check.submit_attempts) == ("decided", "approved", 1)
    assert attempts(submission_id)[0] == ("submit", "ok", 201)
    assert {a[0] for a in attempts(submission_id)[1:]} == {"poll"}
    assert all(a.task_id and a.duration_ms >= 0 for a in VendorAttempt.objects.all())
    # the user's email
    assert mail["To"] == user.email
    assert mail["Subject"] == f"Your identity check {submission_id.split('-')[0].upper()} is approved"
    assert "your identity is verified" in mail.get_body(("plain",)).get_content()
    assert EmailDelivery.objects.get(ledger_key=f"kyc:{submission_id}:approved").status == "sent"
    # and the audit trail, in order
    kinds = list(SubmissionEvent.objects.filter(submission_id=submission_id).values_list("kind", flat=True))
    assert kinds == ["created", "check_started", "submitted", "decided"]
    # the result email task run again (a redelivery under a new id, a replay) sends nothing more
    again = str(uuid.uuid4())
    celery_app.send_task(
        "kyc.send_result_email",
        kwargs={"submission_id": submission_id, "decision": "approved"},
        task_id=again,
        queue="emails",
    )
    wait_until(lambda: TaskRun.objects.filter(task_id=again, state="succeeded").exists(), message="rerun")
    assert len(mails_for(kyc_live.sink, submission_id)) == 1


def test_rejected_and_more_documents_needed_email_the_reasons(kyc_live, vendor, make_user):
    rejected_user, review_user = make_user(), make_user()
    rejected = start(client_for(rejected_user), upload_file(pdf_bytes(marker="KYC-FAKE:reject")))["id"]
    review = start(
        client_for(review_user),
        upload_file(image_bytes("PNG", marker="KYC-FAKE:manual_review"), "p.png", "image/png"),
    )["id"]
    wait_status(rejected, "rejected")
    wait_status(review, "manual_review")
    [no] = wait_until(lambda: mails_for(kyc_live.sink, rejected), message="the rejection email")
    [more] = wait_until(lambda: mails_for(kyc_live.sink, review), message="the review email")
    kyc_live.wait_idle()
    assert "was not successful" in no["Subject"]
    assert "The document has expired." in no.get_body(("plain",)).get_content()
    assert "We need more documents" in more["Subject"]
    text = more.get_body(("plain",)).get_content()
    assert "The image is blurred, dark or cut off." in text
    assert "We need an additional document." in text
    assert Submission.objects.get(pk=review).reason_codes == [
        "image_quality_low",
        "additional_document_required",
    ]


def test_vendor_503_twice_then_success_is_three_calls_and_one_check(kyc_live, vendor, api):
    vendor.control(fail_submits=2, fail_with=503)
    submission_id = start(api)["id"]
    wait_status(submission_id, "approved")
    kyc_live.wait_idle()
    # three submits reached the vendor, all with the same key; it holds one check
    assert vendor.submits_for(submission_id) == 3
    assert vendor.stats()["checks"] == 1
    submits = [a for a in attempts(submission_id) if a[0] == "submit"]
    assert submits == [("submit", "retryable", 503), ("submit", "retryable", 503), ("submit", "ok", 201)]
    # the task chain: two retried attempts (through the outbox, with backoff), then success
    root = OutboxMessage.objects.get(task_name="kyc.run_check", headers__attempt=1, kwargs__poll__isnull=True)
    runs = TaskRun.objects.filter(root_id=root.id).order_by("attempt")
    assert [(r.attempt, r.state) for r in runs] == [(1, "retried"), (2, "retried"), (3, "succeeded")]
    assert not DeadLetter.objects.exists()


def test_429_waits_for_the_vendors_retry_after(kyc_live, vendor, api):
    vendor.control(fail_submits=1, fail_with=429, retry_after=1.5)
    submission_id = start(api)["id"]
    wait_status(submission_id, "approved")
    kyc_live.wait_idle()
    first = TaskRun.objects.get(task_name="kyc.run_check", attempt=1, state="retried")
    retry = OutboxMessage.objects.get(task_name="kyc.run_check", headers__attempt=2)
    assert first.finished_at is not None
    # the retry was due Retry-After (1.5 s) later, not after the (0.2 s based) backoff
    assert (retry.not_before - first.finished_at).total_seconds() == pytest.approx(1.5, abs=0.1)
    assert [a[1:] for a in attempts(submission_id) if a[0] == "submit"] == [("retryable", 429), ("ok", 201)]


def test_a_timeout_after_the_vendor_took_the_check_is_retried_with_the_same_key(kyc_live, vendor, api):
    # the vendor creates the check but answers after our read timeout (1.5 s in the stack)
    vendor.control(fail_submits=1, fail_with="timeout", timeout_seconds=3)
    submission_id = start(api)["id"]
    wait_status(submission_id, "approved")
    kyc_live.wait_idle()
    assert vendor.submits_for(submission_id) == 2
    assert vendor.stats()["checks"] == 1  # the retry got the same check back
    submits = [a for a in attempts(submission_id) if a[0] == "submit"]
    assert [(a[1], a[2]) for a in submits] == [("retryable", None), ("ok", 200)]
    assert "timed out" in VendorAttempt.objects.filter(outcome="retryable").get().error


def test_vendor_400_dead_letters_the_check_and_fails_the_submission(kyc_live, vendor, api):
    vendor.control(mode="reject", reject_status=400)
    body = start(api)
    submission_id = body["id"]
    dead = wait_until(lambda: DeadLetter.objects.filter(task_name="kyc.run_check").first(), message="DLQ")
    wait_status(submission_id, "failed")
    kyc_live.wait_idle()
    # at once, no retries: the vendor said the request itself is wrong
    assert (dead.reason, dead.attempts) == ("permanent", 1)
    assert dead.kwargs == {"submission_id": submission_id}
    assert "HTTP 400 (invalid_document)" in dead.message
    assert attempts(submission_id) == [("submit", "permanent", 400)]
    assert VendorCheck.objects.get(submission_id=submission_id).status == "failed"
    assert api.get(body["url"]).json()["status"] == "failed"
    assert mails_for(kyc_live.sink, submission_id) == []  # no result email for a failed check
    # a failed submission is closed: the user may start a new one
    assert upload(api).status_code == 202
    wait_until(lambda: DeadLetter.objects.count() == 2, message="the second one is rejected too")


def test_replaying_the_dead_letter_reopens_the_submission(kyc_live, vendor, api, user):
    vendor.control(mode="reject")
    submission_id = start(api)["id"]
    dead = wait_until(lambda: DeadLetter.objects.filter(task_name="kyc.run_check").first(), message="DLQ")
    wait_status(submission_id, "failed")
    kyc_live.wait_idle()
    # when the vendor is fixed and someone replays the dead letter
    vendor.control(mode="ok")
    dead_letter_replay(dead_letter_id=dead.pk, actor=user, note="vendor fixed")
    wait_status(submission_id, "approved")
    wait_until(lambda: mails_for(kyc_live.sink, submission_id), message="the result email")
    kyc_live.wait_idle()
    kinds = list(SubmissionEvent.objects.filter(submission_id=submission_id).values_list("kind", flat=True))
    assert kinds == ["created", "check_started", "failed", "reopened", "submitted", "decided"]
    assert vendor.stats()["checks"] == 1


def test_duplicate_deliveries_make_one_vendor_check(kyc_live, vendor, api):
    # given a slow vendor, so a duplicate arrives while the first attempt is still talking to it
    # (as slow as the client's 1.5 s read timeout allows: the window must hold on a busy machine)
    vendor.control(latency=1.25, decision_delay=0)
    submission_id = start(api)["id"]
    first = OutboxMessage.objects.get(task_name="kyc.run_check")
    wait_until(
        lambda: VendorCheck.objects.filter(submission_id=submission_id, status="submitting").exists(),
        message="the first attempt to claim the check",
    )
    # when the same task arrives again under another id (a duplicate message, sent straight to
    # the broker: the relay's hop would eat into the window) ...
    duplicate = str(uuid.uuid4())
    celery_app.send_task(
        "kyc.run_check", kwargs={"submission_id": submission_id}, task_id=duplicate, queue="kyc"
    )
    # ... and the original message is redelivered (same task id)
    celery_app.send_task(
        "kyc.run_check", kwargs={"submission_id": submission_id}, task_id=str(first.id), queue="kyc"
    )
    wait_status(submission_id, "approved")
    wait_until(
        lambda: TaskRun.objects.filter(root_id=duplicate, state="succeeded").exists(),
        message="the duplicate chain to finish",
    )
    kyc_live.wait_idle()
    # then the vendor saw one submit and holds one check
    assert vendor.submits_for(submission_id) == 1
    assert vendor.stats()["checks"] == 1
    assert [a for a in attempts(submission_id) if a[0] == "submit"] == [("submit", "ok", 201)]
    # the duplicate waited for the attempt in flight instead of sending again
    assert TaskRun.objects.filter(root_id=duplicate, state="rescheduled").exists()
    assert TaskRun.objects.get(task_id=first.id).deliveries == 1  # the redelivery was refused
    # and once decided, yet another run does nothing at all
    again = str(uuid.uuid4())
    celery_app.send_task("kyc.run_check", kwargs={"submission_id": submission_id}, task_id=again, queue="kyc")
    wait_until(lambda: TaskRun.objects.filter(task_id=again, state="succeeded").exists(), message="rerun")
    assert vendor.submits_for(submission_id) == 1


def test_retention_deletes_the_files_and_keeps_the_decision_and_the_audit_trail(
    kyc_live, vendor, api, settings
):
    body = start(api, upload_file(pdf_bytes()), upload_file(image_bytes(), "b.png", "image/png"))
    submission_id = body["id"]
    wait_status(submission_id, "approved")
    kyc_live.wait_idle()
    assert len(kyc_files()) == 2
    # given the decision is older than the retention period (30 days by default)
    Submission.objects.filter(pk=submission_id).update(decided_at=timezone.now() - timedelta(days=31))
    # when the scheduled task runs on the worker
    with transaction.atomic():
        task_id = outbox.enqueue("kyc.purge_documents")
    assert task_id is not None
    wait_until(
        lambda: TaskRun.objects.filter(task_id=task_id, state="succeeded").exists(), message="the purge"
    )
    # then the files are gone, the decision and the trail remain
    assert kyc_files() == []
    submission = Submission.objects.get(pk=submission_id)
    assert submission.status == "approved"
    assert submission.reason_codes == ["clear"]
    assert submission.documents_purged_count == 2
    assert submission.documents_purged_by == str(task_id)
    assert all(d.file == "" and d.purged_at for d in Document.objects.filter(submission_id=submission_id))
    event = SubmissionEvent.objects.get(submission_id=submission_id, kind="documents_purged")
    assert event.task_id == str(task_id)
    assert event.detail["files"] == 2
    assert event.detail["retention_days"] == 30
    detail = api.get(body["url"]).json()
    assert detail["documents_purged_at"] is not None
    assert [d["purged"] for d in detail["documents"]] == [True, True]
