"""python manage.py backfill_schedule <schedule> --since <ISO time> [--until <ISO time>] [--dry-run]

Runs what a schedule missed (beat or the workers were down): only the newest slot of the
range matters. It is queued through the outbox, claimed in the slot ledger for that task;
older slots nobody claimed are marked skipped. A slot that already ran is left alone, so
running the command twice queues nothing the second time. `<schedule>` is a schedule name
(`fx-sync-hourly`) or the task of exactly one schedule (`fx.sync_rates`). Times without a
timezone are UTC.
"""

from datetime import UTC, datetime
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from jobs.scheduling import backfill, definitions, timing


def _utc(value: str) -> datetime:
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError as exc:
        raise CommandError(f"{value!r} is not an ISO 8601 time (e.g. 2026-01-31T09:00Z)") from exc
    return parsed.replace(tzinfo=UTC) if parsed.tzinfo is None else parsed.astimezone(UTC)


def _fmt(when: datetime) -> str:
    return f"{when.astimezone(UTC):%Y-%m-%d %H:%M:%S}Z"


class Command(BaseCommand):
    help = "Run the newest slot a schedule missed since a time; mark older missed slots skipped."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("schedule", help="schedule name, or the task of exactly one schedule")
        parser.add_argument("--since", required=True, help="ISO 8601 time; slots starting at or after it")
        parser.add_argument("--until", help="ISO 8601 time; default now")
        parser.add_argument("--dry-run", action="store_true", help="say what would happen, change nothing")

    def handle(self, *args: Any, **options: Any) -> None:
        since = _utc(options["since"])
        until = _utc(options["until"]) if options["until"] else None
        try:
            spec = definitions.definition(options["schedule"])
            report = backfill.backfill(
                schedule=spec.name, since=since, until=until, dry_run=options["dry_run"]
            )
        except (definitions.UnknownSchedule, timing.SlotError) as exc:
            raise CommandError(str(exc)) from exc
        when = spec.when if isinstance(spec.when, str) else f"every {spec.when.total_seconds():g} s"
        prefix = "[dry run] " if options["dry_run"] else ""
        self.stdout.write(f"{prefix}{spec.name} ({when}, {spec.tz}): {len(report.expected)} slot(s) in range")
        for start in report.expected:
            if start == report.run:
                queued = f" as task {report.task_id}" if report.task_id else ""
                self.stdout.write(f"  {_fmt(start)}  run (newest slot){queued}")
            elif start in report.skipped:
                self.stdout.write(f"  {_fmt(start)}  skipped (missed; only the newest slot runs)")
            else:
                self.stdout.write(f"  {_fmt(start)}  left alone ({report.existing[start]})")
        if report.expected and report.run is None:
            self.stdout.write("nothing to run: the newest slot already ran or is running")
