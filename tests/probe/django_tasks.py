"""Test-only django.tasks Tasks (jobs/django_tasks/backend.py), run by the real worker.

Those that record their runs push JSON to the same Redis lists as tests/probe/tasks.py
(`records(key)`); the pure ones (add, echo, explode, ...) also run on Django's immediate
backend, for the tests that compare the two.
"""

import json
import os
import time
from typing import Any

import redis
from celery import current_task
from celery.exceptions import SoftTimeLimitExceeded
from django.conf import settings
from django.tasks import TaskContext, task

from core.errors import PermanentError, RetryableError
from jobs.django_tasks.specs import policy
from jobs.policy import RetryPolicy

FAST_RETRY = RetryPolicy(max_attempts=4, backoff_base=0.4, backoff_cap=2.0)


def _redis() -> redis.Redis:
    return redis.Redis.from_url(settings.REDIS_URL)


def _record(key: str, **extra: Any) -> int:
    request = current_task.request if current_task else None
    entry = {
        "task_id": getattr(request, "id", None),
        "queue": (getattr(request, "delivery_info", None) or {}).get("routing_key"),
        "hostname": getattr(request, "hostname", None),
        "pid": os.getpid(),
        "at": time.time(),
        **extra,
    }
    return int(_redis().rpush(f"probe:{key}", json.dumps(entry)))


# --- pure tasks: the same result on any backend ------------------------------------------
@task()
def add(a: int, b: int) -> int:
    return a + b


@task()
def echo(*args: Any, **kwargs: Any) -> dict[str, Any]:
    return {"args": args, "kwargs": kwargs}


@task()
def explode(message: str) -> None:
    raise ValueError(message)  # no policy: an unexpected exception is permanent (a bug)


@task()
def not_json() -> object:
    return {1, 2}  # a set is no JSON value


@task(takes_context=True)
def whoami(context: TaskContext, tag: str) -> dict[str, Any]:
    return {"tag": tag, "attempt": context.attempt, "id": context.task_result.id}


@task()
async def async_add(a: int, b: int) -> int:
    return a + b


# --- tasks that record their runs (worker only) ---------------------------------------------
@task()
def record(key: str) -> int:
    return _record(key)


@policy(FAST_RETRY)
@task(takes_context=True)
def flaky(context: TaskContext, key: str, fail_times: int) -> int:
    """Fails (retryably) on its first `fail_times` runs, then returns how many runs it took."""
    runs = _record(key, attempt=context.attempt, result_id=context.task_result.id)
    if runs <= fail_times:
        raise RetryableError(f"transient failure {runs} of {fail_times}")
    return runs


@task()
def broken_until_fixed(key: str) -> str:
    """Fails for good while `probe:broken:<key>` is set in Redis; a replay after it's gone succeeds."""
    _record(key)
    if _redis().exists(f"probe:broken:{key}"):
        raise PermanentError(f"vendor said 400 for {key}")
    return "fixed"


@policy(FAST_RETRY)
@task()
def crash(key: str) -> None:
    """Kills its own worker process: a poison message."""
    _record(key)
    os.kill(os.getpid(), 9)


@policy(RetryPolicy(max_attempts=1), soft_time_limit=1, time_limit=2)
@task()
def hang(key: str) -> None:
    """Swallows the soft time limit (1 s), as stuck code does; only the hard limit (2 s) stops it."""
    _record(key)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            time.sleep(0.5)
        except SoftTimeLimitExceeded:
            continue


# The old name of a renamed task, kept importable for messages queued before the rename.
renamed_flaky = flaky
