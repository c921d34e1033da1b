"""Enqueue -> relay -> worker -> result: the outbox row in the caller's transaction, a rollback
that leaves nothing, run_after, results read from another process, the async API."""

import asyncio
import json
import subprocess
import sys
from datetime import timedelta
from typing import Any

import pytest
from asgiref.sync import async_to_sync
from django.db import transaction
from django.tasks import TaskResult
from django.tasks.exceptions import InvalidTask, TaskResultDoesNotExist
from django.tasks.signals import task_enqueued
from django.utils import timezone

from jobs.django_tasks.backend import RUNNER_TASK_NAME
from jobs.models import OutboxMessage, TaskRun
from tests.harness import ROOT, child_env, wait_until
from tests.jobs.django_tasks.helpers import (
    READY,
    SUCCESSFUL,
    Rollback,
    enqueue,
    key,
    task_counter,
    wait_result,
)
from tests.probe.django_tasks import add, explode, record
from tests.probe.tasks import records

pytestmark = pytest.mark.django_db(transaction=True)


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
