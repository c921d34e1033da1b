"""KYC writes: start a submission, send its result email.

kyc_submission_start -> the files are written to private storage under random names
    (only after every file was inspected), then in one transaction: the Submission,
    its Document rows, the audit event and the check task (outbox). If anything in the
    transaction fails, the files just written are deleted again; a request killed in
    between leaves files no row points to, which the retention task sweeps up
    (kyc/retention.py). One open submission per user is a partial unique index: two
    concurrent uploads cannot both get in.
"""

import logging
import secrets
from collections.abc import Sequence

from django.contrib.auth.models import User
from django.core.files.storage import default_storage
from django.db import IntegrityError, transaction
from django.utils import timezone

from core.errors import PermanentError
from jobs import outbox
from kyc.checks import CHECK_TASK
from kyc.documents import InspectedDocument
from kyc.errors import SubmissionAlreadyOpen
from kyc.models import Document, DocumentType, Submission, SubmissionEvent
from notifications.services import SendResult, email_send

logger = logging.getLogger(__name__)

OPEN_CONSTRAINT = "kyc_one_open_submission_per_user"
STORAGE_PREFIX = "kyc"
EMAIL_TEMPLATES: dict[str, str] = {
    Submission.Status.APPROVED.value: "kyc_approved",
    Submission.Status.REJECTED.value: "kyc_rejected",
    Submission.Status.MANUAL_REVIEW.value: "kyc_manual_review",  # "more documents needed"
}
# What the vendor's reason codes mean to the customer. Unknown codes are shown as they are.
REASON_TEXT = {
    "clear": "All checks passed.",
    "document_expired": "The document has expired.",
    "document_tampered": "The document appears to have been altered.",
    "document_unreadable": "The document could not be read.",
    "image_quality_low": "The image is blurred, dark or cut off.",
    "additional_document_required": "We need an additional document.",
}


def _already_open() -> SubmissionAlreadyOpen:
    return SubmissionAlreadyOpen(
        "You already have a KYC submission being checked; wait for its result before sending another."
    )


def has_open_submission(user: User) -> bool:
    return Submission.objects.filter(owner=user, status__in=Submission.OPEN).exists()


def storage_name(kind: str) -> str:
    """A random, unguessable name; the client's file name is never used or stored."""
    today = timezone.now()
    return f"{STORAGE_PREFIX}/{today:%Y/%m/%d}/{secrets.token_hex(16)}.{kind}"


def _delete_files(names: Sequence[str]) -> None:
    for name in names:
        try:
            default_storage.delete(name)
        except OSError:
            logger.warning("kyc: could not delete %s; the retention sweep will", name)


def kyc_submission_start(
    *, user: User, document_type: DocumentType | str, documents: Sequence[InspectedDocument]
) -> Submission:
    if has_open_submission(user):
        raise _already_open()  # the fast answer; the unique index is the guarantee
    written: list[str] = []
    try:
        for doc in documents:  # one by one: whatever was written is known if the next one fails
            name = default_storage.save(storage_name(doc.kind), doc.file)
            written.append(name)
        with transaction.atomic():
            submission = Submission.objects.create(owner=user, document_type=document_type)
            Document.objects.bulk_create(
                Document(
                    submission=submission,
                    position=position,
                    kind=doc.kind,
                    size=doc.size,
                    sha256=doc.sha256,
                    width=doc.width,
                    height=doc.height,
                    file=name,
                )
                for position, (doc, name) in enumerate(zip(documents, written, strict=True), start=1)
            )
            SubmissionEvent.objects.create(
                submission=submission,
                kind=SubmissionEvent.Kind.CREATED,
                detail={"files": len(written), "bytes": sum(d.size for d in documents)},
            )
            outbox.enqueue(CHECK_TASK, kwargs={"submission_id": str(submission.pk)})
    except IntegrityError as exc:
        _delete_files(written)
        if OPEN_CONSTRAINT in str(exc):
            raise _already_open() from exc
        raise
    except BaseException:
        _delete_files(written)
        raise
    return submission


def _email_context(submission: Submission) -> dict[str, object]:
    return {
        "reference": str(submission.pk).split("-")[0].upper(),
        "document_type": DocumentType(submission.document_type).label,
        "submitted_on": f"{submission.created_at:%Y-%m-%d}",
        "reasons": [REASON_TEXT.get(code, code) for code in submission.reason_codes if code != "clear"],
    }


def kyc_result_email_send(*, submission_id: str, decision: str, task_id: str = "") -> SendResult:
    """The result email for one decision, once (the delivery ledger key names the decision)."""
    submission = Submission.objects.select_related("owner").get(pk=submission_id)
    template = EMAIL_TEMPLATES.get(decision)
    if template is None:
        raise PermanentError(f"no result email for decision {decision!r}")
    return email_send(
        template=template,
        ledger_key=f"kyc:{submission.pk}:{decision}",
        recipient=submission.owner,
        context=_email_context(submission),
        task_id=task_id,
    )
