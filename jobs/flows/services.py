"""Flows for any app: start one in your transaction, cancel it, retry its failed step.

    from jobs.flows.definition import Step
    from jobs.flows.services import flow_start

    with transaction.atomic():
        order = ...
        flow = flow_start(kind="order-fulfillment", owner=user, dedupe_key=f"order-fulfillment:{order.pk}",
                          steps=[Step("reserve-stock", "fulfilment.reserve_stock", kwargs={"order_id": order.pk}),
                                 Step("capture-payment", "fulfilment.capture_payment", kwargs={...}),
                                 Step("ship-order", "fulfilment.ship_order", kwargs={...},
                                      after=("reserve-stock", "capture-payment"))])

Each step is an ordinary task with its own retry policy and ledger; the flow only decides
when it starts (jobs/flows/engine.py) and whether it may start at all (jobs/cancellation.py).
"""

from collections.abc import Sequence

from django.contrib.auth.models import User
from django.db import transaction

from jobs.dead_letters import dead_letter_replay
from jobs.errors import EnqueueError
from jobs.flows import engine
from jobs.flows.definition import Step
from jobs.flows.errors import FlowStateConflict
from jobs.models import DeadLetter, Flow, FlowStep


def flow_start(
    *, kind: str, steps: Sequence[Step], owner: User | None = None, dedupe_key: str | None = None
) -> Flow:
    """Write the flow and the outbox rows of its first steps, in the caller's transaction.

    Raises FlowDefinitionError for steps that cannot run, FlowExists when `dedupe_key` belongs
    to another flow that is not cancelled.
    """
    if not transaction.get_connection().in_atomic_block:
        raise EnqueueError("flow_start() must run inside transaction.atomic(), like outbox.enqueue()")
    return engine.create(kind=kind, steps=steps, owner=owner, dedupe_key=dedupe_key)


def flow_cancel(*, flow_id: str, actor: User | None, owner: User | None = None) -> Flow:
    """Store the cancel: steps not started never start; running ones stop at their next check.

    `owner` scopes the lookup (the API); the admin passes none. Raises Flow.DoesNotExist, or
    FlowStateConflict for a flow that is over or nested in another.
    """
    with transaction.atomic():
        flows = Flow.objects.select_for_update()
        flow = (flows.filter(owner=owner) if owner is not None else flows).get(pk=flow_id)
        if flow.parent_step_id is not None:
            raise FlowStateConflict("This flow is a step of another flow; cancel that one.")
        if flow.state != Flow.State.RUNNING:
            raise FlowStateConflict(f"The flow is {flow.state}; only a running flow can be cancelled.")
        engine.cancel_tree(flow.pk, requested_by=actor, requested=True)
    flow.refresh_from_db()
    return flow


def failing_step(step: FlowStep) -> FlowStep | None:
    """The task step behind a failed step: itself, or the step that failed its nested flow."""
    while not step.task_name:
        nested = Flow.objects.filter(parent_step=step).select_related("failed_step").first()
        if nested is None or nested.failed_step is None:
            return None
        step = nested.failed_step
    return step


def flow_step_retry(*, step_id: int, actor: User | None, note: str = "") -> str | None:
    """Replay the dead letter behind a failed step (audited on the DeadLetter, like any replay);
    the step rejoins its flow, which runs again. Returns the new task id, or None."""
    step = FlowStep.objects.filter(pk=step_id, state=FlowStep.State.FAILED).first()
    leaf = failing_step(step) if step is not None else None
    if leaf is None or leaf.root_id is None:
        return None
    dead = (
        DeadLetter.objects.filter(root_id=leaf.root_id, status=DeadLetter.Status.OPEN)
        .order_by("-created_at")
        .first()
    )
    if dead is None:
        return None
    return dead_letter_replay(dead_letter_id=dead.pk, actor=actor, note=note)
