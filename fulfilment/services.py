"""Order fulfilment as a flow (jobs/flows/): reserve stock and capture the payment in
parallel, then ship. Each effect happens once, under retries and redeliveries:

    fulfilment_start  the flow, in one transaction with its first two outbox rows; one active
                      fulfilment per order (a cancelled one frees the order for another).
    stock_reserve     the reservation row and the stock decrements commit together: a retry
                      finds the row and takes nothing more. Not enough stock is permanent.
    payment_capture   claim the PaymentCapture row (short transaction), call the provider with
                      Idempotency-Key = capture:order:<id> (no transaction, no lock held), mark
                      it captured. A retry after a timeout or a killed worker sends the same key
                      and gets the first capture back: never a second charge. A decline (402)
                      is permanent.
    order_ship        the Shipment row (one per order, deterministic tracking number), then the
                      "shipped" email through its own ledger (notifications.EmailDelivery).

The flow itself (fan-in, failure, cancellation, retry of a failed step) is jobs/flows/'s.
A failed flow keeps what its finished steps did: reserved stock stays reserved and a captured
payment captured, so retrying the failed step (admin) can finish the order. Releasing them is
a compensation this project does not automate (docs/flows.md).
"""

from collections import Counter
from datetime import timedelta

from django.contrib.auth.models import User
from django.db import IntegrityError, transaction
from django.db.models import F
from django.utils import timezone

from core.errors import PermanentError
from core.redact import redact
from fulfilment import payments
from fulfilment.errors import FulfilmentConflict, InsufficientStock, PaymentDeclined
from fulfilment.models import PaymentCapture, Shipment, StockItem, StockReservation
from jobs.errors import Reschedule
from jobs.flows.definition import Step
from jobs.flows.errors import FlowExists
from jobs.flows.services import flow_start
from jobs.models import Flow
from notifications.services import SendResult, email_send
from orders.selectors import OrderSummary, order_summary

KIND = "order-fulfillment"
RESERVE_TASK, CAPTURE_TASK, SHIP_TASK = (
    "fulfilment.reserve_stock",
    "fulfilment.capture_payment",
    "fulfilment.ship_order",
)
# Time limits of fulfilment.capture_payment (tasks.py): one call with its timeouts fits.
CAPTURE_SOFT_TIME_LIMIT = 30
CAPTURE_TIME_LIMIT = 45
# A capture in flight is left alone this long; a killed one is past its hard limit by then.
CAPTURE_LEASE = timedelta(seconds=CAPTURE_TIME_LIMIT + 15)
CAPTURE_RECHECK_SECONDS = 2.0


def fulfilment_steps(order_id: int) -> list[Step]:
    kwargs = {"order_id": order_id}
    return [
        Step("reserve-stock", RESERVE_TASK, kwargs=kwargs),
        Step("capture-payment", CAPTURE_TASK, kwargs=kwargs),
        Step("ship-order", SHIP_TASK, kwargs=kwargs, after=("reserve-stock", "capture-payment")),
    ]


def fulfilment_start(*, user: User, order_id: int) -> Flow:
    """Start fulfilling the user's paid order (Order.DoesNotExist for another user's)."""
    order = order_summary(order_id=order_id, user=user)
    if not order.paid:
        raise FulfilmentConflict(f"Order {order.number} is not paid; only paid orders are fulfilled.")
    with transaction.atomic():
        try:
            return flow_start(
                kind=KIND, owner=user, dedupe_key=f"{KIND}:{order.id}", steps=fulfilment_steps(order.id)
            )
        except FlowExists as exc:
            raise FulfilmentConflict(f"Order {order.number} is being (or was) fulfilled already.") from exc


def stock_reserve(*, order_id: int, task_id: str = "") -> str:
    order = order_summary(order_id=order_id)
    wanted = Counter[str]()
    for line in order.lines:
        wanted[line.sku] += line.quantity
    with transaction.atomic():
        try:
            with transaction.atomic():
                StockReservation.objects.create(
                    order_id=order.id,
                    lines=[{"sku": sku, "quantity": n} for sku, n in sorted(wanted.items())],
                    task_id=task_id,
                )
        except IntegrityError:
            return "already reserved"
        for sku in sorted(wanted):  # one lock order for every reservation: no deadlocks
            taken = StockItem.objects.filter(sku=sku, available__gte=wanted[sku]).update(
                available=F("available") - wanted[sku]
            )
            if not taken:  # rolls back the reservation row and the SKUs taken before
                raise InsufficientStock(
                    f"not enough {sku} in stock for {order.number} ({wanted[sku]} wanted)"
                )
    return "reserved"


def capture_key(order_id: int) -> str:
    return f"capture:order:{order_id}"


def _claim(order: OrderSummary, task_id: str) -> PaymentCapture | None:
    """Mark the capture in flight (committed before the call). None: captured already."""
    now = timezone.now()
    with transaction.atomic():
        capture, _ = PaymentCapture.objects.select_for_update().get_or_create(
            order_id=order.id,
            defaults={
                "idempotency_key": capture_key(order.id),
                "amount": order.total,
                "currency": order.currency,
            },
        )
        if capture.status == PaymentCapture.Status.CAPTURED:
            return None
        claimed_at = capture.claimed_at if capture.status == PaymentCapture.Status.CAPTURING else None
        if claimed_at is not None and capture.claimed_by != task_id and claimed_at > now - CAPTURE_LEASE:
            remaining = (claimed_at + CAPTURE_LEASE - now).total_seconds()
            raise Reschedule(
                min(remaining, CAPTURE_RECHECK_SECONDS), f"the capture of {order.number} is in flight"
            )
        capture.status, capture.claimed_at, capture.claimed_by = PaymentCapture.Status.CAPTURING, now, task_id
        capture.attempts += 1
        capture.save(update_fields=["status", "claimed_at", "claimed_by", "attempts"])
    return capture


def payment_capture(*, order_id: int, task_id: str = "") -> str:
    order = order_summary(order_id=order_id)
    capture = _claim(order, task_id)
    if capture is None:
        return "already captured"
    claimed = PaymentCapture.objects.filter(pk=capture.pk, status=PaymentCapture.Status.CAPTURING)
    try:
        result = payments.capture(
            idempotency_key=capture.idempotency_key,
            reference=order.number,
            amount=capture.amount,
            currency=capture.currency,
        )
    except PaymentDeclined as exc:
        claimed.update(
            status=PaymentCapture.Status.DECLINED, claimed_at=None, last_error=redact(str(exc))[:2000]
        )
        raise
    except Exception as exc:
        claimed.update(
            claimed_at=None, last_error=redact(f"{type(exc).__name__}: {exc}")[:2000]
        )  # retry at once
        raise
    claimed.update(
        status=PaymentCapture.Status.CAPTURED,
        provider_capture_id=result.capture_id,
        captured_at=timezone.now(),
        claimed_at=None,
        last_error="",
    )
    return "captured again (same key)" if result.replayed else "captured"


def tracking_number(order_id: int) -> str:
    return f"TYS-{order_id:010d}"


def order_ship(*, order_id: int, task_id: str = "") -> SendResult:
    order = order_summary(order_id=order_id)
    paid = PaymentCapture.objects.filter(order_id=order.id, status=PaymentCapture.Status.CAPTURED).exists()
    if not paid or not StockReservation.objects.filter(order_id=order.id).exists():
        raise PermanentError(f"{order.number} has no captured payment or no reserved stock: not shipped")
    shipment, _ = Shipment.objects.get_or_create(
        order_id=order.id, defaults={"tracking_number": tracking_number(order.id)}
    )
    return email_send(
        template="order_shipped",
        ledger_key=f"order:{order.id}",
        recipient=order.owner,
        context={
            "order": {"number": order.number},
            "lines": [{"sku": line.sku, "quantity": line.quantity} for line in order.lines],
            "tracking_number": shipment.tracking_number,
        },
        task_id=task_id,
    )
