"""The base task on a real worker: retries through the outbox, dead letters, replay, poison,
time limits, and a worker SIGKILLed mid-task."""

import itertools
import re
import uuid

import pytest
from django.db import transaction

from jobs import outbox
from jobs.dead_letters import dead_letter_replay
from jobs.models import DeadLetter, OutboxMessage, TaskRun
from tests.harness import redis_client, wait_until
from tests.probe.tasks import FAST_RETRY, records

pytestmark = pytest.mark.django_db(transaction=True)


def enqueue(task: str, **kwargs) -> uuid.UUID:
    with transaction.atomic():
        task_id = outbox.enqueue(task, kwargs=kwargs)
    assert task_id is not None
    return task_id


def chain(root_id: uuid.UUID) -> list[TaskRun]:
    return list(TaskRun.objects.filter(root_id=root_id).order_by("attempt", "started_at"))


def wait_dead_letter(**lookup) -> DeadLetter:
    return wait_until(
        lambda: DeadLetter.objects.filter(**lookup).first(), timeout=30, message=f"dead letter {lookup}"
    )


def test_retryable_failure_retries_with_growing_delays_then_succeeds(live):
    key = uuid.uuid4().hex
    root = enqueue("probe.flaky", key=key, fail_times=2)
    wait_until(lambda: len(records(key)) == 3, timeout=30, message="three runs")
    live.wait_idle()
    runs = chain(root)
    # three attempts of one chain: two failed and were retried, the third succeeded
    assert [(r.attempt, r.state) for r in runs] == [(1, "retried"), (2, "retried"), (3, "succeeded")]
    assert [r["attempt"] for r in records(key)] == [1, 2, 3]
    # each retry waited a full-jitter delay within that attempt's (doubling) ceiling
    for failed, nxt in itertools.pairwise(runs):
        row = OutboxMessage.objects.get(pk=nxt.task_id)
        assert failed.finished_at is not None
        delay = (row.not_before - failed.finished_at).total_seconds()
        assert -0.05 <= delay <= FAST_RETRY.ceiling(failed.attempt) + 0.05
        assert nxt.started_at >= row.not_before
    assert FAST_RETRY.ceiling(2) == 2 * FAST_RETRY.ceiling(1)
    assert not DeadLetter.objects.exists()


def test_exhausted_retries_produce_exactly_one_dead_letter(live):
    key = uuid.uuid4().hex
    root = enqueue("probe.flaky", key=key, fail_times=100)
    dead = wait_dead_letter(root_id=root)
    live.wait_idle()
    assert len(records(key)) == FAST_RETRY.max_attempts == 4
    assert DeadLetter.objects.filter(root_id=root).count() == 1
    assert dead.reason == "exhausted"
    assert dead.attempts == 4
    assert dead.exception_class == "core.errors.RetryableError"
    assert dead.kwargs == {"key": key, "fail_times": 100}
    assert dead.status == DeadLetter.Status.OPEN
    assert dead.first_failed_at < dead.last_failed_at
    assert [r.state for r in chain(root)][-1] == TaskRun.State.DEAD


def test_permanent_error_is_dead_lettered_at_once(live):
    key = uuid.uuid4().hex
    root = enqueue("probe.permanent", key=key)
    dead = wait_dead_letter(root_id=root)
    live.wait_idle()
    assert len(records(key)) == 1  # zero retries
    assert dead.reason == "permanent"
    assert dead.attempts == 1
    assert len(chain(root)) == 1


def test_replay_runs_the_task_again_and_a_second_replay_does_nothing(live, user):
    key = uuid.uuid4().hex
    root = enqueue("probe.flaky", key=key, fail_times=4)  # fails all 4 attempts, would pass the 5th
    dead = wait_dead_letter(root_id=root)
    live.wait_idle()
    # when replayed
    new_task_id = dead_letter_replay(dead_letter_id=dead.pk, actor=user, note="vendor fixed")
    assert new_task_id is not None
    wait_until(lambda: len(records(key)) == 5, timeout=20, message="the replayed run")
    live.wait_idle()
    dead.refresh_from_db()
    assert dead.status == DeadLetter.Status.REPLAYED
    assert str(dead.replay_task_id) == new_task_id
    assert dead.acted_by == user
    assert dead.note == "vendor fixed"
    assert TaskRun.objects.get(task_id=new_task_id).state == TaskRun.State.SUCCEEDED
    # and a second click enqueues nothing
    rows = OutboxMessage.objects.count()
    assert dead_letter_replay(dead_letter_id=dead.pk, actor=user) is None
    assert OutboxMessage.objects.count() == rows


def test_poison_message_is_dead_lettered_after_n_deliveries_while_others_keep_running(live):
    key = uuid.uuid4().hex
    poison = enqueue("probe.crash", key=key)
    others = [uuid.uuid4().hex for _ in range(20)]
    for other in others:
        enqueue("probe.record", key=other)
    dead = wait_dead_letter(task_id=poison)
    live.wait_idle()
    # it killed its worker process on each of the allowed deliveries, then was refused
    assert dead.reason == "poison"
    assert len(records(key)) == FAST_RETRY.max_deliveries == 3
    assert TaskRun.objects.get(task_id=poison).state == TaskRun.State.DEAD
    # the other tasks ran, once each, on the same worker
    assert [len(records(o)) for o in others] == [1] * 20
    assert live.worker.alive()


def test_hard_time_limit_kills_the_attempt_then_policy_applies(live):
    key = uuid.uuid4().hex
    root = enqueue("probe.hang", key=key)  # time_limit=2 s, max_attempts=2
    dead = wait_dead_letter(root_id=root)
    # both attempts ran and were killed; the retry went through the outbox
    assert len(records(key)) == 2
    assert dead.exception_class.endswith("TimeLimitExceeded")
    assert dead.reason == "exhausted"
    assert [r.state for r in chain(root)] == [TaskRun.State.RETRIED, TaskRun.State.DEAD]
    # and the worker keeps serving
    after = uuid.uuid4().hex
    enqueue("probe.record", key=after)
    wait_until(lambda: records(after), timeout=20, message="a task after the time limit")


def test_worker_sigkilled_mid_task_redelivers_and_the_effect_happens_once(isolated):
    # given a worker in the middle of a task (stale heartbeats noticed after 4 s here)
    fast = {"TASKYARD_HEARTBEAT_STALE_SECONDS": "4", "TASKYARD_REAPER_INTERVAL_SECONDS": "1"}
    isolated.base_env.update(fast)
    isolated.relay()
    doomed = isolated.worker("doomed")
    key = uuid.uuid4().hex
    task_id = enqueue("probe.sleep", key=key, seconds=3)
    wait_until(lambda: records(key), timeout=20, message="the task to start")
    # when the whole worker (main process and children) is SIGKILLed and another starts
    doomed.kill()
    isolated.worker("rescuer")
    wait_until(
        lambda: [r for r in records(key) if r.get("phase") == "end"], timeout=40, message="the task to finish"
    )
    # then the task ran to its end exactly once, on its second delivery
    phases = [r["phase"] for r in records(key)]
    assert phases == ["start", "start", "end"]
    run = TaskRun.objects.get(task_id=task_id)
    assert run.state == TaskRun.State.SUCCEEDED
    assert run.deliveries == 2
    # the killed worker's bookkeeping is gone: nothing left for the reaper
    assert not list(redis_client().scan_iter("taskyard:received:doomed*"))


def test_dead_letters_alert_the_admins_once_per_fingerprint(live):
    client = redis_client()
    for throttle in client.scan_iter("taskyard:dl-alert:*"):
        client.delete(throttle)
    keys = [uuid.uuid4().hex for _ in range(3)]
    for key in keys:
        enqueue("probe.permanent", key=key)
    wait_until(
        lambda: DeadLetter.objects.filter(task_name="probe.permanent").count() == 3, message="3 dead letters"
    )
    wait_until(lambda: live.sink.messages(), message="the alert email")
    live.wait_idle()
    # three alert tasks ran; one email went out for the fingerprint they share
    alerts = TaskRun.objects.filter(task_name="jobs.alert_dead_letter", state=TaskRun.State.SUCCEEDED)
    # idle is judged from the queues: the last alert may still be recording its finish
    wait_until(lambda: alerts.count() == 3, message="the three alert tasks to finish")
    [mail] = live.sink.messages()
    assert mail["Subject"] == "[Django] Dead letter: probe.permanent PermanentError"
    assert mail["To"] == "ops@taskyard.test"
    body = mail.get_body(("plain",)).get_content()
    fingerprint = DeadLetter.objects.filter(task_name="probe.permanent")[0].fingerprint
    # the count is what was open when the (first) alert ran: 1 to 3 of the three
    assert re.search(rf"Fingerprint {fingerprint}: [123] open dead letter", body), body
    assert not any(key in body for key in keys)  # arguments never leave the worker
