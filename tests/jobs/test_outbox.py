"""The outbox's rules, at the service level (no worker needed)."""

import datetime as dt
import uuid

import pytest
from django.db import connection, transaction
from django.utils import timezone

from jobs import outbox
from jobs.errors import EnqueueError
from jobs.models import OutboxMessage

pytestmark = pytest.mark.django_db


def test_enqueue_writes_one_row_in_the_callers_transaction():
    with transaction.atomic():
        task_id = outbox.enqueue("probe.record", kwargs={"key": "a"})
    row = OutboxMessage.objects.get()
    assert row.id == task_id
    assert row.task_name == "probe.record"
    assert row.queue == "default"  # from the task's declaration
    assert row.kwargs == {"key": "a"}
    assert row.sent_at is None
    assert row.headers["attempt"] == 1
    assert row.headers["root_id"] == str(task_id)


@pytest.mark.django_db(transaction=True)  # no test-wide transaction around this one
def test_enqueue_outside_a_transaction_is_refused():
    assert not connection.in_atomic_block
    with pytest.raises(EnqueueError, match=r"inside transaction\.atomic"):
        outbox.enqueue("probe.record", kwargs={"key": "a"})
    with pytest.raises(EnqueueError, match=r"inside transaction\.atomic"), outbox.batch():
        pass
    assert not OutboxMessage.objects.exists()


def test_rolled_back_enqueue_leaves_nothing():
    class Boom(Exception):
        pass

    def enqueue_then_fail():
        with transaction.atomic():
            outbox.enqueue("probe.record", kwargs={"key": "a"})
            raise Boom

    with pytest.raises(Boom):
        enqueue_then_fail()
    assert not OutboxMessage.objects.exists()


@pytest.mark.parametrize(
    ("kwargs", "reason"),
    [
        ({"when": timezone.now()}, "datetime is not a JSON scalar"),
        ({"user": object()}, "object is not a JSON scalar"),
        ({"body": "x" * 300}, "strings longer than"),
        ({"ids": list(range(600))}, "the limit is"),
        ({"nested": {1: "a"}}, "keys must be strings"),
    ],
)
def test_non_json_or_oversized_payloads_are_refused(kwargs, reason):
    with pytest.raises(EnqueueError, match=reason), transaction.atomic():
        outbox.enqueue("probe.record", kwargs=kwargs)


def test_unknown_task_and_queue_are_refused():
    with pytest.raises(EnqueueError, match="unknown task"), transaction.atomic():
        outbox.enqueue("probe.no_such_task")
    with pytest.raises(EnqueueError, match="unknown queue"), transaction.atomic():
        outbox.enqueue("probe.record", kwargs={"key": "a"}, queue="nope")


def test_naive_not_before_and_bad_priority_are_refused():
    with pytest.raises(EnqueueError, match="timezone-aware"), transaction.atomic():
        outbox.enqueue("probe.record", kwargs={"key": "a"}, not_before=dt.datetime(2030, 1, 1))  # noqa: DTZ001
    with pytest.raises(EnqueueError, match="priority"), transaction.atomic():
        outbox.enqueue("probe.record", kwargs={"key": "a"}, priority=11)


def test_dedupe_key_makes_the_second_enqueue_a_no_op():
    with transaction.atomic():
        first = outbox.enqueue("probe.record", kwargs={"key": "a"}, dedupe_key="order-1:confirmation")
        second = outbox.enqueue("probe.record", kwargs={"key": "a"}, dedupe_key="order-1:confirmation")
    assert first is not None
    assert second is None
    assert OutboxMessage.objects.count() == 1


def test_batch_writes_all_rows_in_one_statement(django_assert_num_queries):
    with transaction.atomic():
        with django_assert_num_queries(1), outbox.batch():
            a = outbox.enqueue("probe.record", kwargs={"key": "a"})
            b = outbox.enqueue("probe.record", kwargs={"key": "b"}, not_before=timezone.now())
        assert OutboxMessage.objects.filter(pk__in=[a, b]).count() == 2


def test_batch_discards_its_rows_when_the_block_fails():
    def enqueue_then_fail():
        with transaction.atomic(), outbox.batch():
            outbox.enqueue("probe.record", kwargs={"key": "a"})
            raise RuntimeError

    with pytest.raises(RuntimeError):
        enqueue_then_fail()
    assert not OutboxMessage.objects.exists()


def test_notify_is_sent_on_commit_only(transactional_db):
    # given a separate connection listening on the relay's channel
    import psycopg

    params = connection.get_connection_params()
    params.pop("cursor_factory", None)
    params.pop("context", None)
    with psycopg.connect(**params, autocommit=True) as listener:
        listener.execute(f"LISTEN {outbox.NOTIFY_CHANNEL}")

        # when a transaction enqueues and rolls back, no notification arrives
        def enqueue_then_fail():
            with transaction.atomic():
                outbox.enqueue("probe.record", kwargs={"key": "a"})
                raise RuntimeError

        with pytest.raises(RuntimeError):
            enqueue_then_fail()
        assert list(listener.notifies(timeout=0.3)) == []
        # when it commits, exactly one arrives, even for two rows
        with transaction.atomic(), outbox.batch():
            outbox.enqueue("probe.record", kwargs={"key": "a"})
            outbox.enqueue("probe.record", kwargs={"key": "b"})
        notes = list(listener.notifies(timeout=2, stop_after=1))
        assert [n.channel for n in notes] == [outbox.NOTIFY_CHANNEL]


def test_backlog_figures():
    now = timezone.now()
    with transaction.atomic():
        OutboxMessage.objects.create(
            id=uuid.uuid4(),
            task_name="probe.record",
            queue="default",
            not_before=now - dt.timedelta(seconds=30),
        )
        OutboxMessage.objects.create(
            id=uuid.uuid4(), task_name="probe.record", queue="default", not_before=now + dt.timedelta(hours=1)
        )
        OutboxMessage.objects.create(id=uuid.uuid4(), task_name="probe.record", queue="default", sent_at=now)
    figures = outbox.backlog()
    assert figures.unsent == 2
    assert figures.due == 1
    assert 29 <= figures.oldest_due_age_seconds < 60
