"""Order tasks: IDs in, a service call, a declared retry policy. Nothing else."""

from typing import Any

from django.conf import settings
from django.tasks import task

from config.celery_app import app
from jobs.base_task import BaseTask
from jobs.policy import RetryPolicy
from jobs.queues import Queue
from jobs.tasks_backend import policy
from notifications.services import email_mark_failed
from orders import exports, invoices, services

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


@app.task(
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


@app.task(
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


@app.task(base=InvoiceTask, name="orders.render_invoice_pdf", queue=Queue.DOCUMENTS, policy=DOCUMENT_POLICY)
def render_invoice_pdf(order_id: int) -> str:
    return invoices.invoice_render(order_id=order_id).content_hash


@app.task(base=BaseTask, name="orders.auto_cancel_unpaid", queue=Queue.DEFAULT, policy=STATE_POLICY)
def auto_cancel_unpaid(order_id: int) -> bool:
    return services.order_auto_cancel(order_id=order_id)


# The CSV export uses Django's task API (jobs/tasks_backend.py): orders.exports enqueues it with
# export_orders.enqueue(job_id=...) in its transaction; it runs as jobs.run_django_task.
@policy(DOCUMENT_POLICY, soft_time_limit=14 * 60, time_limit=15 * 60, job_kwarg="job_id")
@task(queue_name=Queue.DOCUMENTS)
def export_orders(job_id: str) -> str:
    return exports.order_export_run(job_id=job_id)


# Alias for one release: export messages queued under the old Celery name before the deploy
# still run. Remove it (and its line in config/registered_tasks.txt) once they have drained.
@app.task(
    base=BaseTask,
    name="orders.export_orders",
    queue=Queue.DOCUMENTS,
    policy=DOCUMENT_POLICY,
    soft_time_limit=14 * 60,
    time_limit=15 * 60,
)
def export_orders_celery_alias(job_id: str) -> str:
    return exports.order_export_run(job_id=job_id)
