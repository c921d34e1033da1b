"""RabbitMQ as the broker (CELERY_BROKER_URL=amqp://...): quorum queues with a delivery
limit and a dead-letter exchange, checked with a worker killed under load, a beat-scheduled
task killed mid-run, Redis gone while RabbitMQ carries on, and a poison message that RabbitMQ
itself dead-letters. Each test gets its own vhost. RabbitMQ missing: skipped, failed in CI."""

import subprocess
import sys
import time
import uuid

import pytest
from django.db import transaction

from jobs import outbox
from jobs.models import DeadLetter, TaskRun
from tests.chaos.conftest import kill_group, record_result
from tests.chaos.effects import figures_of, verify
from tests.chaos.scenario import RATE, kill_rounds, outage, wait_for_orders
from tests.chaos.test_workers import EVERY, beat_slot_killed_mid_run, kill_main
from tests.harness import require_os_tool, wait_until

pytestmark = pytest.mark.django_db(transaction=True)


def rabbitmqctl(*args: str) -> None:
    subprocess.run(["rabbitmqctl", "-q", *args], check=True, capture_output=True, timeout=60)


@pytest.fixture
def vhost():
    require_os_tool("rabbitmqctl", package="rabbitmq-server")
    name = f"taskyard-test-{uuid.uuid4().hex[:8]}"
    rabbitmqctl("add_vhost", name)
    rabbitmqctl("set_permissions", "-p", name, "guest", ".*", ".*", ".*")
    yield f"amqp://guest:guest@127.0.0.1:5672/{name}"
    rabbitmqctl("delete_vhost", name)


def test_rabbitmq_worker_sigkilled_mid_task_under_load(chaos, user, vhost):
    stack = chaos(vhost, kyc=True).start(workers=1)
    load = stack.load(user, rate=RATE, kyc_every=5)
    at_kills, recoveries = kill_rounds(stack, load, [kill_group, kill_main])
    load.stop()
    drain = stack.wait_idle()
    figures = verify(stack, load, kills=len(at_kills))
    assert not load.failures
    record_result(
        "rabbitmq-worker-kill",
        title="RabbitMQ: worker `kill -9` mid-task",
        what="the worker-kill scenario (the group, then the main process only) with "
        "`CELERY_BROKER_URL=amqp://...` (quorum queues)",
        **figures,
        **figures_of(tasks_running_at_kills=at_kills, recovery_seconds=recoveries, drain_seconds=drain),
    )


def test_rabbitmq_worker_killed_while_running_a_beat_scheduled_task(chaos, vhost):
    figures = beat_slot_killed_mid_run(chaos, vhost)
    record_result(
        "rabbitmq-beat-slot-kill",
        title="RabbitMQ: worker `kill -9` during a scheduled FX sync",
        what=f"beat on a {EVERY} s FX schedule, the provider answering in 1.5 s; the worker group "
        "SIGKILLed while the sync ran, a new worker started",
        **figures,
    )


REDIS_OUTAGE = 20.0  # seconds


def test_redis_down_20_seconds_while_rabbitmq_carries_the_tasks(chaos, user, vhost):
    stack = chaos(vhost).start(workers=1)
    load = stack.load(user, rate=RATE)
    wait_for_orders(load, 10)
    # when Redis (rate limits, worker records, the reaper's lock) is stopped; RabbitMQ stays up
    stack.redis.stop()
    before = len(load.accepted)
    outage(REDIS_OUTAGE)
    accepted_while_down = len(load.accepted) - before
    stack.redis.start()
    back_at = time.monotonic()
    wait_for_orders(load, 10)
    load.stop()
    drain = stack.wait_idle()
    recovered = time.monotonic() - back_at
    figures = verify(stack, load)
    # then the work went on, and no run was taken as dead: heartbeats go to PostgreSQL
    assert not load.failures, load.failures[:5]
    assert accepted_while_down >= 0.75 * RATE * REDIS_OUTAGE
    assert figures["task_bodies_run_again"] == 0
    assert figures["takeovers"] == 0
    assert all(w.alive() for w in stack.workers)
    record_result(
        "rabbitmq-redis-down",
        title=f"RabbitMQ broker, Redis down {REDIS_OUTAGE:.0f} s",
        what=f"{RATE:.0f} orders/s on RabbitMQ; the suite's redis-server (rate limits, worker records, the reaper's "
        f"lock) stopped for {REDIS_OUTAGE:.0f} s, then started again",
        **figures,
        **figures_of(
            accepted_while_redis_down=accepted_while_down, recovery_seconds=recovered, drain_seconds=drain
        ),
    )


def test_rabbitmq_dead_letters_a_poison_message_past_its_delivery_limit(chaos, user, vhost):
    # given a delivery limit below the base task's own poison cap (3), so RabbitMQ acts first
    stack = chaos(vhost, BROKER_DELIVERY_LIMIT="1").start(workers=1)
    consumer = stack.procs.spawn("dead-letters", [sys.executable, "manage.py", "consume_dead_letters"])
    consumer.wait_for_log("consuming dead letters")
    load = stack.load(user, rate=RATE)
    wait_for_orders(load, 5)
    with transaction.atomic():
        poison = outbox.enqueue("probe.crash", kwargs={"key": uuid.uuid4().hex})
    assert poison is not None
    dead = wait_until(
        lambda: DeadLetter.objects.filter(task_id=poison).first(), timeout=60, message="the DLX consumer"
    )
    wait_for_orders(load, 10)
    load.stop()
    stack.wait_idle()
    figures = verify(stack, load, dead_letters_expected=True)
    # RabbitMQ moved it to the dead-letter exchange; our consumer recorded it for the admin
    assert dead.reason == "poison"
    assert "RabbitMQ delivery limit" in dead.message
    assert dead.kwargs["key"]
    assert DeadLetter.objects.count() == 1
    assert stack.workers[-1].alive()
    record_result(
        "rabbitmq-poison",
        title="RabbitMQ: poison past the delivery limit",
        what="`BROKER_DELIVERY_LIMIT=1`, below the task's own poison cap; dead-lettered by the broker",
        **figures,
        deliveries_before_dead_letter=TaskRun.objects.get(task_id=poison).deliveries,
    )
