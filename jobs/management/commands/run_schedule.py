"""python manage.py run_schedule <schedule> [--wait SECONDS]: run a schedule's task now.

The task goes through the outbox like any other and claims the current slot of its
schedule if it uses the slot ledger: pressing "run now" twice in one slot runs it once and
records the second as skipped. With --wait, prints the outcome as JSON (the demo reads it).
"""

import json
import time
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.db import transaction
from django.utils import timezone

from jobs import outbox
from jobs.models import ScheduleSlot, TaskRun
from jobs.scheduling import definitions


class Command(BaseCommand):
    help = "Enqueue a schedule's task now (through the outbox); with --wait, report the outcome."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("schedule", help="schedule name (config/schedules.py) or its task name")
        parser.add_argument("--wait", type=float, default=0.0, help="seconds to wait for the run to finish")

    def handle(self, *args: Any, **options: Any) -> None:
        try:
            spec = definitions.definition(options["schedule"])
        except definitions.UnknownSchedule as exc:
            raise CommandError(str(exc)) from exc
        with transaction.atomic():
            task_id = outbox.enqueue(spec.task, kwargs=spec.kwargs, queue=spec.queue)
        if task_id is None:  # pragma: no cover - no dedupe key, so always a new row
            raise CommandError("the task was not enqueued")
        report: dict[str, Any] = {"schedule": spec.name, "task": spec.task, "task_id": str(task_id)}
        deadline = time.monotonic() + options["wait"]
        while options["wait"] and time.monotonic() < deadline:
            run = TaskRun.objects.filter(task_id=task_id, state__in=TaskRun.TERMINAL).first()
            if run is not None:
                report["task_state"] = run.state
                break
            time.sleep(0.2)  # polling the run's state while waiting, bounded by --wait
        if spec.uses_ledger:
            row = ScheduleSlot.objects.filter(
                schedule=spec.name, slot_start=spec.slot_start(timezone.now())
            ).first()
            if row is not None:
                report.update(
                    slot_start=row.slot_start.isoformat(), slot_status=row.status, skipped=row.skipped_count
                )
        self.stdout.write(json.dumps(report))
