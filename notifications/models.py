"""The email delivery ledger: one row per (template, ledger key), one Attempt row per try.

The unique row is what makes sending idempotent: a task delivered twice finds the row
`sent` and stops. Claim, commit, call, mark: the row is claimed (`sending`) in a short
transaction, the SMTP call happens outside any transaction, then the row is marked.
A crash between the SMTP server's 250 and the mark leaves `sending`; the retry sends
again with the same deterministic Message-ID, so the duplicate is recognisable.
"""

from django.conf import settings
from django.db import models


class EmailDelivery(models.Model):
    class Status(models.TextChoices):
        PENDING = "pending"
        SENDING = "sending"  # claimed by an attempt that has not reported back
        SENT = "sent"
        FAILED = "failed"  # a permanent error or retries exhausted (a DeadLetter exists)

    template = models.CharField(max_length=100)
    ledger_key = models.CharField(max_length=200)  # e.g. "order:123": what the email is about
    recipient = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="+")
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.PENDING)
    message_id = models.CharField(max_length=300, unique=True)
    attempts = models.PositiveIntegerField(default=0)
    claimed_at = models.DateTimeField(null=True, blank=True)
    # The claiming run's owner token (`<task id>:<epoch>`, jobs/execution.py Fence).
    claimed_by = models.CharField(max_length=64, blank=True, default="")
    sent_at = models.DateTimeField(null=True, blank=True)
    last_error = models.TextField(blank=True, default="")
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["template", "ledger_key"], name="one_email_per_template_and_object"
            )
        ]
        verbose_name_plural = "email deliveries"

    def __str__(self) -> str:
        return f"{self.template} {self.ledger_key} ({self.status})"


class EmailAttempt(models.Model):
    class Outcome(models.TextChoices):
        SENT = "sent"
        RETRYABLE = "retryable"
        PERMANENT = "permanent"

    delivery = models.ForeignKey(EmailDelivery, on_delete=models.CASCADE, related_name="attempt_rows")
    task_id = models.CharField(max_length=64, blank=True, default="")
    outcome = models.CharField(max_length=16, choices=Outcome.choices)
    smtp_code = models.PositiveSmallIntegerField(null=True, blank=True)
    error = models.TextField(blank=True, default="")
    started_at = models.DateTimeField()
    duration_ms = models.PositiveIntegerField()

    def __str__(self) -> str:
        return f"{self.delivery_id} {self.outcome}"
