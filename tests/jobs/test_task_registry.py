"""Task names and queues are part of the wire format: a rename strands queued messages."""

from pathlib import Path

import pytest
from django.conf import settings
from django.core.management import call_command
from django.core.management.base import SystemCheckError

from jobs.base_task import BaseTask
from jobs.queues import Queue
from jobs.system_checks import check_tasks, project_tasks

COMMITTED = Path(__file__).resolve().parent / "registered_tasks.txt"


def committed_names() -> list[str]:
    return [
        line.strip()
        for line in COMMITTED.read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]


def test_registered_task_names_match_the_committed_list():
    registered = sorted(name for name in project_tasks() if not name.startswith("probe."))
    assert registered == sorted(committed_names()), (
        "Task names changed. Queued messages under a removed name would be stranded: "
        f"update {COMMITTED.name} deliberately (see the note at its top)."
    )


def test_every_task_uses_the_base_task_and_a_declared_queue():
    declared = {q.name for q in settings.CELERY_TASK_QUEUES}
    assert declared == {q.value for q in Queue}
    for name, task in project_tasks().items():
        assert isinstance(task, BaseTask), name
        assert getattr(task, "queue", None) in declared, name


def test_system_check_passes_and_catches_a_bad_time_limit(monkeypatch):
    assert check_tasks() == []
    task = project_tasks()["jobs.ping"]
    monkeypatch.setattr(task, "time_limit", 5)  # below the global soft limit of 60 s
    errors = check_tasks()
    assert [e.id for e in errors] == ["taskyard.E003"]
    with pytest.raises(SystemCheckError, match=r"taskyard\.E003"):
        call_command("check")  # the real command (and worker start-up) runs the same check
