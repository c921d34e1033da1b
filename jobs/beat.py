"""celery beat's scheduler: django-celery-beat's DatabaseScheduler plus a heartbeat.

Every tick (at most every few seconds) beat writes `taskyard:beat:heartbeat`; the
`beat_alive` command (a container health check) fails when it is older than N seconds,
so a beat that is hung or lost its broker connection gets restarted.
"""

import logging
import time
from typing import Any

import redis
from django.conf import settings
from django_celery_beat.schedulers import DatabaseScheduler

logger = logging.getLogger(__name__)

HEARTBEAT_KEY = "taskyard:beat:heartbeat"


class HeartbeatScheduler(DatabaseScheduler):
    def tick(self, *args: Any, **kwargs: Any) -> float:
        try:
            redis.Redis.from_url(settings.REDIS_URL, socket_timeout=2, socket_connect_timeout=2).set(
                HEARTBEAT_KEY, time.time(), ex=3600
            )
        except redis.RedisError:
            logger.warning("beat heartbeat could not be written")
        return float(super().tick(*args, **kwargs))
