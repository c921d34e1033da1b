"""Fulfilment tasks, the steps of the order-fulfillment flow: IDs in, a service call, a policy."""

from typing import Any

from celery import shared_task
from django.conf import settings

from fulfilment import services
from jobs.base_task import BaseTask
from jobs.policy import RetryPolicy
from jobs.queues import Queue
from notifications.services import email_mark_failed

RESERVE_POLICY = RetryPolicy(
    max_attempts=5, backoff_base=1.0, backoff_cap=60.0, notes="database errors; not enough stock: permanent"
)
CAPTURE_POLICY = RetryPolicy(
    max_attempts=6,
    backoff_base=2.0,
    backoff_cap=120.0,
    notes="provider 5xx/429/timeouts retried with the same Idempotency-Key; declined (402): permanent",
)
SHIP_POLICY = RetryPolicy(
    max_attempts=settings.EMAIL_RETRY_MAX_ATTEMPTS,
    backoff_base=settings.EMAIL_RETRY_BACKOFF_BASE,
    backoff_cap=settings.EMAIL_RETRY_BACKOFF_CAP,
    notes="SMTP 4xx and connection errors retried; SMTP 5xx, unpaid or unreserved order: permanent",
)


@shared_task(base=BaseTask, bind=True, name=services.RESERVE_TASK, queue=Queue.DEFAULT, policy=RESERVE_POLICY)
def reserve_stock(self: BaseTask, order_id: int) -> str:
    return services.stock_reserve(order_id=order_id, task_id=self.request.id or "")


@shared_task(
    base=BaseTask,
    bind=True,
    name=services.CAPTURE_TASK,
    queue=Queue.DEFAULT,
    policy=CAPTURE_POLICY,
    soft_time_limit=services.CAPTURE_SOFT_TIME_LIMIT,
    time_limit=services.CAPTURE_TIME_LIMIT,
)
def capture_payment(self: BaseTask, order_id: int) -> str:
    return services.payment_capture(order_id=order_id, task_id=self.request.id or "")


class ShipTask(BaseTask):
    def on_dead_letter(self, args: list[Any], kwargs: dict[str, Any], exc: BaseException) -> None:
        email_mark_failed(template="order_shipped", ledger_key=f"order:{kwargs['order_id']}", error=str(exc))


@shared_task(
    base=ShipTask,
    bind=True,
    name=services.SHIP_TASK,
    queue=Queue.EMAILS,
    policy=SHIP_POLICY,
    soft_time_limit=30,
    time_limit=45,
)
def ship_order(self: BaseTask, order_id: int) -> str:
    return services.order_ship(order_id=order_id, task_id=self.request.id or "")
