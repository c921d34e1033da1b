"""KYC submissions, their documents, the vendor check ledger and an audit trail.

Submission       what the user sent and where it stands: pending -> checking -> approved |
                 rejected | manual_review, or failed (the check was dead-lettered).
                 At most one open (pending/checking) submission per user: a partial
                 unique index, not a check-then-insert.
Document         one uploaded file: its sniffed type, size and hash, and the private
                 storage name (random; the client's file name is never stored). Emptied
                 when the retention task deletes the file; the row stays.
VendorCheck      the delivery ledger of the vendor call, one per submission: claimed
                 before the call, marked after it, so a duplicate task does not submit
                 twice. The vendor's idempotency key is the submission id.
VendorAttempt    one row per HTTP call to the vendor (submit or poll): status code,
                 outcome, task id, duration.
SubmissionEvent  the audit trail: created, check started, submitted, decided, failed,
                 reopened, documents purged (when, how many, by which task).
"""

import uuid

from django.conf import settings
from django.db import models
from django.db.models import Q


class DocumentType(models.TextChoices):
    PASSPORT = "passport"
    ID_CARD = "id_card"
    DRIVING_LICENCE = "driving_licence"
    RESIDENCE_PERMIT = "residence_permit"


class Submission(models.Model):
    class Status(models.TextChoices):
        PENDING = "pending"  # saved; the check task has not started yet
        CHECKING = "checking"  # the vendor has (or is being sent) the documents
        APPROVED = "approved"
        REJECTED = "rejected"
        MANUAL_REVIEW = "manual_review"  # the vendor wants more or better documents
        FAILED = "failed"  # the check could not be completed (a DeadLetter exists)

    OPEN = (Status.PENDING, Status.CHECKING)
    FINAL = (Status.APPROVED, Status.REJECTED, Status.MANUAL_REVIEW, Status.FAILED)

    id = models.UUIDField(primary_key=True, default=uuid.uuid4)  # also the vendor idempotency key
    owner = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="+")
    document_type = models.CharField(max_length=32, choices=DocumentType.choices)
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.PENDING)
    reason_codes = models.JSONField(default=list, blank=True)  # as the vendor sent them
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)  # .update() calls set it explicitly
    check_started_at = models.DateTimeField(null=True, blank=True)
    # The final status was reached (failed included): retention counts from here.
    decided_at = models.DateTimeField(null=True, blank=True)
    documents_purged_at = models.DateTimeField(null=True, blank=True)
    documents_purged_count = models.PositiveIntegerField(default=0)
    documents_purged_by = models.CharField(max_length=64, blank=True, default="")  # task id

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["owner"],
                condition=Q(status__in=["pending", "checking"]),
                name="kyc_one_open_submission_per_user",
            )
        ]
        indexes = [
            models.Index(fields=["owner", "-created_at"], name="kyc_submission_owner"),
            # The retention task's query: decided, files not yet purged, by decision time.
            models.Index(
                fields=["decided_at"], name="kyc_submission_purge_due", condition=Q(documents_purged_at=None)
            ),
        ]

    def __str__(self) -> str:
        return f"kyc {self.id} ({self.status})"

    @property
    def is_open(self) -> bool:
        return self.status in self.OPEN


class Document(models.Model):
    class Kind(models.TextChoices):
        PDF = "pdf"
        JPEG = "jpeg"
        PNG = "png"

    submission = models.ForeignKey(Submission, on_delete=models.CASCADE, related_name="documents")
    position = models.PositiveSmallIntegerField()
    kind = models.CharField(max_length=8, choices=Kind.choices)  # sniffed from the bytes
    size = models.PositiveIntegerField()
    sha256 = models.CharField(max_length=64)
    width = models.PositiveIntegerField(null=True, blank=True)  # images only
    height = models.PositiveIntegerField(null=True, blank=True)
    file = models.CharField(max_length=300, blank=True, default="")  # private storage name; "" once purged
    purged_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["position"]
        constraints = [
            models.UniqueConstraint(fields=["submission", "position"], name="kyc_document_position")
        ]

    def __str__(self) -> str:
        return f"{self.submission_id} #{self.position} {self.kind}"


class VendorCheck(models.Model):
    class Status(models.TextChoices):
        PENDING = "pending"  # not sent yet, or the last attempt failed and a retry follows
        SUBMITTING = "submitting"  # an attempt is talking to the vendor (claimed_at)
        SUBMITTED = "submitted"  # the vendor has it; we poll for the decision
        DECIDED = "decided"
        FAILED = "failed"  # permanent error or retries exhausted (a DeadLetter exists)

    submission = models.OneToOneField(Submission, on_delete=models.CASCADE, related_name="vendor_check")
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.PENDING)
    vendor_check_id = models.CharField(max_length=100, blank=True, default="")
    submit_attempts = models.PositiveIntegerField(default=0)
    polls = models.PositiveIntegerField(default=0)  # poll number last answered by the vendor
    claimed_at = models.DateTimeField(null=True, blank=True)
    # The submitting run's owner token (jobs/execution.py Fence). Its successor takes a claim of a
    # run known dead at once: the vendor's Idempotency-Key makes the repeated submit harmless.
    claimed_by = models.CharField(max_length=64, blank=True, default="", db_default="")
    submitted_at = models.DateTimeField(null=True, blank=True)
    last_polled_at = models.DateTimeField(null=True, blank=True)
    decided_at = models.DateTimeField(null=True, blank=True)
    decision = models.CharField(max_length=16, blank=True, default="")
    last_error = models.TextField(blank=True, default="")
    created_at = models.DateTimeField(auto_now_add=True)

    def __str__(self) -> str:
        return f"vendor check of {self.submission_id} ({self.status})"


class VendorAttempt(models.Model):
    class Kind(models.TextChoices):
        SUBMIT = "submit"
        POLL = "poll"

    class Outcome(models.TextChoices):
        OK = "ok"
        RETRYABLE = "retryable"
        PERMANENT = "permanent"
        ERROR = "error"  # failed before or around the call (e.g. a file missing from storage)

    vendor_check = models.ForeignKey(VendorCheck, on_delete=models.CASCADE, related_name="attempts")
    kind = models.CharField(max_length=8, choices=Kind.choices)
    task_id = models.CharField(max_length=64, blank=True, default="")
    outcome = models.CharField(max_length=16, choices=Outcome.choices)
    status_code = models.PositiveSmallIntegerField(null=True, blank=True)
    error = models.TextField(blank=True, default="")
    started_at = models.DateTimeField()
    duration_ms = models.PositiveIntegerField()

    class Meta:
        ordering = ["started_at"]

    def __str__(self) -> str:
        return f"{self.kind} {self.outcome} ({self.status_code})"


class SubmissionEvent(models.Model):
    class Kind(models.TextChoices):
        CREATED = "created"
        CHECK_STARTED = "check_started"
        SUBMITTED = "submitted"
        DECIDED = "decided"
        FAILED = "failed"
        REOPENED = "reopened"  # a dead-lettered check was replayed
        DOCUMENTS_PURGED = "documents_purged"

    submission = models.ForeignKey(Submission, on_delete=models.CASCADE, related_name="events")
    kind = models.CharField(max_length=20, choices=Kind.choices)
    at = models.DateTimeField(auto_now_add=True)
    task_id = models.CharField(max_length=64, blank=True, default="")
    detail = models.JSONField(default=dict, blank=True)  # counts, codes, statuses: never document content

    class Meta:
        ordering = ["at", "id"]

    def __str__(self) -> str:
        return f"{self.submission_id} {self.kind}"
