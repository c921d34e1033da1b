"""Schedules are code; setup_periodic_tasks writes them to the database idempotently."""

import pytest
from django.core.management import call_command
from django_celery_beat.models import CrontabSchedule, PeriodicTask

from config.schedules import SCHEDULES
from jobs.management.commands.setup_periodic_tasks import sync_schedules
from jobs.schedules import Schedule

pytestmark = pytest.mark.django_db


def snapshot():
    return sorted(
        PeriodicTask.objects.values_list(
            "name", "task", "enabled", "crontab_id", "interval_id", "queue", "kwargs"
        )
    )


def test_setup_creates_every_schedule_in_utc_and_a_second_run_changes_nothing():
    call_command("setup_periodic_tasks")
    first = snapshot()
    assert {row[0] for row in first} == {s.name for s in SCHEDULES}
    assert {str(tz) for tz in CrontabSchedule.objects.values_list("timezone", flat=True)} == {"UTC"}
    report = sync_schedules(SCHEDULES)
    assert report["created"] == report["updated"] == report["disabled"] == []
    assert snapshot() == first


def test_a_schedule_removed_from_code_is_disabled_not_deleted():
    call_command("setup_periodic_tasks")
    fewer = [s for s in SCHEDULES if s.name != "dead-letter-digest"]
    report = sync_schedules(fewer)
    assert report["disabled"] == ["dead-letter-digest"]
    assert PeriodicTask.objects.get(name="dead-letter-digest").enabled is False
    # and adding it back re-enables it
    assert sync_schedules(SCHEDULES)["updated"] == ["dead-letter-digest"]


def test_a_changed_schedule_is_updated():
    call_command("setup_periodic_tasks")
    changed = [
        Schedule(
            name=s.name,
            task=s.task,
            description=s.description,
            when_missed=s.when_missed,
            crontab="0 9 * * *",
        )
        if s.name == "dead-letter-digest"
        else s
        for s in SCHEDULES
    ]
    assert sync_schedules(changed)["updated"] == ["dead-letter-digest"]
    assert PeriodicTask.objects.get(name="dead-letter-digest").crontab.hour == "9"


def test_schedule_definition_is_validated():
    with pytest.raises(ValueError, match="exactly one"):
        Schedule(name="x", task="jobs.ping", description="", when_missed="")
    with pytest.raises(ValueError, match="five fields"):
        Schedule(name="x", task="jobs.ping", description="", when_missed="", crontab="* *")
