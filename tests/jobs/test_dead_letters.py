"""Dead-letter services: recording, fingerprints, replay and closing (no worker needed)."""

import uuid
from typing import Any

import pytest
from django.core.exceptions import ObjectDoesNotExist

from core.errors import PermanentError
from core.redact import normalise, redact
from jobs.dead_letters import (
    dead_letter_close,
    dead_letter_record,
    dead_letter_replay,
    fingerprint,
    open_groups,
)
from jobs.execution import TaskMeta
from jobs.models import DeadLetter, OutboxMessage

pytestmark = pytest.mark.django_db


def meta(task_name: str = "probe.record", **overrides) -> TaskMeta:
    task_id = str(uuid.uuid4())
    values: dict[str, Any] = {
        "task_id": task_id,
        "task_name": task_name,
        "queue": "default",
        "attempt": 3,
        "root_id": task_id,
        "request_id": "req-1",
        "job_id": None,
        "first_failed_at": None,
    }
    values.update(overrides)
    return TaskMeta(**values)


def record(exc: BaseException, m: TaskMeta | None = None, **kwargs) -> DeadLetter:
    return dead_letter_record(
        meta=m or meta(), exc=exc, reason="permanent", args=[], kwargs={"order_id": 7}, **kwargs
    )


def test_one_dead_letter_per_task_id_even_when_recorded_twice():
    m = meta()
    first = record(PermanentError("vendor said 400"), m)
    second = record(PermanentError("vendor said 400"), m)  # the worker died after the first commit
    assert first.pk == second.pk
    assert DeadLetter.objects.count() == 1
    # and the alert was enqueued once
    assert OutboxMessage.objects.filter(task_name="jobs.alert_dead_letter").count() == 1


def test_dead_letter_keeps_ids_not_pii():
    dead = record(ValueError("could not mail alice@example.com with token abcdefgh12345"))
    assert "alice@example.com" not in dead.message
    assert "<email>" in dead.message
    assert "abcdefgh12345" not in dead.message
    assert "alice@example.com" not in dead.traceback
    assert dead.kwargs == {"order_id": 7}
    assert dead.headers == {"request_id": "req-1"}


def test_same_failure_on_different_objects_shares_a_fingerprint():
    a = record(ObjectDoesNotExist("Order 17 does not exist"))
    b = record(ObjectDoesNotExist("Order 4242 does not exist"))
    c = record(ObjectDoesNotExist("Order 1 does not exist"), meta("probe.flaky"))
    assert a.fingerprint == b.fingerprint != c.fingerprint
    assert fingerprint("t", "E", "id 3f2c9a8e-1b2c-4d5e-8f90-123456789abc") == fingerprint(
        "t", "E", "id <uuid>"
    )
    groups = list(open_groups())
    assert groups[0]["fingerprint"] == a.fingerprint
    assert groups[0]["count"] == 2


def test_replay_enqueues_once_with_a_new_task_id(user):
    dead = record(PermanentError("x"))
    task_id = dead_letter_replay(dead_letter_id=dead.pk, actor=user, note="fixed")
    assert task_id is not None
    assert task_id != str(dead.task_id)
    row = OutboxMessage.objects.get(pk=task_id)
    assert (row.task_name, row.kwargs) == ("probe.record", {"order_id": 7})
    assert row.headers["replay_of"] == dead.pk
    assert row.headers["attempt"] == 1  # a fresh attempt budget
    assert dead_letter_replay(dead_letter_id=dead.pk, actor=user) is None
    assert OutboxMessage.objects.filter(task_name="probe.record").count() == 1


def test_close_records_who_and_why(user):
    dead = record(PermanentError("x"))
    assert dead_letter_close(dead_letter_id=dead.pk, actor=user, status="discarded", note="obsolete order")
    dead.refresh_from_db()
    assert (dead.status, dead.acted_by, dead.note) == ("discarded", user, "obsolete order")
    assert dead.acted_at is not None
    assert not dead_letter_close(dead_letter_id=dead.pk, actor=user, status="resolved", note="")
    assert dead_letter_replay(dead_letter_id=dead.pk, actor=user) is None
    with pytest.raises(ValueError, match="cannot close"):
        dead_letter_close(dead_letter_id=dead.pk, actor=user, status="open", note="")


def test_redaction():
    assert redact("Authorization: Token 0123456789abcdef") == "Authorization: <redacted>"
    assert redact("password=hunter2 next") == "password=<redacted> next"
    assert normalise("order 12 failed at 0x7f00 for bob@x.org") == "order <n> failed at <hex> for <email>"
