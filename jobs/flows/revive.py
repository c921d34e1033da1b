"""Retrying a failed step puts it back in its flow: the flows its failure failed run again.

Called by jobs/dead_letters.py `dead_letter_replay` (the one path a replay takes, from the
dead-letter admin or from the flow admin's "retry failed step") in its transaction, before
the replay's outbox row is written. Only a step whose failure failed its flow (on_failure=fail)
and whose flow was not cancelled can rejoin it; any other dead letter of a step is replayed
as a plain task, outside the flow.

Reviving a flow: it is running again; each step its failure cancelled waits again, for the
dependencies that have not settled yet (counted afresh: a sibling that finished while the
flow was failed counts as done); steps with nothing left to wait for are queued at once;
nested flows the failure cancelled wait for their parent step again. A nested flow's failed
step revives the parent flows above it the same way.
"""

from django.db.models import Q
from django.utils import timezone

from jobs.flows import engine
from jobs.flows.models import Flow, FlowStep

S = FlowStep.State


def _settled_ok(flow: Flow) -> set[str]:
    """Names of the steps whose outcome lets their dependents run."""
    return set(
        flow.steps.filter(
            Q(state=S.SUCCEEDED)
            | Q(state=S.FAILED, on_failure__in=[FlowStep.OnFailure.IGNORE, FlowStep.OnFailure.CONTINUE])
        ).values_list("name", flat=True)
    )


def _recount(flow: Flow) -> None:
    """Cancelled steps wait again, for what has not settled; the flow's counters follow."""
    done = _settled_ok(flow)
    for step in flow.steps.filter(state=S.CANCELLED):
        FlowStep.objects.filter(pk=step.pk).update(
            state=S.WAITING,
            waiting_on=sum(1 for name in step.after if name not in done),
            root_id=None,
            queued_at=None,
            finished_at=None,
            error_code="",
            error="",
        )
        nested = Flow.objects.filter(parent_step_id=step.pk).first()
        if nested is not None:
            Flow.objects.filter(pk=nested.pk).update(state=Flow.State.WAITING, finished_at=None)
            _recount(nested)
    sinks = flow.steps.filter(downstream=[]).exclude(name__in=done).count()
    failures = flow.steps.filter(state=S.FAILED, on_failure=FlowStep.OnFailure.CONTINUE).count()
    Flow.objects.filter(pk=flow.pk).update(sinks_left=sinks, failures=failures)


def _revive(step: FlowStep) -> bool:
    flow = Flow.objects.select_for_update().get(pk=step.flow_id)
    if flow.state != Flow.State.FAILED or flow.failed_step_id != step.pk or flow.cancel_requested_at:
        return False
    if flow.parent_step_id is not None:
        parent = FlowStep.objects.select_for_update().get(pk=flow.parent_step_id)
        if parent.state != S.FAILED or not _revive(parent):
            return False
        FlowStep.objects.filter(pk=parent.pk).update(
            state=S.RUNNING, finished_at=None, error_code="", error=""
        )
    Flow.objects.filter(pk=flow.pk).update(state=Flow.State.RUNNING, finished_at=None, failed_step=None)
    flow.refresh_from_db()
    _recount(flow)
    engine.release_ready(flow.pk)
    return True


def step_reopen(*, step_id: int) -> bool:
    """The step's dead letter is being replayed: rejoin the flow if its failure failed it.

    True: the step is queued again (its next message may run it) and its flows run again.
    False: nothing changed; the replay runs the task outside the flow.
    """
    step = FlowStep.objects.select_for_update().filter(pk=step_id).first()
    if step is None or step.state != S.FAILED or not _revive(step):
        return False
    FlowStep.objects.filter(pk=step_id).update(
        state=S.QUEUED, root_id=None, queued_at=timezone.now(), finished_at=None
    )
    return True
