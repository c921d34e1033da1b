"""Flows in the admin: steps on the flow's page, cancel, and a failed step's retry, audited."""

import uuid

import pytest
from django.contrib.auth.models import Permission
from django.db import transaction
from django.test import Client
from django.urls import reverse

from core.errors import PermanentError
from jobs.dead_letters import dead_letter_record
from jobs.execution import meta_from_headers
from jobs.flows import engine
from jobs.flows.definition import Step
from jobs.flows.services import flow_start
from jobs.models import DeadLetter, Flow, FlowStep, Job, OutboxMessage
from jobs.services import job_create

pytestmark = pytest.mark.django_db

STEPS = reverse("admin:jobs_flowstep_changelist")
FLOWS = reverse("admin:jobs_flow_changelist")
JOBS = reverse("admin:jobs_job_changelist")


def staff(make_user, *codenames: str) -> Client:
    user = make_user(f"staff-{uuid.uuid4().hex[:6]}", is_staff=True)
    user.user_permissions.add(*Permission.objects.filter(codename__in=codenames))
    client = Client()
    client.force_login(user)
    return client


@pytest.fixture
def operator(make_user) -> Client:
    return staff(make_user, "view_flow", "view_flowstep", "view_job", "act_on_flow")


def failed_flow() -> tuple[Flow, FlowStep]:
    """A flow whose `charge` step was dead-lettered (as the base task records it)."""
    with transaction.atomic():
        flow = flow_start(
            kind="test",
            steps=[
                Step("charge", "probe.record", kwargs={"key": "c"}),
                Step("ship", "probe.record", kwargs={"key": "s"}, after=("charge",)),
            ],
        )
    charge = flow.steps.get(name="charge")
    headers = {"root_id": str(charge.root_id), "flow_step": charge.pk}
    meta = meta_from_headers(str(charge.root_id), "probe.record", "default", headers)
    with transaction.atomic():
        dead_letter_record(
            meta=meta, exc=PermanentError("declined"), reason="permanent", args=[], kwargs={"key": "c"}
        )
        engine.settle(step_id=charge.pk, state=FlowStep.State.FAILED, error_code="permanent-error")
    flow.refresh_from_db()
    return flow, charge


def act(client: Client, url: str, action: str, pk: object, *, confirm: bool = True, **extra: str):
    data = {"action": action, "_selected_action": [str(pk)], **extra}
    return client.post(url, {**data, "confirm": "yes"} if confirm else data)


def test_the_flow_page_lists_its_steps_and_the_step_list_links_its_dead_letter(operator):
    flow, charge = failed_flow()
    page = operator.get(reverse("admin:jobs_flow_change", args=[flow.pk])).content.decode()
    assert "charge" in page
    assert "ship" in page
    assert "permanent-error" in page
    dead = DeadLetter.objects.get(root_id=charge.root_id)
    listing = operator.get(STEPS).content.decode()
    assert reverse("admin:jobs_deadletter_change", args=[dead.pk]) in listing


def test_retrying_a_failed_step_replays_its_dead_letter_and_revives_the_flow(operator, make_user):
    flow, charge = failed_flow()
    viewer = staff(make_user, "view_flowstep")
    assert act(viewer, STEPS, "retry", charge.pk).status_code == 200  # no such action for them
    assert DeadLetter.objects.get(root_id=charge.root_id).status == DeadLetter.Status.OPEN
    # an operator asks first, then confirms with a note
    assert b"Retry" in act(operator, STEPS, "retry", charge.pk, confirm=False).content
    response = act(operator, STEPS, "retry", charge.pk, note="card updated")
    assert response.status_code == 302
    dead = DeadLetter.objects.get(root_id=charge.root_id)
    assert (dead.status, dead.note) == ("replayed", "card updated")
    assert dead.acted_by is not None
    assert dead.acted_by.username.startswith("staff-")
    flow.refresh_from_db()
    assert flow.state == Flow.State.RUNNING
    assert dict(flow.steps.values_list("name", "state")) == {"charge": "queued", "ship": "waiting"}
    replay = OutboxMessage.objects.get(pk=str(dead.replay_task_id))
    assert replay.headers["flow_step"] == charge.pk
    act(operator, STEPS, "retry", charge.pk, note="twice")  # not failed any more: nothing happens
    assert OutboxMessage.objects.filter(task_name="probe.record").count() == 2


def test_cancel_actions_for_flows_and_jobs(operator, user):
    with transaction.atomic():
        flow = flow_start(kind="test", steps=[Step("a", "probe.record", kwargs={"key": "a"})])
    job = job_create(owner=user, kind="export")
    assert act(operator, FLOWS, "cancel", flow.pk).status_code == 302
    assert act(operator, JOBS, "cancel_jobs", job.pk).status_code == 302
    flow.refresh_from_db()
    assert flow.state == Flow.State.CANCELLED
    assert flow.cancel_requested_by is not None
    assert Job.objects.get(pk=job.id).state == Job.State.CANCELLED
