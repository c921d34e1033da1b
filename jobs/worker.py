"""Hooks that run inside Celery worker processes (connected in JobsConfig.ready).

The worker's main process keeps three records fresh so a dead worker is noticed in
seconds instead of after the broker's visibility timeout (2 h):
  * taskyard:alive:<worker>      a key with a TTL, refreshed every heartbeat;
  * taskyard:received:<worker>   a sorted set of the task ids it received (prefetched
                                 included), scored by time: what a worker that died held;
  * taskyard:held:<worker>       the task ids it holds right now (reserved or running),
                                 rewritten every heartbeat: what a live worker holds (a
                                 message dropped on a broker reconnect leaves this set);
  * TaskRun.heartbeat_at         of every task it is running, in one UPDATE.
The reaper (jobs/rescue.py) re-publishes the work of a worker whose records went stale.
"""

import logging
import os
import socket
import threading
import time
from typing import Any

import redis
from celery import signals
from celery.worker import state as worker_state
from django.conf import settings
from django.db import close_old_connections

from jobs import execution

logger = logging.getLogger(__name__)

ALIVE_KEY = "taskyard:alive:{worker}"
RECEIVED_KEY = "taskyard:received:{worker}"
HELD_KEY = "taskyard:held:{worker}"
RELAY_HEARTBEAT_KEY = "taskyard:relay:{host}"  # written by each relay loop (relay_alive reads it)
RECEIVED_KEEP_SECONDS = 600  # older entries either finished or are covered by TaskRun heartbeats

_worker_key = ""
_redis: redis.Redis | None = None


def _client() -> redis.Redis:
    global _redis
    if _redis is None:
        _redis = redis.Redis.from_url(settings.REDIS_URL, socket_timeout=5, socket_connect_timeout=5)
    return _redis


def worker_key() -> str:
    return _worker_key or f"{socket.gethostname()}:{os.getpid()}"


@signals.worker_ready.connect
def _start_heartbeat(sender: Any = None, **_: Any) -> None:
    global _worker_key
    _worker_key = f"{getattr(sender, 'hostname', socket.gethostname())}:{os.getpid()}"
    _beat_once()
    threading.Thread(target=_heartbeat_loop, name="taskyard-heartbeat", daemon=True).start()
    serve_metrics()


def serve_metrics() -> None:
    """On hosts without a web process (a worker or relay pod), expose this host's figures."""
    if not settings.METRICS_EXPORTER_PORT:
        return
    from prometheus_client import CollectorRegistry, start_http_server
    from prometheus_client.multiprocess import MultiProcessCollector

    registry = CollectorRegistry()
    MultiProcessCollector(registry)
    start_http_server(
        settings.METRICS_EXPORTER_PORT, addr=settings.METRICS_EXPORTER_ADDRESS, registry=registry
    )
    logger.info("metrics exporter on :%d", settings.METRICS_EXPORTER_PORT)


@signals.task_received.connect
def _track_received(request: Any = None, **_: Any) -> None:
    try:
        _client().zadd(RECEIVED_KEY.format(worker=worker_key()), {str(request.id): time.time()})
    except redis.RedisError:
        logger.warning("could not record received task %s", getattr(request, "id", "?"))


def _beat_once() -> None:
    key = worker_key()
    ttl = int(settings.TASKYARD_HEARTBEAT_STALE_SECONDS)
    held = [str(r.id) for r in list(worker_state.reserved_requests)]  # reserved includes running
    pipe = _client().pipeline()
    pipe.set(ALIVE_KEY.format(worker=key), "1", ex=ttl)
    pipe.zremrangebyscore(RECEIVED_KEY.format(worker=key), "-inf", time.time() - RECEIVED_KEEP_SECONDS)
    pipe.delete(HELD_KEY.format(worker=key))
    if held:
        pipe.sadd(HELD_KEY.format(worker=key), *held)
        pipe.expire(HELD_KEY.format(worker=key), ttl)
    pipe.execute()
    active = [str(r.id) for r in list(worker_state.active_requests)]
    execution.heartbeat(active)


def _heartbeat_loop() -> None:
    while True:
        time.sleep(settings.TASKYARD_HEARTBEAT_SECONDS)
        try:
            _beat_once()
        except Exception:
            logger.warning("heartbeat failed; retrying", exc_info=True)
            close_old_connections()


@signals.worker_shutdown.connect
def _stop_heartbeat(**_: Any) -> None:
    # A clean shutdown requeues its prefetched messages itself; drop the records so the
    # reaper doesn't re-publish them a second time.
    try:
        key = worker_key()
        _client().delete(
            ALIVE_KEY.format(worker=key), RECEIVED_KEY.format(worker=key), HELD_KEY.format(worker=key)
        )
    except redis.RedisError:
        pass
