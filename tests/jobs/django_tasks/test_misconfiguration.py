"""Misuse and misconfiguration answered with Django's own exception types (InvalidTask,
TaskResultDoesNotExist, TaskResultMismatch, SystemCheckError); task aliases and the
priority mapping onto the outbox scale."""

import uuid

import pytest
from django.core.management import call_command
from django.core.management.base import SystemCheckError
from django.db import transaction
from django.tasks import task, task_backends
from django.tasks.exceptions import InvalidTask, TaskResultDoesNotExist, TaskResultMismatch
from django.utils import timezone

from jobs import outbox
from jobs.django_tasks.backend import OutboxCeleryBackend, load_task, outbox_priority
from jobs.django_tasks.specs import policy, spec_for
from jobs.models import OutboxMessage
from jobs.policy import RetryPolicy
from orders.exports import export_orders
from tests.jobs.django_tasks.helpers import key, wait_result
from tests.probe.django_tasks import FAST_RETRY, add, echo, flaky

pytestmark = pytest.mark.django_db(transaction=True)


def test_enqueue_outside_a_transaction_is_refused():
    with pytest.raises(InvalidTask, match=r"add\.enqueue\(\) must run inside transaction\.atomic\(\)"):
        add.enqueue(1, 2)
    assert not OutboxMessage.objects.exists()


@pytest.mark.parametrize(
    ("args", "kwargs", "message"),
    [
        ((object(),), {}, r"args\[0\]: object is not a JSON scalar"),
        ((), {"when": timezone.now()}, r"kwargs\.when: datetime is not a JSON scalar"),
        (({1: "x"},), {}, r"args\[0\]: keys must be strings"),
        (("x" * 300,), {}, r"args\[0\]: strings longer than 256"),
        ((float("nan"),), {}, r"payload is not JSON"),
        ((list(range(1000)),), {}, r"payload is \d+ bytes; the limit is 2048"),
    ],
    ids=["object", "datetime", "int-key", "long-string", "nan", "too-big"],
)
def test_arguments_that_are_not_small_json_are_refused(args, kwargs, message):
    with (
        transaction.atomic(),
        pytest.raises(InvalidTask, match=rf"tests\.probe\.django_tasks\.echo: {message}"),
    ):
        echo.enqueue(*args, **kwargs)
    assert not OutboxMessage.objects.exists()


def test_bad_queues_priorities_and_policies_are_refused():
    with pytest.raises(InvalidTask, match=r"Queue 'nope' is not declared in jobs\.queues\.Queue"):
        add.using(queue_name="nope")
    with pytest.raises(InvalidTask, match="Queue 'nope'"):
        task(queue_name="nope")(add.func)  # refused where the task is defined, too
    with pytest.raises(InvalidTask, match="priority must be a whole number between -100 and 100"):
        add.using(priority=101)
    with pytest.raises(InvalidTask, match="run_after must be an aware datetime"):
        add.using(run_after=timezone.make_naive(timezone.now()))
    with pytest.raises(InvalidTask, match=r"soft time limit \(10s\) must be below the hard one \(5s\)"):
        policy(soft_time_limit=10, time_limit=5)(add)
    with pytest.raises(InvalidTask, match="job_kwarg 'job_id' is not a parameter"):
        policy(job_kwarg="job_id")(add)
    with transaction.atomic(), pytest.raises(InvalidTask, match="pass job_id=<job id> as a keyword"):
        export_orders.enqueue(str(uuid.uuid4()))


def test_system_checks_pass_and_catch_a_bad_backend_configuration(settings):
    # the project's configuration passes Django's checks, task backends included
    assert isinstance(task_backends["default"], OutboxCeleryBackend)
    call_command("check")
    # a backend naming an undeclared queue, or a return-value cap that is not positive, fails
    bad = OutboxCeleryBackend(
        "bad", {"QUEUES": ["default", "nope"], "OPTIONS": {"MAX_RETURN_VALUE_BYTES": 0}}
    )
    assert [e.id for e in bad.check()] == ["taskyard.E010", "taskyard.E011"]
    settings.TASKS = {
        **settings.TASKS,
        "bad": {"BACKEND": "jobs.django_tasks.backend.OutboxCeleryBackend", "QUEUES": ["nope"]},
    }
    with pytest.raises(SystemCheckError, match=r"taskyard\.E010"):
        call_command("check")


def test_get_result_of_unknown_ids_and_of_other_tasks(live):
    with pytest.raises(TaskResultDoesNotExist):
        add.get_result(str(uuid.uuid4()))
    with pytest.raises(TaskResultDoesNotExist):
        add.get_result("not-a-task-id")
    with transaction.atomic():
        celery_task_id = outbox.enqueue("probe.record", kwargs={"key": key()})
        other = echo.enqueue()
    with pytest.raises(TaskResultDoesNotExist):
        add.get_result(str(celery_task_id))  # a plain Celery task's row is no django.tasks result
    with pytest.raises(TaskResultMismatch):
        add.get_result(other.id)
    assert wait_result(echo.get_result(other.id)).return_value == {"args": [], "kwargs": {}}


def test_an_alias_left_behind_by_a_rename_runs_the_task_with_its_policy():
    assert load_task("tests.probe.django_tasks.renamed_flaky") is flaky
    assert spec_for("tests.probe.django_tasks.renamed_flaky").retry == FAST_RETRY
    assert spec_for("tests.probe.django_tasks.add").retry == RetryPolicy()  # no @policy: the defaults


def test_priorities_map_onto_the_outbox_scale():
    assert [outbox_priority(p) for p in (100, 34, 33, 0, -33, -34, -99, -100)] == [0, 2, 3, 4, 5, 6, 8, 9]
