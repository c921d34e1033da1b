"""Benchmark tasks (installed only by config.settings.bench)."""

import time

import redis
from django.conf import settings

from config.celery_app import app
from jobs.base_task import BaseTask
from jobs.policy import RetryPolicy
from jobs.queues import Queue

_client: redis.Redis | None = None


def _redis() -> redis.Redis:
    global _client  # one connection per pool child
    if _client is None:
        _client = redis.Redis.from_url(settings.REDIS_URL)
    return _client


@app.task(base=BaseTask, name="bench.noop", queue=Queue.DEFAULT, policy=RetryPolicy(max_attempts=1))
def noop() -> None:
    """The project's full task path (TaskRun claim + finish) around a counter."""
    _redis().incr("bench:done")


@app.task(name="bench.noop_plain", queue=Queue.DEFAULT, ignore_result=True)
def noop_plain() -> None:
    """A plain Celery task doing the same: the baseline for the base task's overhead."""
    _redis().incr("bench:done")


@app.task(base=BaseTask, name="bench.started", queue=Queue.DEFAULT, policy=RetryPolicy(max_attempts=1))
def started(mark: str) -> None:
    """Records when it started (commit-to-start latency)."""
    _redis().hset("bench:started", mark, time.time())


@app.task(name="bench.started_plain", queue=Queue.DEFAULT, ignore_result=True)
def started_plain(mark: str) -> None:
    _redis().hset("bench:started", mark, time.time())
