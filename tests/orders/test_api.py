"""Orders API without a worker: validation, scoping, state changes, what gets enqueued."""

from datetime import timedelta

import pytest
from django.utils import timezone

from config.celery_app import app as celery_app
from jobs.models import Job, OutboxMessage
from orders.models import Invoice, Order, OrderLine
from tests.conftest import client_for
from tests.harness import free_port

pytestmark = pytest.mark.django_db

URL = "/api/orders"


def line(**overrides):
    return {"sku": "MUG-RED", "quantity": 2, "unit_price": "9.99", "currency": "EUR", **overrides}


def create(api, *lines, **headers):
    return api.post(URL, {"lines": list(lines) or [line()]}, format="json", **headers)


def assert_nothing_saved():
    assert not Order.objects.exists()
    assert not OrderLine.objects.exists()
    assert not OutboxMessage.objects.exists()


def test_create_computes_totals_on_the_server_and_answers_201(api):
    response = create(api, line(), line(sku="TEA-1", quantity=3, unit_price="1.50"))
    assert response.status_code == 201
    body = response.json()
    assert body["total"] == "24.48"  # 2 x 9.99 + 3 x 1.50
    assert [item["line_total"] for item in body["lines"]] == ["19.98", "4.50"]
    assert body["status"] == "pending_payment"
    assert body["number"] == f"TY-{body['id']:08d}"
    assert response["Location"] == f"/api/orders/{body['id']}"
    assert body["invoice"] == {
        "status": "pending",
        "url": None,
        "display_currency": None,
        "converted_total": None,
    }


def test_create_enqueues_email_pdf_and_auto_cancel_in_the_same_transaction(api, settings):
    settings.ORDERS_AUTO_CANCEL_MINUTES = 30
    before = timezone.now()
    order_id = create(api).json()["id"]
    rows = {row.task_name: row for row in OutboxMessage.objects.all()}
    assert set(rows) == {
        "orders.send_confirmation_email",
        "orders.render_invoice_pdf",
        "orders.auto_cancel_unpaid",
    }
    assert rows["orders.send_confirmation_email"].queue == "emails"
    assert rows["orders.render_invoice_pdf"].queue == "documents"
    assert all(row.kwargs == {"order_id": order_id} for row in rows.values())  # an id, never an address
    delay = rows["orders.auto_cancel_unpaid"].not_before - before
    assert timedelta(minutes=29) < delay < timedelta(minutes=31)


def test_create_makes_no_broker_call(api, monkeypatch):
    # the broker is unreachable, and the order is still accepted: nothing in the request talks to it
    monkeypatch.setattr(celery_app.conf, "broker_url", f"redis://127.0.0.1:{free_port()}/0")
    assert create(api).status_code == 201


def test_currencies_with_other_minor_units(api):
    assert create(api, line(currency="JPY", unit_price="1200")).json()["total"] == "2400"
    assert create(api, line(currency="KWD", unit_price="1.250")).json()["total"] == "2.500"


@pytest.mark.parametrize(
    ("lines", "field"),
    [
        ([], "lines.non_field_errors"),
        ([line(currency="EUX")], "lines.0.currency"),
        ([line(currency="eur")], "lines.0.currency"),
        ([line(), line(currency="USD")], "lines.1.currency"),
        ([line(quantity=0)], "lines.0.quantity"),
        ([line(quantity="two")], "lines.0.quantity"),
        ([line(unit_price="-1")], "lines.0.unit_price"),
        ([line(unit_price="1.005")], "lines.0.unit_price"),
        ([line(currency="JPY", unit_price="1.5")], "lines.0.unit_price"),
        ([line(sku="")], "lines.0.sku"),
        ([line(sku="no spaces")], "lines.0.sku"),
        ([{"sku": "A"}], "lines.0.quantity"),
    ],
)
def test_invalid_input_is_400_with_field_errors_and_saves_nothing(api, lines, field):
    response = api.post(URL, {"lines": lines}, format="json")
    assert response.status_code == 400
    body = response.json()
    assert body["code"] == "validation-error"
    assert field in body["errors"], body["errors"]
    assert_nothing_saved()


def test_non_json_body_is_rejected(api):
    response = api.post(URL, "lines=1", content_type="application/x-www-form-urlencoded")
    assert response.status_code == 415
    assert response.json()["code"] == "unsupported-media-type"
    assert_nothing_saved()


def test_list_and_detail_show_only_own_orders(api, user, other_user):
    mine = create(api).json()["id"]
    theirs = create(client_for(other_user)).json()["id"]
    listed = api.get(URL).json()
    assert [o["id"] for o in listed["results"]] == [mine]
    assert api.get(f"{URL}/{mine}").status_code == 200
    for path in ("", "/cancel", "/pay", "/invoice"):
        method = api.get if path in ("", "/invoice") else api.post
        response = method(f"{URL}/{theirs}{path}")
        assert response.status_code == 404, path
        assert response.json()["code"] == "not-found"
    assert Order.objects.get(pk=theirs).status == "pending_payment"


def test_cancel_while_unpaid_enqueues_the_cancellation_email(api):
    order_id = create(api).json()["id"]
    response = api.post(f"{URL}/{order_id}/cancel")
    assert response.status_code == 200
    assert response.json()["status"] == "cancelled"
    assert response.json()["cancel_reason"] == "customer"
    assert OutboxMessage.objects.filter(task_name="orders.send_cancellation_email").count() == 1


def test_state_changes_that_are_not_allowed_are_409(api):
    order_id = create(api).json()["id"]
    assert api.post(f"{URL}/{order_id}/pay").json()["status"] == "paid"
    for action in ("pay", "cancel"):
        response = api.post(f"{URL}/{order_id}/{action}")
        assert response.status_code == 409
        assert response.json()["code"] == "order-state-conflict"
    cancelled = create(api).json()["id"]
    api.post(f"{URL}/{cancelled}/cancel")
    assert api.post(f"{URL}/{cancelled}/pay").status_code == 409


def test_idempotency_key_on_create(api):
    first = create(api, HTTP_IDEMPOTENCY_KEY="order-attempt-1")
    again = create(api, HTTP_IDEMPOTENCY_KEY="order-attempt-1")
    assert first.json()["id"] == again.json()["id"]
    assert Order.objects.count() == 1
    assert OutboxMessage.objects.count() == 3


def test_invoice_is_404_until_generated(api):
    order_id = create(api).json()["id"]
    response = api.get(f"{URL}/{order_id}/invoice")
    assert response.status_code == 404
    assert response.json()["code"] == "invoice-not-ready"
    assert not Invoice.objects.filter(order_id=order_id).exists()  # the render task writes it
    assert api.get(f"{URL}/{order_id}").json()["invoice"]["status"] == "pending"


def test_export_answers_202_with_a_job_url(api, user):
    response = api.post(f"{URL}/export")
    assert response.status_code == 202
    job = Job.objects.get()
    assert (job.owner, job.state, job.kind) == (user, "queued", "orders-export")
    assert response["Location"] == f"/api/jobs/{job.id}"
    row = OutboxMessage.objects.get()
    assert (row.task_name, row.queue, row.headers["job_id"]) == (
        "jobs.run_django_task",  # the export is a django.tasks Task (orders.exports.export_orders)
        "documents",
        str(job.id),
    )
    assert row.kwargs == {
        "task": "orders.exports.export_orders",
        "args": [],
        "kwargs": {"job_id": str(job.id)},
    }
    assert api.get(response["Location"]).json()["state"] == "queued"


def test_collection_answers_with_and_without_the_slash(api):
    assert api.get(URL).status_code == 200
    assert api.get(f"{URL}/").status_code == 200
