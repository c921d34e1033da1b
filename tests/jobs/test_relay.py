"""The outbox end to end, with real relay and worker processes on real PostgreSQL and Redis."""

import re
import uuid
from datetime import timedelta

import pytest
from django.db import transaction
from django.utils import timezone

from config.celery_app import app as celery_app
from jobs import outbox
from jobs.models import OutboxMessage, TaskRun
from tests.harness import Processes, free_port, wait_until
from tests.probe.tasks import records

pytestmark = pytest.mark.django_db(transaction=True)


def enqueue(key: str, **options) -> uuid.UUID:
    with transaction.atomic():
        task_id = outbox.enqueue("probe.record", kwargs={"key": key}, **options)
    assert task_id is not None
    return task_id


def enqueue_many(keys: list[str]) -> None:
    with transaction.atomic(), outbox.batch():
        for key in keys:
            outbox.enqueue("probe.record", kwargs={"key": key})


def wait_recorded(key: str, count: int = 1, timeout: float = 20.0) -> list[dict]:
    return wait_until(lambda: len(records(key)) >= count and records(key), timeout=timeout, message=key)


def test_commit_runs_the_task_exactly_once(live):
    key = uuid.uuid4().hex
    task_id = enqueue(key)
    [run] = wait_recorded(key)
    live.wait_idle()
    # the task id is the outbox row id, and it ran once
    assert run["task_id"] == str(task_id)
    assert len(records(key)) == 1
    assert OutboxMessage.objects.get(pk=task_id).sent_at is not None
    assert TaskRun.objects.get(task_id=task_id).state == TaskRun.State.SUCCEEDED


def test_rollback_means_the_task_never_runs(live):
    rolled_back = uuid.uuid4().hex

    def enqueue_then_fail():
        with transaction.atomic():
            outbox.enqueue("probe.record", kwargs={"key": rolled_back})
            raise RuntimeError("the order failed validation after all")

    with pytest.raises(RuntimeError):
        enqueue_then_fail()
    # a task committed afterwards runs; by then the relay has seen everything committed before it
    barrier = uuid.uuid4().hex
    enqueue(barrier)
    wait_recorded(barrier)
    live.wait_idle()
    assert records(rolled_back) == []
    assert not OutboxMessage.objects.filter(kwargs__key=rolled_back).exists()


def test_delayed_row_is_not_published_early(live):
    key = uuid.uuid4().hex
    not_before = timezone.now() + timedelta(seconds=2)
    task_id = enqueue(key, not_before=not_before)
    wait_recorded(key, timeout=15)
    row = OutboxMessage.objects.get(pk=task_id)
    run = TaskRun.objects.get(task_id=task_id)
    assert row.sent_at is not None
    assert row.sent_at >= not_before
    assert run.started_at >= not_before


def test_duplicate_delivery_of_one_task_id_runs_once(live):
    # given the same message delivered twice (a relay crash between publish and mark)
    key = uuid.uuid4().hex
    task_id = str(uuid.uuid4())
    for _ in range(2):
        celery_app.send_task("probe.record", kwargs={"key": key}, task_id=task_id, queue="default")
    wait_recorded(key)
    live.wait_idle()
    # then the side effect happened once, and the second delivery was refused by TaskRun
    assert len(records(key)) == 1
    assert TaskRun.objects.get(task_id=task_id).deliveries == 1
    wait_until(lambda: "duplicate delivery" in live.worker.log(), message="the refusal in the worker's log")


def test_relay_killed_mid_batch_loses_nothing(live, tmp_path):
    keys = [f"kill-{i}-{uuid.uuid4().hex[:6]}" for i in range(600)]
    with live.relay_paused():
        procs = Processes(tmp_path)
        try:
            # given a relay publishing a backlog in small batches
            relay = procs.relay("relay-doomed", extra=["--batch-size", "10", "--no-reaper"])
            enqueue_many(keys)
            wait_until(
                lambda: OutboxMessage.objects.filter(sent_at__isnull=False).count() > 50,
                message="the relay to publish a few batches",
            )
            # when it is SIGKILLed mid-way, and a new one starts
            relay.kill()
            assert OutboxMessage.objects.filter(sent_at__isnull=True).exists()
            procs.relay("relay-replacement", extra=["--batch-size", "100", "--no-reaper"])
            wait_until(
                lambda: not OutboxMessage.objects.filter(sent_at__isnull=True).exists(),
                timeout=60,
                message="every row to be published",
            )
            live.wait_idle(timeout=60)
        finally:
            procs.stop_all()
    # then every task ran exactly once
    counts = {key: len(records(key)) for key in keys}
    assert set(counts.values()) == {1}


def test_broker_down_keeps_rows_and_loses_nothing(live, tmp_path):
    keys = [f"down-{i}-{uuid.uuid4().hex[:6]}" for i in range(20)]
    with live.relay_paused():
        procs = Processes(tmp_path)
        try:
            # given a relay whose broker is unreachable
            procs.relay("relay-no-broker", CELERY_BROKER_URL=f"redis://127.0.0.1:{free_port()}/0")
            enqueue_many(keys)
            # then publishing fails, the rows stay, and the failure is recorded on them
            wait_until(
                lambda: OutboxMessage.objects.filter(publish_attempts__gte=1).count() == len(keys),
                timeout=30,
                message="failed publish attempts",
            )
            assert OutboxMessage.objects.filter(sent_at__isnull=True).count() == len(keys)
            assert all(r.last_error for r in OutboxMessage.objects.all())
            # and new work is still accepted while the broker is down
            late = f"late-{uuid.uuid4().hex}"
            enqueue(late)
            keys.append(late)
        finally:
            procs.stop_all()
    # when a relay with a working broker runs again (the session relay resumes)
    for key in keys:
        wait_recorded(key, timeout=60)
    live.wait_idle()
    assert {len(records(k)) for k in keys} == {1}


def test_two_relays_publish_each_row_once(live, tmp_path):
    keys = [f"two-{i}-{uuid.uuid4().hex[:6]}" for i in range(1500)]
    with live.relay_paused():
        procs = Processes(tmp_path)
        try:
            relays = [procs.relay(f"relay-{n}", extra=["--batch-size", "25", "--no-reaper"]) for n in (1, 2)]
            enqueue_many(keys)
            wait_until(
                lambda: not OutboxMessage.objects.filter(sent_at__isnull=True).exists(),
                timeout=60,
                message="both relays to drain the outbox",
            )
            for relay in relays:
                relay.stop()
            published = [int(re.findall(r"after publishing (\d+) rows", r.log())[0]) for r in relays]
        finally:
            procs.stop_all()
    # then the relays' own counters add up to the number of rows: no row was published twice
    assert sum(published) == len(keys), published
    live.wait_idle(timeout=60)
    assert {len(records(k)) for k in keys} == {1}
    assert set(TaskRun.objects.filter(task_name="probe.record").values_list("deliveries", flat=True)) == {1}
