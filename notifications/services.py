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

import contextlib
import logging
import os
import re
import smtplib
import time
from datetime import timedelta
from enum import StrEnum
from typing import Any

from django.conf import settings
from django.contrib.auth.models import User
from django.core.mail import EmailMultiAlternatives, get_connection
from django.core.mail.backends.base import BaseEmailBackend
from django.db import InterfaceError, OperationalError, connection
from django.template.loader import render_to_string
from django.utils import timezone
from opentelemetry.trace import SpanKind

from core import request_id, tracing
from core.errors import PermanentError
from core.redact import redact
from jobs.errors import Reschedule
from jobs.execution import Superseded, current_fence, owner_cte
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


# One statement claims the row, creating it on first use: no lock is held across round trips,
# and the common case (a first attempt) costs one round trip instead of five. Fenced: it claims
# only while the task's run still holds its task id (jobs/execution.py), and says whether it did.
_CLAIM_SQL = """
WITH owner AS ({owner}),
claimed AS (
    INSERT INTO notifications_emaildelivery AS d
        (template, ledger_key, recipient_id, message_id, status, attempts, claimed_at, claimed_by,
         last_error, created_at)
    SELECT %(template)s, %(ledger_key)s, %(recipient)s, %(message_id)s, 'sending', 1, %(now)s,
           %(claimant)s, '', %(now)s
    WHERE EXISTS (SELECT 1 FROM owner)
    ON CONFLICT (template, ledger_key) DO UPDATE
        SET status = 'sending', claimed_at = %(now)s, claimed_by = %(claimant)s, attempts = d.attempts + 1
        WHERE d.status <> 'sent'
          AND (d.status <> 'sending' OR d.claimed_by IN (%(claimant)s, %(predecessor)s)
               OR d.claimed_at IS NULL OR d.claimed_at <= %(lease_start)s)
    RETURNING id
)
SELECT (SELECT count(*) FROM owner), (SELECT id FROM claimed)
"""


def _claim(*, template: str, ledger_key: str, recipient: User, task_id: str) -> EmailDelivery | None:
    """Returns the delivery claimed for sending, or None when it was already sent.

    The claimant is the run's owner token (`<task id>:<epoch>`). A delivery left `sending` by
    another claimant is left alone until its lease ends: that run may still be mid-send (a
    stalled run is taken over, but may wake up and finish its SMTP conversation). Only the
    run this one took over from a process known dead is taken over at once.
    """
    fence = current_fence()
    owner, fence_params = owner_cte(fence)
    now = timezone.now()
    message_id = message_id_for(template, ledger_key)
    with connection.cursor() as cursor:
        cursor.execute(
            _CLAIM_SQL.format(owner=owner),
            {
                "template": template,
                "ledger_key": ledger_key,
                "recipient": recipient.pk,
                "message_id": message_id,
                "now": now,
                "claimant": fence.token if fence else task_id,
                "predecessor": fence.predecessor_token if fence else "",
                "lease_start": now - claim_lease(),
                **fence_params,
            },
        )
        held, claimed = cursor.fetchone() or (0, None)
    if not held:
        raise Superseded(f"task {task_id} was taken over: its claim of email {ledger_key} was refused")
    if claimed is not None:
        return EmailDelivery(
            pk=claimed,
            template=template,
            ledger_key=ledger_key,
            message_id=message_id,
            claimed_by=fence.token if fence else task_id,
        )
    # Not claimed: either already sent, or another attempt holds a live claim.
    current = EmailDelivery.objects.get(template=template, ledger_key=ledger_key)
    if current.status == EmailDelivery.Status.SENT:
        return None
    # Another attempt (a duplicate delivery) is talking to the SMTP server right now.
    wait = ((current.claimed_at or now) + claim_lease() - now).total_seconds()
    raise Reschedule(max(wait, 1.0), f"email {current.pk} is being sent by another attempt")


def _render(template: str, context: dict[str, Any]) -> tuple[str, str, str]:
    subject = render_to_string(f"emails/{template}/subject.txt", context).strip()
    text = render_to_string(f"emails/{template}/body.txt", context)
    html = render_to_string(f"emails/{template}/body.html", context)
    return subject, text, html


# The attempt's row and the delivery's new status in one statement (one round trip, where a
# transaction of two ORM writes took four: BEGIN, INSERT, UPDATE, COMMIT). The status is
# recorded only while the claim is still ours: a claim that outlived its lease may have been
# taken by a newer run, whose record is the one that counts; the attempt is recorded either way.
_FINISH_SQL = """
WITH marked AS (
    UPDATE notifications_emaildelivery
    SET status = %(status)s, sent_at = %(sent_at)s, last_error = %(error)s
    WHERE id = %(delivery)s AND claimed_by = %(claimant)s
    RETURNING id
)
INSERT INTO notifications_emailattempt
    (delivery_id, task_id, outcome, smtp_code, error, started_at, duration_ms)
VALUES (%(delivery)s, %(task_id)s, %(outcome)s, %(code)s, %(error)s, %(started_at)s, %(duration_ms)s)
RETURNING (SELECT count(*) FROM marked)
"""


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
    now, took = timezone.now(), time.monotonic() - started
    with connection.cursor() as cursor:
        cursor.execute(
            _FINISH_SQL,
            {
                "delivery": delivery.pk,
                "claimant": delivery.claimed_by,
                "status": str(status),
                "sent_at": now if status == EmailDelivery.Status.SENT else None,
                "task_id": task_id,
                "outcome": str(outcome),
                "code": code,
                "error": redact(error)[:2000],
                "started_at": now - timedelta(seconds=took),
                "duration_ms": int(took * 1000),
            },
        )
        (marked,) = cursor.fetchone()
    if not marked:
        logger.warning("email %s: the claim was taken over before its %s was recorded", delivery.pk, outcome)


def _record_sent(delivery: EmailDelivery, *, started: float, task_id: str) -> None:
    """Mark the delivery sent, through a database outage while the claim's lease lasts. The SMTP
    server took the email and only this process knows: a mark lost to a dropped connection would
    leave the claim to expire and the retry to send the email again."""
    deadline = time.monotonic() + claim_lease().total_seconds()
    while True:
        try:
            _finish(delivery, outcome=EmailAttempt.Outcome.SENT, started=started, task_id=task_id, code=250)
        except (OperationalError, InterfaceError):
            if time.monotonic() >= deadline:
                raise
            logger.warning("email %s sent; the database is unreachable, retrying its mark", delivery.pk)
            connection.close()  # a fresh connection on the next try
            time.sleep(1)  # waiting for the database to come back, within the claim's lease
        else:
            return


_smtp: dict[int, BaseEmailBackend] = {}  # one open connection per process (pool children fork)


def _connection() -> tuple[BaseEmailBackend, bool]:
    """This process's SMTP connection, kept open between emails (a new one costs a TCP
    handshake and EHLO for every email, plus TLS and AUTH in production). Returns
    (backend, reused)."""
    backend = _smtp.get(os.getpid())
    if backend is not None:
        return backend, True
    _smtp.clear()  # a connection inherited through fork belongs to the parent
    backend = get_connection(timeout=settings.EMAIL_TIMEOUT)
    backend.open()
    _smtp[os.getpid()] = backend
    return backend, False


def _drop_connection() -> None:
    backend = _smtp.pop(os.getpid(), None)
    if backend is not None:
        with contextlib.suppress(Exception):
            backend.close()


def _send(message: EmailMultiAlternatives) -> None:
    while True:
        message.connection, reused = _connection()
        try:
            message.send()
        except smtplib.SMTPServerDisconnected:
            _drop_connection()
            if not reused:
                raise
            # The server closed the idle connection: one more try, on a fresh one.
        except Exception:
            _drop_connection()  # the next email starts from a clean connection
            raise
        else:
            return


def _smtp_attributes(template: str, ledger_key: str) -> dict[str, Any]:
    # Which email and where to, never to whom: the recipient stays out of traces.
    return {
        "network.protocol.name": "smtp",
        "server.address": settings.EMAIL_HOST,
        "server.port": settings.EMAIL_PORT,
        "taskyard.email.template": template,
        "taskyard.email.ledger_key": ledger_key,
    }


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
        headers={"Message-ID": delivery.message_id, "X-Request-ID": request_id.get() or "-"},
    )
    message.attach_alternative(html, "text/html")
    if (fence := current_fence()) is not None and not fence.holds():
        # Taken over since the claim (this run stalled): the new run sends, after the lease.
        raise Superseded(f"task {fence.task_id} was taken over before email {delivery.pk} was sent")
    try:
        with tracing.span("smtp send", _smtp_attributes(template, ledger_key), kind=SpanKind.CLIENT):
            _send(message)
    except Exception as exc:
        classified, code = classify_smtp(exc)
        outcome = (
            EmailAttempt.Outcome.PERMANENT
            if isinstance(classified, PermanentError)
            else EmailAttempt.Outcome.RETRYABLE
        )
        _finish(delivery, outcome=outcome, started=started, task_id=task_id, code=code, error=str(classified))
        raise classified from exc
    _record_sent(delivery, started=started, task_id=task_id)
    logger.info("email %s for %s sent as %s", template, ledger_key, delivery.message_id)
    return SendResult.SENT


def email_mark_failed(*, template: str, ledger_key: str, error: str) -> None:
    """The sending task was dead-lettered: the delivery is failed until a replay sends it."""
    EmailDelivery.objects.filter(template=template, ledger_key=ledger_key).exclude(
        status=EmailDelivery.Status.SENT
    ).update(status=EmailDelivery.Status.FAILED, last_error=redact(error)[:2000])
