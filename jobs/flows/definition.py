"""A flow's steps as the caller writes them, checked before anything is written.

    Step("reserve-stock", "fulfilment.reserve_stock", kwargs={"order_id": 42})
    Step("capture-payment", "fulfilment.capture_payment", kwargs={"order_id": 42})
    Step("ship-order", "fulfilment.ship_order", kwargs={"order_id": 42},
         after=("reserve-stock", "capture-payment"))
    Step("notify", steps=(Step(...), Step(...)), after=("ship-order",))   # a nested flow

A step is an ordinary task (its own retry policy, ledger and dead letter) or a nested flow
(`steps=`), never both. `after` names steps of the same flow; steps without `after` start
with the flow. Task names, queues and arguments pass the outbox's own checks here, at the
call site, so a waiting step cannot fail to enqueue later.
"""

from collections.abc import Sequence
from dataclasses import dataclass, field
from graphlib import CycleError, TopologicalSorter
from typing import Any

from jobs import outbox
from jobs.errors import EnqueueError
from jobs.flows.models import FlowStep

MAX_NAME_LENGTH = 100


class FlowDefinitionError(EnqueueError):
    """Steps that cannot form a flow (unknown dependency, cycle, duplicate name, bad task)."""


@dataclass(frozen=True)
class Step:
    name: str
    task: str = ""
    kwargs: dict[str, Any] = field(default_factory=dict)
    args: tuple[Any, ...] = ()
    after: tuple[str, ...] = ()
    on_failure: FlowStep.OnFailure = FlowStep.OnFailure.FAIL
    queue: str | None = None
    steps: tuple["Step", ...] = ()  # a nested flow instead of a task


def check(steps: Sequence[Step], path: str = "") -> None:
    """Raise FlowDefinitionError unless `steps` (and every nested flow) can run."""
    if not steps:
        raise FlowDefinitionError(f"{path or 'a flow'} has no steps")
    names: set[str] = set()
    for step in steps:
        if step.name in names:
            raise FlowDefinitionError(f"two steps are named {path}{step.name!r}")
        names.add(step.name)
    for step in steps:
        where = f"{path}{step.name}"
        if not step.name or len(step.name) > MAX_NAME_LENGTH:
            raise FlowDefinitionError(f"step names are 1-{MAX_NAME_LENGTH} characters: {step.name!r}")
        if len(set(step.after)) != len(step.after):
            raise FlowDefinitionError(f"step {where!r} names a step in `after` twice")
        if bool(step.task) == bool(step.steps):
            raise FlowDefinitionError(f"step {where!r} needs a task or nested steps, not both")
        if unknown := [a for a in step.after if a not in names]:
            raise FlowDefinitionError(f"step {where!r} waits for unknown steps {unknown}")
        if step.on_failure not in FlowStep.OnFailure.values:
            raise FlowDefinitionError(
                f"step {where!r}: on_failure must be one of {FlowStep.OnFailure.values}"
            )
        if step.task:
            try:
                outbox.build_message(step.task, args=step.args, kwargs=step.kwargs, queue=step.queue)
            except EnqueueError as exc:
                raise FlowDefinitionError(f"step {where!r}: {exc}") from exc
        else:
            check(step.steps, f"{where}/")
    try:
        TopologicalSorter({s.name: set(s.after) for s in steps}).prepare()
    except CycleError as exc:
        raise FlowDefinitionError(f"{path or 'the flow'}: steps wait for each other: {exc.args[1]}") from exc


def downstream(steps: Sequence[Step]) -> dict[str, list[str]]:
    """For each step, the steps that wait for it."""
    waiting: dict[str, list[str]] = {s.name: [] for s in steps}
    for step in steps:
        for upstream in step.after:
            waiting[upstream].append(step.name)
    return waiting
