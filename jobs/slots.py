"""The beat slot ledger: one run per (schedule, slot start in UTC).

Beat is a clock, not a lock (DESIGN.md section 3): two beats both send the 10:00 FX sync,
Redis may redeliver it, someone may press "run" again. A scheduled task therefore claims
its slot in `ScheduleSlot` (unique on schedule + slot start) before doing any work; every
other message for a claimed slot does nothing and is counted as skipped on the row.

    @app.task(base=BaseTask, bind=True, name="fx.sync_rates", ...)
    def sync_rates(self, schedule: str = "fx-sync-hourly", slot: str | None = None) -> int:
        with slots.scheduled_run(self, schedule=schedule, slot=slot) as run:
            if run.skipped:
                return 0
            return services.fx_rates_sync().stored

Which slot a message belongs to (docs/adr/0001-beat-slot-ledger.md), first match wins:
  1. a retry, reschedule or redelivery of a chain that already holds a slot: that slot
     (found by the chain's root id), so a retry never moves to another slot;
  2. an explicit `slot` kwarg (backfill, a run for a given slot): that slot;
  3. a message beat sent: the slot of beat's own send time, which beat stamps in the
     `beat_sent_at` header (`_stamp_beat_send_time` below). A message that waited in Redis
     while the workers were down still belongs to the slot beat sent it for;
  4. anything else (a shell call, a dead-letter replay): the slot of now.
The slot of a time is the latest fire time of the schedule at or before it: crontab
schedules floor to their own fire times (in the crontab's timezone, UTC here); interval
schedules to multiples of the interval counted from the Unix epoch.

Statuses: claimed (backfill queued it) -> running -> succeeded | failed; skipped for a
missed slot that was superseded by a newer one. A failed slot may be run again by its own
retry chain, by a dead-letter replay (`replay_of` header) or by backfill; nothing else.
"""

import json
import logging
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from typing import Any
from zoneinfo import ZoneInfo

from celery import Task, signals
from celery.schedules import crontab
from django.conf import settings
from django.db import IntegrityError, transaction
from django.utils import timezone
from django.utils.module_loading import import_string
from django_celery_beat.models import PeriodicTask

from jobs import outbox
from jobs.errors import PermanentError, Reschedule
from jobs.models import ScheduleSlot
from jobs.queues import Queue
from jobs.schedules import Schedule

logger = logging.getLogger(__name__)

BEAT_SENT_AT = "beat_sent_at"  # message header: when beat sent it (beat's clock, ISO 8601 UTC)
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
MAX_SLOTS = 10_000  # a backfill range longer than this is a typo, not a plan
CRON_LOOKBACK_DAYS = 366 * 30  # "Feb 29 on a Monday" fires every 28 years at worst

Status = ScheduleSlot.Status


class UnknownSchedule(PermanentError):
    """The task names a schedule that exists neither in the database nor in code."""


class SlotError(ValueError):
    """A slot request that cannot be served (bad range, schedule without a ledger)."""


# --- slot arithmetic --------------------------------------------------------------------
def slot_start(when: str | int | float | timedelta, at: datetime, *, tz: str = "UTC") -> datetime:
    """The start (UTC) of the slot `at` falls in: the latest fire time at or before `at`.

    `when` is a five-field crontab ("0 * * * *", read in `tz`) or an interval (seconds or
    a timedelta; slots are multiples of it since the Unix epoch).
    """
    if timezone.is_naive(at):
        raise ValueError("slot_start needs a timezone-aware time")
    if isinstance(when, str):
        return _cron_floor(when, at, tz)
    step = int((when if isinstance(when, timedelta) else timedelta(seconds=when)) / timedelta(microseconds=1))
    if step <= 0:
        raise ValueError(f"an interval must be positive, not {when!r}")
    micros = (at - EPOCH) // timedelta(microseconds=1)
    return EPOCH + timedelta(microseconds=micros - micros % step)


def _cron_floor(expression: str, at: datetime, tz: str) -> datetime:
    fields = expression.split()
    if len(fields) != 5:
        raise ValueError(f"crontab {expression!r} needs five fields")
    minute, hour, day_of_month, month_of_year, day_of_week = fields
    # Celery's own parser, so the sets mean what beat means (day of month AND day of week);
    # its stubs don't declare the parsed sets.
    spec: Any = crontab(
        minute=minute,
        hour=hour,
        day_of_month=day_of_month,
        month_of_year=month_of_year,
        day_of_week=day_of_week,
    )
    zone = ZoneInfo(tz)
    local = at.astimezone(zone)
    hours = sorted(spec.hour, reverse=True)
    minutes = sorted(spec.minute, reverse=True)
    day = local.date()
    for back in range(CRON_LOOKBACK_DAYS):
        if (
            day.month in spec.month_of_year
            and day.day in spec.day_of_month
            and day.isoweekday() % 7 in spec.day_of_week  # celery: 0 is Sunday
        ):
            for h in hours:
                if back == 0 and h > local.hour:
                    continue
                for m in minutes:
                    if back == 0 and h == local.hour and m > local.minute:
                        continue
                    return datetime(day.year, day.month, day.day, h, m, tzinfo=zone).astimezone(UTC)
        day -= timedelta(days=1)
    raise ValueError(f"crontab {expression!r} never fired in the {CRON_LOOKBACK_DAYS} days before {at}")


def slots_between(
    when: str | int | float | timedelta, since: datetime, until: datetime, *, tz: str = "UTC"
) -> list[datetime]:
    """Slot starts in [since, until], oldest first."""
    found: list[datetime] = []
    start = slot_start(when, until, tz=tz)
    while start >= since:
        found.append(start)
        if len(found) > MAX_SLOTS:
            raise SlotError(f"more than {MAX_SLOTS} slots since {since:%Y-%m-%d %H:%M}; narrow the range")
        start = slot_start(when, start - timedelta(microseconds=1), tz=tz)
    return found[::-1]


# --- schedule definitions ----------------------------------------------------------------
@dataclass(frozen=True)
class Definition:
    """A schedule as beat runs it."""

    name: str
    task: str
    when: str | timedelta  # crontab expression, or the interval
    tz: str
    kwargs: dict[str, Any] = field(default_factory=dict)
    queue: str = Queue.DEFAULT.value

    @property
    def uses_ledger(self) -> bool:
        """Its task claims slots: the schedule passes its own name as the `schedule` kwarg."""
        return self.kwargs.get("schedule") == self.name

    def slot_start(self, at: datetime) -> datetime:
        return slot_start(self.when, at, tz=self.tz)


def _from_periodic_task(row: Any) -> Definition | None:
    if row.crontab is not None:
        c = row.crontab
        when: str | timedelta = f"{c.minute} {c.hour} {c.day_of_month} {c.month_of_year} {c.day_of_week}"
        tz = str(c.timezone)
    elif row.interval is not None:
        when, tz = timedelta(**{row.interval.period: row.interval.every}), "UTC"
    else:
        return None  # solar or clocked: not slot-shaped
    return Definition(
        row.name, row.task, when, tz, json.loads(row.kwargs or "{}"), row.queue or Queue.DEFAULT
    )


def _from_code(schedule: Schedule) -> Definition:
    when: str | timedelta = schedule.crontab or timedelta(seconds=schedule.every_seconds or 0)
    return Definition(schedule.name, schedule.task, when, "UTC", dict(schedule.kwargs), schedule.queue)


def definition(name: str) -> Definition:
    """The schedule `name` (or the one schedule of the task `name`) as beat runs it.

    Its django-celery-beat row is what beat fires from, so it wins; the code's list
    (settings.PERIODIC_SCHEDULES) answers when setup_periodic_tasks has not run yet.
    """
    rows = PeriodicTask.objects.select_related("crontab", "interval")
    row = rows.filter(name=name).first()
    if row is None:
        by_task = list(rows.filter(task=name, enabled=True)[:2])
        row = by_task[0] if len(by_task) == 1 else None
    if row is not None and (found := _from_periodic_task(row)):
        return found
    schedules: list[Schedule] = import_string(settings.PERIODIC_SCHEDULES)
    matches = [s for s in schedules if s.name == name] or [s for s in schedules if s.task == name]
    if len(matches) == 1:
        return _from_code(matches[0])
    raise UnknownSchedule(f"no schedule named {name!r} (nor one schedule of a task so named)")


# --- claiming -------------------------------------------------------------------------------
class Outcome(StrEnum):
    RUN = "run"
    SKIP = "skip"


@dataclass(frozen=True)
class SlotClaim:
    schedule: str
    slot_start: datetime
    outcome: Outcome
    slot_id: int
    task_id: str
    status: str  # the row's status: running when ours, else the one that made us skip
    attempt: int  # runs of this slot so far, this one included
    started_at: datetime

    @property
    def skipped(self) -> bool:
        return self.outcome is Outcome.SKIP


def _locked(schedule: str, start: datetime) -> ScheduleSlot | None:
    return ScheduleSlot.objects.select_for_update().filter(schedule=schedule, slot_start=start).first()


def claim(
    *,
    schedule: str,
    slot_start: datetime,
    task_id: str,
    root_id: str | None = None,
    repair: bool = False,
) -> SlotClaim:
    """Claim a slot before doing its work; committed at once (no lock held afterwards).

    RUN when the slot is free, or held by this task's own chain (`root_id`: a retry, a
    reschedule, a redelivery, the task backfill queued), or failed and `repair` is set (a
    dead-letter replay). SKIP otherwise, and the row counts the refused duplicate.
    """
    root = str(uuid.UUID(str(root_id or task_id)))
    now = timezone.now()
    with transaction.atomic():
        row = _locked(schedule, slot_start)
        if row is None:
            try:
                with transaction.atomic():  # a savepoint: losing the race leaves the outer block usable
                    row = ScheduleSlot.objects.create(
                        schedule=schedule,
                        slot_start=slot_start,
                        status=Status.RUNNING,
                        task_id=task_id,
                        root_id=root,
                        attempts=1,
                        started_at=now,
                    )
                return _claim(row, Outcome.RUN, task_id, now)
            except IntegrityError:
                row = _locked(schedule, slot_start)  # another claimer committed first
                if row is None:  # pragma: no cover - the conflicting row cannot vanish under a lock
                    raise
        own_chain = str(row.root_id) == root and row.status in (Status.CLAIMED, Status.RUNNING, Status.FAILED)
        if own_chain or (repair and row.status == Status.FAILED):
            row.status, row.task_id, row.root_id = Status.RUNNING, uuid.UUID(task_id), uuid.UUID(root)
            row.attempts += 1
            row.started_at, row.finished_at, row.duration = now, None, None
            row.save(
                update_fields=[
                    "status",
                    "task_id",
                    "root_id",
                    "attempts",
                    "started_at",
                    "finished_at",
                    "duration",
                ]
            )
            return _claim(row, Outcome.RUN, task_id, now)
        row.skipped_count += 1
        row.last_skipped_at, row.last_skipped_task_id = now, uuid.UUID(task_id)
        row.save(update_fields=["skipped_count", "last_skipped_at", "last_skipped_task_id"])
        return _claim(row, Outcome.SKIP, task_id, now)


def _claim(row: ScheduleSlot, outcome: Outcome, task_id: str, now: datetime) -> SlotClaim:
    return SlotClaim(
        schedule=row.schedule,
        slot_start=row.slot_start,
        outcome=outcome,
        slot_id=row.pk,
        task_id=task_id,
        status=row.status,
        attempt=row.attempts,
        started_at=now,
    )


def finish(slot: SlotClaim, *, error: BaseException | None = None) -> None:
    """Record how the claimed run ended (only while this task still holds the slot)."""
    if slot.skipped:
        return
    now = timezone.now()
    ScheduleSlot.objects.filter(pk=slot.slot_id, task_id=slot.task_id).update(
        status=Status.SUCCEEDED if error is None else Status.FAILED,
        finished_at=now,
        duration=now - slot.started_at,
        error="" if error is None else f"{type(error).__name__}: {error}"[:4000],
    )


def _release(slot: SlotClaim, reason: str) -> None:
    """The task asked to run later (Reschedule): the slot waits for the same chain."""
    ScheduleSlot.objects.filter(pk=slot.slot_id, task_id=slot.task_id).update(
        status=Status.CLAIMED, note=reason[:300]
    )


@contextmanager
def run_slot(
    *,
    schedule: str,
    slot_start: datetime,
    task_id: str,
    root_id: str | None = None,
    repair: bool = False,
) -> Iterator[SlotClaim]:
    """Claim the slot, let the block run (unless skipped), record the outcome."""
    slot = claim(schedule=schedule, slot_start=slot_start, task_id=task_id, root_id=root_id, repair=repair)
    if slot.skipped:
        logger.info(
            "%s slot %s already %s: task %s skipped",
            schedule,
            f"{slot_start:%Y-%m-%d %H:%M:%S}Z",
            slot.status,
            task_id,
        )
        yield slot
        return
    try:
        yield slot
    except Reschedule as reschedule:
        _release(slot, reschedule.reason or str(reschedule))
        raise
    except BaseException as exc:  # recorded, then re-raised for the task's retry policy
        finish(slot, error=exc)
        raise
    finish(slot)


def _aware(value: str | datetime, what: str) -> datetime:
    try:
        parsed = value if isinstance(value, datetime) else datetime.fromisoformat(value)
    except ValueError as exc:
        raise PermanentError(f"{what} {value!r} is not an ISO 8601 time") from exc
    if timezone.is_naive(parsed):
        raise PermanentError(f"{what} {value!r} has no timezone")
    return parsed


def resolve_slot(
    *,
    schedule: str,
    root_id: str | None = None,
    slot: str | datetime | None = None,
    sent_at: str | datetime | None = None,
    now: datetime | None = None,
) -> datetime:
    """The slot a message belongs to (the rules in this module's docstring, in order)."""
    if root_id:
        held = (
            ScheduleSlot.objects.filter(schedule=schedule, root_id=root_id)
            .values_list("slot_start", flat=True)
            .first()
        )
        if held is not None:
            return held
    spec = definition(schedule)
    if slot is not None:
        return spec.slot_start(_aware(slot, "slot"))
    if sent_at is not None:
        return spec.slot_start(_aware(sent_at, BEAT_SENT_AT))
    return spec.slot_start(now or timezone.now())


@contextmanager
def scheduled_run(task: Task, *, schedule: str, slot: str | datetime | None = None) -> Iterator[SlotClaim]:
    """`run_slot` for a running task: its ids, beat's send time and replay flag from the message."""
    request = task.request
    if request.called_directly:  # a plain call (shell, unit test): a one-off chain of its own
        task_id = root_id = str(uuid.uuid4())
    else:
        task_id = str(request.id)
        root_id = str(getattr(request, "root_id", None) or task_id)
    start = resolve_slot(
        schedule=schedule, root_id=root_id, slot=slot, sent_at=getattr(request, BEAT_SENT_AT, None)
    )
    repair = getattr(request, "replay_of", None) is not None
    with run_slot(
        schedule=schedule, slot_start=start, task_id=task_id, root_id=root_id, repair=repair
    ) as run:
        yield run


@signals.before_task_publish.connect
def _stamp_beat_send_time(headers: dict[str, Any] | None = None, **_: Any) -> None:
    """In the beat process: write beat's send time into each periodic task's message.

    django-celery-beat marks its messages with `periodic_task_name`. The worker maps the
    stamp to a slot, so a message that waited in the queue keeps the slot it was sent for,
    and clock skew between beat and worker hosts doesn't matter.
    """
    if headers is not None and headers.get("periodic_task_name") and BEAT_SENT_AT not in headers:
        headers[BEAT_SENT_AT] = timezone.now().isoformat()


# --- reading the ledger, missed slots and backfill ----------------------------------------------
def last_succeeded(schedule: str) -> ScheduleSlot | None:
    return (
        ScheduleSlot.objects.filter(schedule=schedule, status=Status.SUCCEEDED)
        .order_by("-slot_start")
        .first()
    )


def missed_slots(*, schedule: str, since: datetime, until: datetime | None = None) -> list[datetime]:
    """Slots of `schedule` in [since, until] (default: now) that nobody claimed, oldest first."""
    spec = definition(schedule)
    expected = slots_between(spec.when, since, until or timezone.now(), tz=spec.tz)
    seen = set(
        ScheduleSlot.objects.filter(schedule=spec.name, slot_start__in=expected).values_list(
            "slot_start", flat=True
        )
    )
    return [s for s in expected if s not in seen]


@dataclass
class BackfillReport:
    schedule: str
    expected: list[datetime]  # every slot in the range, oldest first
    run: datetime | None = None  # the newest slot, queued because it never ran (or failed)
    task_id: str | None = None
    skipped: list[datetime] = field(default_factory=list)  # older missed slots, marked skipped
    existing: dict[datetime, str] = field(default_factory=dict)  # slots with a row before: status


def backfill(
    *, schedule: str, since: datetime, until: datetime | None = None, dry_run: bool = False
) -> BackfillReport:
    """Run what was missed in [since, until]: only the newest slot matters.

    The newest slot of the range is queued (through the outbox, claimed for that task in
    the same transaction) unless it already ran; a failed newest slot is queued again.
    Older slots nobody claimed are marked skipped, superseded by the newest. Slots with a
    row are left as they are.
    """
    spec = definition(schedule)
    if not spec.uses_ledger:
        raise SlotError(
            f"schedule {spec.name!r} does not claim slots (its kwargs lack schedule={spec.name!r}); "
            "its task catches up on its next run by itself"
        )
    expected = slots_between(spec.when, since, until or timezone.now(), tz=spec.tz)
    report = BackfillReport(schedule=spec.name, expected=expected)
    if not expected:
        return report
    report.existing = dict(
        ScheduleSlot.objects.filter(schedule=spec.name, slot_start__in=expected).values_list(
            "slot_start", "status"
        )
    )
    newest = expected[-1]
    if report.existing.get(newest) in (None, Status.FAILED):
        report.run = newest
    report.skipped = [s for s in expected[:-1] if s not in report.existing]
    if dry_run:
        return report
    now = timezone.now()
    with transaction.atomic():
        if report.run is not None:
            row = _locked(spec.name, newest)
            if row is not None and row.status != Status.FAILED:
                raise SlotError(
                    f"slot {newest:%Y-%m-%d %H:%M}Z was claimed meanwhile ({row.status}); nothing queued"
                )
            task_id = outbox.enqueue(
                spec.task, kwargs={**spec.kwargs, "slot": newest.isoformat()}, queue=spec.queue
            )
            report.task_id = str(task_id)
            if row is None:
                ScheduleSlot.objects.create(
                    schedule=spec.name,
                    slot_start=newest,
                    status=Status.CLAIMED,
                    task_id=task_id,
                    root_id=task_id,
                    note="backfill",
                )
            else:
                row.status, row.task_id, row.root_id = Status.CLAIMED, task_id, task_id
                row.note = "backfill: queued again after a failure"
                row.save(update_fields=["status", "task_id", "root_id", "note"])
        ScheduleSlot.objects.bulk_create(
            [
                ScheduleSlot(
                    schedule=spec.name,
                    slot_start=start,
                    status=Status.SKIPPED,
                    finished_at=now,
                    note=f"missed; superseded by the {newest:%Y-%m-%d %H:%M}Z slot (only the newest runs)",
                )
                for start in report.skipped
            ],
            ignore_conflicts=True,
        )
    return report
