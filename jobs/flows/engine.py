"""How a flow moves: every change is a conditional UPDATE in the transaction that causes it.

    create   the Flow and FlowStep rows; the steps nothing waits for are queued at once,
             their outbox rows written in the caller's transaction.
    settle   a step's final outcome, recorded by the base task in the same transaction as
             its TaskRun/DeadLetter bookkeeping. One UPDATE marks the step (only from queued
             or running: a second outcome of the same step changes nothing); one UPDATE
             decrements `waiting_on` of the steps downstream and queues those that reach 0
             (row locks serialise concurrent siblings, so exactly one of them sees 1 -> 0);
             their outbox rows follow in the same transaction. No polling task, no chord
             counter, no result backend.
    fail     on_failure=fail: the flow fails, steps not started are cancelled (nested flows
             too); a nested flow's outcome settles its parent step, and so on upwards.

docs/flows.md has the states and the SQL.
"""

import json
import uuid
from collections.abc import Sequence
from dataclasses import replace
from typing import Any

from django.contrib.auth.models import User
from django.db import IntegrityError, connection, transaction
from django.db.models import F
from django.utils import timezone

from jobs import outbox
from jobs.execution import FLOW_STEP_HEADER
from jobs.flows.definition import Step, check, downstream
from jobs.flows.errors import FlowExists
from jobs.flows.models import Flow, FlowStep

WRITE_CHUNK = 1000  # outbox rows per INSERT: a statement takes at most 65535 parameters

S = FlowStep.State


def _rows(sql: str, params: dict[str, Any]) -> list[dict[str, Any]]:
    with connection.cursor() as cursor:
        cursor.execute(sql, params)
        if cursor.description is None:
            return []
        names = [c.name for c in cursor.description]
        return [dict(zip(names, row, strict=True)) for row in cursor.fetchall()]


def _json(value: Any) -> Any:
    return json.loads(value) if isinstance(value, str) else value  # Django reads jsonb as text


# --- create and start ------------------------------------------------------------------
def create(
    *,
    kind: str,
    steps: Sequence[Step],
    owner: User | None = None,
    dedupe_key: str | None = None,
    parent_step_id: int | None = None,
) -> Flow:
    """Write a flow (and its nested flows); a top-level flow starts at once."""
    if parent_step_id is None:
        check(steps)
    waiting = downstream(steps)
    starts = parent_step_id is None
    now = timezone.now()
    try:
        with transaction.atomic():
            flow = Flow.objects.create(
                kind=kind,
                owner=owner,
                dedupe_key=dedupe_key,
                parent_step_id=parent_step_id,
                state=Flow.State.RUNNING if starts else Flow.State.WAITING,
                started_at=now if starts else None,
                sinks_left=sum(1 for s in steps if not waiting[s.name]),
            )
    except IntegrityError as exc:
        raise FlowExists(f"a {kind} flow for {dedupe_key} is already active") from exc
    rows = FlowStep.objects.bulk_create(
        [
            FlowStep(
                flow=flow,
                name=s.name,
                task_name=s.task,
                queue=s.queue or "",
                args=list(s.args),
                kwargs=dict(s.kwargs),
                after=list(s.after),
                downstream=waiting[s.name],
                waiting_on=len(s.after),
                on_failure=s.on_failure,
                # Ready at once: queued now, its message id chosen now (one write per step).
                state=S.QUEUED if starts and not s.after and s.task else S.WAITING,
                queued_at=now if starts and not s.after and s.task else None,
                root_id=uuid.uuid4() if starts and not s.after and s.task else None,
            )
            for s in steps
        ],
        batch_size=WRITE_CHUNK,
    )
    for row, step in zip(rows, steps, strict=True):
        if step.steps:
            create(kind=f"{kind}/{step.name}"[:50], steps=step.steps, owner=owner, parent_step_id=row.pk)
    if starts:
        _enqueue([_values(row) for row in rows if row.state == S.QUEUED])
        release_ready(flow.pk)  # nested flows without dependencies
    return flow


def _values(row: FlowStep) -> dict[str, Any]:
    return {f: getattr(row, f) for f in ("id", "task_name", "queue", "args", "kwargs", "root_id")}


_QUEUE_READY = """
UPDATE jobs_flowstep SET state = 'queued', queued_at = now(),
       root_id = CASE WHEN task_name <> '' THEN gen_random_uuid() END
 WHERE flow_id = %(flow)s AND state = 'waiting' AND waiting_on = 0
RETURNING id, task_name, queue, args, kwargs, root_id"""


def _start(flow_id: uuid.UUID) -> None:
    """A nested flow's parent step was released: queue its steps that wait for nothing."""
    started = Flow.objects.filter(pk=flow_id, state=Flow.State.WAITING).update(
        state=Flow.State.RUNNING, started_at=timezone.now()
    )
    if started:
        release_ready(flow_id)


def release_ready(flow_id: uuid.UUID) -> None:
    """Queue the flow's waiting steps that wait for nothing (more)."""
    _release(_rows(_QUEUE_READY, {"flow": flow_id}))


def _release(rows: list[dict[str, Any]]) -> None:
    """Steps just queued: write their outbox rows; a nested step starts its flow instead."""
    _enqueue([row for row in rows if row["task_name"]])
    nested = [row["id"] for row in rows if not row["task_name"]]
    if nested:
        FlowStep.objects.filter(pk__in=nested).update(state=S.RUNNING, started_at=timezone.now())
        for flow_id in Flow.objects.filter(parent_step_id__in=nested).values_list("id", flat=True):
            _start(flow_id)


def _enqueue(rows: list[dict[str, Any]]) -> None:
    messages = []
    for row in rows:
        message = outbox.build_message(
            row["task_name"],
            args=_json(row["args"]),
            kwargs=_json(row["kwargs"]),
            queue=row["queue"] or None,
            headers={FLOW_STEP_HEADER: row["id"]},
        )
        # The step chose its message id (root_id): only that message's chain may run it.
        root = uuid.UUID(str(row["root_id"]))
        messages.append(replace(message, id=root, headers={**message.headers, "root_id": str(root)}))
    for start in range(0, len(messages), WRITE_CHUNK):
        outbox.write(messages[start : start + WRITE_CHUNK])


# --- a worker starts a step -------------------------------------------------------------
_START = """
UPDATE jobs_flowstep s SET state = 'running', started_at = COALESCE(s.started_at, now()),
       attempts = %(attempt)s, root_id = %(root)s
  FROM jobs_flow f
 WHERE s.id = %(step)s AND f.id = s.flow_id AND s.state IN ('queued', 'running')
   AND (s.root_id = %(root)s OR s.root_id IS NULL)
   AND f.state = 'running' AND f.cancel_requested_at IS NULL
RETURNING s.id"""


def step_start(*, step_id: int, root_id: str, attempt: int) -> str | None:
    """None: run the step. Otherwise it must not run, and this is the state its outcome is in
    ("succeeded"/"failed": recorded before, a redelivery; "cancelled": its flow is cancelled or
    failed, or this message was superseded)."""
    if _rows(_START, {"step": step_id, "root": root_id, "attempt": attempt}):
        return None
    found = FlowStep.objects.filter(pk=step_id).values_list("state", "root_id").first()
    if found is None:
        return S.CANCELLED
    state, root = found
    if state in (S.SUCCEEDED, S.FAILED):
        return str(state)
    if state in (S.QUEUED, S.RUNNING) and (root is None or str(root) == root_id):
        with transaction.atomic():
            settle(step_id=step_id, state=S.CANCELLED, error_code="cancelled")
    return S.CANCELLED


def step_retrying(*, step_id: int, error_code: str, error: str) -> None:
    """An attempt failed and the next one waits in the outbox: the step is queued again."""
    FlowStep.objects.filter(pk=step_id, state=S.RUNNING).update(
        state=S.QUEUED, error_code=error_code[:100], error=error[:2000]
    )


# --- a step's outcome -------------------------------------------------------------------
_SETTLE = """
UPDATE jobs_flowstep s SET state = %(state)s, finished_at = now(), error_code = %(code)s, error = %(error)s
  FROM jobs_flow f
 WHERE s.id = %(step)s AND f.id = s.flow_id AND s.state IN ('queued', 'running')
RETURNING s.flow_id, s.downstream, s.on_failure, f.state AS flow_state"""

# The fan-in: one statement per settled step. Row locks serialise concurrent siblings, and the
# SET reads the locked row's latest value, so exactly one transaction takes waiting_on 1 -> 0.
_FAN_IN = """
UPDATE jobs_flowstep SET waiting_on = waiting_on - 1,
       state = CASE WHEN waiting_on = 1 THEN 'queued' ELSE state END,
       queued_at = CASE WHEN waiting_on = 1 THEN now() ELSE queued_at END,
       root_id = CASE WHEN waiting_on = 1 AND task_name <> '' THEN gen_random_uuid() ELSE root_id END
 WHERE flow_id = %(flow)s AND name = ANY(%(names)s) AND state = 'waiting'
RETURNING id, task_name, queue, args, kwargs, root_id, state"""

_SINK_SETTLED = """
UPDATE jobs_flow SET sinks_left = sinks_left - 1,
       state = CASE WHEN sinks_left > 1 THEN state WHEN failures > 0 THEN 'failed' ELSE 'succeeded' END,
       finished_at = CASE WHEN sinks_left = 1 THEN now() END
 WHERE id = %(flow)s AND state = 'running'
RETURNING state, parent_step_id"""


def settle(*, step_id: int, state: str, error_code: str = "", error: str = "") -> None:
    """Record a step's final outcome and move its flow on. Call inside the transaction that
    records the task's own outcome; a second call for the same step changes nothing."""
    params = {"step": step_id, "state": state, "code": error_code[:100], "error": error[:2000]}
    found = _rows(_SETTLE, params)
    if not found or found[0]["flow_state"] != Flow.State.RUNNING:
        return  # recorded before, or its flow is over: nothing waits on it any more
    row = found[0]
    flow_id, policy = row["flow_id"], row["on_failure"]
    if state == S.CANCELLED or (state == S.FAILED and policy == FlowStep.OnFailure.FAIL):
        _fail(flow_id, step_id, error_code, error)
        return
    if state == S.FAILED and policy == FlowStep.OnFailure.CONTINUE:
        Flow.objects.filter(pk=flow_id).update(failures=F("failures") + 1)
    names = _json(row["downstream"])
    if names:
        released = _rows(_FAN_IN, {"flow": flow_id, "names": names})
        _release([r for r in released if r["state"] == S.QUEUED])
        return
    finished = _rows(_SINK_SETTLED, {"flow": flow_id})
    if finished and finished[0]["state"] != Flow.State.RUNNING and finished[0]["parent_step_id"]:
        outcome = S.SUCCEEDED if finished[0]["state"] == Flow.State.SUCCEEDED else S.FAILED
        code = "" if outcome == S.SUCCEEDED else "nested-flow-failed"
        settle(step_id=finished[0]["parent_step_id"], state=outcome, error_code=code)


def _fail(flow_id: uuid.UUID, step_id: int, error_code: str, error: str) -> None:
    failed = _rows(
        "UPDATE jobs_flow SET state = 'failed', failed_step_id = %(step)s, finished_at = now()"
        " WHERE id = %(flow)s AND state = 'running' RETURNING parent_step_id",
        {"flow": flow_id, "step": step_id},
    )
    if not failed:
        return
    cancel_tree(flow_id)
    if parent := failed[0]["parent_step_id"]:
        settle(step_id=parent, state=S.FAILED, error_code=error_code or "nested-flow-failed", error=error)


# The flow and every flow nested in it, at any depth: what has not started is cancelled; with
# %(requested)s (a person asked) the flow itself too, and all are marked for running steps to see.
_CANCEL_TREE = """
WITH RECURSIVE tree(id) AS (
    SELECT %(flow)s::uuid
    UNION ALL
    SELECT f.id FROM jobs_flow f JOIN jobs_flowstep s ON s.id = f.parent_step_id JOIN tree t ON s.flow_id = t.id
), flows AS (
    UPDATE jobs_flow SET state = CASE WHEN state IN ('waiting', 'running') THEN 'cancelled' ELSE state END,
           finished_at = CASE WHEN state IN ('waiting', 'running') THEN now() ELSE finished_at END,
           cancel_requested_at = CASE WHEN %(requested)s THEN now() ELSE cancel_requested_at END,
           cancel_requested_by_id = CASE WHEN %(requested)s THEN %(by)s ELSE cancel_requested_by_id END
     WHERE id IN (SELECT id FROM tree) AND (id <> %(flow)s OR %(requested)s)
    RETURNING id
)
UPDATE jobs_flowstep SET state = 'cancelled', finished_at = now(), error_code = 'cancelled'
 WHERE flow_id IN (SELECT id FROM tree)
   AND (state IN ('waiting', 'queued') OR (task_name = '' AND state = 'running'))"""


def cancel_tree(flow_id: uuid.UUID, *, requested_by: User | None = None, requested: bool = False) -> None:
    """Cancel what has not started in a flow and in every flow nested in it. With `requested`
    (a person asked), the flows are marked so running steps stop at their next check."""
    params = {"flow": flow_id, "requested": requested, "by": requested_by.pk if requested_by else None}
    _rows(_CANCEL_TREE, params)
