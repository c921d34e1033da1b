"""The vendor check service (kyc/checks.py) called directly against the fake: one step at a time."""

import pytest

from core.errors import PermanentError
from jobs.errors import Reschedule
from jobs.models import OutboxMessage
from kyc.checks import VENDOR_BUCKET_KEY, kyc_check_mark_failed, kyc_check_run
from kyc.models import Submission, VendorAttempt, VendorCheck
from tests.harness import redis_client
from tests.kyc.conftest import upload

pytestmark = pytest.mark.django_db


@pytest.fixture
def submission_id(api, vendor) -> str:
    redis_client().delete(VENDOR_BUCKET_KEY)
    response = upload(api)
    assert response.status_code == 202
    return str(response.json()["id"])


def polls_enqueued(submission_id: str) -> list[int]:
    rows = OutboxMessage.objects.filter(task_name="kyc.run_check", kwargs__submission_id=submission_id)
    return sorted(row.kwargs["poll"] for row in rows if "poll" in row.kwargs)


def test_submit_then_poll_one_step_at_a_time(submission_id, vendor, settings):
    settings.KYC_POLL_INTERVAL_SECONDS = 30
    vendor.control(decision_delay=3600)  # the vendor takes its time
    # the submit step sends the documents and schedules poll 1 for later
    assert kyc_check_run(submission_id=submission_id) == "pending"
    check = VendorCheck.objects.get(submission_id=submission_id)
    assert (check.status, check.submit_attempts) == ("submitted", 1)
    assert Submission.objects.get(pk=submission_id).status == "checking"
    [poll] = OutboxMessage.objects.filter(kwargs__poll=1)
    assert check.submitted_at is not None
    assert 25 < (poll.not_before - check.submitted_at).total_seconds() <= 31
    # a repeated submit step does nothing: the check is already at the vendor
    assert kyc_check_run(submission_id=submission_id) == "already submitted"
    # poll 1: still pending -> poll 2 is scheduled; poll 1 again is stale and calls nobody
    assert kyc_check_run(submission_id=submission_id, poll=1) == "pending"
    assert kyc_check_run(submission_id=submission_id, poll=1) == "stale poll"
    assert polls_enqueued(submission_id) == [1, 2]
    stats = vendor.stats()
    assert (stats["submits"], stats["reads"]) == (1, 1)


def test_a_decision_at_submit_is_recorded_and_the_email_enqueued_once(submission_id, vendor):
    vendor.control(decision_delay=0)
    assert kyc_check_run(submission_id=submission_id, task_id="t-1") == "approved"
    submission = Submission.objects.get(pk=submission_id)
    assert (submission.status, submission.reason_codes) == ("approved", ["clear"])
    assert submission.decided_at is not None
    [email] = OutboxMessage.objects.filter(task_name="kyc.send_result_email")
    assert email.kwargs == {"submission_id": submission_id, "decision": "approved"}
    assert email.dedupe_key == f"kyc:{submission_id}:approved:email"
    assert polls_enqueued(submission_id) == []  # decided: nothing to poll
    assert kyc_check_run(submission_id=submission_id) == "already approved"


def test_polling_gives_up_after_the_maximum(submission_id, vendor, settings):
    settings.KYC_POLL_MAX_COUNT = 1
    vendor.control(decision_delay=3600)
    kyc_check_run(submission_id=submission_id)
    assert kyc_check_run(submission_id=submission_id, poll=1) == "pending"
    with pytest.raises(PermanentError, match="no decision after 1 polls"):
        kyc_check_run(submission_id=submission_id, poll=2)
    assert vendor.stats()["reads"] == 1  # the give-up itself called nobody


def test_a_rate_limited_step_reschedules_without_claiming_or_calling(submission_id, vendor, settings):
    settings.KYC_VENDOR_RATE_PER_MINUTE = 2
    settings.KYC_VENDOR_RATE_BURST = 1
    redis_client().hset(VENDOR_BUCKET_KEY, mapping={"tokens": "0", "updated": "9999999999"})
    with pytest.raises(Reschedule) as limited:
        kyc_check_run(submission_id=submission_id)
    assert limited.value.delay > 0
    assert "rate limit KYC vendor" in limited.value.reason
    assert not VendorCheck.objects.exists()  # nothing claimed
    assert Submission.objects.get(pk=submission_id).status == "pending"
    assert vendor.stats()["calls"] == 0


def test_a_retryable_failure_releases_the_claim_and_is_recorded(submission_id, vendor):
    vendor.control(fail_submits=1, fail_with=502)
    with pytest.raises(Exception, match="HTTP 502"):
        kyc_check_run(submission_id=submission_id, task_id="t-1")
    check = VendorCheck.objects.get(submission_id=submission_id)
    assert (check.status, check.claimed_at) == ("pending", None)
    assert "HTTP 502" in check.last_error
    attempt = VendorAttempt.objects.get()
    assert (attempt.kind, attempt.outcome, attempt.status_code, attempt.task_id) == (
        "submit",
        "retryable",
        502,
        "t-1",
    )
    # the retry goes ahead at once (no lease to wait for)
    assert kyc_check_run(submission_id=submission_id, task_id="t-2") == "pending"


def test_mark_failed_closes_the_submission_and_ignores_malformed_ids(submission_id):
    kyc_check_mark_failed(submission_id=submission_id, error="vendor submit: HTTP 400", task_id="t-9")
    assert Submission.objects.get(pk=submission_id).status == "failed"
    assert Submission.objects.get(pk=submission_id).decided_at is not None
    kyc_check_mark_failed(submission_id="not-a-uuid", error="x")
    # a late message for the failed submission does nothing (only a replay reopens it)
    assert kyc_check_run(submission_id=submission_id) == "already failed"


def submitting_claim(submission_id: str, claimed_by: str) -> None:
    from django.utils import timezone

    VendorCheck.objects.update_or_create(
        submission_id=submission_id,
        defaults={
            "status": VendorCheck.Status.SUBMITTING,
            "claimed_at": timezone.now(),
            "claimed_by": claimed_by,
        },
    )


def test_a_submit_claim_of_a_run_known_dead_is_taken_at_once_and_of_a_live_one_waited_for(submission_id):
    from jobs.execution import Fence, fenced
    from kyc.checks import _claim

    submission = Submission.objects.get(pk=submission_id)
    # given a submit claimed by epoch 1 of a run, and that run taken over (epoch 2 in TaskRun)
    from tests.jobs.test_fencing import run_of, take_over

    meta, old = run_of()
    take_over(meta)
    submitting_claim(submission_id, old.token)
    # a successor that doesn't know its predecessor is dead waits for the claim's lease
    with fenced(Fence(meta.task_id, 2)), pytest.raises(Reschedule):
        _claim(submission, meta.task_id)
    # one that knows (its process is gone) takes the claim: the vendor's Idempotency-Key makes it safe
    with fenced(Fence(meta.task_id, 2, predecessor_gone=True)):
        check = _claim(submission, meta.task_id)
    assert check is not None
    assert VendorCheck.objects.get(submission_id=submission_id).claimed_by == f"{meta.task_id}:2"
