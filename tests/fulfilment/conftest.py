"""The payment provider fake as a real subprocess, the session stack pointed at it, paid orders."""

import os
import sys
from collections.abc import Iterator
from decimal import Decimal
from typing import Any

import pytest
from django.contrib.auth.models import User

from fulfilment.models import StockItem
from orders.models import Order, OrderLine
from tests.conftest import Stack
from tests.harness import HttpFake, Processes, free_port

# The session worker's settings: a short read timeout, so the fake's late answer is a timeout.
STACK_ENV = {"PAYMENT_PROVIDER_READ_TIMEOUT": "1", "PAYMENT_PROVIDER_CONNECT_TIMEOUT": "1"}


class PaymentProvider(HttpFake):
    def captures_of(self, reference: str) -> int:
        return int(self.stats()["captures_by_reference"].get(reference, 0))


def start_provider(procs: Processes, *args: str) -> PaymentProvider:
    port = free_port()
    proc = procs.spawn(
        "payment-provider", [sys.executable, "-m", "fakes.payment_provider", "--port", str(port), *args]
    )
    proc.wait_for_log("payment provider:")
    return PaymentProvider(proc, port)


@pytest.fixture(scope="session")
def payment_provider_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PaymentProvider]:
    procs = Processes(tmp_path_factory.mktemp("payments"), env={**os.environ, "PYTHONUNBUFFERED": "1"})
    try:
        yield start_provider(procs)
    finally:
        procs.stop_all()


@pytest.fixture
def provider(payment_provider_server: PaymentProvider, settings: Any) -> Iterator[PaymentProvider]:
    """The fake with its captures and counters forgotten; this process's client points at it."""
    payment_provider_server.reset()
    settings.PAYMENT_PROVIDER_URL = payment_provider_server.url
    yield payment_provider_server
    payment_provider_server.reset()


@pytest.fixture
def fulfilment_live(stack: Stack, provider: PaymentProvider, live: Stack) -> Stack:
    """The running stack (relay, worker on all queues, SMTP sink) with its worker on the fake."""
    return live


@pytest.fixture(scope="session", autouse=True)
def _stack_reaches_the_provider(stack: Stack, payment_provider_server: PaymentProvider) -> None:
    # Set before any `live` test of this package starts the stack (one restart at most).
    stack.use_env(PAYMENT_PROVIDER_URL=payment_provider_server.url, **STACK_ENV)


def stock(sku: str, units: int) -> StockItem:
    item, _ = StockItem.objects.update_or_create(sku=sku, defaults={"available": units})
    return item


def paid_order(owner: User, *lines: tuple[str, int], status: str = Order.Status.PAID) -> Order:
    """An order as the API leaves it once paid (written directly: nothing of its own is enqueued)."""
    lines = lines or (("MUG-RED", 2),)
    price = Decimal("9.99")
    order = Order.objects.create(
        owner=owner, currency="EUR", total=price * sum(q for _, q in lines), status=status
    )
    OrderLine.objects.bulk_create(
        OrderLine(order=order, position=n, sku=sku, quantity=q, unit_price=price, line_total=price * q)
        for n, (sku, q) in enumerate(lines, start=1)
    )
    return order
