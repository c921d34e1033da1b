"""Schedules are code; setup_periodic_tasks writes them to the database idempotently."""

import json

import pytest
from django.core.management import call_command
from django_celery_beat.models import CrontabSchedule, PeriodicTask

from config.schedules import SCHEDULES
from jobs.management.commands.setup_periodic_tasks import sync_schedules
from jobs.scheduling.definitions import Schedule

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


def test_fx_sync_runs_hourly_at_minute_zero_utc_and_claims_its_slot():
    call_command("setup_periodic_tasks")
    task = PeriodicTask.objects.select_related("crontab").get(name="fx-sync-hourly")
    assert task.task == "fx.sync_rates"
    assert task.queue == "default"
    assert task.interval is None
    cron = task.crontab
    assert (cron.minute, cron.hour, cron.day_of_month, cron.month_of_year, cron.day_of_week) == (
        "0", "*", "*", "*", "*",
    )  # fmt: skip
    assert str(cron.timezone) == "UTC"
    # the task gets its schedule's name: the key of its slots in the ledger
    assert json.loads(task.kwargs) == {"schedule": "fx-sync-hourly"}


def test_schedules_that_use_the_slot_ledger_pass_their_own_name():
    for schedule in SCHEDULES:
        if "schedule" in schedule.kwargs:
            assert schedule.kwargs["schedule"] == schedule.name, schedule.name


def test_the_readme_schedule_table_has_one_row_per_schedule(capsys):
    call_command("schedule_table")
    rows = [line for line in capsys.readouterr().out.splitlines() if line.startswith("| `")]
    assert [row.split("`")[1] for row in rows] == [s.name for s in SCHEDULES]
    assert all("| UTC |" in row for row in rows)
    fx_row = next(row for row in rows if "fx-sync-hourly" in row)
    assert "`0 * * * *`" in fx_row
    assert "yes (slot ledger)" in fx_row


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
