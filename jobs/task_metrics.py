"""Prometheus figures of the task machinery.

Counters and histograms are written by whichever process observes the event (gunicorn
workers, Celery pool children, the relay) into PROMETHEUS_MULTIPROC_DIR; a scrape adds
them up across processes (prometheus_client's multiprocess mode). Broker, outbox and
dead-letter figures are read at scrape time by `InfraCollector`, so every scrape sees
the current state rather than a stale copy.
"""

import json
import logging
import time
from collections.abc import Iterator
from typing import Any

import redis
from celery import signals
from django.conf import settings
from django.db.models import Count
from kombu.exceptions import KombuError
from prometheus_client import Counter, Histogram
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from jobs import tracing
from jobs.broker import is_amqp, queue_depths
from jobs.models import DeadLetter
from jobs.outbox import backlog
from jobs.queues import Queue

logger = logging.getLogger(__name__)

TASK_EVENTS = Counter(
    "taskyard_tasks_total",
    "Task events by outcome: started, succeeded, retried, failed, dead_lettered, duplicate, rescheduled, cancelled.",
    ["task", "outcome"],
)
TASK_RUNTIME = Histogram(
    "taskyard_task_runtime_seconds",
    "Wall time of task runs.",
    ["task"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 900),
)

_started: dict[str, float] = {}


def task_event(task: str, outcome: str) -> None:
    TASK_EVENTS.labels(task=task, outcome=outcome).inc()
    tracing.set_outcome(outcome)


@signals.task_prerun.connect
def _on_prerun(task_id: str | None = None, task: Any = None, **_: Any) -> None:
    if task_id:
        _started[task_id] = time.perf_counter()
    task_event(getattr(task, "name", "?"), "started")


@signals.task_postrun.connect
def _on_postrun(task_id: str | None = None, task: Any = None, **_: Any) -> None:
    started = _started.pop(task_id or "", None)
    if started is not None:
        TASK_RUNTIME.labels(task=getattr(task, "name", "?")).observe(time.perf_counter() - started)


@signals.task_success.connect
def _on_success(sender: Any = None, **_: Any) -> None:
    task_event(getattr(sender, "name", "?"), "succeeded")


@signals.task_retry.connect
def _on_retry(sender: Any = None, **_: Any) -> None:
    task_event(getattr(sender, "name", "?"), "retried")


@signals.task_failure.connect
def _on_failure(sender: Any = None, **_: Any) -> None:
    task_event(getattr(sender, "name", "?"), "failed")


@signals.worker_process_shutdown.connect
def _on_child_exit(pid: int | None = None, **_: Any) -> None:
    # A pool child's live gauges go with it; its counters stay counted.
    from prometheus_client import multiprocess

    if pid and settings.PROMETHEUS_MULTIPROC_DIR:
        multiprocess.mark_process_dead(pid)


def queue_keys(queue: str) -> list[str]:
    # kombu keeps one Redis list per priority step: "emails", "emails\x06\x163", ...
    return [queue] + [f"{queue}\x06\x16{step}" for step in (3, 6, 9)]


def queue_figures(client: redis.Redis) -> Iterator[tuple[str, int, float]]:
    """(queue, depth, age in seconds of the oldest waiting message) per queue."""
    now = time.time()
    for queue in Queue:
        depth, oldest = 0, 0.0
        for key in queue_keys(queue.value):
            depth += int(client.llen(key))
            tail = client.lindex(key, -1)  # kombu LPUSHes and workers pop from the right
            if tail:
                try:
                    stamp = float(json.loads(tail)["headers"].get("enqueued_at") or now)
                except (ValueError, KeyError, TypeError):
                    stamp = now
                oldest = max(oldest, now - stamp)
        yield queue.value, depth, oldest


class InfraCollector(Collector):
    """Broker, outbox, dead-letter and worker figures, read at scrape time."""

    def collect(self) -> Iterator[GaugeMetricFamily]:
        depth = GaugeMetricFamily(
            "taskyard_queue_depth", "Messages waiting in the broker queue.", labels=["queue"]
        )
        age = GaugeMetricFamily(
            "taskyard_queue_oldest_message_age_seconds",
            "Age of the oldest waiting message (from its enqueued_at header).",
            labels=["queue"],
        )
        workers = GaugeMetricFamily("taskyard_workers_alive", "Workers whose heartbeat is fresh.")
        try:
            if is_amqp(settings.CELERY_BROKER_URL):
                # RabbitMQ: depths from the broker; a message's age would need consuming it.
                for queue, count in queue_depths({q.value for q in Queue}).items():
                    depth.add_metric([queue], count)
            else:
                broker = redis.Redis.from_url(
                    settings.CELERY_BROKER_URL, socket_timeout=2, socket_connect_timeout=2
                )
                for queue, count, oldest in queue_figures(broker):
                    depth.add_metric([queue], count)
                    age.add_metric([queue], oldest)
            state = redis.Redis.from_url(settings.REDIS_URL, socket_timeout=2, socket_connect_timeout=2)
            workers.add_metric([], sum(1 for _ in state.scan_iter(match="taskyard:alive:*", count=500)))
        except (redis.RedisError, ValueError, OSError, KombuError):
            logger.warning("metrics: broker figures unavailable", exc_info=True)
        else:
            yield depth
            yield age
            yield workers

        figures = backlog()
        yield GaugeMetricFamily(
            "taskyard_outbox_backlog", "Outbox rows due and not yet published.", value=figures.due
        )
        yield GaugeMetricFamily(
            "taskyard_outbox_oldest_unsent_age_seconds",
            "Age of the oldest due, unpublished outbox row.",
            value=figures.oldest_due_age_seconds,
        )
        yield GaugeMetricFamily(
            "taskyard_outbox_delayed",
            "Unpublished rows waiting for their not_before.",
            value=figures.unsent - figures.due,
        )
        open_letters = GaugeMetricFamily(
            "taskyard_dead_letters_open", "Open dead letters by fingerprint.", labels=["task", "fingerprint"]
        )
        for group in (
            DeadLetter.objects.filter(status=DeadLetter.Status.OPEN)
            .values("task_name", "fingerprint")
            .annotate(n=Count("id"))
        ):
            open_letters.add_metric([group["task_name"], group["fingerprint"]], group["n"])
        yield open_letters
