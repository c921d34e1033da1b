"""Tasks that fail: FAILED with the error, dead-lettered and replayable; retries with backoff;
the hard time limit of the task policy; a task that kills its worker (poison)."""

import itertools

import pytest

from core.errors import PermanentError, RetryableError
from jobs.dead_letters import dead_letter_replay
from jobs.django_tasks.backend import RUNNER_TASK_NAME
from jobs.errors import PoisonMessageError
from jobs.models import DeadLetter, OutboxMessage, TaskRun
from tests.harness import redis_client
from tests.jobs.django_tasks.helpers import FAILED, SUCCESSFUL, enqueue, key, wait_result
from tests.probe.django_tasks import FAST_RETRY, add, broken_until_fixed, crash, flaky, hang
from tests.probe.tasks import records

pytestmark = pytest.mark.django_db(transaction=True)


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
