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
The reaper (jobs/reaper.py) re-publishes the work of a worker whose records went stale.
"""

import logging
import threading
import time
from collections.abc import Callable
from typing import Any

import redis
from celery import signals
from celery.worker import state as worker_state
from django.conf import settings
from django.db import DatabaseError, close_old_connections

from core import metrics, request_id
from core.redis import redis_client
from jobs import cancellation, execution

logger = logging.getLogger(__name__)

ALIVE_KEY = "taskyard:alive:{worker}"
RECEIVED_KEY = "taskyard:received:{worker}"
HELD_KEY = "taskyard:held:{worker}"
RELAY_HEARTBEAT_KEY = "taskyard:relay:{host}"  # written by each relay loop (relay_alive reads it)
RECEIVED_KEEP_SECONDS = 600  # older entries either finished or are covered by TaskRun heartbeats


@signals.celeryd_after_setup.connect
def _name_the_node(sender: str | None = None, **_: Any) -> None:
    # Before the pool forks: the children inherit the node name for their TaskRun rows.
    execution.set_node(str(sender or ""))


@signals.worker_ready.connect
def _start_heartbeat(sender: Any = None, **_: Any) -> None:
    _beat_once()
    threading.Thread(target=_heartbeat_loop, name="taskyard-heartbeat", daemon=True).start()
    metrics.serve_exporter()


@signals.task_received.connect
def _track_received(request: Any = None, **_: Any) -> None:
    try:
        redis_client().zadd(
            RECEIVED_KEY.format(worker=execution.process_name()), {str(request.id): time.time()}
        )
    except redis.RedisError:
        logger.warning("could not record received task %s", getattr(request, "id", "?"))


def _beat_once() -> None:
    """The database heartbeat first, on its own: staleness is judged from it, and a Redis outage
    (workers keep running on a RabbitMQ broker) must not let healthy runs look dead."""
    running = list(worker_state.active_requests)
    runs = [(str(r.id), execution.process_name(r.worker_pid)) for r in running if r.worker_pid]
    try:
        execution.heartbeat(runs)  # only the runs accepted by a pool child
        cancellation.interrupt_cancelled(running)  # stop what was cancelled (jobs/cancellation.py)
    except DatabaseError:
        logger.warning("database heartbeat failed; retrying", exc_info=True)
        close_old_connections()
    try:
        _write_records()
    except redis.RedisError:
        logger.warning("Redis heartbeat failed; retrying", exc_info=True)


def _write_records() -> None:
    key = execution.process_name()
    ttl = int(settings.TASKYARD_HEARTBEAT_STALE_SECONDS)
    held = [str(r.id) for r in list(worker_state.reserved_requests)]  # reserved includes running
    pipe = redis_client().pipeline()
    pipe.set(ALIVE_KEY.format(worker=key), "1", ex=ttl)
    pipe.zremrangebyscore(RECEIVED_KEY.format(worker=key), "-inf", time.time() - RECEIVED_KEEP_SECONDS)
    pipe.delete(HELD_KEY.format(worker=key))
    if held:
        pipe.sadd(HELD_KEY.format(worker=key), *held)
        pipe.expire(HELD_KEY.format(worker=key), ttl)
    pipe.execute()


def _heartbeat_loop() -> None:
    while True:
        time.sleep(settings.TASKYARD_HEARTBEAT_SECONDS)
        try:
            _beat_once()
        except Exception:
            logger.warning("heartbeat failed; retrying", exc_info=True)


@signals.worker_shutdown.connect
def _stop_heartbeat(**_: Any) -> None:
    # A clean shutdown requeues its prefetched messages itself; drop the records so the
    # reaper doesn't re-publish them a second time.
    try:
        key = execution.process_name()
        redis_client().delete(
            ALIVE_KEY.format(worker=key), RECEIVED_KEY.format(worker=key), HELD_KEY.format(worker=key)
        )
    except redis.RedisError:
        pass


# --- the request id in pool children: bound from task_prerun to task_postrun, so Celery's
# own "succeeded in" and "raised" log lines carry it too, not only the task's own logs.
_unbind: dict[str, Callable[[], None]] = {}


@signals.task_prerun.connect
def _bind_request_id(task_id: str | None = None, task: Any = None, **_: Any) -> None:
    request = getattr(task, "request", None)
    value = getattr(request, "request_id", None) or getattr(request, "root_id", None) or task_id or ""
    _unbind[task_id or ""] = request_id.bind(str(value))


@signals.task_postrun.connect
def _unbind_request_id(task_id: str | None = None, **_: Any) -> None:
    unbind = _unbind.pop(task_id or "", None)
    if unbind is not None:
        unbind()
