"""GET /api/flows/<id>, POST /api/flows/<id>/cancel and POST /api/jobs/<id>/cancel, without workers."""

import uuid

import pytest
from django.db import transaction

from jobs.flows.definition import Step
from jobs.flows.services import flow_start
from jobs.models import Flow, Job, TaskRun
from jobs.services import job_create
from tests.conftest import client_for

pytestmark = pytest.mark.django_db


def nested_flow(owner) -> Flow:
    with transaction.atomic():
        return flow_start(
            kind="test",
            owner=owner,
            steps=[
                Step("a", "probe.record", kwargs={"key": "a"}),
                Step("inner", steps=(Step("x", "probe.record", kwargs={"key": "x"}),), after=("a",)),
            ],
        )


def test_the_owner_sees_each_step_and_the_nested_flows_url(api, user):
    flow = nested_flow(user)
    body = api.get(f"/api/flows/{flow.pk}").json()
    assert (body["id"], body["state"], body["failed_step"], body["failures"]) == (
        str(flow.pk),
        "running",
        None,
        0,
    )
    a, inner = body["steps"]
    assert (a["name"], a["task"], a["state"], a["attempts"], a["error_code"]) == (
        "a",
        "probe.record",
        "queued",
        0,
        "",
    )
    assert a["queued_at"] is not None
    assert a["flow_url"] is None
    nested = Flow.objects.get(parent_step__flow=flow)
    assert (inner["task"], inner["state"], inner["flow_url"]) == ("", "waiting", f"/api/flows/{nested.pk}")
    nested_body = api.get(inner["flow_url"]).json()
    assert nested_body["state"] == "waiting"
    assert nested_body["cancel_url"] is None  # cancelled with the flow it belongs to
    assert api.post(f"{inner['flow_url']}/cancel").status_code == 409


def test_flows_are_private_to_their_owner(api, user, other_user):
    flow = nested_flow(user)
    assert client_for(other_user).get(f"/api/flows/{flow.pk}").status_code == 404
    assert client_for(other_user).post(f"/api/flows/{flow.pk}/cancel").status_code == 404
    assert client_for(None).get(f"/api/flows/{flow.pk}").status_code == 401
    assert api.get(f"/api/flows/{uuid.uuid4()}").status_code == 404


def test_cancelling_cancels_the_nested_flows_too_and_only_once(api, user):
    flow = nested_flow(user)
    response = api.post(f"/api/flows/{flow.pk}/cancel")
    assert response.status_code == 202
    nested = Flow.objects.get(parent_step__flow=flow)
    assert nested.state == Flow.State.CANCELLED
    assert nested.cancel_requested_at is not None
    assert set(nested.steps.values_list("state", flat=True)) == {"cancelled"}
    again = api.post(f"/api/flows/{flow.pk}/cancel")
    assert again.status_code == 409
    assert again.json()["code"] == "flow-state-conflict"


def test_a_queued_job_is_cancelled_at_once_and_a_running_one_when_its_task_stops(api, user, other_user):
    queued = job_create(owner=user, kind="export")
    assert client_for(other_user).post(f"/api/jobs/{queued.id}/cancel").status_code == 404
    body = api.post(f"/api/jobs/{queued.id}/cancel").json()
    assert (body["state"], body["progress_message"]) == ("cancelled", "cancelled")
    assert body["cancel_requested_at"] is not None
    assert api.post(f"/api/jobs/{queued.id}/cancel").json()["code"] == "job-state-conflict"
    # a job whose task runs right now: the request is stored, the task stops at its next check
    running = job_create(owner=user, kind="export")
    task_id = uuid.uuid4()
    Job.objects.filter(pk=running.id).update(state=Job.State.RUNNING, task_id=task_id)
    TaskRun.objects.create(
        task_id=task_id, task_name="probe.sleep", state="running", started_at="2026-01-01T00:00:00Z",
        heartbeat_at="2026-01-01T00:00:00Z",
    )  # fmt: skip
    body = api.post(f"/api/jobs/{running.id}/cancel").json()
    assert body["state"] == "running"
    assert body["cancel_requested_at"] is not None
