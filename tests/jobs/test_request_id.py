"""One id links a request to its tasks and their effects: X-Request-ID -> outbox headers ->
task logs -> the email's X-Request-ID header."""

import uuid

import pytest

from jobs.models import OutboxMessage
from tests.harness import wait_until

pytestmark = pytest.mark.django_db(transaction=True)


def test_request_id_travels_to_the_task_logs_and_the_email(live, api):
    request_id = f"req-{uuid.uuid4().hex}"
    body = {"lines": [{"sku": "MUG", "quantity": 1, "unit_price": "3.00", "currency": "EUR"}]}
    response = api.post("/api/orders", body, format="json", HTTP_X_REQUEST_ID=request_id)
    assert response["X-Request-ID"] == request_id
    rows = OutboxMessage.objects.filter(kwargs__order_id=response.json()["id"])
    assert {row.headers["request_id"] for row in rows} == {request_id}
    [mail] = wait_until(lambda: live.sink.messages(), message="the email")
    assert mail["X-Request-ID"] == request_id
    live.wait_idle()
    task_lines = [line for line in live.worker.log().splitlines() if request_id in line]
    assert any("orders.send_confirmation_email" in line for line in task_lines)
    assert any("orders.render_invoice_pdf" in line for line in task_lines)


def test_a_missing_or_unsafe_request_id_is_replaced(api):
    generated = api.get("/api/me")["X-Request-ID"]
    assert len(generated) == 32
    unsafe = api.get("/api/me", HTTP_X_REQUEST_ID="bad id\r\nX-Injected: 1")["X-Request-ID"]
    assert unsafe != "bad id\r\nX-Injected: 1"
    assert " " not in unsafe
