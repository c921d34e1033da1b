"""Flows on real workers: fan-out and fan-in, each failure policy, a failed step's retry, nested flows."""

import uuid
from datetime import datetime

import pytest
from django.db import transaction

from jobs.flows.definition import Step
from jobs.flows.services import flow_start, flow_step_retry
from jobs.models import DeadLetter, Flow, FlowStep, TaskRun
from tests.harness import wait_until
from tests.probe.tasks import FAST_RETRY, records

pytestmark = pytest.mark.django_db(transaction=True)

S = FlowStep.State
IGNORE, CONTINUE = FlowStep.OnFailure.IGNORE, FlowStep.OnFailure.CONTINUE


def key() -> str:
    return uuid.uuid4().hex


def start(*steps: Step, owner=None) -> Flow:
    with transaction.atomic():
        return flow_start(kind="test", steps=list(steps), owner=owner)


def finished(flow: Flow, timeout: float = 30) -> Flow:
    def done() -> Flow | None:
        flow.refresh_from_db()
        return flow if flow.state in Flow.FINISHED else None

    return wait_until(done, timeout=timeout, message=f"flow {flow.pk} to finish")


def steps(flow: Flow) -> dict[str, FlowStep]:
    return {s.name: s for s in flow.steps.all()}


def at(moment: datetime | None) -> datetime:
    assert moment is not None
    return moment


def runs(step: FlowStep) -> list[TaskRun]:
    return list(TaskRun.objects.filter(root_id=step.root_id).order_by("started_at"))


def test_children_run_in_parallel_and_the_next_step_runs_once_after_all_of_them(live):
    a, b, flaky, after = key(), key(), key(), key()
    flow = start(
        Step("a", "probe.sleep", kwargs={"key": a, "seconds": 0.4}),
        Step("b", "probe.sleep", kwargs={"key": b, "seconds": 0.4}),
        Step("flaky", "probe.flaky", kwargs={"key": flaky, "fail_times": 2}),
        Step("after", "probe.record", kwargs={"key": after}, after=("a", "b", "flaky")),
    )
    assert finished(flow).state == Flow.State.SUCCEEDED
    live.wait_idle()
    found = steps(flow)
    # the two sleepers overlapped: each started before the other ended
    starts = {k: next(r["at"] for r in records(k) if r.get("phase") == "start") for k in (a, b)}
    ends = {k: next(r["at"] for r in records(k) if r.get("phase") == "end") for k in (a, b)}
    assert starts[a] < ends[b]
    assert starts[b] < ends[a]
    # the flaky child's retries went through the base task; only its final success counted
    assert [r.state for r in runs(found["flaky"])] == ["retried", "retried", "succeeded"]
    assert found["flaky"].attempts == 3
    assert found["flaky"].state == S.SUCCEEDED
    # the next step started once, after the last child finished
    [after_run] = runs(found["after"])
    assert len(records(after)) == 1
    last_child = max(at(found[n].finished_at) for n in ("a", "b", "flaky"))
    assert after_run.started_at >= last_child
    assert all(s.state == S.SUCCEEDED for s in found.values())


def test_fail_policy_cancels_pending_steps_fails_the_flow_and_dead_letters_the_step(live):
    slow, later, never = key(), key(), key()
    flow = start(
        Step("charge", "probe.permanent", kwargs={"key": key()}),
        # still running when "charge" fails, even when a busy machine runs "charge" late
        Step("slow", "probe.sleep", kwargs={"key": slow, "seconds": 3.0}),
        Step("ship", "probe.record", kwargs={"key": never}, after=("charge", "slow")),
        Step("later", "probe.record", kwargs={"key": later}, after=("slow",)),
    )
    assert finished(flow).state == Flow.State.FAILED
    live.wait_idle()
    found = steps(flow)
    assert flow.failed_step_id == found["charge"].pk
    assert found["charge"].state == S.FAILED
    assert found["charge"].error_code == "permanent-error"
    assert found["ship"].state == S.CANCELLED
    assert found["later"].state == S.CANCELLED
    assert records(never) == []
    assert records(later) == []
    # the step that was running finished: its outcome is recorded, nothing followed it
    assert found["slow"].state == S.SUCCEEDED
    # the dead letter points at the failed step
    dead = DeadLetter.objects.get(root_id=found["charge"].root_id)
    assert dead.headers["flow_step"] == found["charge"].pk
    assert dead.reason == "permanent"


def test_ignore_lets_the_flow_succeed_and_continue_runs_on_but_ends_failed(live):
    ignored_next, continued_next = key(), key()
    ignored = start(
        Step("optional", "probe.permanent", kwargs={"key": key()}, on_failure=IGNORE),
        Step("next", "probe.record", kwargs={"key": ignored_next}, after=("optional",)),
    )
    continued = start(
        Step("report", "probe.permanent", kwargs={"key": key()}, on_failure=CONTINUE),
        Step("next", "probe.record", kwargs={"key": continued_next}, after=("report",)),
    )
    assert finished(ignored).state == Flow.State.SUCCEEDED
    assert finished(continued).state == Flow.State.FAILED
    live.wait_idle()
    assert len(records(ignored_next)) == 1
    assert len(records(continued_next)) == 1
    assert steps(ignored)["optional"].state == S.FAILED
    assert (continued.failures, continued.failed_step) == (1, None)
    assert (
        DeadLetter.objects.filter(root_id__in=[s.root_id for s in (*steps(ignored).values(),)]).count() == 1
    )


def test_retrying_the_failed_step_revives_the_flow_and_finishes_it(live, user):
    flaky, ship = key(), key()
    flow = start(
        # fails all its attempts; a fifth run (the retry) succeeds
        Step("capture", "probe.flaky", kwargs={"key": flaky, "fail_times": FAST_RETRY.max_attempts}),
        Step("reserve", "probe.record", kwargs={"key": key()}),
        Step("ship", "probe.record", kwargs={"key": ship}, after=("capture", "reserve")),
    )
    assert finished(flow).state == Flow.State.FAILED
    live.wait_idle()
    assert records(ship) == []
    # when an operator retries the failed step
    task_id = flow_step_retry(step_id=steps(flow)["capture"].pk, actor=user, note="provider fixed")
    assert task_id is not None
    assert finished(flow).state == Flow.State.SUCCEEDED
    live.wait_idle()
    assert len(records(flaky)) == FAST_RETRY.max_attempts + 1
    assert len(records(ship)) == 1
    dead = DeadLetter.objects.get(replay_task_id=task_id)
    assert (dead.status, dead.acted_by, dead.note) == (DeadLetter.Status.REPLAYED, user, "provider fixed")
    assert steps(flow)["capture"].root_id == uuid.UUID(task_id)
    # a second retry finds nothing to do
    assert flow_step_retry(step_id=steps(flow)["capture"].pk, actor=user) is None


def test_nested_flows_run_inside_their_step_and_the_parent_waits_for_them(live):
    x, y, z = key(), key(), key()
    flow = start(
        Step("a", "probe.record", kwargs={"key": key()}),
        Step(
            "inner",
            steps=(
                Step("x", "probe.record", kwargs={"key": x}),
                Step("y", "probe.record", kwargs={"key": y}, after=("x",)),
            ),
            after=("a",),
        ),
        Step("z", "probe.record", kwargs={"key": z}, after=("inner",)),
    )
    assert finished(flow).state == Flow.State.SUCCEEDED
    live.wait_idle()
    inner = Flow.objects.get(parent_step__flow=flow)
    assert inner.state == Flow.State.SUCCEEDED
    assert records(x)[0]["at"] < records(y)[0]["at"] < records(z)[0]["at"]
    assert at(steps(flow)["inner"].finished_at) <= runs(steps(flow)["z"])[0].started_at
