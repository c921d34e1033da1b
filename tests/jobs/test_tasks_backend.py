"""Django's task API on the outbox and Celery (jobs/django_tasks/backend.py), on a real worker, relay,
Redis and PostgreSQL: enqueue in the caller's transaction, results read from our own records,
retries, dead letters and replays, time limits, priorities and queues, and the same answers as
Django's immediate backend where both can give one."""

import asyncio
import itertools
import json
import subprocess
import sys
import uuid
from collections.abc import Callable
from datetime import timedelta
from typing import Any

import pytest
from asgiref.sync import async_to_sync
from django.core.files.storage import default_storage
from django.core.management import call_command
from django.core.management.base import SystemCheckError
from django.db import transaction
from django.tasks import TaskResult, TaskResultStatus, task, task_backends
from django.tasks.exceptions import InvalidTask, TaskResultDoesNotExist, TaskResultMismatch
from django.tasks.signals import task_enqueued
from django.utils import timezone
from prometheus_client import CollectorRegistry
from prometheus_client.multiprocess import MultiProcessCollector

from core.errors import PermanentError, RetryableError
from jobs import outbox
from jobs.dead_letters import dead_letter_replay
from jobs.django_tasks.backend import RUNNER_TASK_NAME, OutboxCeleryBackend, load_task, outbox_priority
from jobs.django_tasks.specs import policy, spec_for
from jobs.errors import PoisonMessageError
from jobs.models import DeadLetter, Job, OutboxMessage, TaskRun
from jobs.policy import RetryPolicy
from jobs.queues import Queue
from orders.exports import EXPORT_POLICY, export_orders
from tests.harness import ROOT, child_env, redis_client, wait_until
from tests.probe.django_tasks import (
    FAST_RETRY,
    add,
    async_add,
    broken_until_fixed,
    crash,
    echo,
    explode,
    flaky,
    hang,
    not_json,
    record,
    whoami,
)
from tests.probe.tasks import records
from tests.sentry_ingest import SentryIngest

pytestmark = pytest.mark.django_db(transaction=True)

READY, RUNNING = TaskResultStatus.READY, TaskResultStatus.RUNNING
FAILED, SUCCESSFUL = TaskResultStatus.FAILED, TaskResultStatus.SUCCESSFUL


def enqueue(django_task: Any, *args: Any, **kwargs: Any) -> TaskResult:
    with transaction.atomic():
        return django_task.enqueue(*args, **kwargs)


def wait_result(result: TaskResult, *, status: str | None = None, timeout: float = 30.0) -> TaskResult:
    """Refresh `result` from the database until it has finished (or reached `status`)."""

    def reached() -> bool:
        result.refresh()
        return result.status == status if status else result.is_finished

    wait_until(reached, timeout=timeout, interval=0.1, message=f"{result.task.name}[{result.id}]")
    return result


def key() -> str:
    return uuid.uuid4().hex


def task_counter(outcome: str) -> float:
    """taskyard_tasks_total of the generic task, summed over every process of this run."""
    registry = CollectorRegistry()
    MultiProcessCollector(registry)
    labels = {"task": RUNNER_TASK_NAME, "outcome": outcome}
    return registry.get_sample_value("taskyard_tasks_total", labels) or 0.0


class Rollback(Exception):
    pass


# --- enqueue -> worker -> result -----------------------------------------------------------
def test_enqueue_writes_an_outbox_row_and_the_worker_makes_it_successful(live):
    succeeded_before = task_counter("succeeded")
    # given a task enqueued in a transaction
    with transaction.atomic():
        result = add.enqueue(2, 3)
        # then the enqueue is an outbox row of the generic task, inside that transaction
        row = OutboxMessage.objects.get(pk=result.id)
    assert result.status == READY
    assert (row.task_name, row.queue, row.priority) == (RUNNER_TASK_NAME, "default", 4)
    assert row.kwargs == {"task": "tests.probe.django_tasks.add", "args": [2, 3], "kwargs": {}}
    # when the relay and the worker have run it
    wait_result(result)
    # then the result says so, read from TaskRun
    assert result.status == SUCCESSFUL
    assert result.return_value == 5
    assert (result.attempts, result.errors) == (1, [])
    run = TaskRun.objects.get(task_id=result.id)
    assert (run.task_name, run.state, run.result) == (RUNNER_TASK_NAME, "succeeded", {"return_value": 5})
    assert result.worker_ids == [run.worker]
    assert result.enqueued_at is not None
    assert result.started_at is not None
    assert result.finished_at is not None
    assert result.enqueued_at <= result.started_at <= result.finished_at
    assert result.args == [2, 3]
    # and the task metrics counted it, under the generic task's name
    wait_until(lambda: task_counter("succeeded") > succeeded_before, message="the success counter")


def test_a_rolled_back_enqueue_never_runs(live):
    doomed, marker = key(), key()
    enqueued: list[str] = []

    def on_enqueued(sender: Any, task_result: TaskResult, **_: Any) -> None:
        enqueued.append(task_result.id)

    def enqueue_then_roll_back() -> None:
        with transaction.atomic():
            result = record.enqueue(doomed)
            raise Rollback(result)

    task_enqueued.connect(on_enqueued)
    try:
        # given an enqueue whose transaction rolls back
        with pytest.raises(Rollback) as rolled_back:
            enqueue_then_roll_back()
        # when a task enqueued after it has run
        after = wait_result(enqueue(record, marker))
    finally:
        task_enqueued.disconnect(on_enqueued)
    live.wait_idle()
    # then the rolled-back task has no row, no result, never ran and was never announced
    doomed_id = rolled_back.value.args[0].id
    assert not OutboxMessage.objects.filter(pk=doomed_id).exists()
    with pytest.raises(TaskResultDoesNotExist):
        record.get_result(doomed_id)
    assert records(doomed) == []
    assert (after.status, len(records(marker))) == (SUCCESSFUL, 1)
    assert enqueued == [after.id]  # task_enqueued is sent on commit only


def test_run_after_is_not_run_early(live):
    # given a task deferred by 2 seconds
    run_after = timezone.now() + timedelta(seconds=2)
    marker = key()
    result = enqueue(record.using(run_after=run_after), marker)
    # then it is an outbox row due at run_after, and waits
    assert OutboxMessage.objects.get(pk=result.id).not_before == run_after
    assert record.get_result(result.id).status == READY
    # when it has run
    wait_result(result, timeout=20)
    # then not before run_after
    [entry] = records(marker)
    assert entry["at"] >= run_after.timestamp()
    assert result.started_at is not None
    assert result.started_at >= run_after
    assert result.task.run_after == run_after


def test_a_failing_task_is_failed_with_its_error_dead_lettered_and_replayable(live, user):
    marker = key()
    redis_client().set(f"probe:broken:{marker}", 1)
    # given a task that fails permanently
    result = wait_result(enqueue(broken_until_fixed, marker))
    # then the result is FAILED with the exception class and traceback
    assert result.status == FAILED
    [error] = result.errors
    assert error.exception_class is PermanentError
    assert f"vendor said 400 for {marker}" in error.traceback
    assert "broken_until_fixed" in error.traceback
    with pytest.raises(ValueError, match="Task failed"):
        _ = result.return_value
    # and a dead letter was written at once, for the generic task with the task's path
    dead = DeadLetter.objects.get(root_id=result.id)
    assert (dead.task_name, dead.reason, dead.attempts) == (RUNNER_TASK_NAME, "permanent", 1)
    assert dead.kwargs == {
        "task": "tests.probe.django_tasks.broken_until_fixed",
        "args": [marker],
        "kwargs": {},
    }
    # when the cause is fixed and the dead letter replayed (the admin's action)
    redis_client().delete(f"probe:broken:{marker}")
    replay_id = dead_letter_replay(dead_letter_id=dead.pk, actor=user, note="vendor fixed")
    assert replay_id is not None
    # then the same result id follows the replay to success, and keeps the first error
    wait_result(result, status=SUCCESSFUL)
    assert result.return_value == "fixed"
    assert (result.attempts, [e.exception_class for e in result.errors]) == (2, [PermanentError])
    assert broken_until_fixed.get_result(replay_id).status == SUCCESSFUL
    assert len(records(marker)) == 2
    dead.refresh_from_db()
    assert dead.status == DeadLetter.Status.REPLAYED


def test_retryable_errors_retry_with_backoff_and_the_context_counts_attempts(live):
    marker = key()
    # given a task that fails retryably twice, with a fast retry policy declared by @policy
    result = wait_result(enqueue(flaky, marker, 2))
    # then the third attempt succeeded, and the result shows the two failures
    assert result.status == SUCCESSFUL
    assert result.return_value == 3
    assert result.attempts == 3
    assert [e.exception_class for e in result.errors] == [RetryableError, RetryableError]
    # and the task saw its attempt number and its result id in the context
    assert [(r["attempt"], r["result_id"]) for r in records(marker)] == [(n, result.id) for n in (1, 2, 3)]
    # and each retry went through the outbox after a full-jitter delay within its ceiling
    runs = list(TaskRun.objects.filter(root_id=result.id).order_by("attempt"))
    assert [(r.attempt, r.state) for r in runs] == [(1, "retried"), (2, "retried"), (3, "succeeded")]
    for failed, nxt in itertools.pairwise(runs):
        row = OutboxMessage.objects.get(pk=nxt.task_id)
        assert row.task_name == RUNNER_TASK_NAME
        assert failed.finished_at is not None
        delay = (row.not_before - failed.finished_at).total_seconds()
        assert -0.05 <= delay <= FAST_RETRY.ceiling(failed.attempt) + 0.05
    assert not DeadLetter.objects.exists()
    # and a retry's own task id reads as the same result
    assert flaky.get_result(str(runs[1].task_id)).return_value == 3
    assert flaky.get_result(str(runs[1].task_id)).attempts == 3


def test_the_hard_time_limit_of_the_task_policy_stops_a_hung_task(live):
    marker = key()
    # given a task that ignores its soft time limit (1 s); its hard limit is 2 s, not the default 90
    result = wait_result(enqueue(hang, marker), timeout=25)
    # then the attempt was killed and, with one attempt allowed, dead-lettered
    assert result.status == FAILED
    [error] = result.errors
    assert error.exception_class_path == "billiard.exceptions.TimeLimitExceeded"
    assert DeadLetter.objects.get(root_id=result.id).reason == "exhausted"
    run = TaskRun.objects.get(task_id=result.id)
    assert run.finished_at is not None
    assert (run.finished_at - run.started_at).total_seconds() < 10
    assert len(records(marker)) == 1
    # and the worker keeps serving
    assert wait_result(enqueue(add, 1, 1)).return_value == 2


def test_a_task_that_kills_its_worker_is_dead_lettered_as_poison(live):
    marker = key()
    result = wait_result(enqueue(crash, marker), timeout=40)
    # it killed its worker process on each allowed delivery, then was refused
    assert result.status == FAILED
    assert [e.exception_class for e in result.errors] == [PoisonMessageError]
    assert len(records(marker)) == FAST_RETRY.max_deliveries == 3
    assert DeadLetter.objects.get(task_id=result.id).reason == "poison"
    assert live.worker.alive()


def test_get_result_from_another_process(live):
    # given a successful and a failed result
    ok = wait_result(enqueue(add, 20, 22))
    bad = wait_result(enqueue(explode, "boom"))
    script = (
        "import json\n"
        "from tests.probe.django_tasks import add, explode\n"
        f"ok, bad = add.get_result({ok.id!r}), explode.get_result({bad.id!r})\n"
        "print(json.dumps({'ok': [ok.status, ok.return_value, ok.attempts],"
        " 'bad': [bad.status, [e.exception_class_path for e in bad.errors]]}))\n"
    )
    # when another process (a Django shell) reads them
    done = subprocess.run(
        [sys.executable, "manage.py", "shell", "--no-imports", "-c", script],
        cwd=ROOT,
        env=child_env(),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    # then it sees what the worker wrote
    assert json.loads(done.stdout.strip().splitlines()[-1]) == {
        "ok": ["SUCCESSFUL", 42, 1],
        "bad": ["FAILED", ["builtins.ValueError"]],
    }


def test_async_enqueue_joins_the_callers_transaction_and_is_refused_without_one(live):
    # given an async enqueue called from inside a transaction (async_to_sync keeps the thread)
    def enqueue_async_then_roll_back() -> None:
        with transaction.atomic():
            result = async_to_sync(add.aenqueue)(1, 1)
            raise Rollback(result)

    with pytest.raises(Rollback) as rolled_back:
        enqueue_async_then_roll_back()
    # then its row went with the transaction
    assert not OutboxMessage.objects.filter(pk=rolled_back.value.args[0].id).exists()
    # and from an event loop with no transaction it is refused
    with pytest.raises(InvalidTask, match=r"transaction\.atomic\(\)"):
        asyncio.run(add.aenqueue(1, 1))
    # when committed, aget_result reads the result
    with transaction.atomic():
        result = async_to_sync(add.aenqueue)(4, 5)
    wait_result(result)
    fetched = async_to_sync(add.aget_result)(result.id)
    assert (fetched.status, fetched.return_value) == (SUCCESSFUL, 9)


# --- misconfiguration: Django's own exception types ------------------------------------------
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


# --- the order export: Django's task API end to end -------------------------------------------
def test_the_order_export_is_a_django_task_reporting_on_its_job(live, api):
    assert spec_for("orders.exports.export_orders").retry == EXPORT_POLICY
    assert (
        spec_for("orders.exports.export_orders").soft_time_limit,
        spec_for(export_orders.module_path).time_limit,
    ) == (
        14 * 60,
        15 * 60,
    )
    # given an export started through the API
    response = api.post("/api/orders/export")
    assert response.status_code == 202
    job = Job.objects.get(pk=response.json()["job_id"])
    row = OutboxMessage.objects.get()
    assert (row.task_name, row.queue, row.headers["job_id"]) == (RUNNER_TASK_NAME, "documents", str(job.id))
    assert row.kwargs == {
        "task": "orders.exports.export_orders",
        "args": [],
        "kwargs": {"job_id": str(job.id)},
    }
    # when it has run
    result = wait_result(export_orders.get_result(str(row.id)))
    # then the job and the task result agree
    job.refresh_from_db()
    assert (job.state, job.result, job.task_id) == ("succeeded", {"rows": 0}, row.id)
    assert result.return_value == job.result_file
    assert default_storage.exists(job.result_file)


# --- Django's immediate backend and ours agree -------------------------------------------------
IMMEDIATE = {
    "BACKEND": "django.tasks.backends.immediate.ImmediateBackend",
    "QUEUES": [q.value for q in Queue],
}
Runner = Callable[..., TaskResult]


@pytest.fixture(params=["immediate", "outbox"])
def run_on(request: pytest.FixtureRequest, settings: Any) -> Runner:
    """Enqueue a task on one backend and return its finished result."""
    if request.param == "immediate":
        settings.TASKS = {**settings.TASKS, "immediate": IMMEDIATE}

        def run_immediately(django_task: Any, *args: Any, **kwargs: Any) -> TaskResult:
            return django_task.using(backend="immediate").enqueue(*args, **kwargs)

        return run_immediately
    request.getfixturevalue("live")

    def run_on_the_worker(django_task: Any, *args: Any, **kwargs: Any) -> TaskResult:
        return wait_result(enqueue(django_task, *args, **kwargs))

    return run_on_the_worker


def test_backends_agree_on_a_successful_task(run_on):
    result = run_on(add, 2, 3)
    assert (result.status, result.return_value, result.attempts, result.errors) == (SUCCESSFUL, 5, 1, [])
    assert result.is_finished
    assert result.started_at is not None
    assert result.finished_at is not None


def test_backends_agree_on_json_normalisation(run_on):
    result = run_on(echo, (1, 2), "x", flag=True, nested={"t": (3,)})
    assert result.args == [[1, 2], "x"]
    assert result.kwargs == {"flag": True, "nested": {"t": [3]}}
    assert result.return_value == {"args": [[1, 2], "x"], "kwargs": {"flag": True, "nested": {"t": [3]}}}


def test_backends_agree_on_a_failing_task(run_on):
    result = run_on(explode, "boom")
    assert result.status == FAILED
    [error] = result.errors
    assert error.exception_class is ValueError
    assert "ValueError: boom" in error.traceback
    with pytest.raises(ValueError, match="Task failed"):
        _ = result.return_value


def test_backends_agree_on_a_return_value_that_is_not_json(run_on):
    result = run_on(not_json)
    assert result.status == FAILED
    assert [e.exception_class for e in result.errors] == [TypeError]


def test_backends_agree_on_the_context(run_on):
    result = run_on(whoami, "t")
    assert result.return_value == {"tag": "t", "attempt": 1, "id": result.id}


def test_backends_agree_on_async_tasks(run_on):
    assert run_on(async_add, 20, 22).return_value == 42


@pytest.mark.parametrize("alias", ["immediate", "default"])
def test_backends_agree_on_invalid_options(alias, settings):
    settings.TASKS = {**settings.TASKS, "immediate": IMMEDIATE}
    with pytest.raises(InvalidTask):
        add.using(backend=alias, queue_name="nope")
    with pytest.raises(InvalidTask, match="priority must be"):
        add.using(backend=alias, priority=-101)


# --- routing: queues and priorities on a worker of its own (stops the shared stack) -------------
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


def test_a_failing_django_task_reports_to_sentry_with_its_task_context(isolated):
    ingest = SentryIngest()
    try:
        # given a worker reporting to Sentry (a local ingest server)
        isolated.base_env.update(SENTRY_DSN=ingest.dsn)
        isolated.relay()
        isolated.worker("sentry")
        # when a django task fails for good
        result = wait_result(enqueue(explode, "boom"))
        [event] = wait_until(lambda: ingest.events(), timeout=30, message="the Sentry event")
    finally:
        ingest.close()
    # then the event names the generic task, this attempt and the django task's path
    assert result.status == FAILED
    assert event["tags"]["task"] == RUNNER_TASK_NAME
    assert event["tags"]["task_id"] == result.id
    assert str(event["tags"]["attempt"]) == "1"
    assert event["tags"]["django_task"] == "tests.probe.django_tasks.explode"
    assert event["exception"]["values"][-1]["type"] == "ValueError"
