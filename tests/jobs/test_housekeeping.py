"""Housekeeping tasks, called directly (their logic; scheduling is tested with beat)."""

import uuid
from datetime import timedelta

import pytest
from django.core import mail
from django.utils import timezone

from core.models import IdempotencyKey
from jobs import tasks
from jobs.models import DeadLetter, OutboxMessage, TaskRun
from tests.jobs.test_admin import make_dead_letter

pytestmark = pytest.mark.django_db


def test_digest_lists_groups_open_for_more_than_a_day():
    old = make_dead_letter("vendor rejected order 1")
    make_dead_letter("vendor rejected order 2")
    make_dead_letter("fresh failure", task="probe.flaky")
    DeadLetter.objects.filter(pk=old.pk).update(created_at=timezone.now() - timedelta(hours=30))
    assert tasks.dead_letter_digest() == 1
    [message] = mail.outbox
    assert "1 dead-letter group(s) open for more than 24 h" in message.subject
    assert old.fingerprint in message.body
    assert "probe.flaky" not in message.body


def test_digest_sends_nothing_when_nothing_is_old():
    make_dead_letter()
    assert tasks.dead_letter_digest() == 0
    assert mail.outbox == []


def test_purges_delete_only_what_is_past_retention(user):
    now = timezone.now()
    old, recent, unsent = (uuid.uuid4() for _ in range(3))
    OutboxMessage.objects.create(
        id=old, task_name="probe.record", queue="default", sent_at=now - timedelta(days=8)
    )
    OutboxMessage.objects.create(
        id=recent, task_name="probe.record", queue="default", sent_at=now - timedelta(days=1)
    )
    OutboxMessage.objects.create(id=unsent, task_name="probe.record", queue="default")
    TaskRun.objects.create(
        task_id=old, task_name="probe.record", state="succeeded", started_at=now, heartbeat_at=now,
        finished_at=now - timedelta(days=8),
    )  # fmt: skip
    assert tasks.purge_outbox() == 2
    assert set(OutboxMessage.objects.values_list("id", flat=True)) == {recent, unsent}
    for key, expires in (("gone", now - timedelta(minutes=1)), ("kept", now + timedelta(hours=1))):
        IdempotencyKey.objects.create(
            user=user, key=key, request_hash="h", method="POST", path="/", status_code=201,
            response_body={}, expires_at=expires,
        )  # fmt: skip
    assert tasks.purge_idempotency_keys() == 1
    assert list(IdempotencyKey.objects.values_list("key", flat=True)) == ["kept"]
