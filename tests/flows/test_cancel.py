"""Cancellation that sticks, on real workers: before the relay published a step, while its message
waits in the broker, while it runs (seen at the heartbeat or a progress report), and while every
worker is down. The export job uses the same mechanism."""

import signal
import uuid

import pytest
from django.db import connection, transaction

from jobs import outbox
from jobs.flows.definition import Step
from jobs.flows.services import flow_cancel, flow_start
from jobs.models import Flow, FlowStep, Job, OutboxMessage, TaskRun
from jobs.services import job_cancel, job_create
from orders.exports import order_export_start
from orders.models import Order
from tests.flows.test_live import runs, steps
from tests.harness import wait_until
from tests.probe.tasks import records

pytestmark = pytest.mark.django_db(transaction=True)

S = FlowStep.State


def key() -> str:
    return uuid.uuid4().hex


def two_steps(owner=None, seconds: float = 0.0) -> tuple[Flow, str, str]:
    first, second = key(), key()
    work = Step("first", "probe.sleep", kwargs={"key": first, "seconds": seconds})
    with transaction.atomic():
        flow = flow_start(
            kind="test",
            owner=owner,
            steps=[work, Step("second", "probe.record", kwargs={"key": second}, after=("first",))],
        )
    return flow, first, second


def refused(step: FlowStep) -> bool:
    return TaskRun.objects.filter(task_id=str(step.root_id), state=TaskRun.State.CANCELLED).exists()


def assert_nothing_ran(flow: Flow, *keys: str) -> None:
    assert all(records(k) == [] for k in keys)
    assert {s.state for s in steps(flow).values()} == {S.CANCELLED}
    assert flow.state == Flow.State.CANCELLED
    assert flow.cancel_requested_at is not None


def test_cancelled_before_the_relay_published_it_never_starts(live, user):
    with live.relay_paused():
        flow, first, second = two_steps()
        flow_cancel(flow_id=str(flow.pk), actor=user)
    # the relay publishes the row it had; the worker refuses it
    wait_until(lambda: refused(steps(flow)["first"]), message="the worker to refuse the step")
    live.wait_idle()
    flow.refresh_from_db()
    assert_nothing_ran(flow, first, second)


def test_cancelled_while_its_message_waits_in_the_broker_never_starts(live, user):
    live.worker.signal_group(signal.SIGSTOP)  # the message waits in the broker
    try:
        flow, first, second = two_steps()
        wait_until(
            lambda: OutboxMessage.objects.filter(
                pk=str(steps(flow)["first"].root_id), sent_at__isnull=False
            ).exists(),
            message="the step's message to be published",
        )
        flow_cancel(flow_id=str(flow.pk), actor=user)
    finally:
        live.worker.signal_group(signal.SIGCONT)
    wait_until(lambda: refused(steps(flow)["first"]), message="the worker to refuse the step")
    live.wait_idle()
    flow.refresh_from_db()
    assert_nothing_ran(flow, first, second)


def test_a_running_step_stops_at_the_next_heartbeat_when_cancelled_through_the_api(live, api, user):
    flow, first, second = two_steps(owner=user, seconds=30)
    wait_until(lambda: records(first), message="the step to start")
    response = api.post(f"/api/flows/{flow.pk}/cancel")
    assert response.status_code == 202, response.json()
    assert response.json()["state"] == "cancelled"
    assert response.json()["cancel_url"] is None
    step = wait_until(
        lambda: (s := steps(flow)["first"]).state == S.CANCELLED and s, timeout=10, message="the step to stop"
    )
    live.wait_idle()
    # it stopped in the middle (no "end" record), well before its 30 s, and was not failed or retried
    assert [r["phase"] for r in records(first)] == ["start"]
    assert (step.finished_at - step.started_at).total_seconds() < 10
    assert [r.state for r in runs(step)] == [TaskRun.State.CANCELLED]
    assert records(second) == []
    assert steps(flow)["second"].state == S.CANCELLED
    body = api.get(f"/api/flows/{flow.pk}").json()
    assert [s["state"] for s in body["steps"]] == ["cancelled", "cancelled"]
    assert api.post(f"/api/flows/{flow.pk}/cancel").status_code == 409  # over already


def test_cancelled_while_every_worker_is_down_nothing_runs_when_they_return(isolated, user):
    env = {"TASKYARD_HEARTBEAT_STALE_SECONDS": "3", "OUTBOX_LOST_AFTER_SECONDS": "3"}
    isolated.relay(**env)
    worker = isolated.worker("doomed", concurrency=1, **env)
    flow, first, second = two_steps(seconds=30)
    wait_until(lambda: records(first), message="the step to start")
    worker.kill()  # every worker is gone, the step's message unacked
    flow_cancel(flow_id=str(flow.pk), actor=user)
    isolated.worker("back", concurrency=1, **env)
    # the reaper re-publishes the lost step; the new worker refuses it
    wait_until(
        lambda: TaskRun.objects.filter(task_id=str(steps(flow)["first"].root_id), state="cancelled").exists(),
        timeout=40,
        message="the re-published step to be refused",
    )
    flow.refresh_from_db()
    assert [r["phase"] for r in records(first)] == ["start"]  # it never started again
    assert_nothing_ran(flow, second)


def test_a_running_job_task_stops_at_the_heartbeat_and_the_job_shows_cancelled(live, user):
    job = job_create(owner=user, kind="probe")
    work = key()
    with transaction.atomic():
        outbox.enqueue("probe.sleep", kwargs={"key": work, "seconds": 30}, job_id=job.id)
    wait_until(lambda: records(work), message="the job's task to start")
    job_cancel(job_id=job.id, owner=user)
    wait_until(
        lambda: Job.objects.filter(pk=job.id, state=Job.State.CANCELLED).exists(),
        timeout=10,
        message="cancelled",
    )
    live.wait_idle()
    assert [r["phase"] for r in records(work)] == ["start"]
    assert (
        TaskRun.objects.get(task_id=str(Job.objects.get(pk=job.id).task_id)).state == TaskRun.State.CANCELLED
    )


def waiting_on_the_job_row() -> bool:
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_stat_clear_snapshot()")  # a transaction sees one snapshot otherwise
        cursor.execute(
            "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database()"
            " AND wait_event_type = 'Lock' AND query LIKE 'UPDATE \"jobs_job\"%%'"
        )
        return bool(cursor.fetchone()[0])


def test_the_export_stops_at_its_next_progress_report(live, api, user):
    Order.objects.bulk_create(Order(owner=user, currency="EUR", total=1) for _ in range(1200))
    live.relay.signal_group(signal.SIGSTOP)
    try:
        job = order_export_start(user=user)
        message = OutboxMessage.objects.get(headers__job_id=str(job.id))
        with transaction.atomic():
            # Hold the job's row: the worker waits at its first write to it, with the task started.
            Job.objects.select_for_update().get(pk=job.id)
            live.relay.signal_group(signal.SIGCONT)
            wait_until(waiting_on_the_job_row, message="the export to start and wait for the job's row")
            job_cancel(job_id=job.id, owner=user)  # stored while the task runs
    finally:
        live.relay.signal_group(signal.SIGCONT)
    done = wait_until(
        lambda: Job.objects.filter(pk=job.id, state__in=Job.FINISHED).first(),
        timeout=20,
        message="the export",
    )
    live.wait_idle()
    assert done.state == Job.State.CANCELLED
    assert done.progress == 0
    assert not done.result_file
    # it ran (it had passed the check at start): its progress report stopped it
    assert f"{message.pk}]: cancelled while running" in live.worker.log()
    assert TaskRun.objects.get(task_id=message.pk).state == TaskRun.State.CANCELLED
    body = api.get(f"/api/jobs/{job.id}").json()
    assert (body["state"], body["result_url"]) == ("cancelled", None)
    assert body["cancel_requested_at"]
