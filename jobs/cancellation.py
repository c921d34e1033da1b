"""Cancellation that sticks: the request is a row, checked wherever a task could go on.

Celery's revoke lives in worker memory: sent while the workers are down, or before a
restart, it is lost (celery#8888). Here a cancel is stored: `Job.cancel_requested_at`,
`Flow.cancel_requested_at` (jobs/services.py `job_cancel`, jobs/flows/services.py
`flow_cancel`). It is checked at three places:

  * before a task runs (the base task asks `may_start`): a step of a cancelled flow, or
    the task of a cancelled job, is recorded cancelled and its message acked; nothing runs.
    So a message already in the broker, or published after every worker restarted, never
    starts its work.
  * at each progress report (`jobs.services.job_progress` raises TaskCancelled);
  * at the worker's heartbeat (every TASKYARD_HEARTBEAT_SECONDS, jobs/worker.py): the main
    process looks up the jobs and flow steps its pool children are running and sends the
    child running a cancelled one CANCEL_SIGNAL; the child raises TaskCancelled inside the
    task's own code (never inside the base task's bookkeeping), which unwinds it like any
    exception: `finally` blocks run, transactions roll back.

The base task records TaskCancelled as cancelled (TaskRun, Job, FlowStep), never as a
failure: no retry, no dead letter. A TaskCancelled that no stored cancel explains (a signal
that reached a child just after it moved on to another task) reschedules that task instead.
Prefork pool only for the signal; the other checks work with any pool.
"""

import contextlib
import logging
import os
import signal
from collections.abc import Iterable, Iterator
from typing import Any

from celery import signals
from django.db import transaction
from django.db.models import Q
from django.utils import timezone

from jobs.errors import TaskCancelled
from jobs.execution import FLOW_STEP_HEADER, TaskMeta
from jobs.flows import engine
from jobs.models import FlowStep, Job, TaskRun

logger = logging.getLogger(__name__)

CANCEL_SIGNAL = signal.SIGUSR2  # SIGUSR1 is billiard's soft time limit
_STEP_OUTCOME = {
    FlowStep.State.SUCCEEDED: TaskRun.State.SUCCEEDED,
    FlowStep.State.FAILED: TaskRun.State.DEAD,
    FlowStep.State.CANCELLED: TaskRun.State.CANCELLED,
}
_in_task_body = False  # per pool child: True while the task's own code runs


# --- before a task runs --------------------------------------------------------------
def may_start(meta: TaskMeta) -> TaskRun.State | None:
    """None: run the task. Otherwise it must not run; close its TaskRun with this state."""
    if meta.flow_step:
        outcome = engine.step_start(step_id=meta.flow_step, root_id=meta.root_id, attempt=meta.attempt)
        if outcome is not None:
            return _STEP_OUTCOME[FlowStep.State(outcome)]
    if meta.job_id and _job_cancelled(meta.job_id):
        return TaskRun.State.CANCELLED
    return None


def _job_cancelled(job_id: str) -> bool:
    """Mark a job whose cancel was requested cancelled; True when it was."""
    return bool(
        Job.objects.filter(pk=job_id, cancel_requested_at__isnull=False)
        .exclude(state=Job.State.SUCCEEDED)
        .update(state=Job.State.CANCELLED, finished_at=timezone.now(), progress_message="cancelled")
    )


# --- while it runs ---------------------------------------------------------------------
@contextlib.contextmanager
def cancellable() -> Iterator[None]:
    """The task's own code: where the heartbeat's signal may raise TaskCancelled."""
    global _in_task_body
    _in_task_body = True
    try:
        yield
    finally:
        _in_task_body = False


def _on_cancel_signal(_signum: int, _frame: Any) -> None:
    if _in_task_body:
        raise TaskCancelled("cancel requested (seen at the worker's heartbeat)")


@signals.worker_process_init.connect
def _install_signal_handler(**_: Any) -> None:
    signal.signal(CANCEL_SIGNAL, _on_cancel_signal)


def interrupt_cancelled(requests: Iterable[Any]) -> int:
    """In a worker's main process: signal the pool children running a cancelled job or step."""
    running: list[tuple[int, Any, Any]] = []
    for request in requests:
        pid = getattr(request, "worker_pid", None)
        headers = getattr(request, "request_dict", None) or {}
        step, job = headers.get(FLOW_STEP_HEADER), headers.get("job_id")
        if pid and pid != os.getpid() and (step or job):
            running.append((int(pid), step, job))
    if not running:
        return 0
    steps = {s for _, s, _ in running if s}
    jobs = {j for _, _, j in running if j}
    cancelled_steps = set(
        FlowStep.objects.filter(pk__in=steps, flow__cancel_requested_at__isnull=False).values_list(
            "pk", flat=True
        )
        if steps
        else []
    )
    cancelled_jobs = {
        str(j)
        for j in (
            Job.objects.filter(pk__in=jobs, cancel_requested_at__isnull=False).values_list("pk", flat=True)
            if jobs
            else []
        )
    }
    signalled = 0
    for pid, step, job in running:
        if (step and int(step) in cancelled_steps) or (job and str(job) in cancelled_jobs):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, CANCEL_SIGNAL)
                signalled += 1
    return signalled


# --- after it stopped --------------------------------------------------------------------
def record_cancelled(meta: TaskMeta) -> bool:
    """TaskCancelled left the task: record it, if a stored cancel explains it (else False)."""
    step_cancelled = bool(
        meta.flow_step
        and FlowStep.objects.filter(pk=meta.flow_step)
        .filter(Q(flow__cancel_requested_at__isnull=False) | ~Q(flow__state="running"))
        .exists()
    )
    with transaction.atomic():
        job_cancelled = bool(meta.job_id) and _job_cancelled(str(meta.job_id))
        if step_cancelled and meta.flow_step:
            engine.settle(step_id=meta.flow_step, state=FlowStep.State.CANCELLED, error_code="cancelled")
    return step_cancelled or job_cancelled
