"""fx.sync_rates on a real worker against the real fake: one run per slot whatever is
delivered, retries then a dead letter and stale rates, and backfill of missed slots."""

import uuid
from datetime import datetime, timedelta
from decimal import Decimal

import pytest
from django.core.management import call_command
from django.utils import timezone

from config.celery_app import app as celery_app
from fx import selectors, services
from fx.client import RateTable
from fx.models import FxRate
from fx.tasks import SYNC_POLICY
from jobs.models import DeadLetter, ScheduleSlot, TaskRun
from jobs.scheduling import ledger, timing
from tests.harness import wait_until

pytestmark = pytest.mark.django_db(transaction=True)

SCHEDULE = "fx-sync-hourly"
Status = ScheduleSlot.Status


def this_hour() -> datetime:
    return timing.slot_start("0 * * * *", timezone.now())


def send_as_beat(sent_at: datetime, task_id: str | None = None) -> str:
    """What beat publishes for the schedule: its kwargs, its name header, its send time.
    (Straight to the broker, as beat does; product code enqueues through the outbox.)"""
    result = celery_app.send_task(
        "fx.sync_rates",
        kwargs={"schedule": SCHEDULE},
        queue="default",
        task_id=task_id or str(uuid.uuid4()),
        headers={"periodic_task_name": SCHEDULE, ledger.BEAT_SENT_AT: sent_at.isoformat()},
    )
    return str(result.id)


def finished(task_id: str) -> TaskRun | None:
    return TaskRun.objects.filter(task_id=task_id).exclude(state=TaskRun.State.RUNNING).first()


def test_the_sync_policy_retries_within_the_hour():
    # worst case: every attempt waits its full read timeout and every backoff its ceiling
    attempts = SYNC_POLICY.max_attempts
    backoff = sum(SYNC_POLICY.ceiling(n) for n in range(1, attempts))
    assert attempts >= 3
    assert backoff + attempts * (3 + 10) < 30 * 60  # done well inside the slot's hour


def test_duplicate_deliveries_of_a_slot_run_it_once(fx_live, fx):
    call_command("setup_periodic_tasks")
    sent_at = this_hour() + timedelta(seconds=2)  # beat fired two seconds after :00
    # given two beats each sent the slot's message
    first, second = send_as_beat(sent_at), send_as_beat(sent_at)
    wait_until(lambda: finished(first) and finished(second), timeout=30, message="both messages handled")
    # when Redis delivers the first message a second time
    send_as_beat(sent_at, task_id=first)
    wait_until(
        lambda: f"fx.sync_rates[{first}]: duplicate delivery" in fx_live.worker.log(),
        timeout=20,
        message="the redelivery refused",
    )
    fx_live.wait_idle()
    # then the provider was asked once and the rates stored once, for the :00 slot
    assert fx.calls() == 1
    assert FxRate.objects.count() == 30
    row = ScheduleSlot.objects.get(schedule=SCHEDULE)
    assert row.slot_start == this_hour() or row.slot_start == this_hour() - timedelta(hours=1)
    assert row.slot_start == timing.slot_start("0 * * * *", sent_at)
    assert (row.status, row.attempts) == (Status.SUCCEEDED, 1)
    # the second beat's message was skipped on the ledger; the redelivery never got that far
    assert row.skipped_count == 1
    assert {str(row.task_id), str(row.last_skipped_task_id)} == {first, second}
    assert TaskRun.objects.get(task_id=first).deliveries == 1


def test_a_failing_provider_is_retried_then_dead_lettered_and_rates_go_stale(fx_live, fx):
    call_command("setup_periodic_tasks")
    # given rates last synced three hours ago, and a provider that now answers 503
    # (Retry-After: 0, so the test doesn't wait out the real backoff)
    services.fx_rates_store(
        table=RateTable(base="EUR", as_of=timezone.now(), rates={"USD": Decimal(1)}, source="earlier"),
        currencies=["EUR", "USD"],
    )
    FxRate.objects.update(fetched_at=timezone.now() - timedelta(hours=3))
    fx.control(mode="fail-5xx", retry_after=0)
    # when the hourly sync runs
    root = send_as_beat(this_hour() + timedelta(seconds=1))
    dead = wait_until(
        lambda: DeadLetter.objects.filter(root_id=root).first(), timeout=60, message="dead letter"
    )
    fx_live.wait_idle()
    # then every attempt the policy allows was made, then the chain was dead-lettered
    assert fx.calls() == SYNC_POLICY.max_attempts == 5
    assert (dead.task_name, dead.reason, dead.attempts) == ("fx.sync_rates", "exhausted", 5)
    assert dead.exception_class == "core.http.UpstreamRetryable"
    assert "503" in dead.message
    # the slot's ledger row shows the failure; retries re-entered it, nothing else ran it
    row = ScheduleSlot.objects.get(schedule=SCHEDULE)
    assert (row.status, row.attempts, row.skipped_count) == (Status.FAILED, 5, 0)
    assert "503" in row.error
    # and the rates are flagged stale for metrics and alerts
    assert selectors.rates_are_stale()
    assert (selectors.staleness_seconds() or 0) >= 3 * 3600
    # when the provider recovers, backfill runs the failed slot again
    fx.control(mode="ok")
    call_command("backfill_schedule", SCHEDULE, since=row.slot_start.isoformat())
    wait_until(
        lambda: ScheduleSlot.objects.filter(pk=row.pk, status=Status.SUCCEEDED).exists(),
        timeout=30,
        message="the slot to succeed",
    )
    fx_live.wait_idle()
    assert not selectors.rates_are_stale()


def test_backfill_runs_only_the_newest_missed_slot_on_a_worker(fx_live, fx):
    call_command("setup_periodic_tasks")
    newest = this_hour()
    # given beat and workers were down for the last three hours (no slot ran)
    since = newest - timedelta(hours=3)
    # when the missed slots are backfilled (by task name, as the issue spells it)
    call_command(
        "backfill_schedule",
        "fx.sync_rates",
        since=since.isoformat(),
        until=(newest + timedelta(minutes=1)).isoformat(),
    )
    wait_until(
        lambda: ScheduleSlot.objects.filter(
            schedule=SCHEDULE, slot_start=newest, status=Status.SUCCEEDED
        ).exists(),
        timeout=30,
        message="the newest slot to run",
    )
    fx_live.wait_idle()
    # then only the newest slot ran; the three older ones are marked skipped
    assert fx.calls() == 1
    ledger = list(
        ScheduleSlot.objects.filter(schedule=SCHEDULE)
        .order_by("slot_start")
        .values_list("slot_start", "status")
    )
    assert ledger == [
        (since, Status.SKIPPED),
        (since + timedelta(hours=1), Status.SKIPPED),
        (since + timedelta(hours=2), Status.SKIPPED),
        (newest, Status.SUCCEEDED),
    ]
    assert FxRate.objects.count() == 30
