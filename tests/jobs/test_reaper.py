"""The reaper (jobs/reaper.py), path by path, against the real PostgreSQL and Redis: what it
re-publishes, and what it must leave alone."""

import json
import time
import uuid
from collections.abc import Iterator
from datetime import timedelta

import pytest
import redis
from django.utils import timezone

from jobs import reaper
from jobs.models import OutboxMessage, TaskRun
from jobs.worker import ALIVE_KEY, HELD_KEY, RECEIVED_KEY
from tests.harness import free_port, redis_client

# `isolated`: no shared worker consumes the queues these tests fill, no relay reaps beside them.
pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.usefixtures("isolated")]

LONG_AGO = timedelta(minutes=10)


@pytest.fixture(autouse=True)
def _clean_slate() -> Iterator[None]:
    reaper._store_error_at = float("-inf")
    client = redis_client()
    for pattern in (
        "taskyard:alive:*",
        "taskyard:held:*",
        "taskyard:received:*",
        "taskyard:reaper-lock",
        "default",
    ):
        for key in client.scan_iter(match=pattern):
            client.delete(key)
    yield
    reaper._store_error_at = float("-inf")


def sent_row(*, ago: timedelta = LONG_AGO) -> str:
    row = OutboxMessage.objects.create(
        task_name="probe.record", queue="default", sent_at=timezone.now() - ago
    )
    return str(row.id)


def running(task_id: str, *, heartbeat_ago: timedelta) -> None:
    then = timezone.now() - heartbeat_ago
    TaskRun.objects.create(
        task_id=task_id,
        task_name="probe.record",
        state="running",
        started_at=then,
        heartbeat_at=then,
        worker="w@x:1",
    )


def live_worker(name: str, holds: list[str]) -> None:
    client = redis_client()
    client.set(ALIVE_KEY.format(worker=name), "1", ex=30)
    client.zadd(RECEIVED_KEY.format(worker=name), {i: time.time() - 60 for i in holds})
    if holds:
        client.sadd(HELD_KEY.format(worker=name), *holds)


def republished(task_id: str) -> bool:
    return OutboxMessage.objects.get(pk=task_id).sent_at is None


def test_a_run_whose_heartbeat_stopped_is_marked_lost_and_republished():
    task_id = sent_row()
    running(task_id, heartbeat_ago=timedelta(minutes=1))
    report = reaper.reap()
    assert report.lost == [task_id]
    assert TaskRun.objects.get(task_id=task_id).state == TaskRun.State.LOST
    assert republished(task_id)


def test_a_run_with_a_fresh_heartbeat_is_left_alone():
    task_id = sent_row()
    running(task_id, heartbeat_ago=timedelta(seconds=1))
    assert reaper.reap().lost == []
    assert not republished(task_id)


def test_a_late_heartbeat_of_a_run_a_live_worker_holds_is_left_alone():
    # given a stale database heartbeat, but the worker's Redis snapshot says it holds the run
    task_id = sent_row()
    running(task_id, heartbeat_ago=timedelta(minutes=1))
    live_worker("alive@x:1", holds=[task_id])
    report = reaper.reap()
    assert report.lost == []
    assert TaskRun.objects.get(task_id=task_id).state == TaskRun.State.RUNNING
    assert not republished(task_id)


def test_what_a_dead_worker_received_and_never_finished_is_republished():
    # given a worker that received three tasks and is gone (no alive key): one finished, one
    # is running fresh elsewhere, one never started
    done, elsewhere, orphan = sent_row(), sent_row(), sent_row()
    TaskRun.objects.create(task_id=done, task_name="probe.record", state="succeeded",
                           started_at=timezone.now(), heartbeat_at=timezone.now())  # fmt: skip
    running(elsewhere, heartbeat_ago=timedelta(seconds=1))
    redis_client().zadd(RECEIVED_KEY.format(worker="dead@x:9"), {done: 1, elsewhere: 2, orphan: 3})
    report = reaper.reap()
    assert report.orphaned == [orphan]
    assert republished(orphan)
    assert not republished(done)
    assert not republished(elsewhere)
    assert not redis_client().exists(RECEIVED_KEY.format(worker="dead@x:9"))  # handled once


def test_a_message_the_broker_lost_is_republished():
    task_id = sent_row()  # sent long ago, never started, its queue is empty, no worker holds it
    report = reaper.reap()
    assert report.lost_in_broker == [task_id]
    assert republished(task_id)


def test_a_message_still_queued_behind_a_backlog_is_not_republished():
    task_id = sent_row()
    redis_client().lpush("default", json.dumps({"headers": {"id": str(uuid.uuid4())}}))
    assert reaper.reap().lost_in_broker == []
    assert not republished(task_id)


def test_a_message_a_live_worker_holds_is_not_republished():
    task_id = sent_row()
    live_worker("alive@x:2", holds=[task_id])
    assert reaper.reap().lost_in_broker == []
    assert not republished(task_id)


def test_after_its_own_store_error_the_reaper_waits_before_judging_staleness(settings):
    # given a run whose heartbeat looks stale because of an outage
    task_id = sent_row()
    running(task_id, heartbeat_ago=timedelta(minutes=1))
    # when the reaper itself can't reach Redis
    unreachable = redis.Redis(host="127.0.0.1", port=free_port(), socket_connect_timeout=0.5)
    with pytest.raises(redis.RedisError):
        reaper.reap(unreachable)
    # then for the stale threshold after it, it judges nothing: the heartbeats may have failed too
    report = reaper.reap()
    assert report.in_grace
    assert TaskRun.objects.get(task_id=task_id).state == TaskRun.State.RUNNING
    # and once the grace is over it acts again
    reaper._store_error_at -= settings.TASKYARD_HEARTBEAT_STALE_SECONDS
    assert reaper.reap().lost == [task_id]
