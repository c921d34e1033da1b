"""The beat slot ledger: one run per (schedule, slot start in UTC).

Beat is a clock, not a lock (docs/architecture.md): two beats both send the 10:00 FX sync,
Redis may redeliver it, someone may press "run" again. A scheduled task therefore claims
its slot in `ScheduleSlot` (unique on schedule + slot start) before doing any work; every
other message for a claimed slot does nothing and is counted as skipped on the row.

    @app.task(base=BaseTask, bind=True, name="fx.sync_rates", ...)
    def sync_rates(self, schedule: str = "fx-sync-hourly", slot: str | None = None) -> int:
        with ledger.scheduled_run(self, schedule=schedule, slot=slot) as run:
            if run.skipped:
                return 0
            return services.fx_rates_sync().stored

Which slot a message belongs to (docs/adr/0001-beat-slot-ledger.md), first match wins:
  1. a retry, reschedule or redelivery of a chain that already holds a slot: that slot
     (found by the chain's root id), so a retry never moves to another slot;
  2. an explicit `slot` kwarg (backfill, a run for a given slot): that slot;
  3. a message beat sent: the slot of beat's own send time, which beat stamps in the
     `beat_sent_at` header (jobs/scheduling/beat.py). A message that waited in Redis
     while the workers were down still belongs to the slot beat sent it for;
  4. anything else (a shell call, a dead-letter replay): the slot of now.
The slot of a time: jobs/scheduling/timing.py.

Statuses: claimed (backfill queued it) -> running -> succeeded | failed; skipped for a
missed slot that was superseded by a newer one. A failed slot may be run again by its own
retry chain, by a dead-letter replay (`replay_of` header) or by backfill; nothing else.
"""

import logging
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime

from celery import Task
from django.db import IntegrityError, transaction
from django.utils import timezone

from core.errors import PermanentError
from jobs.errors import Reschedule
from jobs.execution import hold_current
from jobs.models import ScheduleSlot
from jobs.scheduling.definitions import definition

logger = logging.getLogger(__name__)

BEAT_SENT_AT = "beat_sent_at"  # message header: when beat sent it (beat's clock, ISO 8601 UTC)

Status = ScheduleSlot.Status


@dataclass(frozen=True)
class SlotClaim:
    schedule: str
    slot_start: datetime
    skipped: bool  # refused: the slot is held or done; the task does nothing
    slot_id: int
    task_id: str
    status: str  # the row's status: running when ours, else the one that made us skip
    attempt: int  # runs of this slot so far, this one included
    started_at: datetime


def locked_slot(schedule: str, start: datetime) -> ScheduleSlot | None:
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

    Runs when the slot is free; or left for this task's own chain (`root_id`) by a failed or
    rescheduled attempt, or queued by backfill (claimed); or running under this very task id
    (a takeover of a run that died, which the task's fence arbitrated); or failed and `repair`
    is set (a dead-letter replay). Skipped otherwise, and the row counts the refused duplicate:
    a redelivery of a running chain never runs the slot twice. A run that lost its fence
    claims nothing (`Superseded`).
    """
    root = str(uuid.UUID(str(root_id or task_id)))
    now = timezone.now()
    with transaction.atomic():
        hold_current()
        row = locked_slot(schedule, slot_start)
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
                return _claim(row, task_id, now, skipped=False)
            except IntegrityError:
                row = locked_slot(schedule, slot_start)  # another claimer committed first
                if row is None:  # pragma: no cover - the conflicting row cannot vanish under a lock
                    raise
        own_chain = (str(row.root_id) == root and row.status in (Status.CLAIMED, Status.FAILED)) or (
            row.status == Status.RUNNING and str(row.task_id) == task_id
        )
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
            return _claim(row, task_id, now, skipped=False)
        row.skipped_count += 1
        row.last_skipped_at, row.last_skipped_task_id = now, uuid.UUID(task_id)
        row.save(update_fields=["skipped_count", "last_skipped_at", "last_skipped_task_id"])
        return _claim(row, task_id, now, skipped=True)


def _claim(row: ScheduleSlot, task_id: str, now: datetime, *, skipped: bool) -> SlotClaim:
    return SlotClaim(
        schedule=row.schedule,
        slot_start=row.slot_start,
        skipped=skipped,
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
    with transaction.atomic():
        hold_current()
        ScheduleSlot.objects.filter(pk=slot.slot_id, task_id=slot.task_id).update(
            status=Status.SUCCEEDED if error is None else Status.FAILED,
            finished_at=now,
            duration=now - slot.started_at,
            error="" if error is None else f"{type(error).__name__}: {error}"[:4000],
        )


def _release(slot: SlotClaim, reason: str) -> None:
    """The task asked to run later (Reschedule): the slot waits for the same chain."""
    with transaction.atomic():
        hold_current()
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
