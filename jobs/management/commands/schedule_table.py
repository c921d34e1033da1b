"""python manage.py schedule_table: the schedule table of docs/schedules.md, from the code's schedules.

Every row of settings.PERIODIC_SCHEDULES (config/schedules.py): name, schedule, timezone,
task, what it does, what happens when a run is missed, and whether it claims slots.
"""

from typing import Any

from django.conf import settings
from django.core.management.base import BaseCommand
from django.utils.module_loading import import_string

from jobs.scheduling.definitions import Schedule

HEADER = (
    "| name | schedule | timezone | task | what it does | when a run is missed | one run per slot |\n"
    "|---|---|---|---|---|---|---|"
)


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def schedule_table(schedules: list[Schedule]) -> str:
    rows = [
        "| "
        + " | ".join(
            [
                f"`{s.name}`",
                f"`{s.crontab}`" if s.crontab else f"every {s.every_seconds} s",
                "UTC",
                f"`{s.task}`",
                _cell(s.description),
                _cell(s.when_missed),
                "yes (slot ledger)" if s.kwargs.get("schedule") == s.name else "no (idempotent)",
            ]
        )
        + " |"
        for s in schedules
    ]
    return "\n".join([HEADER, *rows])


class Command(BaseCommand):
    help = "Print the schedule table of docs/schedules.md (Markdown) from the schedules defined in code."

    def handle(self, *args: Any, **options: Any) -> None:
        self.stdout.write(schedule_table(import_string(settings.PERIODIC_SCHEDULES)))
