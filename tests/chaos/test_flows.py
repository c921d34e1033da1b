"""1,000 order fulfilment flows while the worker is SIGKILLed twice and the broker is flushed with
a backlog: every flow ends, each fan-in fires once, nothing is charged or shipped twice.

The flows are started by the fulfilment service, one transaction each, as the API's POST does
(tests/fulfilment/test_api.py covers the request itself): the scenario's time goes to the
workers, which is what it measures."""

import signal
import threading
import time
from collections import Counter
from collections.abc import Callable
from decimal import Decimal

import pytest
from django.db import connection

from fulfilment.models import Shipment, StockItem
from fulfilment.services import fulfilment_start
from jobs.models import DeadLetter, Flow, FlowStep, OutboxMessage, TaskRun
from orders.models import Order, OrderLine
from tests.chaos.conftest import kill_group, record_result
from tests.chaos.effects import emails
from tests.fulfilment.conftest import start_provider
from tests.harness import wait_until

pytestmark = pytest.mark.django_db(transaction=True)

FLOWS = 1000
STOCK = 1_000_000
WORKER_CONCURRENCY = 4  # the steps wait on HTTP, SMTP and PostgreSQL: more children than cores pay


def paid_orders(user, count: int) -> list[int]:
    price = Decimal("9.99")
    orders = Order.objects.bulk_create(
        Order(owner=user, currency="EUR", total=price * 2, status=Order.Status.PAID) for _ in range(count)
    )
    OrderLine.objects.bulk_create(
        OrderLine(order=o, position=1, sku="MUG-RED", quantity=2, unit_price=price, line_total=price * 2)
        for o in orders
    )
    return [o.pk for o in orders]


def fulfil_all(user, order_ids: list[int], failures: list[str]) -> None:
    """What POST /api/orders/<id>/fulfil does for each order (its transaction included), minus HTTP."""
    try:
        for order_id in order_ids:
            try:
                fulfilment_start(user=user, order_id=order_id)
            except Exception as exc:  # noqa: BLE001 - counted and asserted on
                failures.append(f"{order_id}: {type(exc).__name__}: {exc}")
    finally:
        connection.close()  # this thread's own connection


def flush_with_a_backlog(stack) -> int:
    """Freeze the worker until messages pile up in the broker, then lose them all (FLUSHALL)."""
    worker, client = stack.workers[-1], stack.redis.client()
    worker.signal_group(signal.SIGSTOP)

    def queued() -> int:
        return sum(client.llen(q) for q in ("default", "emails"))

    wait_until(lambda: queued() >= 20, timeout=30, message="a backlog in the broker")
    backlog = queued()
    client.flushall()
    worker.signal_group(signal.SIGCONT)
    return backlog


def explain_unsucceeded() -> str:
    """The flows that did not succeed, their steps and dead letters (for a failure message)."""
    lines = []
    for flow in Flow.objects.filter(kind="order-fulfillment").exclude(state=Flow.State.SUCCEEDED)[:5]:
        steps = list(flow.steps.values_list("name", "state", "attempts", "error_code", "root_id"))
        dead = list(
            DeadLetter.objects.filter(root_id__in=[s[4] for s in steps if s[4]]).values_list(
                "task_name", "reason", "message"
            )
        )
        lines.append(f"{flow.pk} {flow.state}: {steps} dead letters {dead}")
    return "\n".join(lines)


def settled_flows_at_least(count: int) -> Callable[[], bool]:
    def check() -> bool:
        return Flow.objects.filter(kind="order-fulfillment", state__in=Flow.FINISHED).count() >= count

    return check


def test_a_thousand_fulfilment_flows_under_worker_kills_and_a_broker_flush(chaos, user):
    # A quicker reaper than the chaos stack's defaults: the scenario's time is the workers'.
    stack = chaos(
        TASKYARD_HEARTBEAT_STALE_SECONDS="6",
        TASKYARD_REAPER_INTERVAL_SECONDS="2",
        OUTBOX_LOST_AFTER_SECONDS="5",
    )
    provider = start_provider(stack.procs)
    stack.env["PAYMENT_PROVIDER_URL"] = provider.url
    started = time.monotonic()
    stack.start(workers=1, concurrency=WORKER_CONCURRENCY)
    StockItem.objects.create(sku="MUG-RED", available=STOCK)
    order_ids = paid_orders(user, FLOWS)
    failures: list[str] = []
    posting = threading.Thread(target=fulfil_all, args=(user, order_ids, failures))
    posting.start()
    # kill -9 the worker a quarter of the way, flush the broker with a backlog halfway, kill again at 3/4
    for round_, at in enumerate((FLOWS // 4, FLOWS // 2, 3 * FLOWS // 4)):
        wait_until(settled_flows_at_least(at), timeout=120, interval=0.2, message=f"{at} flows done")
        if round_ == 1:
            flushed = flush_with_a_backlog(stack)
        else:
            kill_group(stack.workers[-1])
            stack.start_worker(f"after-kill-{round_}", concurrency=WORKER_CONCURRENCY)
    posting.join(timeout=120)
    drain = stack.wait_idle(timeout=240)
    elapsed = time.monotonic() - started

    # every flow ended, and succeeded (nothing failed on its own merits here)
    states = Counter(Flow.objects.filter(kind="order-fulfillment").values_list("state", flat=True))
    assert not failures, failures[:5]
    assert sum(states.values()) == FLOWS
    assert states[Flow.State.SUCCEEDED] + states[Flow.State.FAILED] == FLOWS, states
    assert states[Flow.State.SUCCEEDED] == FLOWS, explain_unsucceeded()
    # each fan-in fired once: one outbox row for each ship step, which succeeded once
    ships = FlowStep.objects.filter(name="ship-order")
    # (a retry of a ship step is a row of its own, with attempt > 1: not a second release)
    released = Counter(
        OutboxMessage.objects.filter(task_name="fulfilment.ship_order", headers__attempt=1).values_list(
            "headers__flow_step", flat=True
        )
    )
    assert len(released) == FLOWS
    assert set(released.values()) == {1}
    ship_runs = Counter(
        TaskRun.objects.filter(task_name="fulfilment.ship_order", state=TaskRun.State.SUCCEEDED).values_list(
            "root_id", flat=True
        )
    )
    assert set(ship_runs.values()) == {1}
    assert len(ship_runs) == FLOWS
    assert set(ships.values_list("state", flat=True)) == {FlowStep.State.SUCCEEDED}
    # each effect once: stock, captures at the provider, shipments, shipped emails
    stats = provider.stats()
    assert stats["captures"] == FLOWS
    assert set(stats["captures_by_reference"].values()) == {1}
    assert StockItem.objects.get(sku="MUG-RED").available == STOCK - 2 * FLOWS
    assert Shipment.objects.count() == FLOWS
    # each order's shipped email; a worker killed between the SMTP server's 250 and the ledger's
    # mark may send one twice, with the same Message-ID (docs/reliability.md, exactly once)
    shipped = {m: n for m, n in emails(stack).items() if m.startswith("<order_shipped.")}
    assert len(shipped) == FLOWS
    assert "the broker lost them" in stack.relay.log()
    record_result(
        "fulfilment-flows",
        title="1,000 fulfilment flows under worker kills and a broker flush",
        what=(
            f"{FLOWS} order-fulfilment flows started (one transaction each) while the worker (concurrency "
            f"{WORKER_CONCURRENCY}) was SIGKILLed at 1/4 and 3/4 of them done and the broker flushed "
            "(`FLUSHALL`) with a backlog at 1/2; a new worker each time"
        ),
        flows=FLOWS,
        flows_succeeded=states[Flow.State.SUCCEEDED],
        ship_steps_released_once=sum(1 for n in released.values() if n == 1),
        ship_redeliveries=int(
            sum(
                TaskRun.objects.filter(task_name="fulfilment.ship_order").values_list("deliveries", flat=True)
            )
            - FLOWS
        ),
        messages_queued_at_flush=flushed,
        provider_captures=stats["captures"],
        provider_calls=stats["calls"],
        shipped_emails_unique=len(shipped),
        duplicate_emails=sum(n - 1 for n in shipped.values()),
        drain_after_last_fault_seconds=round(drain, 1),
        scenario_seconds=round(elapsed, 1),
    )
