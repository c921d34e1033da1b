"""Reliability scenarios: break real processes under load, then check that nothing was lost,
nothing was done twice, and every failure is visible (docs/reliability.md has the figures).

Run alone with `make chaos`. Each scenario builds its own stack on its own Redis.
"""

import signal
import time
import uuid

import pytest
from django.utils import timezone

from jobs.dead_letters import dead_letter_replay
from jobs.models import DeadLetter, OutboxMessage, TaskRun
from tests.chaos.conftest import kill_group, record_result
from tests.chaos.effects import figures_of, verify
from tests.chaos.proxy import TcpProxy
from tests.chaos.scenario import RATE, enqueue, probe_records, stopped, wait_for_orders
from tests.harness import Proc, wait_until

pytestmark = pytest.mark.django_db(transaction=True)

RELAY_LEASE = 8.0  # seconds: this scenario's relay lease (the default is 30)


def leased_while_frozen(relay: Proc) -> dict:
    """SIGSTOP the relay and read the rows it claimed and has not marked sent; none: SIGCONT."""
    relay.signal_group(signal.SIGSTOP)
    wait_until(lambda: stopped(relay.pid), timeout=5)
    leased = dict(
        OutboxMessage.objects.filter(sent_at__isnull=True, claimed_until__gt=timezone.now()).values_list(
            "id", "claimed_until"
        )
    )
    if not leased:
        relay.signal_group(signal.SIGCONT)
    return leased


def test_relay_sigkilled_mid_batch_under_load(chaos, user):
    stack = chaos(OUTBOX_RELAY_LEASE_SECONDS=str(RELAY_LEASE))
    # the relay reaches the broker through a proxy: paused, the broker hangs mid-publish
    proxy = TcpProxy(stack.redis.port).start()
    relay_env = {"CELERY_BROKER_URL": stack.redis.url.replace(f":{stack.redis.port}/", f":{proxy.port}/")}
    stack.start(workers=1, relay_env=relay_env)
    load = stack.load(user, rate=RATE)
    leased_at_kills: list[dict] = []
    try:
        for _ in range(2):
            wait_for_orders(load, 10)
            proxy.pause()  # the relay's next batch is claimed, then its publish waits on the broker
            leased = wait_until(
                lambda: leased_while_frozen(stack.relay), timeout=15, message="a claimed batch"
            )
            kill_group(stack.relay)  # frozen until now: the batch seen is the batch it held at the kill
            # proof the kill landed mid-batch: those rows are still leased and unsent after it
            assert OutboxMessage.objects.filter(
                pk__in=leased, sent_at__isnull=True, claimed_until__gt=timezone.now()
            ).count() == len(leased)
            leased_at_kills.append(leased)
            proxy.resume()
            wait_for_orders(load, 5)  # the API keeps accepting while no relay runs
            stack.relay = stack.start_relay(**relay_env)
        load.stop()
        drain = stack.wait_idle()
    finally:
        proxy.stop()
    figures = verify(stack, load)
    # then each of those rows was published again once its lease ended, and ran once
    sent = dict(OutboxMessage.objects.values_list("id", "sent_at"))
    late = [(sent[i] - until).total_seconds() for leased in leased_at_kills for i, until in leased.items()]
    assert min(late) >= 0, late
    assert (
        TaskRun.objects.filter(task_id__in=[i for leased in leased_at_kills for i in leased])
        .exclude(state=TaskRun.State.SUCCEEDED)
        .count()
        == 0
    )
    assert not load.failures
    record_result(
        "relay-kill",
        title="relay `kill -9` mid-batch",
        what=f"{RATE:.0f} orders/s; the relay's broker connection hung (a proxy paused) until it held a claimed "
        f"batch, then the relay SIGKILLed, twice; orders kept coming in with no relay; lease {RELAY_LEASE:.0f} s",
        **figures,
        **figures_of(
            rows_leased_unsent_at_kills=[len(leased) for leased in leased_at_kills],
            published_after_lease_end_seconds=[min(late), max(late)],
            drain_seconds=drain,
        ),
    )


def test_smtp_down_past_the_retry_budget_then_replay_sends_each_email_once(chaos, user):
    stack = chaos(
        EMAIL_RETRY_MAX_ATTEMPTS="3", EMAIL_RETRY_BACKOFF_BASE="0.3", EMAIL_RETRY_BACKOFF_CAP="1"
    ).start()
    sink_argv = stack.sink.proc.argv
    stack.sink.proc.stop()  # connection refused: a retryable error, until the budget is spent
    load = stack.load(user, rate=RATE)
    wait_for_orders(load, 20)
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
    figures = verify(stack, load, dead_letters_expected=True)
    assert set(DeadLetter.objects.values_list("status", flat=True)) == {DeadLetter.Status.REPLAYED}
    record_result(
        "smtp-down",
        title="SMTP down past the retry budget, then replay",
        what="SMTP sink stopped (connection refused); email budget 3 attempts; sink restarted and "
        "every dead letter replayed",
        **figures,
        **figures_of(dead_lettered_emails=emails_dead, drain_after_replay_seconds=drain),
    )


def test_warm_shutdown_with_tasks_running_and_prefetched(chaos, user):
    stack = chaos().start(workers=1)
    keys = [uuid.uuid4().hex for _ in range(8)]
    for key in keys:
        enqueue("probe.sleep", key=key, seconds=1.5)
    load = stack.load(user, rate=RATE)
    wait_until(lambda: any(probe_records(stack, k) for k in keys), timeout=20, message="a slow task to start")
    worker = stack.workers[-1]
    worker.stop(timeout=60)  # SIGTERM: Celery's warm shutdown
    stack.start_worker("after-sigterm")
    wait_for_orders(load, 10)
    load.stop()
    drain = stack.wait_idle()
    figures = verify(stack, load)
    ends = [len([r for r in probe_records(stack, k) if r.get("phase") == "end"]) for k in keys]
    assert ends == [1] * len(keys)
    # nothing needed the reaper: every task ran on its first delivery
    assert set(TaskRun.objects.values_list("deliveries", flat=True)) == {1}
    record_result(
        "warm-shutdown",
        title="warm shutdown (SIGTERM)",
        what=f"8 slow tasks (1.5 s) queued plus {RATE:.0f} orders/s; SIGTERM to the worker's main process while "
        "busy; a new worker started",
        **figures,
        **figures_of(slow_tasks_completed_once=sum(ends), drain_seconds=drain),
    )


def test_poison_task_and_hard_time_limit_under_load(chaos, user):
    stack = chaos().start(workers=1)
    load = stack.load(user, rate=RATE)
    wait_for_orders(load, 5)
    # a task that SIGKILLs its own pool process, and one that ignores its soft time limit
    poison = enqueue("probe.crash", key=uuid.uuid4().hex)
    hang = enqueue("probe.hang", key=uuid.uuid4().hex)
    dead = wait_until(
        lambda: (
            DeadLetter.objects.filter(task_id=poison).exists()
            and DeadLetter.objects.filter(root_id=hang).exists()
            and {d.root_id: d for d in DeadLetter.objects.all()}
        ),
        timeout=60,
        message="both in the dead-letter queue",
    )
    wait_for_orders(load, 10)
    load.stop()
    stack.wait_idle()
    figures = verify(stack, load, dead_letters_expected=True)
    assert dead[poison].reason == "poison"
    assert dead[hang].exception_class.endswith("TimeLimitExceeded")
    assert DeadLetter.objects.count() == 2
    assert stack.workers[-1].alive()
    record_result(
        "failing-tasks",
        title="poison task and hard time limit",
        what=f"{RATE:.0f} orders/s; a task that SIGKILLs its own pool process, and one that ignores its "
        "soft limit (1 s) and is killed by the hard limit (2 s)",
        **figures,
        poison_deliveries=TaskRun.objects.get(task_id=poison).deliveries,
        time_limit_attempts_before_dead_letter=dead[hang].attempts,
    )


def test_broker_flushed_under_load(chaos, user):
    stack = chaos().start(workers=1)
    load = stack.load(user, rate=RATE)
    wait_for_orders(load, 10)
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
    wait_for_orders(load, 10)
    load.stop()
    drain = stack.wait_idle(timeout=180)
    recovered = time.monotonic() - flushed_at
    figures = verify(stack, load)
    assert not load.failures
    # then the reaper found the messages no queue or worker had, and published them again
    assert "the broker lost them" in stack.relay.log()
    record_result(
        "broker-flushed",
        title="broker flushed",
        what=f"{RATE:.0f} orders/s; the worker frozen until messages were queued, then `FLUSHALL` (queues, "
        "unacked messages, heartbeats gone)",
        **figures,
        **figures_of(messages_queued_at_flush=queued, recovery_seconds=recovered, drain_seconds=drain),
    )
