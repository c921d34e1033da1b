"""Order tasks: IDs in, a service call, a declared retry policy. Nothing else."""

from typing import Any

from celery import shared_task
from django.conf import settings

from jobs.base_task import BaseTask
from jobs.policy import RetryPolicy
from jobs.queues import Queue
from notifications.services import email_mark_failed
from orders import invoices, services

# The CSV export uses Django's task API; its Task is declared next to its service, and
# importing it here lists it with the other tasks (retry table, checks).
from orders.exports import export_orders  # noqa: F401

EMAIL_POLICY = RetryPolicy(
    max_attempts=settings.EMAIL_RETRY_MAX_ATTEMPTS,
    backoff_base=settings.EMAIL_RETRY_BACKOFF_BASE,
    backoff_cap=settings.EMAIL_RETRY_BACKOFF_CAP,
    notes="SMTP 4xx and connection errors retried; SMTP 5xx, missing order: permanent",
)
DOCUMENT_POLICY = RetryPolicy(
    max_attempts=5, backoff_base=5.0, backoff_cap=300.0, notes="database/storage errors"
)
STATE_POLICY = RetryPolicy(max_attempts=5, backoff_base=1.0, backoff_cap=60.0, notes="database errors only")


class OrderEmailTask(BaseTask):
    email_template = ""

    def on_dead_letter(self, args: list[Any], kwargs: dict[str, Any], exc: BaseException) -> None:
        email_mark_failed(
            template=self.email_template, ledger_key=f"order:{kwargs['order_id']}", error=str(exc)
        )


@shared_task(
    base=OrderEmailTask,
    bind=True,
    name="orders.send_confirmation_email",
    queue=Queue.EMAILS,
    policy=EMAIL_POLICY,
    email_template="order_confirmation",
    soft_time_limit=30,
    time_limit=45,
)
def send_confirmation_email(self: BaseTask, order_id: int) -> str:
    return services.order_email_send(
        order_id=order_id, template="order_confirmation", task_id=self.request.id or ""
    )


@shared_task(
    base=OrderEmailTask,
    bind=True,
    name="orders.send_cancellation_email",
    queue=Queue.EMAILS,
    policy=EMAIL_POLICY,
    email_template="order_cancelled",
    soft_time_limit=30,
    time_limit=45,
)
def send_cancellation_email(self: BaseTask, order_id: int) -> str:
    return services.order_email_send(
        order_id=order_id, template="order_cancelled", task_id=self.request.id or ""
    )


class InvoiceTask(BaseTask):
    def on_dead_letter(self, args: list[Any], kwargs: dict[str, Any], exc: BaseException) -> None:
        invoices.invoice_mark_failed(order_id=kwargs["order_id"])


@shared_task(
    base=InvoiceTask, name="orders.render_invoice_pdf", queue=Queue.DOCUMENTS, policy=DOCUMENT_POLICY
)
def render_invoice_pdf(order_id: int) -> str:
    return invoices.invoice_render(order_id=order_id).content_hash


@shared_task(base=BaseTask, name="orders.auto_cancel_unpaid", queue=Queue.DEFAULT, policy=STATE_POLICY)
def auto_cancel_unpaid(order_id: int) -> bool:
    return services.order_auto_cancel(order_id=order_id)
