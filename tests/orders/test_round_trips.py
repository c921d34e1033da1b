"""The create's SQL round trips, counted on the real view (docs/performance.md: cost per order).

Everything that crosses to PostgreSQL counts: BEGIN, savepoints, COMMIT. After the first request
of a token (its lookup is then cached in the process, core/auth.py):
  without an Idempotency-Key: BEGIN, order, lines, outbox rows (one statement), COMMIT;
  with one: BEGIN, the key's claim (one statement), order, lines, outbox, the key's answer, COMMIT.
"""

from typing import Any

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext

from tests.conftest import client_for

pytestmark = pytest.mark.django_db(transaction=True)

ORDER = {
    "lines": [
        {"sku": "A-1", "quantity": 2, "unit_price": "10.00", "currency": "EUR"},
        {"sku": "B-2", "quantity": 1, "unit_price": "5.50", "currency": "EUR"},
    ]
}


def statements_of_a_create(user, **headers: Any) -> list[str]:
    api = client_for(user)
    assert api.post("/api/orders/", ORDER, format="json").status_code == 201  # the token is read once
    with CaptureQueriesContext(connection) as queries:
        response = api.post("/api/orders/", ORDER, format="json", **headers)
    assert response.status_code == 201
    assert [line["line_total"] for line in response.json()["lines"]] == ["20.00", "5.50"]
    return [query["sql"].split()[0].upper() for query in queries.captured_queries]


def test_a_create_without_an_idempotency_key_is_five_round_trips(user):
    statements = statements_of_a_create(user)
    assert statements == ["BEGIN", "INSERT", "INSERT", "WITH", "COMMIT"], statements


def test_a_create_with_an_idempotency_key_is_seven_round_trips(user):
    statements = statements_of_a_create(user, HTTP_IDEMPOTENCY_KEY="order-1")
    assert statements == ["BEGIN", "INSERT", "INSERT", "INSERT", "WITH", "UPDATE", "COMMIT"], statements
    assert not [s for s in statements if s in {"SAVEPOINT", "RELEASE", "SELECT"}]  # no savepoint, no re-read


def test_a_replayed_create_reads_its_stored_answer(user):
    api = client_for(user)
    first = api.post("/api/orders/", ORDER, format="json", HTTP_IDEMPOTENCY_KEY="order-2")
    with CaptureQueriesContext(connection) as queries:
        again = api.post("/api/orders/", ORDER, format="json", HTTP_IDEMPOTENCY_KEY="order-2")
    assert (again.status_code, again.json(), again["Idempotent-Replayed"]) == (201, first.json(), "true")
    assert len(queries.captured_queries) == 4  # BEGIN, the claim (conflicts), the stored answer, COMMIT


def test_an_invoice_render_reads_the_order_in_two_queries(user):
    from orders.invoices import invoice_render

    created = client_for(user).post("/api/orders/", ORDER, format="json").json()
    with CaptureQueriesContext(connection) as queries:
        invoice = invoice_render(order_id=created["id"])
    assert invoice.status == "ready"
    reads = [q["sql"] for q in queries.captured_queries if q["sql"].startswith("SELECT")]
    # The order joined to its invoice with the owner's display currency, then its lines. The
    # owner's profile (EUR by default, the order's currency) needs no FX rate.
    assert len(reads) == 2, reads
    assert "orders_invoice" in reads[0]
    assert "orders_customerprofile" in reads[0]
    assert "orders_orderline" in reads[1]
