"""RabbitMQ as the broker (CELERY_BROKER_URL=amqp://...): quorum queues with a delivery
limit and a dead-letter exchange, checked with a worker killed under load and with a
poison message that RabbitMQ itself dead-letters. Each test gets its own vhost."""

import shutil
import subprocess
import sys
import time
import uuid

import pytest
from django.db import transaction

from jobs import outbox
from jobs.models import DeadLetter, TaskRun
from tests.chaos.conftest import kill_group, record_result
from tests.chaos.test_scenarios import all_finished, in_flight, wait_for_orders
from tests.harness import wait_until

pytestmark = [
    pytest.mark.django_db(transaction=True),
    pytest.mark.skipif(shutil.which("rabbitmqctl") is None, reason="RabbitMQ is not installed here"),
]


def rabbitmqctl(*args: str) -> None:
    subprocess.run(["rabbitmqctl", "-q", *args], check=True, capture_output=True, timeout=60)


@pytest.fixture
def vhost():
    name = f"taskyard-test-{uuid.uuid4().hex[:8]}"
    rabbitmqctl("add_vhost", name)
    rabbitmqctl("set_permissions", "-p", name, "guest", ".*", ".*", ".*")
    yield f"amqp://guest:guest@127.0.0.1:5672/{name}"
    rabbitmqctl("delete_vhost", name)


def test_rabbitmq_worker_sigkilled_under_load(chaos, user, vhost):
    stack = chaos(broker_url=vhost).start(workers=1)
    load = stack.load(user, rate=10)
    recoveries = []
    for round_ in range(2):
        wait_for_orders(load, 30)
        worker = stack.workers[-1]
        wait_until(
            lambda: TaskRun.objects.filter(state=TaskRun.State.RUNNING).exists(), timeout=10, message="a task"
        )
        held = in_flight(stack, worker)
        killed_at = time.time()
        kill_group(worker)
        stack.start_worker(f"after-kill-{round_}")
        wait_until(all_finished(held), timeout=90, message="every task of the killed worker to finish")
        finished = TaskRun.objects.filter(task_id__in=held).values_list("finished_at", flat=True)
        recoveries.append(max((f.timestamp() - killed_at for f in finished if f), default=0.0))
    load.stop()
    drain = stack.wait_idle()
    figures = stack.verify(load.accepted)
    assert not load.failures
    assert max(recoveries) < 60
    record_result(
        "RabbitMQ: kill -9 worker x2 under 10 orders/s",
        **figures,
        recovery_seconds=[round(r, 1) for r in recoveries],
        drain_after_load_seconds=round(drain, 1),
    )


def test_rabbitmq_dead_letters_a_poison_message_past_its_delivery_limit(chaos, user, vhost):
    # given a delivery limit below the base task's own poison cap (3), so RabbitMQ acts first
    stack = chaos(broker_url=vhost, BROKER_DELIVERY_LIMIT="1").start(workers=1)
    consumer = stack.procs.spawn("dead-letters", [sys.executable, "manage.py", "consume_dead_letters"])
    consumer.wait_for_log("consuming dead letters")
    load = stack.load(user, rate=10)
    wait_for_orders(load, 10)
    with transaction.atomic():
        poison = outbox.enqueue("probe.crash", kwargs={"key": uuid.uuid4().hex})
    assert poison is not None
    dead = wait_until(
        lambda: DeadLetter.objects.filter(task_id=poison).first(), timeout=60, message="the DLX consumer"
    )
    wait_for_orders(load, 20)
    load.stop()
    stack.wait_idle()
    figures = stack.verify(load.accepted, dead_letters_expected=True)
    # RabbitMQ moved it to the dead-letter exchange; our consumer recorded it for the admin
    assert dead.reason == "poison"
    assert "RabbitMQ delivery limit" in dead.message
    assert dead.kwargs["key"]
    assert DeadLetter.objects.count() == 1
    assert stack.workers[-1].alive()
    record_result(
        "RabbitMQ: poison message dead-lettered by the broker",
        **figures,
        deliveries_before_dead_letter=TaskRun.objects.get(task_id=poison).deliveries,
    )
