"""Queues and priorities, on a worker of its own (the `isolated` fixture stops the shared stack)."""

import pytest
from django.db import transaction

from jobs.models import OutboxMessage, TaskRun
from jobs.queues import Queue
from tests.harness import redis_client, wait_until
from tests.jobs.django_tasks.helpers import READY, key
from tests.probe.django_tasks import record
from tests.probe.tasks import records

pytestmark = pytest.mark.django_db(transaction=True)


def test_queue_and_priority_routing(isolated):
    client = redis_client()
    # given a relay and no worker yet: published messages wait in the broker
    isolated.relay()
    low, urgent, elsewhere = [key() for _ in range(3)], [key() for _ in range(3)], key()
    with transaction.atomic():
        low_results = [record.using(queue_name="emails", priority=-100).enqueue(k) for k in low]
        urgent_results = [record.using(queue_name="emails", priority=100).enqueue(k) for k in urgent]
        other = record.using(queue_name=Queue.KYC).enqueue(elsewhere)
    # then each row carries its queue and the mapped priority
    rows = {str(r.id): (r.queue, r.priority) for r in OutboxMessage.objects.all()}
    assert {rows[r.id] for r in low_results} == {("emails", 9)}
    assert {rows[r.id] for r in urgent_results} == {("emails", 0)}
    assert rows[other.id] == ("kyc", 4)
    # and the relay published them into the broker's priority lists of those queues
    wait_until(
        lambda: (
            (client.llen("emails"), client.llen("emails\x06\x169"), client.llen("kyc\x06\x163")) == (3, 3, 1)
        ),
        message="the messages in their priority lists",
    )
    # when a worker consuming only "emails" starts, one task at a time
    worker = isolated.worker("emails-only", queues="emails", concurrency=1)
    wait_until(lambda: all(records(k) for k in low + urgent), timeout=30, message="the six emails tasks")
    # then the urgent ones ran first, all on that worker, from that queue
    entries = {k: records(k)[0] for k in low + urgent}
    ran = sorted(entries, key=lambda k: entries[k]["at"])
    assert set(ran[:3]) == set(urgent)
    assert {(e["queue"], e["hostname"]) for e in entries.values()} == {("emails", worker.nodename)}
    assert set(TaskRun.objects.values_list("queue", flat=True)) == {"emails"}
    # and the task for another queue is still waiting
    assert record.get_result(other.id).status == READY
    assert records(elsewhere) == []
