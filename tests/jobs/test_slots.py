"""The beat slot ledger: slot arithmetic, one claim per slot (also under a real race),
retries re-entering their slot, backfill of missed slots, and the admin page."""

import random
import threading
import uuid
from datetime import UTC, datetime, timedelta

import pytest
from celery.schedules import crontab
from django.core.management import CommandError, call_command
from django.db import connection
from django.test import Client
from django.urls import reverse
from django_celery_beat.models import PeriodicTask

from config.celery_app import app
from core.errors import PermanentError
from jobs.errors import Reschedule
from jobs.management.commands.setup_periodic_tasks import sync_schedules
from jobs.models import OutboxMessage, ScheduleSlot
from jobs.scheduling import backfill, definitions, ledger, timing
from jobs.scheduling.beat import HeartbeatScheduler
from jobs.scheduling.definitions import Schedule

pytestmark = pytest.mark.django_db

Status = ScheduleSlot.Status
T = datetime(2026, 3, 10, 12, 20, tzinfo=UTC)  # a Tuesday


def at(hour: int, minute: int = 0, second: int = 0, day: int = 10) -> datetime:
    return datetime(2026, 3, day, hour, minute, second, tzinfo=UTC)


def new_id() -> str:
    return str(uuid.uuid4())


@pytest.fixture
def hourly() -> str:
    """An hourly schedule that uses the ledger, in django-celery-beat's tables."""
    sync_schedules(
        [
            Schedule(
                name="probe-hourly",
                task="probe.record",
                crontab="0 * * * *",
                kwargs={"schedule": "probe-hourly"},
                description="test",
                when_missed="test",
            )
        ]
    )
    return "probe-hourly"


# --- slot arithmetic -------------------------------------------------------------------------
def celery_next(expression: str, after: datetime) -> datetime:
    """Beat's own answer: the first fire time after `after`."""
    minute, hour, dom, month, dow = expression.split()
    spec = crontab(minute, hour, dow, dom, month, app=app)
    last, delta, _ = spec.remaining_delta(after)
    return last + delta


@pytest.mark.parametrize(
    ("expression", "when", "expected"),
    [
        ("0 * * * *", at(10, 0, 2), at(10)),  # 2 s after :00 belongs to :00
        ("0 * * * *", at(10, 59, 59), at(10)),
        ("0 * * * *", at(11), at(11)),  # the boundary opens the new slot
        ("*/15 * * * *", at(10, 44, 59), at(10, 30)),
        ("17 3 * * *", at(2), at(3, 17, day=9)),  # before today's run: yesterday's slot
        ("0 8 * * 1", at(7, day=9), at(8, day=2)),  # Monday 07:00: last week's Monday
        ("0 0 1 * *", at(12), datetime(2026, 3, 1, tzinfo=UTC)),
    ],
)
def test_slot_of_a_time_is_the_latest_crontab_fire_time_at_or_before_it(expression, when, expected):
    assert timing.slot_start(expression, when) == expected


def test_crontab_slots_agree_with_celery_beat():
    rng = random.Random(7)
    for expression in [
        "0 * * * *",
        "27 * * * *",
        "17 3 * * *",
        "0 8 * * *",
        "*/10 9-17 * * 1-5",
        "30 6 1 * *",
    ]:
        for _ in range(25):
            when = T + timedelta(minutes=rng.randint(-60 * 24 * 40, 0), seconds=rng.randint(0, 59))
            start = timing.slot_start(expression, when)
            # the slot start is a fire time, and beat fires nothing between it and `when`
            assert celery_next(expression, start - timedelta(minutes=1)) == start, (expression, when)
            assert celery_next(expression, start) > when, (expression, when)


def test_interval_slots_are_multiples_of_the_interval_since_the_epoch():
    assert timing.slot_start(5, at(7, 30, 7)) == at(7, 30, 5)
    assert timing.slot_start(timedelta(minutes=10), at(7, 39, 59)) == at(7, 30)
    assert timing.slot_start(2, at(7, 30, 4)) == at(7, 30, 4)


def test_crontab_slots_in_another_timezone():
    # 09:00 in Zurich is 08:00 UTC in winter; at 08:30 local (07:30 UTC) the slot is yesterday's
    assert timing.slot_start("0 9 * * *", at(7, 30), tz="Europe/Zurich") == at(8, day=9)


def test_bad_slot_arguments_are_refused():
    with pytest.raises(ValueError, match="timezone-aware"):
        timing.slot_start("0 * * * *", datetime(2026, 3, 10, 12))  # noqa: DTZ001 - the naive input under test
    with pytest.raises(ValueError, match="five fields"):
        timing.slot_start("0 *", T)
    with pytest.raises(ValueError, match="positive"):
        timing.slot_start(0, T)


def test_slots_between_lists_slot_starts_in_the_range_oldest_first():
    assert timing.slots_between("0 * * * *", at(9, 30), at(12, 10)) == [at(10), at(11), at(12)]
    assert timing.slots_between("0 * * * *", at(10), at(10)) == [at(10)]
    assert timing.slots_between("0 * * * *", at(10, 1), at(10, 59)) == []


# --- claiming ----------------------------------------------------------------------------------
def test_the_first_claim_runs_and_any_other_is_skipped_and_counted():
    first, second, third = new_id(), new_id(), new_id()
    # given a slot claimed and run by one message
    with ledger.run_slot(schedule="s", slot_start=at(10), task_id=first) as run:
        assert not run.skipped
    # when a second beat's message and a manual re-run claim the same slot
    assert ledger.claim(schedule="s", slot_start=at(10), task_id=second).skipped
    late = ledger.claim(schedule="s", slot_start=at(10), task_id=third)
    # then both are skipped, and the one row says so
    assert late.skipped
    assert late.status == Status.SUCCEEDED
    row = ScheduleSlot.objects.get()
    assert (row.status, row.attempts, row.skipped_count) == (Status.SUCCEEDED, 1, 2)
    assert str(row.task_id) == first
    assert str(row.last_skipped_task_id) == third
    assert row.duration is not None
    assert row.finished_at is not None


def test_a_retry_of_the_same_chain_re_enters_its_failed_slot():
    root = new_id()
    # given the first attempt failed
    with pytest.raises(ConnectionError), ledger.run_slot(schedule="s", slot_start=at(10), task_id=root):
        raise ConnectionError("provider down")
    row = ScheduleSlot.objects.get()
    assert row.status == Status.FAILED
    assert row.error == "ConnectionError: provider down"
    # when the retry (a new task id, the same root) claims it, it runs; a stranger is skipped
    retry = new_id()
    with ledger.run_slot(schedule="s", slot_start=at(10), task_id=retry, root_id=root) as run:
        assert not run.skipped
        assert run.attempt == 2
        assert ledger.claim(schedule="s", slot_start=at(10), task_id=new_id()).skipped
    row.refresh_from_db()
    assert (row.status, row.attempts, str(row.task_id), row.error) == (Status.SUCCEEDED, 2, retry, "")


def test_only_a_repair_may_rerun_a_failed_slot_of_another_chain():
    with pytest.raises(TimeoutError), ledger.run_slot(schedule="s", slot_start=at(10), task_id=new_id()):
        raise TimeoutError
    assert ledger.claim(schedule="s", slot_start=at(10), task_id=new_id()).skipped
    replay = ledger.claim(schedule="s", slot_start=at(10), task_id=new_id(), repair=True)
    assert not replay.skipped
    ledger.finish(replay)
    # a succeeded slot is never repaired
    assert ledger.claim(schedule="s", slot_start=at(10), task_id=new_id(), repair=True).skipped


def test_a_rescheduled_run_leaves_the_slot_claimed_for_its_chain():
    root = new_id()
    with pytest.raises(Reschedule), ledger.run_slot(schedule="s", slot_start=at(10), task_id=root):
        raise Reschedule(3.0, "vendor rate limit")
    assert ScheduleSlot.objects.get().status == Status.CLAIMED
    assert ledger.claim(schedule="s", slot_start=at(10), task_id=new_id()).skipped
    assert not ledger.claim(schedule="s", slot_start=at(10), task_id=new_id(), root_id=root).skipped


@pytest.mark.django_db(transaction=True)
def test_racing_claims_on_real_connections_let_exactly_one_run():
    # given eight claimers released at once, each on its own database connection
    barrier = threading.Barrier(8)
    skipped: list[bool] = []

    def claimer() -> None:
        try:
            barrier.wait(timeout=10)
            skipped.append(ledger.claim(schedule="race", slot_start=at(10), task_id=new_id()).skipped)
        finally:
            connection.close()

    threads = [threading.Thread(target=claimer) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    # then one ran and seven were skipped, all recorded on the one row
    assert sorted(skipped) == [False] + [True] * 7
    row = ScheduleSlot.objects.get(schedule="race")
    assert (row.status, row.skipped_count) == (Status.RUNNING, 7)


# --- which slot a message belongs to --------------------------------------------------------------
def test_a_message_belongs_to_its_chain_then_its_slot_kwarg_then_beats_send_time_then_now(hourly):
    root = new_id()
    ledger.claim(schedule=hourly, slot_start=at(9), task_id=root)
    # a retry of a chain that holds a slot stays in that slot, whatever the clock says
    assert ledger.resolve_slot(schedule=hourly, root_id=root, sent_at=at(11, 0, 1)) == at(9)
    # an explicit slot (backfill) wins over beat's send time
    assert ledger.resolve_slot(schedule=hourly, root_id=new_id(), slot="2026-03-10T10:00:00+00:00") == at(10)
    # beat's send time: a message that waited in the queue keeps the slot it was sent for
    assert ledger.resolve_slot(schedule=hourly, sent_at=at(10, 0, 2).isoformat(), now=at(12, 5)) == at(10)
    # nothing else known: the slot of now
    assert ledger.resolve_slot(schedule=hourly, now=at(12, 5)) == at(12)


def test_unknown_schedules_and_naive_slots_are_permanent_errors(hourly):
    with pytest.raises(definitions.UnknownSchedule):
        ledger.resolve_slot(schedule="nope")
    with pytest.raises(PermanentError, match="no timezone"):
        ledger.resolve_slot(schedule=hourly, slot="2026-03-10T10:00:00")


def test_definition_comes_from_beats_table_else_from_code(hourly):
    from_db = definitions.definition(hourly)
    assert (from_db.when, from_db.tz, from_db.uses_ledger) == ("0 * * * *", "UTC", True)
    assert definitions.definition("probe.record").name == hourly  # the one schedule of a task
    from_code = definitions.definition("dead-letter-digest")  # not in this test's database
    assert (from_code.when, from_code.uses_ledger) == ("0 8 * * *", False)


# transactional (django-celery-beat's sync closes the connection), so the row is committed:
# `isolated` stops the shared relay and worker that would otherwise publish and run it
def test_beat_sends_through_the_outbox_with_its_send_time(isolated, hourly):
    # when beat's scheduler sends a due entry
    scheduler = HeartbeatScheduler(app=app, lazy=True)
    entry = scheduler.Entry(PeriodicTask.objects.get(name=hourly), app=app)
    sent = scheduler.apply_async(entry, advance=False)
    # then it is an outbox row for the relay to publish (no broker call), stamped with beat's time
    row = OutboxMessage.objects.get(pk=sent.id)
    assert (row.task_name, row.kwargs) == ("probe.record", {"schedule": hourly})
    assert row.headers["periodic_task_name"] == hourly
    stamped = datetime.fromisoformat(row.headers[ledger.BEAT_SENT_AT])
    assert abs((stamped - datetime.now(UTC)).total_seconds()) < 5


# --- missed slots and backfill ------------------------------------------------------------------
def finished(schedule: str, start: datetime, status: str = Status.SUCCEEDED) -> None:
    ScheduleSlot.objects.create(schedule=schedule, slot_start=start, status=status, attempts=1)


def test_backfill_runs_only_the_newest_missed_slot_and_skips_the_older_ones(hourly):
    # given the 10:00 slot ran, and 09:00, 11:00 and 12:00 were missed
    finished(hourly, at(10))
    preview = backfill.backfill(schedule=hourly, since=at(9), until=T, dry_run=True)
    assert (preview.run, preview.skipped) == (at(12), [at(9), at(11)])
    assert not ScheduleSlot.objects.exclude(slot_start=at(10)).exists()  # a dry run writes nothing
    # when backfilling since 09:00
    report = backfill.backfill(schedule=hourly, since=at(9), until=T)
    # then 12:00 is queued through the outbox, claimed for exactly that task
    assert report.run == at(12)
    message = OutboxMessage.objects.get()
    assert (message.task_name, message.kwargs) == (
        "probe.record",
        {"schedule": hourly, "slot": "2026-03-10T12:00:00+00:00"},
    )
    newest = ScheduleSlot.objects.get(slot_start=at(12))
    assert (newest.status, newest.task_id, newest.root_id) == (Status.CLAIMED, message.id, message.id)
    # and the older missed slots are marked skipped; the one that ran is left alone
    assert dict(ScheduleSlot.objects.values_list("slot_start", "status")) == {
        at(9): Status.SKIPPED,
        at(10): Status.SUCCEEDED,
        at(11): Status.SKIPPED,
        at(12): Status.CLAIMED,
    }
    # a second backfill finds nothing to do
    again = backfill.backfill(schedule=hourly, since=at(9), until=T)
    assert (again.run, again.skipped) == (None, [])
    assert OutboxMessage.objects.count() == 1


def test_backfill_queues_nothing_when_the_newest_slot_ran(hourly):
    finished(hourly, at(12))
    report = backfill.backfill(schedule=hourly, since=at(10), until=T)
    assert (report.run, report.skipped) == (None, [at(10), at(11)])
    assert not OutboxMessage.objects.exists()


def test_backfill_queues_a_failed_newest_slot_again(hourly):
    finished(hourly, at(12), status=Status.FAILED)
    report = backfill.backfill(schedule=hourly, since=at(12), until=T)
    assert report.run == at(12)
    row = ScheduleSlot.objects.get()
    assert row.status == Status.CLAIMED
    assert str(row.root_id) == report.task_id
    # the queued task, not anybody else, may run it
    assert ledger.claim(schedule=hourly, slot_start=at(12), task_id=new_id()).skipped
    assert not ledger.claim(schedule=hourly, slot_start=at(12), task_id=report.task_id).skipped


def test_backfill_command_dry_run_and_refusals(hourly):
    call_command(
        "backfill_schedule", "probe.record", since="2026-03-10T10:30", until="2026-03-10T12:20", dry_run=True
    )
    assert not ScheduleSlot.objects.exists()
    assert not OutboxMessage.objects.exists()
    sync_schedules(
        [
            Schedule(
                name="plain", task="jobs.purge_outbox", crontab="0 * * * *", description="", when_missed=""
            )
        ]
    )
    with pytest.raises(CommandError, match="does not claim slots"):
        call_command("backfill_schedule", "plain", since="2026-03-10T10:00Z")
    with pytest.raises(CommandError, match="no schedule named"):
        call_command("backfill_schedule", "nope", since="2026-03-10T10:00Z")
    with pytest.raises(CommandError, match="ISO 8601"):
        call_command("backfill_schedule", "plain", since="yesterday")


def test_backfill_command_reports_each_slot(hourly, capsys):
    finished(hourly, at(11))
    call_command("backfill_schedule", hourly, since="2026-03-10T10:00Z", until="2026-03-10T12:20Z")
    out = capsys.readouterr().out
    assert "probe-hourly (0 * * * *, UTC): 3 slot(s) in range" in out
    assert "2026-03-10 10:00:00Z  skipped" in out
    assert "2026-03-10 11:00:00Z  left alone (succeeded)" in out
    assert "2026-03-10 12:00:00Z  run (newest slot) as task" in out


# --- admin ---------------------------------------------------------------------------------------
def test_the_ledger_is_visible_in_the_admin_and_read_only(make_user):
    finished("fx-sync-hourly", at(10))
    ScheduleSlot.objects.filter().update(skipped_count=1)
    client = Client()
    client.force_login(make_user("root", is_staff=True, is_superuser=True))
    page = client.get(reverse("admin:jobs_scheduleslot_changelist"), {"duplicates": "yes"})
    assert page.status_code == 200
    assert page.context["cl"].result_count == 1
    assert b"fx-sync-hourly" in page.content
    assert client.get(reverse("admin:jobs_scheduleslot_add")).status_code == 403
