"""Dead letters in the Django admin: staff only, grouped view, replay/resolve/discard with permission."""

import uuid

import pytest
from django.contrib.auth.models import Permission
from django.test import Client
from django.urls import reverse

from core.errors import PermanentError
from jobs.dead_letters import dead_letter_record
from jobs.execution import TaskMeta
from jobs.models import DeadLetter, OutboxMessage

pytestmark = pytest.mark.django_db

CHANGELIST = reverse("admin:jobs_deadletter_changelist")
GROUPS = reverse("admin:jobs_deadletter_groups")


def make_dead_letter(message: str = "vendor rejected order 1", task: str = "probe.record") -> DeadLetter:
    task_id = str(uuid.uuid4())
    m = TaskMeta(task_id, task, "default", 5, task_id, "", None, None)
    return dead_letter_record(
        meta=m, exc=PermanentError(message), reason="permanent", args=[], kwargs={"key": "k"}
    )


@pytest.fixture
def operator(make_user) -> Client:
    """Staff with the act permission."""
    user = make_user("operator", is_staff=True)
    user.user_permissions.add(
        Permission.objects.get(codename="view_deadletter"),
        Permission.objects.get(codename="act_on_deadletter"),
    )
    client = Client()
    client.force_login(user)
    return client


@pytest.fixture
def viewer(make_user) -> Client:
    """Staff who may look but not act."""
    user = make_user("viewer", is_staff=True)
    user.user_permissions.add(Permission.objects.get(codename="view_deadletter"))
    client = Client()
    client.force_login(user)
    return client


def test_admin_needs_a_staff_login(make_user):
    assert Client().get(CHANGELIST).status_code == 302
    client = Client()
    client.force_login(make_user("customer"))
    response = client.get(CHANGELIST)
    assert response.status_code == 302
    assert "/login/" in response["Location"]


def test_list_filters_by_status_and_fingerprint(operator):
    a = make_dead_letter("vendor rejected order 1")
    make_dead_letter("vendor rejected order 2")
    other = make_dead_letter("smtp said no", task="probe.flaky")
    page = operator.get(CHANGELIST, {"fingerprint": a.fingerprint, "status__exact": "open"})
    assert page.status_code == 200
    assert page.context["cl"].result_count == 2
    page = operator.get(CHANGELIST, {"fingerprint": other.fingerprint})
    assert page.context["cl"].result_count == 1
    assert operator.get(CHANGELIST, {"age": "gt24h"}).context["cl"].result_count == 0
    assert operator.get(CHANGELIST, {"age": "lt1h"}).context["cl"].result_count == 3


def test_grouped_view_counts_by_fingerprint(operator):
    a = make_dead_letter("vendor rejected order 1")
    make_dead_letter("vendor rejected order 99")
    make_dead_letter("smtp said no", task="probe.flaky")
    page = operator.get(GROUPS)
    assert page.status_code == 200
    groups = page.context["groups"]
    assert next((g["fingerprint"], g["count"]) for g in groups) == (a.fingerprint, 2)
    assert len(groups) == 2
    assert b"Replay 2" in page.content


def test_replay_action_asks_for_a_note_then_replays_once(operator):
    dead = make_dead_letter()
    form = {"action": "replay", "_selected_action": [dead.pk]}
    confirm_page = operator.post(CHANGELIST, form)
    assert confirm_page.status_code == 200  # the intermediate page with the note field
    assert DeadLetter.objects.get(pk=dead.pk).status == "open"
    done = operator.post(
        CHANGELIST, {**form, "confirm": "Replay", "note": "retry after the fix"}, follow=True
    )
    assert b"Replayed 1; skipped 0" in done.content
    dead.refresh_from_db()
    assert dead.status == "replayed"
    assert dead.note == "retry after the fix"
    assert dead.acted_by is not None
    assert dead.acted_by.username == "operator"
    assert OutboxMessage.objects.filter(id=str(dead.replay_task_id)).exists()
    # a second click does not enqueue again
    again = operator.post(CHANGELIST, {**form, "confirm": "Replay", "note": ""}, follow=True)
    assert b"Replayed 0; skipped 1" in again.content
    assert OutboxMessage.objects.filter(task_name="probe.record").count() == 1


def test_resolve_and_discard_with_a_note(operator):
    a, b = make_dead_letter(), make_dead_letter()
    operator.post(
        CHANGELIST, {"action": "resolve", "_selected_action": [a.pk], "confirm": "1", "note": "fixed by hand"}
    )
    operator.post(
        CHANGELIST, {"action": "discard", "_selected_action": [b.pk], "confirm": "1", "note": "obsolete"}
    )
    a.refresh_from_db()
    b.refresh_from_db()
    assert (a.status, a.note) == ("resolved", "fixed by hand")
    assert (b.status, b.note) == ("discarded", "obsolete")


def test_bulk_replay_of_a_fingerprint_group(operator):
    group = [make_dead_letter(f"vendor rejected order {n}") for n in range(3)]
    lone = make_dead_letter("smtp said no", task="probe.flaky")
    url = reverse("admin:jobs_deadletter_replay_group", args=[group[0].fingerprint])
    response = operator.post(url, {"note": "vendor back"})
    assert response.status_code == 302
    assert set(DeadLetter.objects.filter(pk__in=[d.pk for d in group]).values_list("status", flat=True)) == {
        "replayed"
    }
    assert DeadLetter.objects.get(pk=lone.pk).status == "open"
    assert OutboxMessage.objects.filter(task_name="probe.record").count() == 3


def test_acting_needs_the_permission(viewer):
    dead = make_dead_letter()
    assert viewer.get(CHANGELIST).status_code == 200
    assert viewer.get(GROUPS).status_code == 200
    assert b"Replay 1" not in viewer.get(GROUPS).content
    # the action is not offered, and posting it anyway changes nothing
    viewer.post(CHANGELIST, {"action": "replay", "_selected_action": [dead.pk], "confirm": "1", "note": ""})
    url = reverse("admin:jobs_deadletter_replay_group", args=[dead.fingerprint])
    assert viewer.post(url).status_code == 403
    dead.refresh_from_db()
    assert dead.status == "open"
    assert not OutboxMessage.objects.filter(task_name="probe.record").exists()


def test_dead_letters_cannot_be_added_or_deleted(operator, make_user):
    dead = make_dead_letter()
    superuser = Client()
    superuser.force_login(make_user("root", is_staff=True, is_superuser=True))
    assert superuser.get(reverse("admin:jobs_deadletter_add")).status_code == 403
    assert superuser.get(reverse("admin:jobs_deadletter_delete", args=[dead.pk])).status_code == 403
