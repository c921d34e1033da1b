"""Schedules: defined in code, run by beat.

`Schedule` is how the project writes a schedule (config/schedules.py lists them);
`manage.py setup_periodic_tasks` writes them to django-celery-beat's tables. Every
schedule is UTC. `when_missed` says what happens to a slot nobody ran (beat or workers
down); the schedule table in docs/schedules.md is generated from these fields.

`Definition` is a schedule as beat runs it (its django-celery-beat row wins over the code,
which answers before setup_periodic_tasks has run); `definition(name)` looks one up.
"""

import json
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from django.conf import settings
from django.utils.module_loading import import_string
from django_celery_beat.models import PeriodicTask

from core.errors import PermanentError
from jobs.queues import Queue
from jobs.scheduling.timing import slot_start


@dataclass(frozen=True)
class Schedule:
    name: str  # unique; also the slot ledger's key
    task: str
    description: str
    when_missed: str
    crontab: str | None = None  # "minute hour day-of-month month day-of-week", UTC
    every_seconds: int | None = None
    queue: str = "default"
    kwargs: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if (self.crontab is None) == (self.every_seconds is None):
            raise ValueError(f"{self.name}: give exactly one of crontab or every_seconds")
        if self.crontab is not None and len(self.crontab.split()) != 5:
            raise ValueError(f"{self.name}: crontab needs five fields")

    @property
    def when(self) -> str:
        return f"cron `{self.crontab}` UTC" if self.crontab else f"every {self.every_seconds} s"


class UnknownSchedule(PermanentError):
    """The task names a schedule that exists neither in the database nor in code."""


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
