"""Reliability scenarios: break real processes under load, then check that nothing was lost,
nothing was done twice, and every failure is visible (docs/reliability.md has the figures).

Run alone with `make chaos`. Each scenario builds its own stack on its own Redis.
"""

import json
import signal
import socket
import time
import uuid

import pytest
from django.db import transaction

from jobs import outbox
from jobs.dead_letters import dead_letter_replay
from jobs.models import DeadLetter, TaskRun
from tests.chaos.conftest import kill_group, record_result
from tests.harness import children_of, wait_until

pytestmark = pytest.mark.django_db(transaction=True)

HOST = socket.gethostname()


def enqueue(task: str, **kwargs) -> uuid.UUID:
    with transaction.atomic():
        task_id = outbox.enqueue(task, kwargs=kwargs)
    assert task_id is not None
    return task_id


def probe_records(stack, key: str) -> list[dict]:
    return [json.loads(r) for r in stack.redis.client().lrange(f"probe:{key}", 0, -1)]


def wait_for_orders(load, count: int, timeout: float = 30) -> None:
    start = len(load.accepted)
    wait_until(lambda: len(load.accepted) >= start + count, timeout=timeout, message=f"{count} more orders")


def in_flight(stack, worker) -> set[str]:
    """Task ids a worker is running or holds, read just before it is killed."""
    pids = [worker.pid, *children_of(worker.pid)]
    running = TaskRun.objects.filter(
        state=TaskRun.State.RUNNING, worker__in=[f"{HOST}:{pid}" for pid in pids]
    ).values_list("task_id", flat=True)
    held = stack.redis.client().zrange(f"taskyard:received:{worker.nodename}:{worker.pid}", 0, -1)
    ids = {str(t) for t in running} | {h.decode() for h in held}
    done = TaskRun.objects.filter(task_id__in=ids, state__in=TaskRun.TERMINAL).values_list(
        "task_id", flat=True
    )
    return ids - {str(d) for d in done}


def all_finished(task_ids: set[str]):
    def check() -> bool:
        return TaskRun.objects.filter(task_id__in=task_ids, state__in=TaskRun.TERMINAL).count() == len(
            task_ids
        )

    return check


def test_sigkill_worker_mid_task_repeatedly_under_load(chaos, user):
    stack = chaos().start(workers=1)
    load = stack.load(user, rate=10)
    recoveries, rescued = [], 0
    for round_ in range(3):
        wait_for_orders(load, 30)
        worker = stack.workers[-1]
        wait_until(
            lambda: TaskRun.objects.filter(state=TaskRun.State.RUNNING).exists(),
            timeout=10,
            message="a running task",
        )
        held = in_flight(stack, worker)
        killed_at = time.time()
        kill_group(worker)  # main process and pool children, as the OOM killer or a node loss would
        stack.start_worker(f"after-kill-{round_}")
        wait_until(all_finished(held), timeout=90, message="every task of the killed worker to finish")
        finished = TaskRun.objects.filter(task_id__in=held).values_list("finished_at", flat=True)
        recoveries.append(max((f.timestamp() - killed_at for f in finished if f), default=0.0))
        rescued += len(held)
    load.stop()
    drain = stack.wait_idle()
    figures = stack.verify(load.accepted)
    assert not load.failures
    assert max(recoveries) < 60, recoveries
    record_result(
        "kill -9 worker x3 under 10 orders/s",
        **figures,
        tasks_in_flight_at_kills=rescued,
        recovery_seconds=[round(r, 1) for r in recoveries],
        drain_after_load_seconds=round(drain, 1),
    )


def test_broker_down_for_20_seconds_under_load(chaos, user):
    stack = chaos().start(workers=1)
    load = stack.load(user, rate=10)
    wait_for_orders(load, 20)
    stack.redis.stop()
    down_at = time.monotonic()
    before = len(load.accepted)
    wait_until(
        lambda: time.monotonic() - down_at >= 20, timeout=40, interval=0.5, message="20 s of broker outage"
    )
    accepted_while_down = len(load.accepted) - before
    stack.redis.start()
    back_at = time.monotonic()
    wait_for_orders(load, 20)
    load.stop()
    drain = stack.wait_idle(timeout=180)
    figures = stack.verify(load.accepted)
    # the API kept answering 201 through the outage, and the workers came back
    assert not load.failures, load.failures[:5]
    assert accepted_while_down >= 150
    record_result(
        "Redis (broker) stopped 20 s under 10 orders/s",
        **figures,
        accepted_while_broker_down=accepted_while_down,
        api_failures=len(load.failures),
        recovery_after_restart_seconds=round(time.monotonic() - back_at, 1),
        drain_after_load_seconds=round(drain, 1),
    )


def test_relay_sigkilled_mid_batch_under_load(chaos, user):
    stack = chaos().start(workers=1)
    load = stack.load(user, rate=15)
    for _ in range(2):
        wait_for_orders(load, 30)
        kill_group(stack.relay)
        wait_for_orders(load, 15)  # the API keeps accepting while no relay runs
        stack.relay = stack.start_relay()
    load.stop()
    drain = stack.wait_idle()
    figures = stack.verify(load.accepted)
    assert not load.failures
    record_result("relay kill -9 x2 under 15 orders/s", **figures, drain_after_load_seconds=round(drain, 1))


def test_smtp_down_past_the_retry_budget_then_replay_sends_each_email_once(chaos, user):
    stack = chaos(
        EMAIL_RETRY_MAX_ATTEMPTS="3", EMAIL_RETRY_BACKOFF_BASE="0.3", EMAIL_RETRY_BACKOFF_CAP="1"
    ).start()
    sink_argv = stack.sink.proc.argv
    stack.sink.proc.stop()  # connection refused: a retryable error, until the budget is spent
    load = stack.load(user, rate=10)
    wait_for_orders(load, 30)
    load.stop()
    emails_dead = wait_until(
        lambda: (
            (n := DeadLetter.objects.filter(task_name="orders.send_confirmation_email").count())
            == len(load.accepted)
            and n
        ),
        timeout=60,
        message="every confirmation email in the dead-letter queue",
    )
    stack.wait_idle()
    assert all(d.reason == "exhausted" for d in DeadLetter.objects.all())
    # when the SMTP server is back and the dead letters are replayed
    stack.sink.proc = stack.procs.spawn("smtp-sink-back", sink_argv)
    stack.sink.proc.wait_for_log("smtp sink:")
    for dead in DeadLetter.objects.all():
        assert dead_letter_replay(dead_letter_id=dead.pk, actor=user, note="SMTP back") is not None
    drain = stack.wait_idle()
    figures = stack.verify(load.accepted, dead_letters_expected=True)
    assert figures["email_duplicates"] == 0
    assert set(DeadLetter.objects.values_list("status", flat=True)) == {DeadLetter.Status.REPLAYED}
    record_result(
        "SMTP down past the retry budget, then replay",
        **figures,
        dead_lettered_emails=emails_dead,
        drain_after_replay_seconds=round(drain, 1),
    )


def test_warm_shutdown_with_tasks_running_and_prefetched(chaos, user):
    stack = chaos().start(workers=1)
    keys = [uuid.uuid4().hex for _ in range(8)]
    for key in keys:
        enqueue("probe.sleep", key=key, seconds=1.5)
    load = stack.load(user, rate=10)
    wait_until(lambda: any(probe_records(stack, k) for k in keys), timeout=20, message="a slow task to start")
    worker = stack.workers[-1]
    worker.stop(timeout=60)  # SIGTERM: Celery's warm shutdown
    stack.start_worker("after-sigterm")
    wait_for_orders(load, 20)
    load.stop()
    drain = stack.wait_idle()
    figures = stack.verify(load.accepted)
    figures["drain_after_load_seconds"] = round(drain, 1)
    ends = [len([r for r in probe_records(stack, k) if r.get("phase") == "end"]) for k in keys]
    assert ends == [1] * len(keys)
    # nothing needed the reaper: every task ran on its first delivery
    assert set(TaskRun.objects.values_list("deliveries", flat=True)) == {1}
    record_result("warm shutdown (SIGTERM) under load", **figures, slow_tasks_completed=sum(ends))


def test_poison_task_under_load(chaos, user):
    stack = chaos().start(workers=1)
    load = stack.load(user, rate=10)
    wait_for_orders(load, 10)
    poison = enqueue("probe.crash", key=uuid.uuid4().hex)
    dead = wait_until(
        lambda: DeadLetter.objects.filter(task_id=poison).first(), timeout=60, message="poison DLQ"
    )
    wait_for_orders(load, 20)
    load.stop()
    stack.wait_idle()
    figures = stack.verify(load.accepted, dead_letters_expected=True)
    assert dead.reason == "poison"
    assert DeadLetter.objects.count() == 1
    assert stack.workers[-1].alive()
    deliveries = TaskRun.objects.get(task_id=poison).deliveries
    record_result("poison task (kills its process) under load", **figures, poison_deliveries=deliveries)


def test_hard_time_limit_under_load(chaos, user):
    stack = chaos().start(workers=1)
    load = stack.load(user, rate=10)
    root = enqueue("probe.hang", key=uuid.uuid4().hex)
    dead = wait_until(
        lambda: DeadLetter.objects.filter(root_id=root).first(), timeout=60, message="time limit DLQ"
    )
    wait_for_orders(load, 20)
    load.stop()
    stack.wait_idle()
    figures = stack.verify(load.accepted, dead_letters_expected=True)
    assert dead.exception_class.endswith("TimeLimitExceeded")
    assert DeadLetter.objects.count() == 1
    record_result("hard time limit under load", **figures, attempts_before_dead_letter=dead.attempts)


def test_broker_flushed_under_load(chaos, user):
    stack = chaos().start(workers=1)
    load = stack.load(user, rate=15)
    wait_for_orders(load, 15)
    # given messages waiting in the broker (the worker is frozen so they pile up)
    worker = stack.workers[-1]
    worker.signal_group(signal.SIGSTOP)
    client = stack.redis.client()
    wait_until(lambda: client.llen("emails") >= 10, timeout=30, message="a queue backlog")
    queued = client.llen("emails") + client.llen("documents")
    # when the broker loses everything: queues, unacked messages, heartbeats
    client.flushall()
    flushed_at = time.monotonic()
    worker.signal_group(signal.SIGCONT)
    wait_for_orders(load, 30)
    load.stop()
    drain = stack.wait_idle(timeout=180)
    figures = stack.verify(load.accepted)
    assert not load.failures
    # then the reaper found the messages no queue or worker had, and published them again
    assert "the broker lost them" in stack.relay.log()
    record_result(
        "broker flushed (FLUSHALL) with a backlog, under 15 orders/s",
        **figures,
        messages_queued_at_flush=queued,
        recovered_seconds_after_flush=round(time.monotonic() - flushed_at, 1),
        drain_after_load_seconds=round(drain, 1),
    )
