"""Order reads, always scoped to their owner (or, for other apps' workers, a plain summary)."""

from dataclasses import dataclass

from django.contrib.auth.models import User
from django.db.models import Prefetch, QuerySet

from orders.currencies import format_amount
from orders.models import Order, OrderLine


def order_list(*, user: User) -> QuerySet[Order]:
    return (
        Order.objects.filter(owner=user)
        .select_related("invoice")
        .prefetch_related(Prefetch("lines", to_attr="line_list"))  # type: ignore[no-redef] # declared on Order
        .order_by("-id")
    )


def order_get(*, user: User, order_id: int) -> Order:
    """Another user's order is indistinguishable from a missing one (404)."""
    return order_list(user=user).get(pk=order_id)


@dataclass(frozen=True)
class OrderLineSummary:
    sku: str
    quantity: int
    line_total: str  # formatted in the order's currency


@dataclass(frozen=True)
class OrderSummary:
    """What another app may know of an order (fulfilment reads orders only through this)."""

    id: int
    number: str
    owner: User
    paid: bool
    currency: str
    total: str  # formatted with the currency's own decimal places, e.g. "19.98"
    lines: tuple[OrderLineSummary, ...]


def order_summary(*, order_id: int, user: User | None = None) -> OrderSummary:
    """The order as a summary; with `user`, only that user's (Order.DoesNotExist otherwise)."""
    orders = Order.objects.select_related("owner")
    order = (orders.filter(owner=user) if user is not None else orders).get(pk=order_id)
    # Plain values, not model instances: every fulfilment step reads this (two queries, ~1 ms).
    lines = OrderLine.objects.filter(order_id=order.pk).order_by("position")
    return OrderSummary(
        id=order.pk,
        number=order.number,
        owner=order.owner,
        paid=order.status == Order.Status.PAID,
        currency=order.currency,
        total=format_amount(order.total, order.currency),
        lines=tuple(
            OrderLineSummary(sku, quantity, format_amount(total, order.currency))
            for sku, quantity, total in lines.values_list("sku", "quantity", "line_total")
        ),
    )
