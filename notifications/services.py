"""Sending email, exactly once per (template, ledger key).

Domain tasks load their objects and hand over recipient, template, context and a
ledger key; this module imports no domain app.

    email_send(template="order_confirmation", ledger_key=f"order:{order.id}",
               recipient=order.owner, context={...}, task_id=self.request.id)

Claim, commit, call, mark: the delivery row is claimed in a short transaction, the SMTP
conversation happens outside any transaction (no row lock held across the network),
then the row is marked sent. SMTP 4xx and connection errors raise RetryableError,
5xx PermanentError (notifications/errors.py); the calling task's policy does the rest.
"""

import logging
import re
import time
from datetime import timedelta
from enum import StrEnum
from typing import Any

from django.conf import settings
from django.contrib.auth.models import User
from django.core.mail import EmailMultiAlternatives, get_connection
from django.db import transaction
from django.template.loader import render_to_string
from django.utils import timezone

from jobs import correlation
from jobs.errors import PermanentError, Reschedule
from jobs.redact import redact
from notifications.errors import classify_smtp
from notifications.models import EmailAttempt, EmailDelivery

logger = logging.getLogger(__name__)


class SendResult(StrEnum):
    SENT = "sent"
    ALREADY_SENT = "already_sent"


def message_id_for(template: str, ledger_key: str) -> str:
    """Deterministic: the same email always carries the same Message-ID."""
    slug = re.sub(r"[^A-Za-z0-9]+", "-", ledger_key).strip("-")
    return f"<{template}.{slug}@{settings.EMAIL_MESSAGE_ID_DOMAIN}>"


def claim_lease() -> timedelta:
    # An attempt still inside its SMTP conversation is left alone for this long.
    return timedelta(seconds=settings.EMAIL_TIMEOUT * 3)


def _claim(*, template: str, ledger_key: str, recipient: User, task_id: str) -> EmailDelivery | None:
    """Returns the delivery claimed for sending, or None when it was already sent.

    A delivery left `sending` by this same task id means that attempt died mid-send (a task
    id runs in one place at a time, jobs/execution.py), so it is taken over at once; one
    claimed by another task id is left alone until its lease ends.
    """
    now = timezone.now()
    with transaction.atomic():
        delivery, _ = EmailDelivery.objects.select_for_update().get_or_create(
            template=template,
            ledger_key=ledger_key,
            defaults={"recipient": recipient, "message_id": message_id_for(template, ledger_key)},
        )
        if delivery.status == EmailDelivery.Status.SENT:
            return None
        if (
            delivery.status == EmailDelivery.Status.SENDING
            and delivery.claimed_by != task_id
            and delivery.claimed_at
            and delivery.claimed_at > now - claim_lease()
        ):
            # Another attempt (a duplicate delivery) is talking to the SMTP server right now.
            wait = (delivery.claimed_at + claim_lease() - now).total_seconds()
            raise Reschedule(max(wait, 1.0), f"email {delivery.pk} is being sent by another attempt")
        delivery.status = EmailDelivery.Status.SENDING
        delivery.claimed_at = now
        delivery.claimed_by = task_id
        delivery.attempts += 1
        delivery.save(update_fields=["status", "claimed_at", "claimed_by", "attempts"])
    return delivery


def _render(template: str, context: dict[str, Any]) -> tuple[str, str, str]:
    subject = render_to_string(f"emails/{template}/subject.txt", context).strip()
    text = render_to_string(f"emails/{template}/body.txt", context)
    html = render_to_string(f"emails/{template}/body.html", context)
    return subject, text, html


def _finish(
    delivery: EmailDelivery,
    *,
    outcome: str,
    started: float,
    task_id: str,
    code: int | None = None,
    error: str = "",
) -> None:
    status = {
        EmailAttempt.Outcome.SENT: EmailDelivery.Status.SENT,
        EmailAttempt.Outcome.RETRYABLE: EmailDelivery.Status.PENDING,
        EmailAttempt.Outcome.PERMANENT: EmailDelivery.Status.FAILED,
    }[EmailAttempt.Outcome(outcome)]
    with transaction.atomic():
        EmailAttempt.objects.create(
            delivery=delivery,
            task_id=task_id,
            outcome=outcome,
            smtp_code=code,
            error=redact(error)[:2000],
            started_at=timezone.now() - timedelta(seconds=time.monotonic() - started),
            duration_ms=int((time.monotonic() - started) * 1000),
        )
        EmailDelivery.objects.filter(pk=delivery.pk).update(
            status=status,
            sent_at=timezone.now() if status == EmailDelivery.Status.SENT else None,
            last_error=redact(error)[:2000],
        )


def email_send(
    *, template: str, ledger_key: str, recipient: User, context: dict[str, Any], task_id: str = ""
) -> SendResult:
    delivery = _claim(template=template, ledger_key=ledger_key, recipient=recipient, task_id=task_id)
    if delivery is None:
        logger.info("email %s for %s already sent; nothing to do", template, ledger_key)
        return SendResult.ALREADY_SENT
    started = time.monotonic()
    if not recipient.email:
        _finish(
            delivery,
            outcome=EmailAttempt.Outcome.PERMANENT,
            started=started,
            task_id=task_id,
            error="no address",
        )
        raise PermanentError(f"user {recipient.pk} has no email address")
    subject, text, html = _render(
        template, {**context, "recipient_name": recipient.first_name or recipient.username}
    )
    message = EmailMultiAlternatives(
        subject=subject,
        body=text,
        from_email=settings.DEFAULT_FROM_EMAIL,
        to=[recipient.email],
        headers={"Message-ID": delivery.message_id, "X-Correlation-ID": correlation.get() or "-"},
        connection=get_connection(timeout=settings.EMAIL_TIMEOUT),
    )
    message.attach_alternative(html, "text/html")
    try:
        message.send()
    except Exception as exc:
        classified, code = classify_smtp(exc)
        outcome = (
            EmailAttempt.Outcome.PERMANENT
            if isinstance(classified, PermanentError)
            else EmailAttempt.Outcome.RETRYABLE
        )
        _finish(delivery, outcome=outcome, started=started, task_id=task_id, code=code, error=str(classified))
        raise classified from exc
    _finish(delivery, outcome=EmailAttempt.Outcome.SENT, started=started, task_id=task_id, code=250)
    logger.info("email %s for %s sent as %s", template, ledger_key, delivery.message_id)
    return SendResult.SENT


def email_mark_failed(*, template: str, ledger_key: str, error: str) -> None:
    """The sending task was dead-lettered: the delivery is failed until a replay sends it."""
    EmailDelivery.objects.filter(template=template, ledger_key=ledger_key).exclude(
        status=EmailDelivery.Status.SENT
    ).update(status=EmailDelivery.Status.FAILED, last_error=redact(error)[:2000])
