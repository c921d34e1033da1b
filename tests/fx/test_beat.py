"""Real `celery beat` processes on the DatabaseScheduler: two beats run each slot once, a
message that waited in the queue keeps the slot beat sent it for, and a beat that restarts
after downtime runs the newest missed hour at once."""

import signal
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pytest
from django.utils import timezone
from django_celery_beat.models import PeriodicTask

from config.schedules import SCHEDULES
from jobs.management.commands.setup_periodic_tasks import sync_schedules
from jobs.models import ScheduleSlot, TaskRun
from jobs.scheduling import backfill, timing
from jobs.scheduling.definitions import Schedule
from tests.conftest import Stack
from tests.harness import Processes, wait_until

pytestmark = pytest.mark.django_db(transaction=True)

Status = ScheduleSlot.Status
# The FX sync on a test-only schedule: every 2 s instead of hourly (slots on the 2 s epoch grid).
FAST = Schedule(
    name="fx-sync-fast",
    task="fx.sync_rates",
    every_seconds=2,
    kwargs={"schedule": "fx-sync-fast"},
    description="test only",
    when_missed="test only",
)
HOURLY = next(s for s in SCHEDULES if s.name == "fx-sync-hourly")


@pytest.fixture
def beats(fx_live: Stack, tmp_path: Path) -> Iterator[Processes]:
    """Beat processes of this test (the session's worker and relay run the tasks)."""
    procs = Processes(tmp_path / "beats")
    try:
        yield procs
    finally:
        procs.stop_all()


@pytest.mark.chaos  # reliability scenario 6 (docs/reliability.md)
def test_two_beats_run_each_slot_once(beats, fx, fx_live):
    # given the fast schedule in beat's tables, and two beat processes on it
    sync_schedules([FAST])
    first, second = beats.beat("beat-a"), beats.beat("beat-b")
    # when they have been firing for a few slots
    wait_until(
        lambda: ScheduleSlot.objects.filter(schedule=FAST.name, status=Status.SUCCEEDED).count() >= 4,
        timeout=40,
        message="four slots run",
    )
    beats.stop_all()
    fx_live.wait_idle()
    # then both beats sent the task
    assert "Sending due task fx-sync-fast" in first.log()
    assert "Sending due task fx-sync-fast" in second.log()
    # each slot ran once: one provider call per slot
    rows = list(ScheduleSlot.objects.filter(schedule=FAST.name))
    assert {(r.status, r.attempts) for r in rows} == {(Status.SUCCEEDED, 1)}
    assert fx.calls() == len(rows)
    assert all(r.slot_start.timestamp() % 2 == 0 for r in rows)
    # and every other message was skipped on its slot's row: delivered = ran + skipped
    skipped = sum(r.skipped_count for r in rows)
    delivered = TaskRun.objects.filter(task_name="fx.sync_rates", state=TaskRun.State.SUCCEEDED).count()
    assert skipped >= 1
    assert delivered == len(rows) + skipped


def test_a_message_that_waited_in_the_queue_keeps_the_slot_beat_sent_it_for(beats, fx, fx_live):
    # given the workers are frozen while a beat sends the fast schedule's task
    sync_schedules([FAST])
    fx_live.worker.signal_group(signal.SIGSTOP)
    try:
        beat = beats.beat()
        wait_until(lambda: "Sending due task fx-sync-fast" in beat.log(), timeout=20, message="beat to send")
        beat.stop()
        sent = timezone.now()
        # when the workers come back two slots later
        wait_until(
            lambda: timezone.now() >= sent + timedelta(seconds=4), timeout=10, message="two slots to pass"
        )
    finally:
        fx_live.worker.signal_group(signal.SIGCONT)
    oldest = wait_until(
        lambda: (
            ScheduleSlot.objects.filter(schedule=FAST.name, status=Status.SUCCEEDED)
            .order_by("slot_start")
            .first()
        ),
        timeout=60,  # the thawed worker, then the reaper's takeover of what it held: slow beside chaos runs
        message="the late run",
    )
    fx_live.wait_idle()
    # then the late run was recorded in the slot beat sent it for, not the slot it ran in
    started = TaskRun.objects.get(task_id=oldest.task_id).started_at
    assert timing.slot_start(2, started) >= oldest.slot_start + timedelta(seconds=4)
    assert oldest.slot_start <= sent


def test_a_beat_restarting_after_downtime_runs_the_newest_missed_hour_at_once(beats, fx, fx_live):
    # given the hourly FX schedule, last sent by a beat three hours ago
    sync_schedules([HOURLY])
    PeriodicTask.objects.filter(name=HOURLY.name).update(last_run_at=timezone.now() - timedelta(hours=3))
    before = timezone.now()
    # when a beat starts
    beat = beats.beat()
    row = wait_until(
        lambda: ScheduleSlot.objects.filter(schedule=HOURLY.name, status=Status.SUCCEEDED).first(),
        timeout=30,
        message="the catch-up run",
    )
    beat.stop()
    fx_live.wait_idle()
    # then it ran once, at once, for the current hour: the newest missed slot
    assert row.slot_start in {timing.slot_start(HOURLY.crontab or "", t) for t in (before, timezone.now())}
    assert fx.calls() == 1
    assert ScheduleSlot.objects.count() == 1
    # the older hours stay visible as missed; backfill marks them skipped and runs nothing
    since = row.slot_start - timedelta(hours=3)
    missed = [since, since + timedelta(hours=1), since + timedelta(hours=2)]
    preview = backfill.backfill(schedule=HOURLY.name, since=since, until=row.slot_start, dry_run=True)
    assert (preview.run, preview.skipped) == (None, missed)
    report = backfill.backfill(schedule=HOURLY.name, since=since, until=row.slot_start + timedelta(minutes=1))
    assert (report.run, report.skipped) == (None, missed)
