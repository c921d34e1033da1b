"""The vendor check of a submission, one step per run of `kyc.run_check`.

    poll=0   submit: take a rate-limit token, claim the VendorCheck (short transaction),
             POST the documents with Idempotency-Key = submission id (no transaction,
             no lock held), then record the attempt and mark the check submitted. If the
             vendor answered with a decision, record it; else enqueue poll 1 for later
             (an outbox row with not_before: the polling decision, docs/adr).
    poll=n   poll: take a token, GET the check; record the attempt; decided -> record
             the decision (and enqueue the result email), still pending -> enqueue
             poll n+1. A poll number the ledger has already seen is a duplicate: no-op.

Duplicates do nothing: a finished submission, a submitted check, an attempt in flight
(claimed less than a lease ago: look again shortly) or a stale poll number all return
early. A crash between the vendor's answer and our mark leaves the claim to expire;
the retry sends the same idempotency key, and the vendor returns the same check.

Failures were classified by the client (kyc/vendor.py); here they are only recorded
(VendorAttempt row) and re-raised for the task's RetryPolicy. When the task is
dead-lettered, `kyc_check_mark_failed` marks the check and the submission failed;
replaying that dead letter reopens the submission and starts over.
"""

import contextlib
import logging
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from django.conf import settings
from django.core.files.storage import default_storage
from django.db import IntegrityError, transaction
from django.utils import timezone

from core.errors import PermanentError, RetryableError
from core.ratelimit import TokenBucket
from core.redact import redact
from jobs import outbox
from jobs.errors import Reschedule
from jobs.execution import current_fence, hold_current
from jobs.ratelimit import take_or_reschedule
from kyc import vendor
from kyc.documents import CONTENT_TYPE
from kyc.models import Submission, SubmissionEvent, VendorAttempt, VendorCheck

logger = logging.getLogger(__name__)

CHECK_TASK = "kyc.run_check"
EMAIL_TASK = "kyc.send_result_email"
VENDOR_BUCKET_KEY = "taskyard:ratelimit:kyc-vendor"
# Time limits of kyc.run_check (tasks.py): one submit with its connect + read timeouts fits.
CHECK_SOFT_TIME_LIMIT = 60
CHECK_TIME_LIMIT = 75
# An attempt in flight is left alone this long; a killed one is past its hard limit by then.
CLAIM_LEASE = timedelta(seconds=CHECK_TIME_LIMIT + 15)
CLAIM_RECHECK_SECONDS = 2.0  # a duplicate looks again this soon rather than after the whole lease
DECISIONS = {
    "approved": Submission.Status.APPROVED,
    "rejected": Submission.Status.REJECTED,
    "manual_review": Submission.Status.MANUAL_REVIEW,
}


def vendor_bucket() -> TokenBucket:
    """The vendor's budget, shared by every worker: N calls in any window (core/ratelimit.py)."""
    return TokenBucket.for_window(
        VENDOR_BUCKET_KEY,
        calls=settings.KYC_VENDOR_RATE_PER_MINUTE,
        window_seconds=settings.KYC_VENDOR_RATE_WINDOW_SECONDS,
        burst=settings.KYC_VENDOR_RATE_BURST,
    )


def _event(submission_id: Any, kind: str, task_id: str = "", **detail: Any) -> None:
    SubmissionEvent.objects.create(submission_id=submission_id, kind=kind, task_id=task_id, detail=detail)


@dataclass
class _Call:
    """One vendor call, timed: recorded as a VendorAttempt row whether it succeeds or fails."""

    check: VendorCheck
    kind: str
    task_id: str
    started: float = field(default_factory=time.monotonic)
    started_at: datetime = field(default_factory=timezone.now)

    def record(self, *, outcome: str, status_code: int | None = None, error: str = "") -> None:
        VendorAttempt.objects.create(
            vendor_check=self.check,
            kind=self.kind,
            outcome=outcome,
            status_code=status_code,
            error=redact(error)[:2000],
            task_id=self.task_id,
            started_at=self.started_at,
            duration_ms=int((time.monotonic() - self.started) * 1000),
        )


@contextmanager
def _vendor_call(check: VendorCheck, *, kind: str, task_id: str) -> Iterator[_Call]:
    """Time the vendor call in the block; a failure is recorded (and the claim released) and re-raised."""
    call = _Call(check, kind, task_id)
    try:
        yield call
    except Exception as exc:
        _record_failure(call, exc)
        raise


def _record_failure(call: _Call, exc: BaseException) -> None:
    if isinstance(exc, RetryableError):
        outcome = VendorAttempt.Outcome.RETRYABLE
    elif isinstance(exc, PermanentError):
        outcome = VendorAttempt.Outcome.PERMANENT
    else:
        outcome = VendorAttempt.Outcome.ERROR
    error = f"{type(exc).__name__}: {exc}"
    with transaction.atomic():
        call.record(outcome=outcome, status_code=getattr(exc, "status_code", None), error=error)
        checks = VendorCheck.objects.filter(pk=call.check.pk)
        if call.kind == VendorAttempt.Kind.SUBMIT:
            # Release the claim: the retry (or a replay) may submit again at once.
            checks = checks.filter(status=VendorCheck.Status.SUBMITTING)
            checks.update(status=VendorCheck.Status.PENDING, claimed_at=None, last_error=redact(error)[:2000])
        else:
            checks.update(last_error=redact(error)[:2000])


def _schedule_poll(submission_id: Any, number: int) -> None:
    outbox.enqueue(
        CHECK_TASK,
        kwargs={"submission_id": str(submission_id), "poll": number},
        not_before=timezone.now() + timedelta(seconds=settings.KYC_POLL_INTERVAL_SECONDS),
    )


def _decide(submission_id: Any, check_id: int, result: vendor.VendorResult, task_id: str) -> None:
    """Record the vendor's decision and enqueue the result email; inside the caller's transaction."""
    now = timezone.now()
    status = DECISIONS[result.status]
    VendorCheck.objects.filter(pk=check_id).update(
        status=VendorCheck.Status.DECIDED,
        decision=result.status,
        decided_at=now,
        claimed_at=None,
        last_error="",
    )
    decided = Submission.objects.filter(pk=submission_id, status__in=Submission.OPEN).update(
        status=status, reason_codes=result.reason_codes, decided_at=now, updated_at=now
    )
    if decided:
        _event(
            submission_id,
            SubmissionEvent.Kind.DECIDED,
            task_id,
            status=status,
            reason_codes=result.reason_codes,
        )
        outbox.enqueue(
            EMAIL_TASK,
            kwargs={"submission_id": str(submission_id), "decision": str(status)},
            dedupe_key=f"kyc:{submission_id}:{status}:email",
        )


def _raise_if_in_flight(check: VendorCheck, now: datetime) -> None:
    """Another attempt holds a live submit claim: wait for it (its lease), unless it is the run
    this one took over and that run's process is known dead."""
    fence = current_fence()
    if fence is not None and check.claimed_by and check.claimed_by == fence.predecessor_token:
        return
    if (
        check.status == VendorCheck.Status.SUBMITTING
        and check.claimed_at is not None
        and check.claimed_at > now - CLAIM_LEASE
    ):
        remaining = (check.claimed_at + CLAIM_LEASE - now).total_seconds()
        raise Reschedule(
            min(remaining, CLAIM_RECHECK_SECONDS),
            f"the vendor check of {check.submission_id} is being submitted by another attempt",
        )


def _claim(submission: Submission, task_id: str) -> VendorCheck | None:
    """Mark the check `submitting` (committed before the call). None: already submitted."""
    now = timezone.now()
    with transaction.atomic():
        hold_current()  # a run that was taken over claims nothing (jobs/execution.py)
        check, _ = VendorCheck.objects.select_for_update().get_or_create(submission=submission)
        if check.status in (VendorCheck.Status.SUBMITTED, VendorCheck.Status.DECIDED):
            return None
        _raise_if_in_flight(check, now)
        check.status = VendorCheck.Status.SUBMITTING
        check.claimed_at = now
        check.claimed_by = fence.token if (fence := current_fence()) else task_id
        check.submit_attempts += 1
        check.save(update_fields=["status", "claimed_at", "claimed_by", "submit_attempts"])
        started = Submission.objects.filter(pk=submission.pk, status=Submission.Status.PENDING).update(
            status=Submission.Status.CHECKING, check_started_at=now, updated_at=now
        )
        if started:
            _event(submission.pk, SubmissionEvent.Kind.CHECK_STARTED, task_id)
    return check


def _submit(submission: Submission, task_id: str) -> str:
    check = VendorCheck.objects.filter(submission=submission).first()
    if check is not None:
        if check.status in (VendorCheck.Status.SUBMITTED, VendorCheck.Status.DECIDED):
            return "already submitted"
        _raise_if_in_flight(check, timezone.now())
    documents = list(submission.documents.filter(purged_at__isnull=True).order_by("position"))
    if not documents:
        raise PermanentError(f"submission {submission.pk} has no documents left to send")
    take_or_reschedule(vendor_bucket(), what="KYC vendor")
    claimed = _claim(submission, task_id)
    if claimed is None:
        return "already submitted"
    check = claimed
    with (
        _vendor_call(check, kind=VendorAttempt.Kind.SUBMIT, task_id=task_id) as call,
        contextlib.ExitStack() as files,
    ):
        uploads = [
            vendor.Upload(
                content=files.enter_context(default_storage.open(doc.file, "rb")),
                content_type=CONTENT_TYPE[doc.kind],
                name=f"document-{doc.position}.{doc.kind}",
            )
            for doc in documents
        ]
        result = vendor.submit_check(
            idempotency_key=str(submission.pk), document_type=submission.document_type, documents=uploads
        )
    with transaction.atomic():
        call.record(outcome=VendorAttempt.Outcome.OK, status_code=result.status_code)
        marked = VendorCheck.objects.filter(pk=check.pk, status=VendorCheck.Status.SUBMITTING).update(
            status=VendorCheck.Status.SUBMITTED,
            vendor_check_id=result.check_id,
            submitted_at=timezone.now(),
            claimed_at=None,
            last_error="",
        )
        if not marked:
            return "already submitted"  # another attempt got there first (its claim had expired)
        _event(submission.pk, SubmissionEvent.Kind.SUBMITTED, task_id, vendor_status=result.status)
        if result.is_final:
            _decide(submission.pk, check.pk, result, task_id)
        else:
            _schedule_poll(submission.pk, 1)
    logger.info("kyc %s submitted to the vendor: %s", submission.pk, result.status)
    return result.status


def _poll(submission: Submission, number: int, task_id: str) -> str:
    check = VendorCheck.objects.get(submission=submission)
    if check.status != VendorCheck.Status.SUBMITTED or check.polls >= number:
        return "stale poll"
    if number > settings.KYC_POLL_MAX_COUNT:
        raise PermanentError(f"the vendor gave no decision after {number - 1} polls")
    take_or_reschedule(vendor_bucket(), what="KYC vendor")
    with _vendor_call(check, kind=VendorAttempt.Kind.POLL, task_id=task_id) as call:
        result = vendor.get_check(check.vendor_check_id)
    with transaction.atomic():
        locked = VendorCheck.objects.select_for_update().get(pk=check.pk)
        call.record(outcome=VendorAttempt.Outcome.OK, status_code=result.status_code)
        if locked.status != VendorCheck.Status.SUBMITTED or locked.polls >= number:
            return "stale poll"
        locked.polls = number
        locked.last_polled_at = timezone.now()
        locked.last_error = ""
        locked.save(update_fields=["polls", "last_polled_at", "last_error"])
        if result.is_final:
            _decide(submission.pk, locked.pk, result, task_id)
        else:
            _schedule_poll(submission.pk, number + 1)
    return result.status


def _reopen(submission: Submission, task_id: str) -> bool:
    """A replayed dead letter: the failed submission is checked again (if it still can be)."""
    now = timezone.now()
    with transaction.atomic():
        try:
            with transaction.atomic():
                reopened = Submission.objects.filter(
                    pk=submission.pk, status=Submission.Status.FAILED, documents_purged_at__isnull=True
                ).update(status=Submission.Status.CHECKING, decided_at=None, reason_codes=[], updated_at=now)
        except IntegrityError as exc:
            raise PermanentError(
                f"submission {submission.pk} stays failed: its owner has opened a newer one"
            ) from exc
        if not reopened:
            return False
        VendorCheck.objects.filter(submission=submission).update(
            status=VendorCheck.Status.PENDING, claimed_at=None, polls=0
        )
        _event(submission.pk, SubmissionEvent.Kind.REOPENED, task_id)
    return True


def kyc_check_run(*, submission_id: str, poll: int = 0, task_id: str = "", replay: bool = False) -> str:
    """Advance the submission's vendor check by one step; returns what happened."""
    submission = Submission.objects.get(pk=submission_id)
    if submission.status == Submission.Status.FAILED and replay:
        if not _reopen(submission, task_id):
            return "failed; its documents are gone, nothing to send again"
        submission.refresh_from_db()
        poll = 0  # start over: the same idempotency key returns the vendor's existing check
    if not submission.is_open:
        return f"already {submission.status}"  # a late duplicate or an outdated poll
    if poll == 0:
        return _submit(submission, task_id)
    return _poll(submission, poll, task_id)


def kyc_check_mark_failed(*, submission_id: str, error: str, task_id: str = "") -> None:
    """The check task was dead-lettered: the check and the submission are failed (final)."""
    try:
        uuid.UUID(submission_id)
    except ValueError:
        return  # dead-lettered for a malformed id: there is no submission to mark
    now = timezone.now()
    with transaction.atomic():
        VendorCheck.objects.filter(submission_id=submission_id).exclude(
            status=VendorCheck.Status.DECIDED
        ).update(status=VendorCheck.Status.FAILED, claimed_at=None, last_error=redact(error)[:2000])
        failed = Submission.objects.filter(pk=submission_id, status__in=Submission.OPEN).update(
            status=Submission.Status.FAILED, decided_at=now, updated_at=now
        )
        if failed:
            _event(submission_id, SubmissionEvent.Kind.FAILED, task_id, error=redact(error)[:300])
