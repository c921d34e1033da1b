"""The stuck-task reaper (Oban's Lifeline, River's rescuer): finds work whose worker died.

Three sources, all re-published through the outbox with the same task id:
  * TaskRun rows still `running` whose heartbeat stopped (worker SIGKILLed, OOM, host gone,
    or stopped), unless a live worker reports holding them (its Redis snapshot);
  * task ids a dead worker had received but never started (prefetched), from its
    `taskyard:received:<worker>` set once its `taskyard:alive:<worker>` key expired;
  * messages the broker lost (Redis restarted without persistence, or flushed): outbox
    rows sent more than OUTBOX_LOST_AFTER_SECONDS ago that never started (or were re-published
    for a dead worker and never restarted: a flush can lose those too), whose queue is now
    empty and that no live worker holds. A message still queued behind a backlog is left
    alone (its queue is not empty), so a slow queue is not duplicated.
The duplicate that the broker may still redeliver later (after its visibility timeout)
is refused by TaskRun. The relay runs this every few seconds; a lock keeps it single.
"""

import logging
import math
import time
from dataclasses import dataclass, field
from datetime import timedelta

import redis
from django.conf import settings
from django.db import DatabaseError, connection, transaction
from django.db.models import Exists, OuterRef, Q
from django.utils import timezone

from core.redis import redis_client
from jobs import execution
from jobs.broker import queue_depths
from jobs.models import OutboxMessage, TaskRun
from jobs.outbox import NOTIFY_CHANNEL
from jobs.worker import ALIVE_KEY, HELD_KEY, RECEIVED_KEY

logger = logging.getLogger(__name__)

LOCK_KEY = "taskyard:reaper-lock"


@dataclass
class ReapReport:
    lost: list[str] = field(default_factory=list)  # running, heartbeat stopped
    orphaned: list[str] = field(default_factory=list)  # received by a dead worker, never started
    republished: int = 0
    lost_in_broker: list[str] = field(default_factory=list)  # sent, never started, no longer anywhere
    unrecoverable: list[str] = field(default_factory=list)  # no outbox row (sent outside the outbox)
    in_grace: bool = False  # skipped: a store error was seen within the stale threshold


def republish(task_ids: list[str]) -> tuple[int, list[str]]:
    """Put sent outbox rows back in line for the relay. Returns (count, ids without a row)."""
    if not task_ids:
        return 0, []
    with transaction.atomic():
        count = OutboxMessage.objects.filter(pk__in=task_ids, sent_at__isnull=False).update(
            sent_at=None, claimed_until=None, not_before=timezone.now()
        )
        known = {str(i) for i in OutboxMessage.objects.filter(pk__in=task_ids).values_list("id", flat=True)}
        if count:
            with connection.cursor() as cursor:
                cursor.execute("SELECT pg_notify(%s, '')", [NOTIFY_CHANNEL])
    return count, [i for i in task_ids if i not in known]


def _orphans_of_dead_workers(client: redis.Redis) -> list[str]:
    fresh = timezone.now() - timedelta(seconds=settings.TASKYARD_HEARTBEAT_STALE_SECONDS)
    orphans: list[str] = []
    for raw_key in client.scan_iter(match=RECEIVED_KEY.format(worker="*"), count=500):
        key = raw_key.decode() if isinstance(raw_key, bytes) else str(raw_key)
        worker = key.split(":", 2)[2]
        if client.exists(ALIVE_KEY.format(worker=worker)):
            continue
        ids = [i.decode() if isinstance(i, bytes) else str(i) for i in client.zrange(key, 0, -1)]
        settled = {
            str(i)
            for i in TaskRun.objects.filter(task_id__in=ids)
            .filter(Q(state__in=TaskRun.TERMINAL) | Q(state=TaskRun.State.RUNNING, heartbeat_at__gte=fresh))
            .values_list("task_id", flat=True)
        }
        orphans += [i for i in ids if i not in settled]
        client.delete(key)
        logger.warning(
            "reaper: worker %s is gone; %d of its received tasks never finished", worker, len(orphans)
        )
    return orphans


def _held_by_live_workers(client: redis.Redis) -> set[str]:
    """What live workers hold: their last heartbeat's snapshot, plus what they received since."""
    held: set[str] = set()
    recent = time.time() - 2 * settings.TASKYARD_HEARTBEAT_SECONDS
    for raw_key in client.scan_iter(match=RECEIVED_KEY.format(worker="*"), count=500):
        key = raw_key.decode() if isinstance(raw_key, bytes) else str(raw_key)
        worker = key.split(":", 2)[2]
        if client.exists(ALIVE_KEY.format(worker=worker)):
            held.update(_text(i) for i in client.smembers(HELD_KEY.format(worker=worker)))
            held.update(_text(i) for i in client.zrangebyscore(key, recent, "+inf"))  # type: ignore[arg-type]
    return held


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _lost_in_broker(client: redis.Redis, held: set[str]) -> list[str]:
    now = timezone.now()
    candidates = list(
        OutboxMessage.objects.filter(
            sent_at__lt=now - timedelta(seconds=settings.OUTBOX_LOST_AFTER_SECONDS),
            sent_at__gt=now - timedelta(seconds=settings.OUTBOX_LOST_LOOKBACK_SECONDS),
        )
        # never started; or re-published for a dead worker (TaskRun lost) and lost again since
        .exclude(Exists(TaskRun.objects.filter(task_id=OuterRef("pk")).exclude(state=TaskRun.State.LOST)))
        .values_list("id", "queue")[:2000]
    )
    if not candidates:
        return []
    depths = queue_depths({queue for _, queue in candidates})
    lost = [str(i) for i, queue in candidates if depths.get(queue) == 0 and str(i) not in held]
    if lost:
        logger.warning(
            "reaper: %d sent message(s) are in no queue and no worker: the broker lost them", len(lost)
        )
    return lost


_store_error_at = -math.inf  # monotonic time of this process's last Redis or database error


def reap(client: redis.Redis | None = None) -> ReapReport:
    """One pass over the three sources; a no-op while another relay holds the lock, or within
    the stale threshold after this reaper last failed to reach Redis or PostgreSQL: while it
    could not look, workers may have failed to heartbeat too (the same outage), and a heartbeat
    missed in an outage is not a dead worker."""
    global _store_error_at
    report = ReapReport()
    if time.monotonic() - _store_error_at < settings.TASKYARD_HEARTBEAT_STALE_SECONDS:
        report.in_grace = True
        return report
    client = client or redis_client()
    try:
        if not client.set(LOCK_KEY, "1", nx=True, ex=max(1, int(settings.TASKYARD_REAPER_INTERVAL_SECONDS))):
            return report  # another relay reaped a moment ago
        held = _held_by_live_workers(client)
        report.lost = execution.mark_lost_if_stale(settings.TASKYARD_HEARTBEAT_STALE_SECONDS, held=held)
        report.orphaned = _orphans_of_dead_workers(client)
        report.lost_in_broker = _lost_in_broker(client, held)
        report.republished, report.unrecoverable = republish(
            report.lost + report.orphaned + report.lost_in_broker
        )
    except (redis.RedisError, DatabaseError):
        _store_error_at = time.monotonic()
        raise
    if report.lost or report.orphaned or report.lost_in_broker:
        logger.warning(
            "reaper: %d lost, %d orphaned, %d lost by the broker, %d re-published, %d without an outbox row",
            len(report.lost),
            len(report.orphaned),
            len(report.lost_in_broker),
            report.republished,
            len(report.unrecoverable),
        )
    return report
