"""Periodic schedules are code: a list of `Schedule`s (config/schedules.py) that
`manage.py setup_periodic_tasks` writes to django-celery-beat's tables.

Every schedule is UTC. `when_missed` says what happens to a slot nobody ran
(beat or workers down); the README's schedule table is generated from these fields.
"""

from dataclasses import dataclass, field
from typing import Any


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
