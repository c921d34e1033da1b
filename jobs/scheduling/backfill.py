"""Missed slots and backfill: a slot nobody claimed was missed; only the newest matters.

    manage.py backfill_schedule fx-sync-hourly --since 2026-01-31T00:00Z

queues the newest missed slot (through the outbox, claimed for that task in the same
transaction) and marks the older missed ones skipped.
"""

from dataclasses import dataclass, field
from datetime import datetime

from django.db import transaction
from django.utils import timezone

from jobs import outbox
from jobs.models import ScheduleSlot
from jobs.scheduling.definitions import definition
from jobs.scheduling.ledger import Status, locked_slot
from jobs.scheduling.timing import SlotError, slots_between


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
            row = locked_slot(spec.name, newest)
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
