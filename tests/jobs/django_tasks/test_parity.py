"""Django's immediate backend and ours agree: the same task gives the same result on both."""

from collections.abc import Callable
from typing import Any

import pytest
from django.tasks import TaskResult
from django.tasks.exceptions import InvalidTask

from jobs.queues import Queue
from tests.jobs.django_tasks.helpers import FAILED, SUCCESSFUL, enqueue, wait_result
from tests.probe.django_tasks import add, async_add, echo, explode, not_json, whoami

pytestmark = pytest.mark.django_db(transaction=True)


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
