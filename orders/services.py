"""Order writes. Each service owns its transaction; side effects leave through the outbox.

order_create -> Order + lines, and in the same transaction (one statement): the confirmation
                email, the invoice PDF, and the auto-cancel of an unpaid order N minutes later
                (outbox not_before). Four statements in all; the invoice row is the invoice
                task's ledger, written when the PDF is (orders/invoices.py), and until then the
                order's invoice is pending.
"""

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import timedelta
from decimal import Decimal
from functools import cache

from django.conf import settings
from django.contrib.auth.models import User
from django.db import transaction
from django.utils import timezone
from django.utils.module_loading import import_string

from jobs import outbox
from notifications.services import SendResult, email_send
from orders.currencies import format_amount, max_amount, quantum
from orders.errors import AmountOutOfRange, OrderStateConflict
from orders.models import Order, OrderLine


@dataclass(frozen=True)
class LineInput:
    sku: str
    quantity: int
    unit_price: Decimal
    currency: str


def enqueue_order_work(order: Order) -> None:
    """The work an order creates, enqueued in the caller's transaction, one statement."""
    auto_cancel_at = timezone.now() + timedelta(minutes=settings.ORDERS_AUTO_CANCEL_MINUTES)
    with outbox.batch():
        outbox.enqueue("orders.send_confirmation_email", kwargs={"order_id": order.pk})
        outbox.enqueue("orders.render_invoice_pdf", kwargs={"order_id": order.pk})
        outbox.enqueue("orders.auto_cancel_unpaid", kwargs={"order_id": order.pk}, not_before=auto_cancel_at)


@cache
def _order_work() -> Callable[[Order], None]:
    # Swappable only so bench/ can measure the naive and synchronous designs against this one.
    work: Callable[[Order], None] = import_string(settings.ORDERS_ENQUEUE_WORK)
    return work


def order_amounts(lines: Sequence[LineInput]) -> tuple[list[Decimal], Decimal]:
    """Line totals and the order total, or AmountOutOfRange naming each one too large to store."""
    currency = lines[0].currency  # the input serializer guarantees one currency per order
    step, limit = quantum(currency), max_amount(currency)
    totals = [(line.unit_price * line.quantity).quantize(step) for line in lines]
    total = sum(totals, Decimal(0))
    too_large = f"is more than {format_amount(limit, currency)} {currency}, the most an order can hold."
    errors: dict[str, list[str]] = {}
    for index, (line, amount) in enumerate(zip(lines, totals, strict=True)):
        if line.unit_price > limit:
            errors[f"lines.{index}.unit_price"] = [f"{line.unit_price} {too_large}"]
        elif amount > limit:
            errors[f"lines.{index}.line_total"] = [
                f"{line.quantity} x {line.unit_price} = {amount} {too_large}"
            ]
    if total > limit:
        errors["total"] = [f"The order total, {total} {currency}, {too_large}"]
    if errors:
        raise AmountOutOfRange("Lower the quantities or prices named in `errors`.", errors=errors)
    return totals, total


def order_create(*, user: User, lines: Sequence[LineInput]) -> Order:
    """The order with what its response needs attached (`line_list`, no invoice yet): the view
    answers from it without reading the order back. Inside a caller's transaction (the
    Idempotency-Key's) it joins that one: no savepoint, a failure rolls back both."""
    totals, total = order_amounts(lines)
    with transaction.atomic(savepoint=False):
        order = Order.objects.create(owner=user, currency=lines[0].currency, total=total)
        order.line_list = OrderLine.objects.bulk_create(
            OrderLine(
                order=order,
                position=position,
                sku=line.sku,
                quantity=line.quantity,
                unit_price=line.unit_price,
                line_total=amount,
            )
            for position, (line, amount) in enumerate(zip(lines, totals, strict=True), start=1)
        )
        # Known: no invoice yet. Cached as select_related would cache a missing row, so the
        # response reads it without a query.
        Order.invoice.related.set_cached_value(order, None)
        _order_work()(order)
    return order


def _locked(order_id: int, user: User | None = None) -> Order:
    orders = Order.objects.select_for_update()
    return orders.get(pk=order_id, owner=user) if user is not None else orders.get(pk=order_id)


def _cancel(order: Order, reason: str) -> None:
    order.status = Order.Status.CANCELLED
    order.cancelled_at = timezone.now()
    order.cancel_reason = reason
    order.save(update_fields=["status", "cancelled_at", "cancel_reason"])
    outbox.enqueue(
        "orders.send_cancellation_email",
        kwargs={"order_id": order.pk},
        dedupe_key=f"order:{order.pk}:cancellation",
    )


def order_cancel(*, user: User, order_id: int) -> Order:
    """The customer cancels: allowed while the order is unpaid."""
    with transaction.atomic():
        order = _locked(order_id, user)
        if order.status != Order.Status.PENDING_PAYMENT:
            raise OrderStateConflict(
                f"Order {order.number} is {order.status}; only unpaid orders can be cancelled."
            )
        _cancel(order, Order.CancelReason.CUSTOMER)
    return order


def order_pay(*, user: User, order_id: int) -> Order:
    """Stands in for a payment: pending -> paid. Paying makes the pending auto-cancel a no-op."""
    with transaction.atomic():
        order = _locked(order_id, user)
        if order.status != Order.Status.PENDING_PAYMENT:
            raise OrderStateConflict(
                f"Order {order.number} is {order.status}; only unpaid orders can be paid."
            )
        order.status = Order.Status.PAID
        order.paid_at = timezone.now()
        order.save(update_fields=["status", "paid_at"])
    return order


def order_auto_cancel(*, order_id: int) -> bool:
    """The delayed task: cancel the order if it is still unpaid. Returns whether it did."""
    with transaction.atomic():
        order = _locked(order_id)
        if order.status != Order.Status.PENDING_PAYMENT:
            return False  # paid or already cancelled in the meantime
        _cancel(order, Order.CancelReason.UNPAID)
    return True


def _email_context(order: Order) -> dict[str, object]:
    money = order.currency
    return {
        "order": {"number": order.number, "currency": money, "total": format_amount(order.total, money)},
        "lines": [
            {
                "sku": line.sku,
                "quantity": line.quantity,
                "unit_price": format_amount(line.unit_price, money),
                "line_total": format_amount(line.line_total, money),
            }
            for line in order.lines.all()
        ],
        "pay_within_minutes": int(settings.ORDERS_AUTO_CANCEL_MINUTES),
        "reason": order.cancel_reason,
    }


def order_email_send(*, order_id: int, template: str, task_id: str = "") -> SendResult:
    """Load the order (never passed to the task) and send its email through the ledger."""
    order = Order.objects.select_related("owner").get(pk=order_id)
    return email_send(
        template=template,
        ledger_key=f"order:{order.pk}",
        recipient=order.owner,
        context=_email_context(order),
        task_id=task_id,
    )
