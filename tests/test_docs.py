"""The README stays true: its generated tables match the code."""

from pathlib import Path

from django.conf import settings
from django.utils.module_loading import import_string

from jobs.management.commands.retry_table import retry_table
from jobs.management.commands.schedule_table import schedule_table

README = (Path(__file__).resolve().parent.parent / "README.md").read_text()


def test_readme_retry_table_matches_the_task_policies():
    assert retry_table() in README, "run `manage.py retry_table` and paste it into the README"


def test_readme_schedule_table_matches_the_schedules():
    table = schedule_table(import_string(settings.PERIODIC_SCHEDULES))
    assert table in README, "run `manage.py schedule_table` and paste it into the README"


def test_readme_links_to_files_that_exist():
    root = Path(__file__).resolve().parent.parent
    for path in ("docs/reliability.md", "docs/scaling.md", "deploy/prometheus/alerts.yml", "jobs/broker.py"):
        assert path in README
        assert (root / path).exists(), path
