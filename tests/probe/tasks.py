"""Test-only tasks that record every execution in Redis, so tests can count and time them.

Each record is JSON: task id, attempt, root id, request id, pid, time.
"""

import json
import os
import signal
import time
from typing import Any

import redis
from celery.exceptions import SoftTimeLimitExceeded
from django.conf import settings

from config.celery_app import app
from core.errors import PermanentError, RetryableError
from jobs.base_task import BaseTask
from jobs.policy import RetryPolicy
from jobs.queues import Queue


def _redis() -> redis.Redis:
    return redis.Redis.from_url(settings.REDIS_URL)


def _record(task: Any, key: str, **extra: Any) -> int:
    request = task.request
    entry = {
        "task_id": request.id,
        "attempt": getattr(request, "attempt", None),
        "root_id": getattr(request, "root_id", None),
        "request_id": getattr(request, "request_id", None),
        "enqueued_at": getattr(request, "enqueued_at", None),
        "pid": os.getpid(),
        "at": time.time(),
        **extra,
    }
    return int(_redis().rpush(f"probe:{key}", json.dumps(entry)))


def records(key: str) -> list[dict[str, Any]]:
    return [json.loads(r) for r in _redis().lrange(f"probe:{key}", 0, -1)]


FAST_RETRY = RetryPolicy(max_attempts=4, backoff_base=0.4, backoff_cap=2.0)


@app.task(base=BaseTask, bind=True, name="probe.record", queue=Queue.DEFAULT)
def record(self: Any, key: str) -> int:
    return _record(self, key)


@app.task(base=BaseTask, bind=True, name="probe.flaky", queue=Queue.DEFAULT, policy=FAST_RETRY)
def flaky(self: Any, key: str, fail_times: int) -> int:
    """Fails (retryably) on its first `fail_times` runs, then succeeds."""
    runs = _record(self, key)
    if runs <= fail_times:
        raise RetryableError(f"transient failure {runs} of {fail_times}")
    return runs


@app.task(base=BaseTask, bind=True, name="probe.permanent", queue=Queue.DEFAULT, policy=FAST_RETRY)
def permanent(self: Any, key: str) -> None:
    _record(self, key)
    raise PermanentError("vendor said 400: this input will never work")


@app.task(base=BaseTask, bind=True, name="probe.crash", queue=Queue.DEFAULT, policy=FAST_RETRY)
def crash(self: Any, key: str) -> None:
    """Kills its own worker process: a poison message."""
    _record(self, key)
    os.kill(os.getpid(), signal.SIGKILL)


@app.task(base=BaseTask, bind=True, name="probe.sleep", queue=Queue.DEFAULT, policy=FAST_RETRY)
def sleep(self: Any, key: str, seconds: float) -> None:
    _record(self, key, phase="start")
    time.sleep(seconds)
    _record(self, key, phase="end")


@app.task(
    base=BaseTask,
    bind=True,
    name="probe.hang",
    queue=Queue.DEFAULT,
    policy=RetryPolicy(max_attempts=2, backoff_base=0.2, backoff_cap=0.5),
    soft_time_limit=1,
    time_limit=2,
)
def hang(self: Any, key: str) -> None:
    """Swallows the soft time limit (1 s), as stuck code does; only the hard limit (2 s) stops it."""
    _record(self, key)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            time.sleep(1)
        except SoftTimeLimitExceeded:
            continue


@app.task(base=BaseTask, bind=True, name="probe.leaky", queue=Queue.DEFAULT, policy=FAST_RETRY)
def leaky(self: Any, email: str, token: str) -> None:
    """Fails with personal data in its arguments and its message (the Sentry scrubbing test)."""
    raise PermanentError(f"could not reach {email}, Authorization: Token {token}")
