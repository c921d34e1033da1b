"""Order reads, always scoped to their owner."""

from django.contrib.auth.models import User
from django.db.models import Prefetch, QuerySet

from orders.models import Order


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
