"""Slot arithmetic: which slot a moment falls in, and the slots of a time range.

The slot of a time is the latest fire time of the schedule at or before it: crontab
schedules floor to their own fire times (in the crontab's timezone, UTC here); interval
schedules to multiples of the interval counted from the Unix epoch. Pure functions, no
database.
"""

from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from celery.schedules import crontab
from django.utils import timezone

EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
MAX_SLOTS = 10_000  # a backfill range longer than this is a typo, not a plan
CRON_LOOKBACK_DAYS = 366 * 30  # "Feb 29 on a Monday" fires every 28 years at worst


class SlotError(ValueError):
    """A slot request that cannot be served (bad range, schedule without a ledger)."""


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
