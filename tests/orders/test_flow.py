"""The orders flow end to end: API -> outbox -> relay -> worker -> SMTP sink / PDF / export."""

import csv
import io
import uuid
from datetime import datetime
from decimal import Decimal

import pytest
from django.db import transaction
from django.utils import timezone
from pypdf import PdfReader

from config.celery_app import app as celery_app
from jobs.dead_letters import dead_letter_replay
from jobs.models import DeadLetter, Job, OutboxMessage, TaskRun
from notifications.models import EmailAttempt, EmailDelivery
from orders.models import Invoice, Order
from tests.harness import wait_until

pytestmark = pytest.mark.django_db(transaction=True)


def create_order(api, **line) -> dict:
    body = {"lines": [{"sku": "MUG-RED", "quantity": 2, "unit_price": "9.99", "currency": "EUR", **line}]}
    response = api.post("/api/orders", body, format="json")
    assert response.status_code == 201, response.json()
    return response.json()


def mails_for(sink, order_id: int, template: str = "order_confirmation") -> list:
    return [m for m in sink.messages() if m["Message-ID"] == f"<{template}.order-{order_id}@taskyard.test>"]


def test_order_confirmation_email_arrives_once_with_the_order(live, api, user):
    order = create_order(api)
    [mail] = wait_until(lambda: mails_for(live.sink, order["id"]), message="the confirmation email")
    assert mail["To"] == user.email
    assert mail["Subject"] == f"Order {order['number']} confirmed"
    text = mail.get_body(("plain",)).get_content()
    html = mail.get_body(("html",)).get_content()
    assert "2 x MUG-RED at 9.99 EUR = 19.98 EUR" in text
    assert "Total: 19.98 EUR" in text
    assert "<strong>19.98 EUR</strong>" in html
    assert mail["X-Request-ID"]  # the request's id travelled with the task
    live.wait_idle()
    delivery = EmailDelivery.objects.get(ledger_key=f"order:{order['id']}")
    assert (delivery.status, delivery.attempts) == ("sent", 1)


def test_a_duplicate_or_repeated_email_task_sends_nothing_more(live, api):
    order = create_order(api)
    wait_until(lambda: mails_for(live.sink, order["id"]), message="the first email")
    live.wait_idle()
    first_task = OutboxMessage.objects.get(
        task_name="orders.send_confirmation_email", kwargs__order_id=order["id"]
    )
    # when the same message is delivered again, and the task runs again under a new id (a replay)
    celery_app.send_task(
        "orders.send_confirmation_email",
        kwargs={"order_id": order["id"]},
        task_id=str(first_task.id),
        queue="emails",
    )
    again = str(uuid.uuid4())
    celery_app.send_task(
        "orders.send_confirmation_email", kwargs={"order_id": order["id"]}, task_id=again, queue="emails"
    )
    wait_until(
        lambda: TaskRun.objects.filter(task_id=again, state=TaskRun.State.SUCCEEDED).exists(),
        message="the rerun",
    )
    live.wait_idle()
    # then the customer still has exactly one email
    assert len(mails_for(live.sink, order["id"])) == 1
    assert EmailAttempt.objects.filter(delivery__ledger_key=f"order:{order['id']}").count() == 1


def test_invoice_pdf_is_generated_and_downloadable(live, api):
    order = create_order(api, quantity=3, unit_price="12.50")
    wait_until(
        lambda: Invoice.objects.filter(order_id=order["id"], status=Invoice.Status.READY).exists(),
        message="the invoice",
    )
    detail = api.get(f"/api/orders/{order['id']}").json()
    assert detail["invoice"]["status"] == "ready"
    response = api.get(detail["invoice"]["url"])
    assert response.status_code == 200
    assert response["Content-Type"] == "application/pdf"
    reader = PdfReader(io.BytesIO(b"".join(response.streaming_content)))
    text = reader.pages[0].extract_text()
    assert f"Invoice {order['number']}" in text
    assert "Total: 37.50 EUR" in text
    assert "MUG-RED" in text


def test_invoice_regeneration_is_idempotent(live, api):
    from orders.invoices import invoice_render

    order = create_order(api)
    wait_until(
        lambda: Invoice.objects.filter(order_id=order["id"], status="ready").exists(), message="invoice"
    )
    first = Invoice.objects.get(order_id=order["id"])
    again = invoice_render(order_id=order["id"])
    assert (again.content_hash, again.file, again.generated_at) == (
        first.content_hash,
        first.file,
        first.generated_at,
    )


def test_unpaid_order_is_auto_cancelled_after_the_delay_and_a_paid_one_is_not(live, api, settings):
    settings.ORDERS_AUTO_CANCEL_MINUTES = 0.05  # 3 s
    unpaid, paid = create_order(api), create_order(api)
    assert api.post(f"/api/orders/{paid['id']}/pay").status_code == 200
    wait_until(
        lambda: Order.objects.filter(pk=unpaid["id"], status="cancelled").exists(),
        timeout=20,
        message="auto-cancel",
    )
    wait_until(
        lambda: mails_for(live.sink, unpaid["id"], "order_cancelled"), message="the cancellation email"
    )
    live.wait_idle()
    cancelled = Order.objects.get(pk=unpaid["id"])
    assert cancelled.cancel_reason == "unpaid"
    assert cancelled.cancelled_at is not None
    assert (cancelled.cancelled_at - cancelled.created_at).total_seconds() >= 3
    # the paid order's delayed task ran too, and did nothing
    auto = OutboxMessage.objects.get(task_name="orders.auto_cancel_unpaid", kwargs__order_id=paid["id"])
    assert TaskRun.objects.get(task_id=auto.id).state == TaskRun.State.SUCCEEDED
    assert Order.objects.get(pk=paid["id"]).status == "paid"
    assert mails_for(live.sink, paid["id"], "order_cancelled") == []


def test_smtp_5xx_is_permanent_then_a_replay_sends_exactly_once(live, api, user):
    live.sink.set_mode("fail-5xx")
    order = create_order(api)
    dead = wait_until(
        lambda: DeadLetter.objects.filter(task_name="orders.send_confirmation_email").first(),
        message="dead letter",
    )
    assert dead.reason == "permanent"
    assert dead.attempts == 1
    delivery = EmailDelivery.objects.get(ledger_key=f"order:{order['id']}")
    assert delivery.status == "failed"
    assert EmailAttempt.objects.get(delivery=delivery).smtp_code == 554
    # when the SMTP server is back and the dead letter is replayed
    live.sink.set_mode("ok")
    dead_letter_replay(dead_letter_id=dead.pk, actor=user)
    wait_until(lambda: mails_for(live.sink, order["id"]), message="the replayed email")
    live.wait_idle()
    assert len(mails_for(live.sink, order["id"])) == 1
    assert EmailDelivery.objects.get(pk=delivery.pk).status == "sent"


def test_smtp_4xx_is_retried_until_the_server_accepts(live, api):
    live.sink.set_mode("fail-4xx")
    order = create_order(api)
    wait_until(
        lambda: (
            EmailAttempt.objects.filter(
                outcome="retryable", delivery__ledger_key=f"order:{order['id']}"
            ).count()
            >= 2
        ),
        timeout=20,
        message="two refused attempts",
    )
    live.sink.set_mode("ok")
    wait_until(lambda: mails_for(live.sink, order["id"]), timeout=40, message="the email after the retries")
    live.wait_idle()
    attempts = EmailAttempt.objects.filter(delivery__ledger_key=f"order:{order['id']}")
    assert {a.smtp_code for a in attempts if a.outcome == "retryable"} == {451}
    assert attempts.filter(outcome="sent").count() == 1
    assert not DeadLetter.objects.exists()


def test_export_reports_increasing_progress_and_the_right_row_count(live, api, user):
    # given 10,000 orders (made directly: the export is under test, not the create path)
    now = timezone.now()
    with transaction.atomic():
        Order.objects.bulk_create(
            [
                Order(owner=user, currency="EUR", total=Decimal(n % 97) + Decimal("0.50"))
                for n in range(10_000)
            ],
            batch_size=2000,
        )
    Order.objects.filter(owner=user).update(created_at=now)
    response = api.post("/api/orders/export")
    job_url = response["Location"]
    seen: list[int] = []

    def finished() -> bool:
        state = api.get(job_url).json()
        if not seen or state["progress"] != seen[-1]:
            seen.append(state["progress"])
        return state["state"] == "succeeded"

    wait_until(finished, timeout=60, interval=0.005, message="the export job")
    body = api.get(job_url).json()
    # progress only ever went up, was seen between 0 and 100, and ended at 100
    assert seen == sorted(seen)
    assert any(0 < p < 100 for p in seen), seen
    assert body["progress"] == 100
    assert body["result"] == {"rows": 10_000}
    download = api.get(body["result_url"])
    rows = list(csv.reader(io.StringIO(b"".join(download.streaming_content).decode())))
    assert rows[0][:3] == ["number", "created_at", "status"]
    assert len(rows) == 10_001
    assert {row[3] for row in rows[1:]} == {"EUR"}
    assert datetime.fromisoformat(rows[1][1]) == now
    assert Job.objects.get(pk=body["id"]).result_file.startswith("exports/")
