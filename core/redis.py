"""One Redis client per URL and process, with the same timeouts everywhere.

    from core.redis import redis_client
    redis_client().set("taskyard:...", 1, ex=60)          # settings.REDIS_URL
    redis_client(settings.CELERY_BROKER_URL).llen("emails")  # the broker, when it is Redis

redis-py keeps a connection pool per client and re-creates it in a forked child, so a
cached client is safe in prefork pool children and gunicorn workers. A call that can't
reach Redis fails within REDIS_SOCKET_TIMEOUT seconds with a RedisError; callers decide
whether that is fatal (the rate limiter fails closed) or not (heartbeats, throttles).
"""

from functools import cache

import redis
from django.conf import settings


def redis_client(url: str | None = None) -> redis.Redis:
    return _client(url or settings.REDIS_URL, settings.REDIS_SOCKET_TIMEOUT)


@cache
def _client(url: str, timeout: float) -> redis.Redis:
    return redis.Redis.from_url(
        url, socket_timeout=timeout, socket_connect_timeout=timeout, health_check_interval=30
    )
