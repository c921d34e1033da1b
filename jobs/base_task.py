"""The base task every task in the project uses.

Around the task's own code (`run`) it:
  * claims the task id in TaskRun: a duplicate delivery (finished, or running
    elsewhere) does nothing; a message delivered more than `max_deliveries` times
    (it keeps killing its worker) is dead-lettered without running again;
  * runs the task fenced (jobs/execution.py `Fence`): if the run is taken over while it
    runs (it stalled past the stale threshold), its later writes are refused, it stops at
    the first one (`Superseded`), and the message is acked: the new owner does the work;
  * binds the request id from the message headers for logs;
  * on a retryable error with attempts left, writes the next attempt to the outbox
    with `not_before` = now + exponential backoff with full jitter (no broker countdown);
  * on a permanent error or when attempts run out, writes a DeadLetter row, then the
    message is acked;
  * when the database itself is unreachable (nothing can be recorded), rejects the
    message back to the queue instead of acking it;
  * for a step of a flow (a `flow_step` header, jobs/flows/), records the step's final
    outcome in the transaction of its success or dead letter, which moves the flow on;
  * does not run a task whose job or flow was cancelled, and records a TaskCancelled
    raised while it runs as cancelled (jobs/cancellation.py).

    @shared_task(base=BaseTask, name="orders.auto_cancel_unpaid", queue=Queue.DEFAULT,
                 policy=RetryPolicy(max_attempts=5, backoff_base=1.0, backoff_cap=60.0))
    def auto_cancel_unpaid(order_id: int) -> bool:
        return services.order_auto_cancel(order_id=order_id)

docs/writing-a-task.md walks a new task from definition to tests.
"""

import contextlib
import logging
import time
from dataclasses import replace
from datetime import timedelta
from typing import Any, ClassVar, NoReturn

import sentry_sdk
from billiard.exceptions import TimeLimitExceeded
from celery import Task
from celery.exceptions import Reject, Retry
from django.db import DatabaseError, close_old_connections, transaction
from django.utils import timezone

from core.errors import RetryableError
from core.redact import redact
from jobs import cancellation, execution, outbox
from jobs.dead_letters import dead_letter_record
from jobs.errors import PoisonMessageError, Reschedule, TaskCancelled
from jobs.execution import (
    FLOW_STEP_HEADER,
    REQUEST_ID_HEADER,
    Begun,
    Claim,
    Fence,
    Superseded,
    TaskMeta,
    meta_from_headers,
)
from jobs.flows import engine as flow_engine
from jobs.flows.errors import error_code
from jobs.models import FlowStep, Job, OutboxMessage, TaskRun
from jobs.policy import Outcome, RetryPolicy
from jobs.queues import Queue
from jobs.task_metrics import task_event

logger = logging.getLogger(__name__)

REQUEUE_PAUSE_SECONDS = 2.0  # when the database is down: don't spin through the queue
HEADER_NAMES = ("attempt", "root_id", REQUEST_ID_HEADER, "job_id", "first_failed_at", FLOW_STEP_HEADER)


class BaseTask(Task):
    policy: ClassVar[RetryPolicy] = RetryPolicy()

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        if self.request.called_directly:  # a plain call (shell, unit test): just the function
            return self.run(*args, **kwargs)
        meta = self.meta_from_request()
        # Error reports carry who the task is, never what it was given (no arguments).
        sentry_sdk.set_tags(
            {
                "task": self.name,
                "task_id": meta.task_id,
                "attempt": meta.attempt,
                "queue": meta.queue,
                "request_id": meta.request_id or meta.root_id,
            }
        )
        try:
            begun = execution.begin(meta, max_deliveries=self.policy.max_deliveries)
        except DatabaseError as exc:
            self._requeue(exc)
        if begun.fence is None:
            return self._not_run(meta, begun.claim, list(args), kwargs)
        with execution.fenced(begun.fence):
            try:
                return self._run_fenced(meta, begun, list(args), kwargs)
            except Superseded as exc:
                task_event(self.name, "superseded")
                logger.warning(
                    "%s[%s]: %s; this run stopped, its writes refused", self.name, meta.task_id, exc
                )
                return None

    def _not_run(self, meta: TaskMeta, claim: Claim, args: list[Any], kwargs: dict[str, Any]) -> None:
        if claim is Claim.RUNNING_ELSEWHERE:
            # Acked here, not lost: the live run finishes it, or dies and the reaper re-publishes
            # it from its outbox row, which a message published around the outbox now gets too.
            outbox.adopt(meta.task_id, self.name, meta.queue, args, kwargs, self._headers_of_request())
        task_event(self.name, str(claim))
        where = "running elsewhere" if claim is Claim.RUNNING_ELSEWHERE else "already done"
        logger.info("%s[%s]: duplicate delivery, %s; skipped", self.name, meta.task_id, where)

    def _run_fenced(self, meta: TaskMeta, begun: Begun, args: list[Any], kwargs: dict[str, Any]) -> Any:
        fence = begun.fence
        assert fence is not None  # noqa: S101 - begin() fences every run it lets start
        if begun.claim is Claim.POISON:
            poison = PoisonMessageError(f"delivered {begun.deliveries} times without finishing")
            self._record_failure(meta, poison, args, kwargs, fence)
        if self._refused(meta, fence):
            return None
        self._job_update(meta, Job.State.RUNNING)
        try:
            with cancellation.cancellable():
                result = self.run(*args, **kwargs)
        except (Superseded, Retry):
            raise
        except TaskCancelled:
            self._cancelled(meta, args, kwargs, fence)
            return None
        except Reschedule as reschedule:
            self._reschedule(meta, reschedule, args, kwargs, fence)
            return None
        except Exception as exc:  # noqa: BLE001 - classified by the policy, never swallowed
            self._record_failure(meta, exc, args, kwargs, fence)
        try:
            if (
                meta.flow_step
            ):  # the outcome, the fan-in, the next steps' rows and the run's end: one transaction
                with transaction.atomic():
                    flow_engine.settle(step_id=meta.flow_step, state=FlowStep.State.SUCCEEDED)
                    self._finish_or_refuse(meta, fence, TaskRun.State.SUCCEEDED)
                self._job_update(meta, Job.State.SUCCEEDED)
            elif execution.finish(fence, TaskRun.State.SUCCEEDED):
                self._job_update(meta, Job.State.SUCCEEDED)
        except DatabaseError as exc:
            # The effect happened; its ledger row says so. A redelivery finds the ledger and stops.
            self._requeue(exc)
        return result

    # --- metadata -------------------------------------------------------------------
    def meta_from_request(self) -> TaskMeta:
        request = self.request
        queue = (
            (request.delivery_info or {}).get("routing_key") or getattr(self, "queue", None) or Queue.DEFAULT
        )
        return meta_from_headers(str(request.id), self.name, str(queue), self._headers_of_request())

    def _headers_of_request(self) -> dict[str, Any]:
        return {
            name: value for name in HEADER_NAMES if (value := getattr(self.request, name, None)) is not None
        }

    # --- failure paths --------------------------------------------------------------
    def _record_failure(
        self,
        meta: TaskMeta,
        exc: BaseException,
        args: list[Any],
        kwargs: dict[str, Any],
        fence: Fence | None,
    ) -> NoReturn:
        """Retry through the outbox or dead-letter; always raises (Retry, Superseded or the original).

        `fence` is None only for a message with no run to fence (no TaskRun row).
        """
        outcome = self.policy.classify(exc)
        now = timezone.now()
        meta = replace(meta, first_failed_at=meta.first_failed_at or now.isoformat())
        try:
            close_old_connections()  # a broken connection is replaced before we record anything
            if outcome is Outcome.RETRY and meta.attempt < self.policy.max_attempts:
                delay = self._retry_delay(exc, meta.attempt)
                self._enqueue_next(meta, args, kwargs, fence, attempt=meta.attempt + 1, delay=delay, as_state=(
                    TaskRun.State.RETRIED, execution.format_error(exc)))  # fmt: skip
                if meta.flow_step:
                    flow_engine.step_retrying(
                        step_id=meta.flow_step, error_code=error_code(exc), error=redact(str(exc))
                    )
                if meta.job_id:
                    Job.objects.filter(pk=meta.job_id).update(
                        progress_message=f"attempt {meta.attempt} failed; retrying in {delay:.0f}s"
                    )
                logger.warning(
                    "%s[%s] attempt %d/%d failed (%s); retry in %.1fs",
                    self.name,
                    meta.task_id,
                    meta.attempt,
                    self.policy.max_attempts,
                    type(exc).__name__,
                    delay,
                )
                raise Retry(
                    exc=exc if isinstance(exc, Exception) else None, when=now + timedelta(seconds=delay)
                )
            if isinstance(exc, PoisonMessageError):
                reason = "poison"
            elif isinstance(exc, TimeLimitExceeded) and outcome is Outcome.PERMANENT:
                reason = "timeout"
            else:
                reason = "exhausted" if outcome is Outcome.RETRY else "permanent"
            with transaction.atomic():  # a flow step's outcome commits with its dead letter
                dead_letter_record(
                    meta=meta,
                    exc=exc,
                    reason=reason,
                    args=args,
                    kwargs=kwargs,
                    alert=self.policy.alert,
                    fence=fence,
                )
                if meta.flow_step:
                    flow_engine.settle(
                        step_id=meta.flow_step,
                        state=FlowStep.State.FAILED,
                        error_code=error_code(exc),
                        error=redact(str(exc)),
                    )
            self.on_dead_letter(args, kwargs, exc)
        except DatabaseError as db_exc:
            self._requeue(db_exc)
        raise exc

    def _enqueue_next(
        self,
        meta: TaskMeta,
        args: list[Any],
        kwargs: dict[str, Any],
        fence: Fence | None,
        *,
        attempt: int,
        delay: float,
        as_state: tuple[TaskRun.State, str],
    ) -> None:
        """The next message of this task's chain (a retry, a reschedule) and this run's end, in
        one transaction: both happen, or (superseded) neither."""
        with transaction.atomic():
            outbox.enqueue(
                self.name,
                args=args,
                kwargs=kwargs,
                queue=meta.queue,
                not_before=timezone.now() + timedelta(seconds=delay),
                headers=meta.next_headers(attempt=attempt, first_failed_at=meta.first_failed_at),
            )
            state, error = as_state
            if fence is not None:
                self._finish_or_refuse(meta, fence, state, error)

    @staticmethod
    def _finish_or_refuse(meta: TaskMeta, fence: Fence, state: TaskRun.State, error: str = "") -> None:
        """Inside the transaction that records what the run did: its end, or Superseded (rollback)."""
        if not execution.finish(fence, state, error):
            raise Superseded(f"task {meta.task_id} was taken over before its {state} was recorded")

    def _refused(self, meta: TaskMeta, fence: Fence) -> bool:
        """A step of a cancelled flow or the task of a cancelled job: recorded, acked, not run."""
        try:
            state = cancellation.may_start(meta)
            if state is not None:
                execution.finish(fence, state)
        except DatabaseError as exc:
            self._requeue(exc)
        if state is None:
            return False
        task_event(self.name, "cancelled" if state == TaskRun.State.CANCELLED else "duplicate")
        logger.info("%s[%s]: not run (its job or flow step is %s)", self.name, meta.task_id, state)
        return True

    def _cancelled(self, meta: TaskMeta, args: list[Any], kwargs: dict[str, Any], fence: Fence) -> None:
        try:
            close_old_connections()  # the signal may have interrupted a query
            if not cancellation.record_cancelled(meta):
                # No stored cancel explains it: a signal meant for the task this child ran before.
                self._reschedule(
                    meta, Reschedule(0.0, "interrupted by a stray cancel signal"), args, kwargs, fence
                )
                return
            execution.finish(fence, TaskRun.State.CANCELLED)
        except DatabaseError as exc:
            self._requeue(exc)
        task_event(self.name, "cancelled")
        logger.info("%s[%s]: cancelled while running", self.name, meta.task_id)

    def on_dead_letter(self, args: list[Any], kwargs: dict[str, Any], exc: BaseException) -> None:
        """Hook: the task failed for good (its DeadLetter is written). Mark domain records failed."""

    def _retry_delay(self, exc: BaseException, attempt: int) -> float:
        if isinstance(exc, RetryableError) and exc.retry_after is not None:
            return max(0.0, min(exc.retry_after, self.policy.backoff_cap))
        return self.policy.backoff(attempt)

    def _reschedule(
        self, meta: TaskMeta, reschedule: Reschedule, args: list[Any], kwargs: dict[str, Any], fence: Fence
    ) -> None:
        """Run later without spending an attempt (e.g. the vendor's rate limit is used up)."""
        try:
            self._enqueue_next(meta, args, kwargs, fence, attempt=meta.attempt, delay=reschedule.delay, as_state=(
                TaskRun.State.RESCHEDULED, reschedule.reason))  # fmt: skip
        except DatabaseError as exc:
            self._requeue(exc)
        task_event(self.name, "rescheduled")
        logger.info(
            "%s[%s] rescheduled in %.2fs: %s", self.name, meta.task_id, reschedule.delay, reschedule.reason
        )

    def _requeue(self, exc: BaseException) -> NoReturn:
        """The database is unreachable: put the message back rather than ack what we can't record."""
        logger.warning("%s: database unavailable (%s); message requeued", self.name, type(exc).__name__)
        close_old_connections()
        time.sleep(REQUEUE_PAUSE_SECONDS)  # back off: every worker would otherwise spin on the queue
        raise Reject(reason=f"database unavailable: {type(exc).__name__}", requeue=True)

    def _job_update(self, meta: TaskMeta, state: str) -> None:
        if not meta.job_id:
            return
        now = timezone.now()
        jobs = Job.objects.filter(pk=meta.job_id)
        if state == Job.State.RUNNING:
            jobs.filter(state__in=[Job.State.QUEUED, Job.State.RUNNING]).update(
                state=state, started_at=now, task_id=meta.task_id
            )
        else:  # succeeded, unless the task itself already finished the job another way
            jobs.filter(state=Job.State.RUNNING).update(state=state, progress=100, finished_at=now)

    # --- a child killed by the hard time limit (runs in the worker's main process) ------
    def on_failure(self, exc: Exception, task_id: str, args: Any, kwargs: Any, einfo: Any) -> None:
        if not isinstance(exc, TimeLimitExceeded):
            return  # every other failure was recorded in __call__ before the exception left the task
        found = OutboxMessage.objects.filter(pk=task_id).values("queue", "headers").first()
        row: dict[str, Any] = dict(found) if found else {}
        meta = meta_from_headers(task_id, self.name, row.get("queue", Queue.DEFAULT), row.get("headers", {}))
        with contextlib.suppress(Retry, TimeLimitExceeded, Reject, Superseded):  # recorded or requeued
            self._record_failure(meta, exc, list(args or []), dict(kwargs or {}), execution.fence_of(task_id))
