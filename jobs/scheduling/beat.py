"""celery beat's side of scheduling: the scheduler class and the send-time stamp.

`HeartbeatScheduler` is django-celery-beat's DatabaseScheduler plus a heartbeat: every
tick beat writes `taskyard:beat:heartbeat`, and the `beat_alive` command (a container
health check) fails when it is older than N seconds, so a hung beat gets restarted.

`_stamp_beat_send_time` writes beat's send time into each periodic task's message; the
slot ledger maps it to the slot (jobs/scheduling/ledger.py).
"""

import logging
import time
from typing import Any

import redis
from celery import signals
from django.utils import timezone
from django_celery_beat.schedulers import DatabaseScheduler

from core.redis import redis_client
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


@signals.before_task_publish.connect
def _stamp_beat_send_time(headers: dict[str, Any] | None = None, **_: Any) -> None:
    """In the beat process: write beat's send time into each periodic task's message.

    django-celery-beat marks its messages with `periodic_task_name`. The worker maps the
    stamp to a slot, so a message that waited in the queue keeps the slot it was sent for,
    and clock skew between beat and worker hosts doesn't matter.
    """
    if headers is not None and headers.get("periodic_task_name") and BEAT_SENT_AT not in headers:
        headers[BEAT_SENT_AT] = timezone.now().isoformat()
