"""The reaper finds a message the broker lost after it was re-published for a dead worker."""

import uuid
from datetime import timedelta

import pytest
from django.utils import timezone

from jobs import reaper
from jobs.models import OutboxMessage, TaskRun
from tests.conftest import purge_broker
from tests.harness import redis_client

pytestmark = pytest.mark.django_db


def test_a_republished_message_lost_again_by_the_broker_is_published_again(settings):
    purge_broker()
    redis_client().delete(reaper.LOCK_KEY)
    settings.OUTBOX_LOST_AFTER_SECONDS = 5
    long_ago = timezone.now() - timedelta(seconds=60)
    lost_twice, started = uuid.uuid4(), uuid.uuid4()
    for task_id in (lost_twice, started):
        OutboxMessage.objects.create(id=task_id, task_name="probe.record", queue="default", sent_at=long_ago)
    # its worker died (the reaper marked it lost and re-published it); the broker then lost it again
    TaskRun.objects.create(
        task_id=lost_twice,
        task_name="probe.record",
        state=TaskRun.State.LOST,
        started_at=long_ago,
        heartbeat_at=long_ago,
    )
    TaskRun.objects.create(
        task_id=started,
        task_name="probe.record",
        state=TaskRun.State.SUCCEEDED,
        started_at=long_ago,
        heartbeat_at=long_ago,
    )
    report = reaper.reap(redis_client())
    assert report.lost_in_broker == [str(lost_twice)]
    assert OutboxMessage.objects.get(pk=lost_twice).sent_at is None  # back in line for the relay
    assert OutboxMessage.objects.get(pk=started).sent_at == long_ago
