"""The flow engine against the real database, without workers: definitions are checked before
anything is written, the fan-in fires once, failure policies, cancellation and revival."""

import uuid
from datetime import timedelta

import pytest
from django.db import transaction
from django.utils import timezone

from jobs import tasks
from jobs.errors import EnqueueError
from jobs.execution import FLOW_STEP_HEADER
from jobs.flows import engine
from jobs.flows.definition import FlowDefinitionError, Step
from jobs.flows.errors import FlowExists
from jobs.flows.revive import step_reopen
from jobs.flows.services import flow_start
from jobs.models import Flow, FlowStep, OutboxMessage

pytestmark = pytest.mark.django_db

S = FlowStep.State


def start(*steps: Step, **options) -> Flow:
    with transaction.atomic():
        return flow_start(kind="test", steps=list(steps), **options)


def record(name: str, **kwargs) -> Step:
    return Step(name, "probe.record", kwargs={"key": name}, **kwargs)


def step(flow: Flow, name: str) -> FlowStep:
    return FlowStep.objects.get(flow=flow, name=name)


def states(flow: Flow) -> dict[str, str]:
    return dict(flow.steps.values_list("name", "state"))


def settle(flow: Flow, name: str, state: str = S.SUCCEEDED) -> None:
    with transaction.atomic():
        engine.settle(
            step_id=step(flow, name).pk, state=state, error_code="" if state == S.SUCCEEDED else "boom"
        )


def messages_for(flow: Flow, name: str) -> list[OutboxMessage]:
    return list(OutboxMessage.objects.filter(**{f"headers__{FLOW_STEP_HEADER}": step(flow, name).pk}))


@pytest.mark.parametrize(
    ("steps", "message"),
    [
        ([], "no steps"),
        ([record("a"), record("a")], "two steps are named"),
        ([record("a"), record("b", after=("a", "a"))], "twice"),
        ([record("a", after=("b",))], "unknown steps"),
        ([record("a", after=("b",)), record("b", after=("a",))], "wait for each other"),
        ([Step("a", "probe.record", steps=(record("x"),))], "not both"),
        ([Step("a", "no.such_task")], "unknown task"),
        ([Step("a", "probe.record", kwargs={"key": "x" * 300})], "256 characters"),
        ([Step("a", steps=(record("x", after=("nope",)),))], "a/x"),
    ],
)
def test_a_flow_that_cannot_run_is_refused_before_anything_is_written(steps, message):
    with pytest.raises(FlowDefinitionError, match=message):
        start(*steps)
    assert not Flow.objects.exists()
    assert not OutboxMessage.objects.exists()


@pytest.mark.django_db(transaction=True)
def test_flow_start_needs_the_callers_transaction():
    with pytest.raises(EnqueueError, match="transaction"):
        flow_start(kind="test", steps=[record("a")])


def test_steps_without_dependencies_are_queued_with_the_flow_and_one_outbox_row_each():
    flow = start(record("a"), record("b"), record("c", after=("a", "b")))
    assert states(flow) == {"a": S.QUEUED, "b": S.QUEUED, "c": S.WAITING}
    [message] = messages_for(flow, "a")
    # the step chose its message's id: the root of its retry chain
    assert message.id == step(flow, "a").root_id
    assert message.headers["root_id"] == str(message.id)
    assert step(flow, "c").waiting_on == 2
    assert not messages_for(flow, "c")


def test_the_fan_in_releases_the_next_step_once_even_when_outcomes_repeat():
    flow = start(record("a"), record("b"), record("c", after=("a", "b")))
    settle(flow, "a")
    settle(flow, "a")  # a redelivery recording the same outcome again
    assert step(flow, "c").state == S.WAITING
    assert step(flow, "c").waiting_on == 1
    settle(flow, "b")
    settle(flow, "b")
    assert step(flow, "c").state == S.QUEUED
    assert len(messages_for(flow, "c")) == 1
    settle(flow, "c")
    flow.refresh_from_db()
    assert flow.state == Flow.State.SUCCEEDED
    assert flow.finished_at is not None


def test_fail_policy_cancels_what_has_not_started_and_fails_the_flow():
    flow = start(record("a"), record("b"), record("c", after=("a",)), record("d", after=("b", "c")))
    settle(flow, "a", S.FAILED)
    flow.refresh_from_db()
    assert flow.state == Flow.State.FAILED
    assert flow.failed_step == step(flow, "a")
    assert states(flow) == {"a": S.FAILED, "b": S.CANCELLED, "c": S.CANCELLED, "d": S.CANCELLED}
    # a step's late outcome is recorded, but nothing moves any more
    settle(flow, "b")
    assert step(flow, "b").state == S.CANCELLED


def test_ignore_lets_the_flow_succeed_and_continue_lets_it_run_on_but_end_failed():
    ignored = start(record("a", on_failure=FlowStep.OnFailure.IGNORE), record("b", after=("a",)))
    settle(ignored, "a", S.FAILED)
    assert step(ignored, "b").state == S.QUEUED
    settle(ignored, "b")
    ignored.refresh_from_db()
    assert ignored.state == Flow.State.SUCCEEDED

    continued = start(record("a", on_failure=FlowStep.OnFailure.CONTINUE), record("b", after=("a",)))
    settle(continued, "a", S.FAILED)
    assert step(continued, "b").state == S.QUEUED
    settle(continued, "b")
    continued.refresh_from_db()
    assert (continued.state, continued.failures, continued.failed_step) == (Flow.State.FAILED, 1, None)


def test_a_nested_flow_starts_when_its_step_is_released_and_settles_it_when_done():
    flow = start(
        record("a"),
        Step("inner", steps=(record("x"), record("y", after=("x",))), after=("a",)),
        record("z", after=("inner",)),
    )
    inner = Flow.objects.get(parent_step=step(flow, "inner"))
    assert inner.state == Flow.State.WAITING
    assert not messages_for(inner, "x")
    settle(flow, "a")
    inner.refresh_from_db()
    assert inner.state == Flow.State.RUNNING
    assert step(flow, "inner").state == S.RUNNING
    assert states(inner) == {"x": S.QUEUED, "y": S.WAITING}
    settle(inner, "x")
    settle(inner, "y")
    inner.refresh_from_db()
    assert inner.state == Flow.State.SUCCEEDED
    assert step(flow, "inner").state == S.SUCCEEDED
    assert step(flow, "z").state == S.QUEUED


def test_a_nested_failure_fails_the_parent_step_and_the_parent_flow():
    flow = start(Step("inner", steps=(record("x"), record("y"))), record("z", after=("inner",)))
    inner = Flow.objects.get(parent_step=step(flow, "inner"))
    settle(inner, "x", S.FAILED)
    flow.refresh_from_db()
    inner.refresh_from_db()
    assert (inner.state, flow.state) == (Flow.State.FAILED, Flow.State.FAILED)
    assert states(inner) == {"x": S.FAILED, "y": S.CANCELLED}
    assert states(flow) == {"inner": S.FAILED, "z": S.CANCELLED}
    assert step(flow, "inner").error_code == "boom"


def test_a_step_refuses_to_start_once_its_flow_is_cancelled_or_for_another_message():
    flow = start(record("a"), record("b"))
    a, b = step(flow, "a"), step(flow, "b")
    assert engine.step_start(step_id=a.pk, root_id=str(uuid.uuid4()), attempt=1) == S.CANCELLED
    assert step(flow, "a").state == S.QUEUED  # a stale message changes nothing
    assert engine.step_start(step_id=a.pk, root_id=str(a.root_id), attempt=1) is None
    with transaction.atomic():
        engine.cancel_tree(flow.pk, requested=True)
    assert engine.step_start(step_id=b.pk, root_id=str(b.root_id), attempt=1) == S.CANCELLED
    flow.refresh_from_db()
    assert flow.state == Flow.State.CANCELLED
    assert flow.cancel_requested_at is not None
    assert states(flow) == {"a": S.RUNNING, "b": S.CANCELLED}  # a runs until it sees the cancel


def test_one_active_flow_per_dedupe_key_until_it_is_cancelled():
    first = start(record("a"), dedupe_key="order:1")
    with pytest.raises(FlowExists):
        start(record("a"), dedupe_key="order:1")
    with transaction.atomic():
        engine.cancel_tree(first.pk, requested=True)
    assert start(record("a"), dedupe_key="order:1").pk != first.pk


def test_reopening_the_failed_step_revives_the_flow_and_requeues_what_its_failure_cancelled():
    flow = start(record("a"), record("b"), record("c", after=("a", "b")), record("d"))
    settle(flow, "b")
    settle(flow, "a", S.FAILED)
    assert states(flow) == {"a": S.FAILED, "b": S.SUCCEEDED, "c": S.CANCELLED, "d": S.CANCELLED}
    with transaction.atomic():
        assert step_reopen(step_id=step(flow, "a").pk)
    flow.refresh_from_db()
    assert flow.state == Flow.State.RUNNING
    assert flow.failed_step is None
    # c waits for a only (b is done); d waited for nothing and is queued again, with a new message
    assert states(flow) == {"a": S.QUEUED, "b": S.SUCCEEDED, "c": S.WAITING, "d": S.QUEUED}
    assert step(flow, "c").waiting_on == 1
    assert len(messages_for(flow, "d")) == 2
    settle(flow, "a")
    settle(flow, "c")
    settle(flow, "d")
    flow.refresh_from_db()
    assert flow.state == Flow.State.SUCCEEDED


def test_only_a_step_whose_failure_failed_its_flow_can_rejoin_it():
    flow = start(record("a", on_failure=FlowStep.OnFailure.IGNORE), record("b"))
    settle(flow, "a", S.FAILED)
    with transaction.atomic():
        assert not step_reopen(step_id=step(flow, "a").pk)
    cancelled = start(record("a"), record("b"))
    settle(cancelled, "a", S.FAILED)
    Flow.objects.filter(pk=cancelled.pk).update(cancel_requested_at="2026-01-01T00:00:00Z")
    with transaction.atomic():
        assert not step_reopen(step_id=step(cancelled, "a").pk)


def test_a_nested_steps_retry_revives_the_flows_above_it():
    flow = start(Step("inner", steps=(record("x"),)), record("z", after=("inner",)))
    inner = Flow.objects.get(parent_step=step(flow, "inner"))
    settle(inner, "x", S.FAILED)
    with transaction.atomic():
        assert step_reopen(step_id=step(inner, "x").pk)
    flow.refresh_from_db()
    inner.refresh_from_db()
    assert (flow.state, inner.state) == (Flow.State.RUNNING, Flow.State.RUNNING)
    assert states(flow) == {"inner": S.RUNNING, "z": S.WAITING}
    settle(inner, "x")
    assert step(flow, "z").state == S.QUEUED


def test_finished_flows_go_with_the_outbox_retention(settings):
    old = start(Step("inner", steps=(record("x"),)), record("a"))
    running = start(record("a"))
    Flow.objects.filter(pk=old.pk).update(
        state=Flow.State.SUCCEEDED,
        finished_at=timezone.now() - timedelta(days=settings.OUTBOX_RETENTION_DAYS + 1),
    )
    tasks.purge_outbox()
    assert list(Flow.objects.values_list("pk", flat=True)) == [running.pk]  # the nested flow went too
    assert not FlowStep.objects.filter(flow_id=old.pk).exists()
