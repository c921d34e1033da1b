"""POST /api/orders/<id>/fulfil: owner only, paid orders only, Idempotency-Key; GET /api/flows/<id>."""

import pytest

from jobs.execution import FLOW_STEP_HEADER
from jobs.models import Flow, OutboxMessage
from orders.models import Order
from tests.conftest import client_for
from tests.fulfilment.conftest import paid_order

pytestmark = pytest.mark.django_db


def fulfil(api, order: Order, **headers):
    return api.post(f"/api/orders/{order.pk}/fulfil", **headers)


def test_the_owner_starts_fulfilling_a_paid_order_and_gets_the_flow(api, user):
    order = paid_order(user)
    response = fulfil(api, order)
    assert response.status_code == 202, response.json()
    body = response.json()
    assert response["Location"] == body["status_url"] == f"/api/flows/{body['flow_id']}"
    flow = api.get(body["status_url"]).json()
    assert flow["kind"] == "order-fulfillment"
    assert flow["state"] == "running"
    assert [(s["name"], s["state"], s["after"]) for s in flow["steps"]] == [
        ("reserve-stock", "queued", []),
        ("capture-payment", "queued", []),
        ("ship-order", "waiting", ["reserve-stock", "capture-payment"]),
    ]
    assert flow["cancel_url"] == f"/api/flows/{body['flow_id']}/cancel"
    # the two children's outbox rows were written with the flow, in the request's transaction
    tasks = OutboxMessage.objects.filter(**{f"headers__{FLOW_STEP_HEADER}__isnull": False})
    assert sorted(tasks.values_list("task_name", flat=True)) == [
        "fulfilment.capture_payment",
        "fulfilment.reserve_stock",
    ]


def test_only_paid_orders_and_only_the_owners(api, user, other_user):
    unpaid = paid_order(user, status=Order.Status.PENDING_PAYMENT)
    response = fulfil(api, unpaid)
    assert response.status_code == 409
    assert response.json()["code"] == "fulfilment-conflict"
    assert fulfil(client_for(other_user), paid_order(user)).status_code == 404
    assert api.post("/api/orders/999999/fulfil").status_code == 404
    assert client_for(None).post(f"/api/orders/{unpaid.pk}/fulfil").status_code == 401
    assert not Flow.objects.exists()


def test_the_same_idempotency_key_replays_and_a_second_fulfilment_is_refused(api, user):
    order = paid_order(user)
    first = fulfil(api, order, HTTP_IDEMPOTENCY_KEY="fulfil-1")
    again = fulfil(api, order, HTTP_IDEMPOTENCY_KEY="fulfil-1")
    assert again.status_code == 202
    assert again.json() == first.json()
    assert again["Idempotent-Replayed"] == "true"
    other = fulfil(api, order)
    assert other.status_code == 409
    assert Flow.objects.count() == 1


def test_a_cancelled_fulfilment_frees_the_order_for_another(api, user, other_user):
    order = paid_order(user)
    flow_url = fulfil(api, order).json()["status_url"]
    assert client_for(other_user).post(f"{flow_url}/cancel").status_code == 404  # owner only
    cancelled = api.post(f"{flow_url}/cancel")
    assert cancelled.status_code == 202
    assert cancelled.json()["state"] == "cancelled"
    assert {s["state"] for s in cancelled.json()["steps"]} == {"cancelled"}
    assert fulfil(api, order).status_code == 202
    assert Flow.objects.filter(state=Flow.State.RUNNING).count() == 1


def test_another_users_flow_is_404(api, user, other_user):
    flow_url = fulfil(api, paid_order(user)).json()["status_url"]
    assert client_for(other_user).get(flow_url).status_code == 404
