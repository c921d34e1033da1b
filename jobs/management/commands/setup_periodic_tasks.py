"""python manage.py setup_periodic_tasks: write the code's schedules to django-celery-beat.

Idempotent: a second run changes nothing. A periodic task in the database that is no
longer in code is disabled (not deleted: its history stays visible in the admin).
"""

import json
from typing import Any

from django.conf import settings
from django.core.management.base import BaseCommand
from django.db import transaction
from django.utils.module_loading import import_string
from django_celery_beat.models import CrontabSchedule, IntervalSchedule, PeriodicTask

from jobs.scheduling.definitions import Schedule


def _schedule_fields(schedule: Schedule) -> dict[str, Any]:
    if schedule.crontab:
        minute, hour, day_of_month, month_of_year, day_of_week = schedule.crontab.split()
        crontab, _ = CrontabSchedule.objects.get_or_create(
            minute=minute,
            hour=hour,
            day_of_month=day_of_month,
            month_of_year=month_of_year,
            day_of_week=day_of_week,
            timezone="UTC",
        )
        return {"crontab": crontab, "interval": None}
    interval, _ = IntervalSchedule.objects.get_or_create(
        every=schedule.every_seconds, period=IntervalSchedule.SECONDS
    )
    return {"crontab": None, "interval": interval}


def sync_schedules(schedules: list[Schedule]) -> dict[str, list[str]]:
    report: dict[str, list[str]] = {"created": [], "updated": [], "unchanged": [], "disabled": []}
    with transaction.atomic():
        for schedule in schedules:
            wanted = {
                "task": schedule.task,
                "queue": schedule.queue,
                "kwargs": json.dumps(schedule.kwargs, sort_keys=True),
                "description": schedule.description,
                "enabled": True,
                **_schedule_fields(schedule),
            }
            existing = PeriodicTask.objects.filter(name=schedule.name).first()
            if existing is None:
                PeriodicTask.objects.create(name=schedule.name, **wanted)
                report["created"].append(schedule.name)
                continue
            changed = {k: v for k, v in wanted.items() if getattr(existing, k) != v}
            if not changed:
                report["unchanged"].append(schedule.name)
                continue
            for key, value in changed.items():
                setattr(existing, key, value)
            existing.save()
            report["updated"].append(schedule.name)
        names = [s.name for s in schedules]
        for task in PeriodicTask.objects.filter(enabled=True).exclude(name__in=names):
            task.enabled = False
            task.save(update_fields=["enabled"])
            report["disabled"].append(task.name)
    return report


class Command(BaseCommand):
    help = "Write the periodic schedules defined in code (config/schedules.py) to the database."

    def handle(self, *args: Any, **options: Any) -> None:
        schedules: list[Schedule] = import_string(settings.PERIODIC_SCHEDULES)
        report = sync_schedules(schedules)
        for kind, names in report.items():
            if names:
                self.stdout.write(f"{kind}: {', '.join(names)}")
