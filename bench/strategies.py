"""The designs order creation is measured against (settings.ORDERS_ENQUEUE_WORK).

orders.services.enqueue_order_work  the project: outbox rows, one statement (b)
bench.strategies.no_work            create only, nothing enqueued (a)
bench.strategies.delay_after_commit the naive design: .delay() after commit (c)
bench.strategies.synchronous        everything in the request (d): the PDF, the
                                    email over SMTP and a 200 ms vendor call
"""

import requests
from django.conf import settings
from django.db import transaction

from orders.models import Order


def no_work(order: Order) -> None:
    """(a) the baseline: save the order, enqueue nothing."""


def delay_after_commit(order: Order) -> None:
    """(c) what most projects do: a broker round trip per task, after the commit."""
    from orders import tasks

    def publish() -> None:
        tasks.send_confirmation_email.delay(order_id=order.pk)
        tasks.render_invoice_pdf.delay(order_id=order.pk)

    transaction.on_commit(publish)


def synchronous(order: Order) -> None:
    """(d) no queue at all: the user waits for the PDF, the SMTP server and the vendor."""
    from orders import invoices, services

    def work() -> None:
        invoices.invoice_render(order_id=order.pk)
        services.order_email_send(order_id=order.pk, template="order_confirmation")
        requests.get(f"{settings.FX_PROVIDER_URL}/v1/rates", params={"base": "EUR"}, timeout=5)

    transaction.on_commit(work)
