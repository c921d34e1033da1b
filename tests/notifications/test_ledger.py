"""The email ledger's claim: who may send a given email, and when (real PostgreSQL)."""

import threading
import time
from datetime import timedelta

import pytest
from django.db import connection
from django.utils import timezone

from jobs.errors import Reschedule
from notifications.models import EmailDelivery
from notifications.services import _claim, _record_sent, claim_lease
from tests.harness import free_port

KEY = {"template": "order_confirmation", "ledger_key": "order:42"}


def claim(user, task_id):
    return _claim(**KEY, recipient=user, task_id=task_id)


def row() -> EmailDelivery:
    return EmailDelivery.objects.get(**KEY)


def test_the_first_claim_creates_the_row_as_sending(db, user):
    delivery = claim(user, "task-a")
    assert delivery is not None
    assert delivery.message_id == "<order_confirmation.order-42@taskyard.test>"
    stored = row()
    assert (stored.pk, stored.status, stored.attempts, stored.claimed_by) == (
        delivery.pk,
        "sending",
        1,
        "task-a",
    )
    assert stored.recipient == user


def test_a_live_claim_by_another_task_reschedules_for_the_rest_of_its_lease(db, user):
    claim(user, "task-a")
    with pytest.raises(Reschedule) as caught:
        claim(user, "task-b")
    assert claim_lease().total_seconds() - 5 < caught.value.delay <= claim_lease().total_seconds()
    assert (row().attempts, row().claimed_by) == (1, "task-a")


def test_the_same_task_id_takes_over_its_own_claim_at_once(db, user):
    # That attempt died mid-send (a task id runs in one place at a time).
    claim(user, "task-a")
    assert claim(user, "task-a") is not None
    assert row().attempts == 2


def test_an_expired_claim_is_taken_over_by_another_task(db, user):
    claim(user, "task-a")
    EmailDelivery.objects.filter(**KEY).update(
        claimed_at=timezone.now() - claim_lease() - timedelta(seconds=1)
    )
    assert claim(user, "task-b") is not None
    assert (row().attempts, row().claimed_by) == (2, "task-b")


def test_a_sent_email_is_never_claimed_again(db, user):
    claim(user, "task-a")
    EmailDelivery.objects.filter(**KEY).update(status=EmailDelivery.Status.SENT)
    assert claim(user, "task-a") is None
    assert claim(user, "task-b") is None
    assert row().attempts == 1


@pytest.mark.parametrize("status", [EmailDelivery.Status.PENDING, EmailDelivery.Status.FAILED])
def test_a_pending_or_failed_email_is_claimed_by_the_next_attempt(db, user, status):
    # pending: a retryable error was recorded; failed: dead-lettered, now replayed
    claim(user, "task-a")
    EmailDelivery.objects.filter(**KEY).update(status=status)
    assert claim(user, "task-b") is not None
    assert (row().status, row().attempts) == ("sending", 2)


def test_a_sent_mark_waits_out_a_database_outage_within_the_lease(transactional_db, user, caplog):
    # given an email the SMTP server took, and PostgreSQL unreachable when its mark is written
    delivery = claim(user, "task-a")
    database = connection.settings_dict
    port = database["PORT"]
    connection.close()
    database["PORT"] = str(free_port())  # refused, as when PostgreSQL is down
    back = threading.Timer(1.5, lambda: database.update(PORT=port))
    back.start()
    try:
        started = time.monotonic()
        _record_sent(delivery, started=started, task_id="task-a")
    finally:
        back.join()
        database["PORT"] = port
    # then the mark was retried until the database answered, instead of being lost
    assert time.monotonic() - started >= 1.5
    assert row().status == EmailDelivery.Status.SENT
    assert "retrying its mark" in caplog.text
