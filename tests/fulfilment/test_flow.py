"""Order fulfilment on real workers: stock, the payment fake, the shipment and the "shipped" email,
each once, under retries, redeliveries and a failed step's retry."""

import uuid

import pytest

from config.celery_app import app as celery_app
from fulfilment.models import PaymentCapture, Shipment, StockItem, StockReservation
from fulfilment.services import fulfilment_start
from jobs.flows.services import flow_step_retry
from jobs.models import DeadLetter, Flow, FlowStep, TaskRun
from notifications.models import EmailDelivery
from tests.flows.test_live import finished, steps
from tests.fulfilment.conftest import paid_order, stock
from tests.harness import wait_until

pytestmark = pytest.mark.django_db(transaction=True)


def shipped_mails(sink, order_id: int) -> list:
    return [
        m for m in sink.messages() if m["Message-ID"] == f"<order_shipped.order-{order_id}@taskyard.test>"
    ]


def test_a_paid_order_is_reserved_captured_shipped_and_mailed_once(fulfilment_live, provider, api, user):
    stock("MUG-RED", 10)
    order = paid_order(user, ("MUG-RED", 3))
    flow_url = api.post(f"/api/orders/{order.pk}/fulfil").json()["status_url"]
    flow = finished(Flow.objects.get(pk=flow_url.rsplit("/", 1)[1]))
    assert flow.state == Flow.State.SUCCEEDED
    fulfilment_live.wait_idle()
    assert StockItem.objects.get(sku="MUG-RED").available == 7
    assert provider.captures_of(order.number) == 1
    capture = PaymentCapture.objects.get(order=order)
    assert (capture.status, capture.amount, capture.attempts) == ("captured", "29.97", 1)
    assert Shipment.objects.get(order=order).tracking_number == f"TYS-{order.pk:010d}"
    [mail] = shipped_mails(fulfilment_live.sink, order.pk)
    assert mail["Subject"] == f"Order {order.number} shipped"
    assert f"TYS-{order.pk:010d}" in mail.get_body(("plain",)).get_content()
    body = api.get(flow_url).json()
    assert [(s["name"], s["state"], s["attempts"]) for s in body["steps"]] == [
        ("reserve-stock", "succeeded", 1),
        ("capture-payment", "succeeded", 1),
        ("ship-order", "succeeded", 1),
    ]
    # the steps run again (a redelivery under a new task id, outside the flow): nothing more happens
    for task in ("fulfilment.reserve_stock", "fulfilment.capture_payment", "fulfilment.ship_order"):
        again = str(uuid.uuid4())
        celery_app.send_task(task, kwargs={"order_id": order.pk}, task_id=again, queue="default")
        done = TaskRun.objects.filter(task_id=again, state=TaskRun.State.SUCCEEDED)
        wait_until(done.exists, message=task)
    fulfilment_live.wait_idle()
    assert StockItem.objects.get(sku="MUG-RED").available == 7
    assert provider.captures_of(order.number) == 1
    assert len(shipped_mails(fulfilment_live.sink, order.pk)) == 1


def test_not_enough_stock_fails_the_flow_and_nothing_ships(fulfilment_live, provider, user):
    stock("MUG-RED", 1)
    order = paid_order(user, ("MUG-RED", 2))
    flow = finished(fulfilment_start(user=user, order_id=order.pk))
    fulfilment_live.wait_idle()
    found = steps(flow)
    assert flow.state == Flow.State.FAILED
    assert flow.failed_step_id == found["reserve-stock"].pk
    assert found["reserve-stock"].error_code == "insufficient-stock"
    assert found["ship-order"].state == FlowStep.State.CANCELLED
    assert StockItem.objects.get(sku="MUG-RED").available == 1
    assert not StockReservation.objects.filter(order=order).exists()
    assert not Shipment.objects.filter(order=order).exists()
    assert DeadLetter.objects.get(root_id=found["reserve-stock"].root_id).reason == "permanent"


def test_a_declined_payment_fails_the_flow_and_its_retry_finishes_the_order(fulfilment_live, provider, user):
    stock("MUG-RED", 10)
    order = paid_order(user, ("MUG-RED", 1))
    provider.control(decline=[order.number])
    flow = finished(fulfilment_start(user=user, order_id=order.pk))
    fulfilment_live.wait_idle()
    found = steps(flow)
    assert flow.state == Flow.State.FAILED
    assert (found["capture-payment"].state, found["capture-payment"].error_code) == (
        "failed",
        "payment-declined",
    )
    assert found["reserve-stock"].state == FlowStep.State.SUCCEEDED  # kept: the retry can finish the order
    assert PaymentCapture.objects.get(order=order).status == PaymentCapture.Status.DECLINED
    # when the customer's bank accepts again and an operator retries the failed step
    provider.control(decline=[])
    assert flow_step_retry(step_id=found["capture-payment"].pk, actor=user, note="card updated")
    assert finished(flow).state == Flow.State.SUCCEEDED
    fulfilment_live.wait_idle()
    assert provider.captures_of(order.number) == 1
    assert StockItem.objects.get(sku="MUG-RED").available == 9  # reserved once
    assert len(shipped_mails(fulfilment_live.sink, order.pk)) == 1
    assert EmailDelivery.objects.get(template="order_shipped", ledger_key=f"order:{order.pk}").attempts == 1


def test_a_capture_whose_answer_came_too_late_is_retried_with_the_same_key(fulfilment_live, provider, user):
    stock("MUG-RED", 10)
    order = paid_order(user)
    provider.control(fail_captures=1, fail_with="timeout", timeout_seconds=3)  # captured; answered late
    flow = finished(fulfilment_start(user=user, order_id=order.pk), timeout=40)
    fulfilment_live.wait_idle()
    assert flow.state == Flow.State.SUCCEEDED
    capture_step = steps(flow)["capture-payment"]
    assert capture_step.attempts == 2
    stats = provider.stats()
    assert stats["calls_by_key"][f"capture:order:{order.pk}"] == 2
    assert provider.captures_of(order.number) == 1  # the retry got the first capture back
