"""celery beat's scheduler: django-celery-beat's DatabaseScheduler that sends through the
outbox, with a heartbeat.

Beat's sends are outbox rows like every other enqueue (jobs/outbox.py): the relay publishes
them, and a message the broker or a dying worker loses is re-published by the reaper from its
row, so a scheduled run (the hourly FX sync, the purges, the digest) can't be lost between
beat and a worker. Each row carries `beat_sent_at`, beat's send time, which the slot ledger
maps to the slot it was sent for (jobs/scheduling/ledger.py), however long it then waits.

Every tick beat writes `taskyard:beat:heartbeat`; the `beat_alive` command (a container
health check) fails when it is older than N seconds, so a hung beat gets restarted.
"""

import logging
import time
from types import SimpleNamespace
from typing import Any

import redis
from celery.beat import SchedulingError
from django.db import transaction
from django.utils import timezone
from django_celery_beat.schedulers import DatabaseScheduler

from core.redis import redis_client
from jobs import outbox
from jobs.scheduling.ledger import BEAT_SENT_AT

logger = logging.getLogger(__name__)

HEARTBEAT_KEY = "taskyard:beat:heartbeat"


class HeartbeatScheduler(DatabaseScheduler):
    def tick(self, *args: Any, **kwargs: Any) -> float:
        try:
            redis_client().set(HEARTBEAT_KEY, time.time(), ex=3600)
        except redis.RedisError:
            logger.warning("beat heartbeat could not be written")
        return float(super().tick(*args, **kwargs))

    def apply_async(self, entry: Any, producer: Any = None, advance: bool = True, **kwargs: Any) -> Any:
        """Celery's Scheduler.apply_async, but the send is an outbox row (no broker call)."""
        entry = self.reserve(entry) if advance else entry
        options = dict(entry.options)
        headers = dict(options.get("headers") or {})  # django-celery-beat's periodic_task_name
        headers[BEAT_SENT_AT] = timezone.now().isoformat()
        try:
            with transaction.atomic():
                task_id = outbox.enqueue(
                    entry.task,
                    args=list(entry.args or []),
                    kwargs=dict(entry.kwargs or {}),
                    queue=options.get("queue"),
                    headers=headers,
                )
        except Exception as exc:
            raise SchedulingError(f"Couldn't apply scheduled task {entry.name}: {exc}") from exc
        finally:
            self._tasks_since_sync += 1
            if self.should_sync():
                self._do_sync()
        return SimpleNamespace(id=str(task_id))
